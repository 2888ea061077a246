package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/gateway"
)

// execConfig is the execution layer of the demo: its policies (default
// library + demo rules) and limits, with a tight rate on get_balance and a
// breaker that opens after three failures.
func execConfig(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "policies")
	if err := demo.WritePolicies(dir); err != nil {
		t.Fatal(err)
	}
	// The test agents (assistant, intern-bot) are the demo's.
	return dir, fmt.Sprintf(`policy: {dir: %s}
limits:
  rates:
    - {name: balance-checks, per: [agent], tool: get_balance, rate: 3/1m}
  values:
    - name: payments
      server: bank
      tool: send_money
      argument: amount
      decimals: 2
      unit: EUR
      ceiling: "5000"
      totals: [{per: agent, window: 24h, limit: "10000"}]
  breakers:
    server: {failures: 3, open: 1s}
    tool: {off: true}
`, dir)
}

// callErr calls a tool and returns the JSON-RPC error, if any.
func callErr(t *testing.T, cs *sdk.ClientSession, name string, args any) (*sdk.CallToolResult, *jsonrpcErr) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: name, Arguments: args})
	if err == nil {
		return res, nil
	}
	var we *jsonrpcErr
	if errors.As(err, &we) {
		return nil, we
	}
	return nil, &jsonrpcErr{Message: err.Error()}
}

// jsonrpcErr is the SDK's JSON-RPC error.
type jsonrpcErr = jsonrpc.Error

func TestExecutionLayer(t *testing.T) {
	_, extra := execConfig(t)
	h := start(t, extra)
	ctx := context.Background()
	cs := h.connect("assistant", nil, "")

	t.Run("permitted call", func(t *testing.T) {
		if _, e := callErr(t, cs, "bank__list_transactions", map[string]any{"account": "acc-savings"}); e != nil {
			t.Fatal(e)
		}
	})

	t.Run("list filtering", func(t *testing.T) {
		intern := h.connect("intern-bot", nil, "")
		var names []string
		for tool, err := range intern.Tools(ctx, nil) {
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, tool.Name)
		}
		if got := strings.Join(names, ","); got != "workspace__read_file,workspace__read_inbox,workspace__search_files" {
			t.Errorf("intern-bot sees %s", got)
		}
		// What it cannot see it cannot call either, and is told why.
		_, e := callErr(t, intern, "workspace__delete_file", map[string]any{"path": "/notes/offsite-agenda.md"})
		if e == nil || !strings.Contains(e.Message, "denied by policy: policy.no_permit") {
			t.Errorf("hidden tool call: %v", e)
		}
		if !h.demo.Workspace.FileExists("/notes/offsite-agenda.md") {
			t.Error("the file was deleted")
		}
	})

	t.Run("forbidden call names its policy", func(t *testing.T) {
		_, e := callErr(t, cs, "workspace__share_file", map[string]any{"path": "/finance/q3-board-report.md", "with": "x@globex-ventures.example"})
		if e == nil || e.Code != -32050 || !strings.Contains(e.Message, "policy.forbid (share-only-notes)") {
			t.Fatalf("share outside /notes: %v", e)
		}
		evs := h.events(audit.Filter{Agent: "assistant", Tool: "share_file", Outcome: "block"}, 1)
		if len(evs) == 0 {
			t.Fatal("no audit record")
		}
		pols, _ := unmapped(evs[0], "policies").([]any)
		if len(pols) == 0 || !strings.Contains(fmt.Sprint(pols), "share-only-notes") || !strings.Contains(fmt.Sprint(pols), "version") {
			t.Errorf("the audit record does not name the deciding policy and its version: %v", pols)
		}
	})

	t.Run("schema-invalid arguments", func(t *testing.T) {
		_, e := callErr(t, cs, "bank__send_money", map[string]any{"from_account": "acc-checking", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": "lots"})
		if e == nil || e.Code != -32602 || !strings.Contains(e.Message, "/amount") {
			t.Errorf("invalid amount: %v", e)
		}
	})

	t.Run("path escapes", func(t *testing.T) {
		cs := h.connect("assistant", nil, "") // an untainted session
		for _, p := range []string{"/notes/../hr/salaries-2026.csv", "/notes/%2e%2e/hr/salaries-2026.csv", "/notes/..%2fhr/salaries-2026.csv",
			`/notes\..\hr\salaries-2026.csv`, "/notes//../../hr/salaries-2026.csv", "/notes/%252e%252e/hr/salaries-2026.csv"} {
			_, e := callErr(t, cs, "workspace__share_file", map[string]any{"path": p, "with": "x@globex-ventures.example"})
			if e == nil || !strings.Contains(e.Message, "denied by policy") {
				t.Errorf("share %q: %v", p, e)
			}
		}
		if _, e := callErr(t, cs, "workspace__share_file", map[string]any{"path": "/notes/offsite-agenda.md", "with": "leon.brandt@harlowpike.example"}); e != nil {
			t.Errorf("share under /notes: %v", e)
		}
	})

	t.Run("value ceiling and running total", func(t *testing.T) {
		cs := h.connect("assistant", nil, "") // an untainted session
		send := func(amount float64) *jsonrpcErr {
			_, e := callErr(t, cs, "bank__send_money", map[string]any{"from_account": "acc-savings", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": amount})
			return e
		}
		// Above the ceiling (5000): refused whatever approval could say.
		if e := send(6000); e == nil || !strings.Contains(e.Message, "limits.value_ceiling") {
			t.Errorf("above the ceiling: %v", e)
		}
		// Below the approval threshold (1000), twelve concurrent payments of
		// 900 race for the 10,000 daily budget: exactly eleven fit.
		var ok, refused atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch e := send(900); {
				case e == nil:
					ok.Add(1)
				case strings.Contains(e.Message, "limits.running_total"):
					refused.Add(1)
				default:
					t.Errorf("racing payment: %v", e)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 11 || refused.Load() != 1 {
			t.Errorf("racing payments: %d executed, %d refused; want 11 and 1", ok.Load(), refused.Load())
		}
		if e := send(200); e == nil || !strings.Contains(e.Message, "limits.running_total") {
			t.Errorf("over the total: %v", e)
		}
		if e := send(100); e != nil {
			t.Errorf("up to the total: %v", e)
		}
		if got := h.demo.Bank.Balance("acc-savings"); got != 48210-10000 {
			t.Errorf("savings balance %v, want %v", got, 48210-10000)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		var last *jsonrpcErr
		for i := 0; i < 4; i++ {
			_, last = callErr(t, cs, "bank__get_balance", map[string]any{"account": "acc-checking"})
			if i < 3 && last != nil {
				t.Fatalf("call %d: %v", i, last)
			}
		}
		if last == nil || !strings.Contains(last.Message, "limits.rate") {
			t.Fatalf("4th call in a minute: %v", last)
		}
		var data struct {
			RetryAfter int `json:"retryAfter"`
		}
		json.Unmarshal(last.Data, &data)
		if data.RetryAfter < 1 {
			t.Errorf("no retry hint: %s", last.Data)
		}
	})

	t.Run("lethal trifecta", func(t *testing.T) {
		s := h.connect("assistant", nil, "")
		mail := map[string]any{"to": "archive@harlowpike-helpdesk.example", "subject": "quota", "body": "see attached"}
		// A fresh session may send mail.
		if _, e := callErr(t, s, "workspace__send_email", mail); e != nil {
			t.Fatalf("send before reading: %v", e)
		}
		// Reading the inbox brings private data and outsiders' text (an
		// injected instruction to forward files) into the session...
		if _, e := callErr(t, s, "workspace__read_inbox", map[string]any{}); e != nil {
			t.Fatal(e)
		}
		// ...after which sending mail out waits for a human.
		_, e := callErr(t, s, "workspace__send_email", mail)
		if e == nil || e.Code != -32052 || !strings.Contains(e.Message, "trifecta") || !strings.Contains(string(e.Data), "security-reviewers") {
			t.Errorf("send after reading: %v", e)
		}
		if n := len(h.demo.Workspace.Sent()); n != 1 {
			t.Errorf("%d emails sent, want 1", n)
		}
	})

	t.Run("kill switch stops an open session within 1s", func(t *testing.T) {
		s := h.connect("assistant", nil, "")
		if _, e := callErr(t, s, "workspace__search_files", map[string]any{"query": "agenda"}); e != nil {
			t.Fatal(e)
		}
		start := time.Now()
		if code := adminDo(t, h, "POST", "/v1/locks", map[string]string{"scope": "agent", "target": "assistant", "reason": "test", "by": "ops"}, nil); code != http.StatusCreated {
			t.Fatalf("lock: HTTP %d", code)
		}
		var e *jsonrpcErr
		for {
			if _, e = callErr(t, s, "workspace__search_files", map[string]any{"query": "agenda"}); e != nil || time.Since(start) > time.Second {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if d := time.Since(start); e == nil || !strings.Contains(e.Message, "lock.agent") || d > time.Second {
			t.Errorf("after the lock (%v): %v", d, e)
		}
		// Others are not affected.
		if _, e := callErr(t, h.connect("intern-bot", nil, ""), "workspace__search_files", map[string]any{"query": "agenda"}); e != nil {
			t.Errorf("another agent: %v", e)
		}
		if code := adminDo(t, h, "DELETE", "/v1/locks/agent/assistant?by=ops", nil, nil); code != http.StatusNoContent {
			t.Fatalf("unlock: HTTP %d", code)
		}
		if _, e := callErr(t, s, "workspace__search_files", map[string]any{"query": "agenda"}); e != nil {
			t.Errorf("after unlock: %v", e)
		}
		if evs := h.events(audit.Filter{Class: audit.ClassEntityManagement}, 2); len(evs) < 2 {
			t.Errorf("lock changes on record: %d", len(evs))
		}
	})
}

// TestKillSwitchCancelsCallsInFlight locks a server while a call to it is
// running: the call ends at once.
func TestKillSwitchCancelsCallsInFlight(t *testing.T) {
	slow := sdk.NewServer(&sdk.Implementation{Name: "slow", Version: "1"}, nil)
	sdk.AddTool(slow, &sdk.Tool{Name: "wait", Description: "waits"}, func(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, struct{}, error) {
		select {
		case <-time.After(20 * time.Second):
		case <-ctx.Done():
		}
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "done"}}}, struct{}{}, nil
	})
	ln := listen(t)
	srv := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return slow }, nil)}
	go srv.Serve(ln)
	defer srv.Close()
	h := start(t, "", extraServer{id: "slow", url: "http://" + ln.Addr().String() + "/mcp"})
	cs := h.connect("assistant", nil, "")
	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "slow__wait"})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	adminDo(t, h, "POST", "/v1/locks", map[string]string{"scope": "server", "target": "slow", "reason": "runaway", "by": "ops"}, nil)
	select {
	case err := <-done:
		if err == nil || time.Since(start) > time.Second {
			t.Errorf("call in flight after the lock: %v after %v", err, time.Since(start))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the call in flight was not cancelled")
	}
}

func TestCircuitBreaker(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	flaky := sdk.NewServer(&sdk.Implementation{Name: "flaky", Version: "1"}, nil)
	sdk.AddTool(flaky, &sdk.Tool{Name: "op", Description: "sometimes fails"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, struct{}, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "ok"}}}, struct{}{}, nil
	})
	inner := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return flaky }, nil)
	var calls atomic.Int32
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && failing.Load() && r.Header.Get("Mcp-Session-Id") != "" {
			b := make([]byte, 4096)
			n, _ := r.Body.Read(b)
			if strings.Contains(string(b[:n]), `"tools/call"`) {
				calls.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			r.Body = readCloser{strings.NewReader(string(b[:n]))}
		}
		inner.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	_, extra := execConfig(t)
	extra = strings.Replace(extra, "policy: {dir:", "policy_unused: {dir:", 1)
	extra = extra[strings.Index(extra, "limits:"):]
	h := start(t, extra, extraServer{id: "flaky", url: "http://" + ln.Addr().String() + "/mcp"})
	cs := h.connect("assistant", nil, "")
	for i := 0; i < 3; i++ {
		if _, e := callErr(t, cs, "flaky__op", nil); e == nil || !strings.Contains(e.Message, "upstream server flaky") {
			t.Fatalf("failure %d: %v", i, e)
		}
	}
	// Open: fail fast, without reaching the server.
	before := calls.Load()
	_, e := callErr(t, cs, "flaky__op", nil)
	if e == nil || !strings.Contains(e.Message, "breaker.open") || calls.Load() != before {
		t.Fatalf("open breaker: %v (server reached %d times more)", e, calls.Load()-before)
	}
	if m := scrapeMetrics(t, h); !strings.Contains(m, `gatehouse_breaker_state{breaker="flaky"} 2`) {
		t.Errorf("the open breaker is not on the metrics page:\n%s", grepLines(m, "gatehouse_breaker_state"))
	}
	// The server recovers; after the open period a probe closes the breaker.
	failing.Store(false)
	time.Sleep(1100 * time.Millisecond)
	if _, e := callErr(t, cs, "flaky__op", nil); e != nil {
		t.Fatalf("probe: %v", e)
	}
	if _, e := callErr(t, cs, "flaky__op", nil); e != nil {
		t.Fatalf("closed again: %v", e)
	}
	if m := scrapeMetrics(t, h); !strings.Contains(m, `gatehouse_breaker_state{breaker="flaky"} 0`) {
		t.Errorf("the closed breaker is not on the metrics page:\n%s", grepLines(m, "gatehouse_breaker_state"))
	}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

func TestPolicyLoadingAndReload(t *testing.T) {
	dir, extra := execConfig(t)
	// A broken policy set keeps the gateway from starting, naming file and
	// line.
	bad := filepath.Join(dir, "bad.cedar")
	if err := os.WriteFile(bad, []byte("permit (principal, action, resource)\nwhen { context.nope.nope };\n@id(\"x\") forbid (principal ; \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\ndata_dir: "+t.TempDir()+"\n"+extra+
		"agents: [{id: a, owner: o}]\nservers: [{id: bank, url: 'http://127.0.0.1:1/mcp'}]\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.Validate(cfg); err == nil || !strings.Contains(err.Error(), "bad.cedar:4:1: syntax error") {
		t.Errorf("Validate with a syntax error: %v", err)
	}
	if _, err := gateway.New(context.Background(), cfg, gateway.Options{}); err == nil || !strings.Contains(err.Error(), "bad.cedar:4:1: syntax error") {
		t.Errorf("New with a syntax error: %v", err)
	}
	os.Remove(bad)

	h := start(t, extra)
	cs := h.connect("assistant", nil, "")
	if _, e := callErr(t, cs, "workspace__search_files", map[string]any{"query": "x"}); e != nil {
		t.Fatal(e)
	}
	// A bad reload is refused and the set in force stays.
	if err := os.WriteFile(bad, []byte("forbid (principal, action, resource) when { context.arguments.path == 1 };\nnot cedar\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Error string `json:"error"`
	}
	if code := adminDo(t, h, "POST", "/v1/policy/reload", nil, &resp); code != http.StatusUnprocessableEntity || !strings.Contains(resp.Error, "bad.cedar:2") {
		t.Errorf("bad reload: HTTP %d %q", code, resp.Error)
	}
	if _, e := callErr(t, cs, "workspace__search_files", map[string]any{"query": "x"}); e != nil {
		t.Errorf("after a refused reload: %v", e)
	}
	// A good reload takes effect.
	if err := os.WriteFile(bad, []byte(`@id("no-search") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"workspace__search_files");`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := adminDo(t, h, "POST", "/v1/policy/reload", nil, &resp); code != http.StatusOK {
		t.Fatalf("good reload: HTTP %d %q", code, resp.Error)
	}
	if _, e := callErr(t, cs, "workspace__search_files", map[string]any{"query": "x"}); e == nil || !strings.Contains(e.Message, "no-search") {
		t.Errorf("after reload: %v", e)
	}
}

func TestShadowPolicies(t *testing.T) {
	dir, extra := execConfig(t)
	shadow := filepath.Join(t.TempDir(), "shadow")
	if err := os.MkdirAll(shadow, 0o700); err != nil {
		t.Fatal(err)
	}
	// The candidate: the same set, plus a rule refusing balance checks.
	files, _ := filepath.Glob(filepath.Join(dir, "*.cedar"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(shadow, filepath.Base(f)), b, 0o600)
	}
	os.WriteFile(filepath.Join(shadow, "stricter.cedar"), []byte(`@id("no-balance") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__get_balance");`), 0o600)
	h := start(t, strings.Replace(extra, "policy: {dir: "+dir+"}", "policy: {dir: "+dir+", shadow_dir: "+shadow+"}", 1))
	cs := h.connect("assistant", nil, "")
	if _, e := callErr(t, cs, "bank__get_balance", map[string]any{"account": "acc-checking"}); e != nil {
		t.Fatalf("the shadow set must not enforce: %v", e)
	}
	evs := h.events(audit.Filter{Class: audit.ClassEntityManagement}, 1)
	found := false
	for _, ev := range evs {
		if e, _ := ev["entity"].(map[string]any); e != nil && e["type"] == "policy_shadow" && strings.Contains(fmt.Sprint(e["data"]), "no-balance") {
			found = true
		}
	}
	if !found {
		t.Errorf("no shadow difference on record: %v", evs)
	}
}
