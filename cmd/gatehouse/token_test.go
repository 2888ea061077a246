package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/gateway"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// TestTokenMint mints with the configuration's signing key (the single
// key, then a key ring) and checks the token with the verifier the gateway
// uses; unknown and disabled agents and over-long lifetimes are refused.
// There is no store yet (no gateway ran): the configuration's agents count.
func TestTokenMint(t *testing.T) {
	for _, ring := range []bool{false, true} {
		t.Run(fmt.Sprintf("ring=%v", ring), func(t *testing.T) {
			dir := t.TempDir()
			keys := ""
			if ring {
				keys = "  keys: {algorithm: ES256}\n"
			}
			cfg := filepath.Join(dir, "gatehouse.yaml")
			text := fmt.Sprintf(`data_dir: %s
identity:
  issuer: https://gw.example
  max_token_ttl: 1h
%sagents:
  - {id: assistant, owner: dana@example.com, servers: [bank]}
  - {id: old-bot, owner: dana@example.com, servers: [bank], disabled: true}
servers:
  - {id: bank, url: "http://127.0.0.1:1/mcp"}
`, filepath.Join(dir, "data"), keys)
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			mint := func(args ...string) (string, string, error) {
				var out, errOut bytes.Buffer
				err := run(context.Background(), append([]string{"token", "mint", "--config", cfg}, args...), &out, &errOut)
				return out.String(), errOut.String(), err
			}
			before := time.Now()
			out, msg, err := mint("--agent", "assistant", "--ttl", "2m")
			if err != nil {
				t.Fatalf("mint: %v %s", err, msg)
			}
			if !strings.Contains(msg, "token for agent assistant, expires ") {
				t.Errorf("stderr = %q", msg)
			}
			v := &identity.TokenVerifier{Issuer: "https://gw.example", Audience: "gatehouse", MaxTTL: time.Hour,
				Registry: identity.NewStaticRegistry([]*identity.Agent{{ID: "assistant", Servers: []string{"bank"}, Enabled: true}})}
			if ring {
				r, err := identity.NewKeyRing(identity.KeyRingConfig{Dir: filepath.Join(dir, "data", "keys", "ring"), Algorithm: "ES256"})
				if err != nil {
					t.Fatal(err)
				}
				v.Ring = r
			} else {
				k, err := identity.LoadOrCreateKey(filepath.Join(dir, "data", "keys", "signing.jwk"))
				if err != nil {
					t.Fatal(err)
				}
				v.Keys = []*identity.Key{k}
			}
			p, err := v.Verify(context.Background(), strings.TrimSpace(out))
			if err != nil {
				t.Fatalf("the minted token does not verify: %v", err)
			}
			if p.Agent.ID != "assistant" || p.Expiry.Before(before.Add(2*time.Minute-time.Second)) || p.Expiry.After(time.Now().Add(2*time.Minute)) {
				t.Errorf("principal %s, expiry %v", p.Agent.ID, p.Expiry)
			}
			for _, tt := range []struct {
				args  []string
				want  string
				usage bool
			}{
				{[]string{"--agent", "ghost"}, "not registered", false},
				{[]string{"--agent", "old-bot"}, "disabled", false},
				{[]string{"--agent", "assistant", "--ttl", "2h"}, "exceeds the maximum", false},
				{nil, "--agent is required", true},
			} {
				out, _, err := mint(tt.args...)
				if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, errUsage) != tt.usage || out != "" {
					t.Errorf("%v: %q, %v; want an error containing %q", tt.args, out, err, tt.want)
				}
			}
			// No gateway has run: the configuration's agents are the
			// registry, and minting does not create the store.
			if _, err := os.Stat(filepath.Join(dir, "data", "gatehouse.db")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("token mint created the store: %v", err)
			}
		})
	}
}

// TestTokenMintRegistry mints tokens for agents of the durable registry,
// added at run time through the admin API (gatehouse agents add), next to
// a running gateway: the gateway accepts the token of an active agent and
// the CLI refuses unknown, suspended, retired, expired and locked ones, reading the
// store (--config) or asking the gateway (--admin). Minting while the
// registry changes breaks neither side, and the CLI keeps reading the store
// once the gateway has stopped.
func TestTokenMintRegistry(t *testing.T) {
	servers, err := demo.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer servers.Close()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	text := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
data_dir: %s
identity: {max_token_ttl: 1h}
agents: [{id: assistant, owner: dana@example.com, servers: [workspace]}]
servers:
  - {id: workspace, url: %q}
`, data, servers.WorkspaceURL)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := gateway.New(ctx, cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			g.Close()
		}
	}
	defer stop()

	admin := []string{"--admin", g.AdminURL(), "--admin-token-file", filepath.Join(data, "admin.token")}
	cli := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	must := func(args ...string) {
		t.Helper()
		if _, msg, err := cli(append(args, append([]string{"--by", "ops@example.com"}, admin...)...)...); err != nil {
			t.Fatalf("%v: %v %s", args, err, msg)
		}
	}
	for _, id := range []string{"runtime-bot", "paused-bot", "retired-bot", "toggled-bot", "locked-bot"} {
		must("agents", "add", "--id", id, "--owner", "dana@example.com", "--server", "workspace")
	}
	must("agents", "add", "--id", "expired-bot", "--owner", "dana@example.com", "--server", "workspace", "--expires", "2020-01-01T00:00:00Z")
	must("agents", "suspend", "paused-bot", "--reason", "under review")
	must("agents", "retire", "retired-bot")
	must("kill", "agent", "locked-bot", "--reason", "incident 42")

	// connect opens an MCP session through the gateway with tok and lists
	// the tools: it fails when the gateway refuses the token.
	connect := func(tok string) ([]string, error) {
		c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
		cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: g.MCPURL(""),
			HTTPClient: &http.Client{Transport: bearer{token: tok, base: http.DefaultTransport}}}, nil)
		if err != nil {
			return nil, err
		}
		defer cs.Close()
		res, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
		}
		return names, nil
	}
	// The gateway checks the registry: a token it signed itself for the
	// suspended agent is refused, so an accepted token below means the
	// agent is active in the gateway's registry.
	if tok, _, err := g.Minter().Mint("paused-bot", time.Minute); err != nil {
		t.Fatal(err)
	} else if _, err := connect(tok); err == nil {
		t.Fatal("the gateway accepted a token of a suspended agent")
	}

	for _, mode := range []struct {
		name string
		args []string
	}{{"store", []string{"--config", cfgPath}}, {"admin", admin}} {
		t.Run(mode.name, func(t *testing.T) {
			mint := func(agent string) (string, string, error) {
				return cli(append([]string{"token", "mint", "--agent", agent, "--ttl", "2m"}, mode.args...)...)
			}
			for _, agent := range []string{"runtime-bot", "assistant"} {
				out, msg, err := mint(agent)
				if err != nil {
					t.Fatalf("mint %s: %v %s", agent, err, msg)
				}
				if !strings.Contains(msg, "token for agent "+agent+", expires ") {
					t.Errorf("stderr = %q", msg)
				}
				tools, err := connect(strings.TrimSpace(out))
				if err != nil {
					t.Fatalf("the gateway refused the token of %s: %v", agent, err)
				}
				if !slices.Contains(tools, "workspace__read_file") {
					t.Errorf("%s sees tools %v", agent, tools)
				}
			}
			for _, tt := range []struct{ agent, want string }{
				{"ghost", "not registered"},
				{"paused-bot", `agent "paused-bot" is suspended`},
				{"retired-bot", `agent "retired-bot" is retired`},
				{"expired-bot", `agent "expired-bot" expired at 2020-01-01T00:00:00Z`},
				{"locked-bot", `agent "locked-bot" is locked by the kill switch`},
			} {
				out, _, err := mint(tt.agent)
				if err == nil || !strings.Contains(err.Error(), tt.want) || out != "" {
					t.Errorf("%s: %q, %v; want an error containing %q", tt.agent, out, err, tt.want)
				}
			}
		})
	}

	// Minting from the store while the gateway writes the registry: every
	// mint and every change succeeds, and each token minted while the
	// agent was active is one the gateway would have accepted.
	var wg sync.WaitGroup
	mintErrs := make(chan error, 40)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if _, msg, err := cli("token", "mint", "--config", cfgPath, "--agent", "runtime-bot"); err != nil {
				mintErrs <- fmt.Errorf("%w %s", err, msg)
			}
		}
	}()
	for range 5 {
		must("agents", "suspend", "toggled-bot", "--reason", "flap")
		must("agents", "resume", "toggled-bot")
	}
	wg.Wait()
	close(mintErrs)
	for err := range mintErrs {
		t.Errorf("minting while the registry changes: %v", err)
	}
	if _, err := connect(mustMint(t, cli, "--config", cfgPath, "--agent", "toggled-bot")); err != nil {
		t.Errorf("toggled-bot after resume: %v", err)
	}

	// With the gateway stopped the store is still read (not recreated),
	// and an agent added to the configuration file since the gateway
	// started is accepted with a note: the gateway seeds it at its next
	// start.
	stop()
	if _, _, err := cli("token", "mint", "--config", cfgPath, "--agent", "runtime-bot"); err != nil {
		t.Errorf("runtime-bot with the gateway stopped: %v", err)
	}
	if _, _, err := cli("token", "mint", "--config", cfgPath, "--agent", "paused-bot"); err == nil || !strings.Contains(err.Error(), "suspended") {
		t.Errorf("paused-bot with the gateway stopped: %v", err)
	}
	if _, _, err := cli("token", "mint", "--config", cfgPath, "--agent", "locked-bot"); err == nil || !strings.Contains(err.Error(), "incident 42") {
		t.Errorf("locked-bot with the gateway stopped: %v", err)
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(text, "agents: [", "agents: [{id: late-bot, owner: dana@example.com, servers: [workspace]}, ", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, msg, err := cli("token", "mint", "--config", cfgPath, "--agent", "late-bot")
	if err != nil || out == "" || !strings.Contains(msg, "not yet in the agent registry") {
		t.Errorf("late-bot: %q %q %v", out, msg, err)
	}
	if _, _, err := cli("token", "mint", "--config", cfgPath, "--agent", "ghost"); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("ghost with the gateway stopped: %v", err)
	}
	if _, _, err := cli("token", "mint", "--admin-token-file", "x", "--agent", "runtime-bot"); !errors.Is(err, errUsage) {
		t.Errorf("--admin-token-file without --admin: %v, want a usage error", err)
	}
}

func mustMint(t *testing.T, cli func(...string) (string, string, error), args ...string) string {
	t.Helper()
	out, msg, err := cli(append([]string{"token", "mint"}, args...)...)
	if err != nil {
		t.Fatalf("mint %v: %v %s", args, err, msg)
	}
	return strings.TrimSpace(out)
}
