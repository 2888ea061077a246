package gateway_test

import (
	"context"
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
