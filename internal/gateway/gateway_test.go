package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/mod/sumdb/note"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/gateway"
	"github.com/gatehouse/gatehouse/internal/store"
)

// harness is a running gateway in front of the demo servers.
type harness struct {
	t       *testing.T
	g       *gateway.Gateway
	demo    *demo.Servers
	url     string
	dataDir string
	cfg     *config.File
	cancel  context.CancelFunc
	done    chan error
}

// The demo servers' tool labels, as the demo configures them.
const (
	bankLabels = `{get_balance: {labels: [reads_private]}, list_transactions: {labels: [reads_private, untrusted_content]},
      send_money: {labels: [financial, external_sink]}, schedule_transfer: {labels: [financial, external_sink]}, update_password: {labels: [privilege]}}`
	workspaceLabels = `{read_inbox: {labels: [reads_private, untrusted_content]}, search_files: {labels: [reads_private]},
      read_file: {labels: [reads_private]}, send_email: {labels: [external_sink]}, share_file: {labels: [external_sink]}, delete_file: {labels: [destructive]}}`
)

// extraServer is an additional upstream for a test.
type extraServer struct {
	id, url string
	command []string
	env     map[string]string
	// tools, when set, is the server's tool settings (a YAML map).
	tools string
	// headerFiles, when set, is the url server's header_files (a YAML map).
	headerFiles string
}

func start(t *testing.T, yamlExtra string, extra ...extraServer) *harness {
	t.Helper()
	return startLabelled(t, bankLabels, workspaceLabels, yamlExtra, extra...)
}

// startLabelled is start with the demo servers' tool labels (YAML maps of
// tool to settings) chosen by the test.
func startLabelled(t *testing.T, bank, workspace, yamlExtra string, extra ...extraServer) *harness {
	t.Helper()
	servers, err := demo.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(servers.Close)
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\ndata_dir: %s\nadmin: {listen: 127.0.0.1:0}\n", filepath.Join(dir, "data"))
	b.WriteString("agents:\n")
	b.WriteString("  - {id: assistant, owner: dana@harlowpike.example, servers: [bank, workspace")
	for _, e := range extra {
		b.WriteString(", " + e.id)
	}
	b.WriteString("]}\n")
	b.WriteString("  - {id: intern-bot, owner: leon@harlowpike.example, servers: [workspace]}\n")
	b.WriteString("  - {id: retired-bot, owner: leon@harlowpike.example, servers: [workspace], disabled: true}\n")
	fmt.Fprintf(&b, "servers:\n  - id: bank\n    url: %q\n    tools: %s\n  - id: workspace\n    url: %q\n    tools: %s\n",
		servers.BankURL, bank, servers.WorkspaceURL, workspace)
	for _, e := range extra {
		if e.url != "" {
			tools := ""
			if e.tools != "" {
				tools = ", tools: " + e.tools
			}
			if e.headerFiles != "" {
				tools += ", header_files: " + e.headerFiles
			}
			fmt.Fprintf(&b, "  - {id: %s, url: %q, timeout: 5s%s}\n", e.id, e.url, tools)
		} else {
			cmd, _ := json.Marshal(e.command)
			env, _ := json.Marshal(e.env)
			fmt.Fprintf(&b, "  - {id: %s, command: %s, env: %s, timeout: 5s}\n", e.id, cmd, env)
		}
	}
	b.WriteString(yamlExtra)
	cfg, err := config.Parse([]byte(b.String()), dir)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, b.String())
	}
	var opts gateway.Options
	if os.Getenv("GATEHOUSE_TEST_LOG") != "" { // debugging: the gateway's log on stderr
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	g, err := gateway.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, g: g, demo: servers, url: g.MCPURL(""), dataDir: filepath.Join(dir, "data"), cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- g.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Error("gateway did not stop within 15s")
	}
	if err := h.g.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
}

func (h *harness) token(agent string) string {
	h.t.Helper()
	tok, _, err := h.g.Minter().Mint(agent, 5*time.Minute)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

type bearer struct {
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// connect opens a go-sdk client session through the gateway.
func (h *harness) connect(agent string, opts *sdk.ClientOptions, path string) *sdk.ClientSession {
	h.t.Helper()
	url := h.url
	if path != "" {
		url = h.g.MCPURL(path)
	}
	c := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-test", Version: "1"}, opts)
	cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: url,
		HTTPClient: &http.Client{Transport: bearer{h.token(agent)}}}, nil)
	if err != nil {
		h.t.Fatalf("connecting as %s: %v", agent, err)
	}
	h.t.Cleanup(func() { cs.Close() })
	return cs
}

// events returns the OCSF events of the audit log matching f, waiting up
// to 2s for at least min of them.
func (h *harness) events(f audit.Filter, min int) []map[string]any {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		// Records are durable in the audit journal first; this handle reads
		// the SQLite file (best effort: during a store outage it fails).
		_ = gateway.SettleAudit(context.Background(), h.g)
		db, err := store.Open(context.Background(), filepath.Join(h.dataDir, "gatehouse.db"))
		if err != nil {
			h.t.Fatal(err)
		}
		b, err := store.OpenAuditLog(context.Background(), db)
		if err != nil {
			h.t.Fatal(err)
		}
		if f.Limit == 0 {
			f.Limit = 1000
		}
		entries, err := b.Search(context.Background(), f)
		db.Close()
		if err != nil {
			h.t.Fatal(err)
		}
		var out []map[string]any
		for _, e := range entries {
			l, err := audit.ParseLeaf(e.Data)
			if err != nil {
				h.t.Fatal(err)
			}
			var ev map[string]any
			if err := json.Unmarshal(l.Event, &ev); err != nil {
				h.t.Fatal(err)
			}
			out = append(out, ev)
		}
		if len(out) >= min || time.Now().After(deadline) {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func unmapped(ev map[string]any, key string) any {
	u, _ := ev["unmapped"].(map[string]any)
	return u[key]
}

func TestGoClientThroughGateway(t *testing.T) {
	h := start(t, "")
	cs := h.connect("assistant", nil, "")
	ctx := context.Background()

	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	want := []string{"bank__get_balance", "bank__list_transactions", "bank__schedule_transfer", "bank__send_money", "bank__update_password",
		"workspace__delete_file", "workspace__read_file", "workspace__read_inbox", "workspace__search_files", "workspace__send_email", "workspace__share_file"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("tools = %v\nwant %v", names, want)
	}

	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}})
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := res.StructuredContent.(map[string]any)
	if res.IsError || sc["balance"] != 12840.55 {
		t.Errorf("get_balance = %+v", res)
	}

	// A side effect reaches the upstream exactly once.
	res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: map[string]any{
		"from_account": "acc-checking", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": 40.55, "reference": "lunch"}})
	if err != nil || res.IsError {
		t.Fatalf("send_money: %+v, %v", res, err)
	}
	if got := h.demo.Bank.Balance("acc-checking"); got != 12800 {
		t.Errorf("balance after transfer = %v, want 12800", got)
	}

	// A tool error is a result, not a protocol error.
	res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "nope"}})
	if err != nil || !res.IsError {
		t.Errorf("unknown account: %+v, %v", res, err)
	}

	// Resources and prompts are namespaced too.
	rr, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "workspace+file:///notes/offsite-agenda.md"})
	if err != nil || len(rr.Contents) != 1 || rr.Contents[0].URI != "workspace+file:///notes/offsite-agenda.md" || !strings.Contains(rr.Contents[0].Text, "Kick-off") {
		t.Errorf("read resource: %+v, %v", rr, err)
	}
	rr, err = cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "workspace+file:///finance/vendors.csv"})
	if err != nil || !strings.Contains(rr.Contents[0].Text, "Nordwind") {
		t.Errorf("read templated resource: %+v, %v", rr, err)
	}
	pr, err := cs.GetPrompt(ctx, &sdk.GetPromptParams{Name: "workspace__triage_inbox", Arguments: map[string]string{"focus": "finance"}})
	if err != nil || len(pr.Messages) != 1 {
		t.Errorf("get prompt: %+v, %v", pr, err)
	}
	if err := cs.Ping(ctx, nil); err != nil {
		t.Errorf("ping: %v", err)
	}

	// Every call is on record: the transfer has an intent and a linked
	// outcome.
	evs := h.events(audit.Filter{Agent: "assistant", Tool: "send_money"}, 2)
	var intent, outcome map[string]any
	for _, ev := range evs {
		switch unmapped(ev, "phase") {
		case "intent":
			intent = ev
		case "outcome":
			outcome = ev
		}
	}
	if intent == nil || outcome == nil {
		t.Fatalf("send_money records: %v", evs)
	}
	if intent["metadata"].(map[string]any)["correlation_uid"] != outcome["metadata"].(map[string]any)["correlation_uid"] || unmapped(outcome, "intent_index") == nil {
		t.Errorf("intent and outcome are not linked:\n%v\n%v", intent, outcome)
	}
}

func TestRefusals(t *testing.T) {
	h := start(t, "")
	ctx := context.Background()
	intern := h.connect("intern-bot", nil, "")

	// intern-bot sees only the workspace...
	for tool, err := range intern.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(tool.Name, "bank__") {
			t.Errorf("intern-bot sees %s", tool.Name)
		}
	}
	// ...and a bank call is denied by policy, never "not found".
	_, err := intern.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: map[string]any{
		"from_account": "acc-checking", "to_iban": "GB94 BARC 1020 1530 0934 59", "amount": 4800}})
	if err == nil || !strings.Contains(err.Error(), "denied by policy") {
		t.Fatalf("intern-bot send_money: %v", err)
	}
	if got := h.demo.Bank.Balance("acc-checking"); got != 12840.55 {
		t.Errorf("balance changed to %v", got)
	}
	evs := h.events(audit.Filter{Agent: "intern-bot", Tool: "send_money", Outcome: "block"}, 1)
	if len(evs) != 1 || evs[0]["status_detail"] != "server.not_allowed" {
		t.Errorf("refusal records: %v", evs)
	}

	// A disabled agent cannot even connect.
	c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
	if _, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{h.token("retired-bot")}}}, nil); err == nil {
		t.Error("a disabled agent connected")
	}
}

// rawPost sends body to the MCP endpoint with the given headers.
func (h *harness) rawPost(t *testing.T, method string, headers map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, h.url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

func TestBadInput(t *testing.T) {
	h := start(t, "limits: {max_body_bytes: 4096}\n")
	auth := "Bearer " + h.token("assistant")
	resp, _ := h.rawPost(t, "POST", map[string]string{"Authorization": auth}, initBody)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != 200 || sid == "" {
		t.Fatalf("initialize: %d, session %q", resp.StatusCode, sid)
	}
	withSession := map[string]string{"Authorization": auth, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
	tests := []struct {
		name     string
		method   string
		headers  map[string]string
		body     string
		status   int
		contains string
	}{
		{"no token", "POST", map[string]string{}, initBody, 401, "token_missing"},
		{"bad token", "POST", map[string]string{"Authorization": "Bearer xyz"}, initBody, 401, "token_malformed"},
		{"wrong content type", "POST", map[string]string{"Authorization": auth, "Content-Type": "text/plain"}, initBody, 415, "application/json"},
		{"missing accept", "POST", map[string]string{"Authorization": auth, "Accept": "application/json"}, initBody, 406, "text/event-stream"},
		{"malformed JSON", "POST", withSession, `{"jsonrpc":"2.0","id":2,`, 400, "-32700"},
		{"duplicate keys", "POST", withSession, `{"jsonrpc":"2.0","id":2,"method":"tools/list","method":"tools/call"}`, 400, "duplicate member"},
		{"invalid UTF-8", "POST", withSession, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"\xff\"}", 400, "UTF-8"},
		{"batch", "POST", withSession, `[{"jsonrpc":"2.0","id":2,"method":"ping"}]`, 400, "batches"},
		{"not JSON-RPC 2.0", "POST", withSession, `{"jsonrpc":"1.0","id":2,"method":"ping"}`, 400, "-32600"},
		{"object id", "POST", withSession, `{"jsonrpc":"2.0","id":{},"method":"ping"}`, 400, "-32600"},
		{"oversized", "POST", withSession, `{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":"` + strings.Repeat("a", 5000) + `"}}`, 413, "exceeds"},
		{"unknown method", "POST", withSession, `{"jsonrpc":"2.0","id":2,"method":"tools/destroy"}`, 200, "-32601"},
		{"unknown tool", "POST", withSession, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"bank__nope"}}`, 200, "unknown tool"},
		{"unknown server", "POST", withSession, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope__x"}}`, 200, "unknown tool"},
		{"no name", "POST", withSession, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}`, 200, "-32602"},
		{"params not an object", "POST", withSession, `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":[1]}`, 400, "params must be an object"},
		{"missing session", "POST", map[string]string{"Authorization": auth}, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, 400, "Mcp-Session-Id"},
		{"unknown session", "POST", map[string]string{"Authorization": auth, "Mcp-Session-Id": "feedface"}, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, 404, "session not found"},
		{"another agent's session", "POST", map[string]string{"Authorization": "Bearer " + h.token("intern-bot"), "Mcp-Session-Id": sid}, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, 404, "session not found"},
		{"unsupported version", "POST", map[string]string{"Authorization": auth, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "1999-01-01"}, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, 400, "unsupported protocol version"},
		{"rebinding Host", "POST", map[string]string{"Authorization": auth, "Host": "evil.example"}, initBody, 403, "Host"},
		{"foreign Origin", "POST", map[string]string{"Authorization": auth, "Origin": "http://evil.example"}, initBody, 403, "origin"},
		{"PUT", "PUT", withSession, `{}`, 405, "not allowed"},
		{"notification only", "POST", withSession, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, 202, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, h.url, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			for k, v := range tt.headers {
				if k == "Host" {
					req.Host = v
					continue
				}
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.contains) {
				t.Errorf("status %d body %q, want %d containing %q", resp.StatusCode, b, tt.status, tt.contains)
			}
			if tt.status == 401 && !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
				t.Errorf("401 without resource_metadata: %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	// The session still works after all that.
	resp, body := h.rawPost(t, "POST", withSession, `{"jsonrpc":"2.0","id":9,"method":"ping"}`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"result":{}`) {
		t.Errorf("ping after bad input: %d %s", resp.StatusCode, body)
	}
	// DELETE ends it; the id is then unknown.
	resp, _ = h.rawPost(t, "DELETE", withSession, "")
	if resp.StatusCode != 204 {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
	resp, _ = h.rawPost(t, "POST", withSession, `{"jsonrpc":"2.0","id":10,"method":"ping"}`)
	if resp.StatusCode != 404 {
		t.Errorf("after DELETE: %d", resp.StatusCode)
	}
	// Every refusal is on record (the two after DELETE included).
	refused := 1
	for _, tt := range tests {
		if tt.status >= 400 || strings.Contains(tt.contains, "-32") || strings.Contains(tt.contains, "unknown") {
			refused++
		}
	}
	if evs := h.events(audit.Filter{Outcome: "block"}, refused); len(evs) < refused {
		t.Errorf("%d refusals recorded, want at least %d", len(evs), refused)
	}
}

func TestUpstreamDownAndSlow(t *testing.T) {
	slow := sdk.NewServer(&sdk.Implementation{Name: "slow", Version: "1"}, nil)
	release := make(chan struct{})
	sdk.AddTool(slow, &sdk.Tool{Name: "wait", Description: "waits"}, func(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, struct{}, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "done"}}}, struct{}{}, nil
	})
	srv := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return slow }, nil)}
	ln := listen(t)
	go srv.Serve(ln)
	defer close(release)
	defer srv.Close()

	h := start(t, "", extraServer{id: "slow", url: "http://" + ln.Addr().String() + "/mcp"})
	cs := h.connect("assistant", nil, "")
	ctx := context.Background()

	// A call that outlives the server's 5s timeout gets a clean error.
	start := time.Now()
	_, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "slow__wait"})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("slow call: %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("slow call took %v", d)
	}

	// A server that went away: a clear error, and the gateway lives on.
	h.demo.Close()
	_, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}})
	if err == nil || !strings.Contains(err.Error(), "upstream server bank") {
		t.Errorf("call to a stopped server: %v", err)
	}
	if err := cs.Ping(ctx, nil); err != nil {
		t.Errorf("gateway unusable after an upstream failure: %v", err)
	}
}

// TestGarbageUpstream puts a server that answers garbage behind the gateway.
func TestGarbageUpstream(t *testing.T) {
	var mode sync.Map
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.Unmarshal(body, &m)
		switch m.Method {
		case "initialize":
			w.Header().Set("Mcp-Session-Id", "g1")
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"garbage","version":"1"}}}`, m.ID)
		case "tools/list":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"junk","inputSchema":{"type":"object"}}]}}`, m.ID)
		case "tools/call":
			v, _ := mode.Load("mode")
			switch v {
			case "html":
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<html>oops</html>")
			case "badjson":
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"jsonrpc":"2.0","id":`)
			case "wrongid":
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"jsonrpc":"2.0","id":"other","result":{}}`)
			case "500":
				w.WriteHeader(500)
			case "sse-no-response":
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"x\"}}\n\n")
			}
		default:
			w.WriteHeader(202)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	h := start(t, "", extraServer{id: "junk", url: "http://" + ln.Addr().String() + "/mcp"})
	cs := h.connect("assistant", nil, "")
	for _, m := range []string{"html", "badjson", "wrongid", "500", "sse-no-response"} {
		mode.Store("mode", m)
		_, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "junk__junk"})
		if err == nil || !strings.Contains(err.Error(), "upstream server junk") {
			t.Errorf("%s: %v", m, err)
		}
	}
	if err := cs.Ping(context.Background(), nil); err != nil {
		t.Errorf("gateway unusable after garbage: %v", err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	h := start(t, "")
	ctx := context.Background()
	settle := func() int {
		var n int
		for i := 0; i < 40; i++ {
			runtime.GC()
			n = runtime.NumGoroutine()
			time.Sleep(50 * time.Millisecond)
		}
		return n
	}
	// Warm up connection pools.
	cs := h.connect("assistant", nil, "")
	cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}})
	cs.Close()
	base := settle()
	for i := 0; i < 20; i++ {
		c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
		s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{h.token("assistant")}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}})
		s.CallTool(ctx, &sdk.CallToolParams{Name: "nope__x"})
		h.rawPost(t, "POST", map[string]string{"Authorization": "Bearer " + h.token("assistant"), "Mcp-Session-Id": s.ID()}, `{"jsonrpc":"2.0","id":1,`)
		s.Close()
	}
	after := settle()
	// Idle HTTP keep-alive connections may add a few; 20 leaked sessions
	// would add far more (each holds several goroutines).
	if after > base+12 {
		t.Errorf("goroutines: %d before, %d after 20 sessions", base, after)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// auditVerifier returns the checkpoint verifier key a gateway with data
// directory dir wrote at its first start.
func auditVerifier(t *testing.T, dir string) note.Verifier {
	t.Helper()
	pub, err := os.ReadFile(filepath.Join(dir, "keys", "audit.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(pub)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}
