package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMetricsAndTraces scrapes the gateway's metrics and collects its
// spans with a loopback OTLP/HTTP receiver, and checks that the W3C trace
// context reaches the upstream server.
func TestMetricsAndTraces(t *testing.T) {
	var mu sync.Mutex
	var exports int
	var upstreamTraceparent []string
	otlp := listen(t)
	go (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if r.URL.Path == "/v1/traces" && len(b) > 0 {
			exports++
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}).Serve(otlp)

	echo := sdk.NewServer(&sdk.Implementation{Name: "echo", Version: "1"}, nil)
	sdk.AddTool(echo, &sdk.Tool{Name: "ping", Description: "pong"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, struct{}, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "pong"}}}, struct{}{}, nil
	})
	inner := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return echo }, nil)
	up := listen(t)
	go (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tp := r.Header.Get("Traceparent"); tp != "" {
			mu.Lock()
			upstreamTraceparent = append(upstreamTraceparent, tp)
			mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	})}).Serve(up)

	h := start(t, "telemetry: {otlp_endpoint: 'http://"+otlp.Addr().String()+"'}\n", extraServer{id: "echo", url: "http://" + up.Addr().String() + "/mcp"})
	cs := h.connect("assistant", nil, "")
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "echo__ping"}); err != nil {
		t.Fatal(err)
	}
	cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "bank__nope"})

	// Metrics: request counts by agent and tool, stage latencies, audit.
	req, _ := http.NewRequest("GET", h.g.AdminURL()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+h.g.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`gatehouse_requests_total{agent="assistant",method="tools/call",outcome="allow",server="echo",tool="ping"} 1`,
		`gatehouse_decisions_total{code="tool.unknown",layer="core"}`,
		`gatehouse_stage_duration_seconds_count{stage="locks"}`,
		`gatehouse_upstream_duration_seconds_count{server="echo"}`,
		`gatehouse_sessions_active 1`,
		`gatehouse_build_info{`,
		`gatehouse_audit_`,
		`gatehouse_locks_active`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Without a credential, no metrics.
	resp, err = http.Get(h.g.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous scrape: HTTP %d", resp.StatusCode)
	}

	// Traces: the upstream saw a W3C traceparent, and spans were exported.
	mu.Lock()
	tps := append([]string(nil), upstreamTraceparent...)
	mu.Unlock()
	if len(tps) == 0 || !strings.HasPrefix(tps[len(tps)-1], "00-") {
		t.Errorf("upstream traceparent headers: %v", tps)
	}
	h.stop() // flushes spans
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := exports
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no spans exported")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMetricsApprovalsAndDetections checks the gauges and counters that
// other layers feed: the pending-approvals gauge after a challenged call
// (and after its approval), detector hits after reading a document that
// carries an injection, and the authentication stage's latency.
func TestMetricsApprovalsAndDetections(t *testing.T) {
	h := start(t, labConfig(t), labServer(t))
	cs := h.connect("assistant", nil, "")
	ctx := context.Background()
	scrape := func() string { t.Helper(); return scrapeMetrics(t, h) }
	// metric waits up to 5s for a sample line starting with prefix and
	// returns its value.
	metric := func(prefix string, want func(float64) bool) float64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var v float64
			found := false
			for _, line := range strings.Split(scrape(), "\n") {
				if strings.HasPrefix(line, prefix+" ") {
					fmt.Sscan(strings.TrimPrefix(line, prefix+" "), &v)
					found = true
				}
			}
			if found && want(v) {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v (present: %v)", prefix, v, found)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	positive := func(v float64) bool { return v > 0 }

	metric("gatehouse_approvals_pending", func(v float64) bool { return v == 0 })
	if _, e := callErr(t, cs, "bank__send_money", payment(1500)); e == nil || e.Code != -32052 {
		t.Fatalf("challenged call: %v", e)
	}
	metric("gatehouse_approvals_pending", func(v float64) bool { return v == 1 })
	a := pendingFor(t, h, "send_money")
	if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice", "comment": "ok"}); code != http.StatusOK {
		t.Fatalf("approve: HTTP %d", code)
	}
	metric("gatehouse_approvals_pending", func(v float64) bool { return v == 0 })

	if _, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "lab+lab://handbook"}); err != nil {
		t.Fatal(err)
	}
	metric(`gatehouse_detector_hits_total{detector="heuristics",kind="instruction_override",surface="document"}`, positive)
	// The demo inbox carries injected e-mails.
	if _, e := callErr(t, cs, "workspace__read_inbox", map[string]any{}); e != nil {
		t.Fatal(e)
	}
	text := scrape()
	if !strings.Contains(text, `surface="tool_output"`) {
		t.Errorf("no detector hit on tool output:\n%s", grepLines(text, "gatehouse_detector_hits_total"))
	}
	// Arguments are screened too (the call's fate does not matter here).
	callErr(t, cs, "workspace__search_files", map[string]any{"query": injection})
	if text := scrape(); !strings.Contains(text, `surface="tool_input"`) {
		t.Errorf("no detector hit on tool input:\n%s", grepLines(text, "gatehouse_detector_hits_total"))
	}
	metric(`gatehouse_stage_duration_seconds_count{stage="authenticate"}`, positive)
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
