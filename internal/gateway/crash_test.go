package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gateway"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/store"
)

// runGatewayProcess runs a gateway from the configuration named by
// GATEHOUSE_TEST_GATEWAY_CONFIG and prints its MCP URL on the first line of
// stdout (the crash test's child process).
func runGatewayProcess() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := config.Load(os.Getenv("GATEHOUSE_TEST_GATEWAY_CONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	g, err := gateway.New(ctx, cfg, gateway.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(g.MCPURL(""))
	if err := g.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	g.Close()
}

// startChild starts the gateway in a child process and returns it with its
// MCP URL.
func startChild(t *testing.T, cfgPath string) (*exec.Cmd, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "GATEHOUSE_TEST_GATEWAY_CONFIG="+cfgPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("gateway child did not start: %v", err)
	}
	go io.Copy(io.Discard, out)
	return cmd, strings.TrimSpace(line)
}

// TestCrashLosesNothingAcknowledged kills the gateway with SIGKILL while
// agents make side-effecting calls, restarts it, and checks that the intent
// of every call an agent saw succeed is in the audit log, and that the log
// verifies against its signed checkpoints.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	// The upstream lives in the test process and survives the crash.
	var served atomic.Int64
	srv := sdk.NewServer(&sdk.Implementation{Name: "ledger", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "book", Description: "books an entry"},
		func(_ context.Context, _ *sdk.CallToolRequest, in struct {
			Ref string `json:"ref"`
		}) (*sdk.CallToolResult, map[string]string, error) {
			served.Add(1)
			return nil, map[string]string{"booked": in.Ref}, nil
		})
	ln := listen(t)
	hs := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)}
	go hs.Serve(ln)
	defer hs.Close()

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	cfgText := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %s
admin: {listen: 127.0.0.1:0}
audit: {privacy: full, checkpoint_interval: 1s}
agents: [{id: clerk, owner: ops@example.com, servers: [ledger]}]
servers: [{id: ledger, url: "http://%s/mcp"}]
endpoints: [{path: /mcp, servers: [ledger], namespace: false}]
`, data, ln.Addr())
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	// The parent mints tokens with the key the child will use.
	key, err := identity.LoadOrCreateKey(filepath.Join(data, "keys", "signing.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := (&identity.Minter{Key: key, Issuer: "gatehouse", Audience: "gatehouse", MaxTTL: time.Hour}).Mint("clerk", 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	acked := map[string]bool{}
	for round := 0; round < 3; round++ {
		child, url := startChild(t, cfgPath)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var n atomic.Int64
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := sdk.NewClient(&sdk.Implementation{Name: "clerk", Version: "1"}, nil)
				cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: url, MaxRetries: -1,
					HTTPClient: &http.Client{Transport: bearer{tok}, Timeout: 5 * time.Second}}, nil)
				if err != nil {
					return
				}
				defer cs.Close()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ref := fmt.Sprintf("r%d-%d", round, n.Add(1))
					res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "book", Arguments: map[string]string{"ref": ref}})
					if err != nil {
						return // the gateway died
					}
					if !res.IsError {
						mu.Lock()
						acked[ref] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(1500 * time.Millisecond)
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		child.Wait()
		close(stop)
		wg.Wait()
	}
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < 100 {
		t.Fatalf("only %d calls were acknowledged before the crashes; the test needs load", n)
	}

	// Restart: the gateway comes back on the same store.
	child, url := startChild(t, cfgPath)
	c := sdk.NewClient(&sdk.Implementation{Name: "clerk", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "book", Arguments: map[string]string{"ref": "after"}}); err != nil {
		t.Fatalf("call after restart: %v", err)
	}
	cs.Close()
	child.Process.Signal(syscall.SIGTERM)
	child.Wait()

	// Every acknowledged call has its intent on record.
	db, err := store.Open(context.Background(), filepath.Join(data, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, err := store.OpenAuditLog(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	size, err := b.Size(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	entries, err := b.Entries(context.Background(), 0, size)
	if err != nil {
		t.Fatal(err)
	}
	intents := map[string]bool{}
	for _, e := range entries {
		l, err := audit.ParseLeaf(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		var ev struct {
			Unmapped struct {
				Phase     string          `json:"phase"`
				Arguments json.RawMessage `json:"arguments"`
			} `json:"unmapped"`
		}
		json.Unmarshal(l.Event, &ev)
		if ev.Unmapped.Phase != "intent" {
			continue
		}
		var args struct {
			Ref string `json:"ref"`
		}
		json.Unmarshal(ev.Unmapped.Arguments, &args)
		intents[args.Ref] = true
	}
	missing := 0
	for ref := range acked {
		if !intents[ref] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged calls have no intent record", missing, len(acked))
	}
	if int64(len(intents)) > served.Load()+48 {
		// Intents may exceed served calls only by the calls in flight at
		// each crash (16 workers, 3 crashes).
		t.Errorf("%d intents but %d calls served", len(intents), served.Load())
	}

	// The log verifies against its signed checkpoints.
	v := auditVerifier(t, data)
	rep, err := audit.VerifyBackend(context.Background(), b, b, audit.VerifyOptions{Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Verified) == 0 {
		t.Errorf("verification after crashes: %+v", rep)
	}
	t.Logf("%d acknowledged calls over 3 crashes, %d intents, %d entries, checkpoints verified at %v", len(acked), len(intents), size, rep.Verified)
}
