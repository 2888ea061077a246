package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// spanSink is a loopback OTLP/HTTP traces receiver that decodes the spans.
type spanSink struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (s *spanSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			s.spans = append(s.spans, ss.GetSpans()...)
		}
	}
	s.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func spanAttrs(s *tracepb.Span) map[string]string {
	m := map[string]string{}
	for _, kv := range s.GetAttributes() {
		m[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	return m
}

// TestTraceSpansPipeline collects the gateway's spans over OTLP/HTTP for a
// side-effecting call and checks the trace's shape: a server span for the
// request, a child span per pipeline stage (the write-ahead intent and
// outcome records included), a client span for the upstream call whose
// W3C traceparent the upstream server received, and the same trace id in
// the call's audit records.
func TestTraceSpansPipeline(t *testing.T) {
	sink := &spanSink{}
	otlp := listen(t)
	go (&http.Server{Handler: sink}).Serve(otlp)

	var mu sync.Mutex
	var traceparents []string
	echo := sdk.NewServer(&sdk.Implementation{Name: "echo", Version: "1"}, nil)
	sdk.AddTool(echo, &sdk.Tool{Name: "write", Description: "writes"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, struct{}, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "done"}}}, struct{}{}, nil
	})
	inner := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return echo }, nil)
	up := listen(t)
	go (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte(`"tools/call"`)) {
			mu.Lock()
			traceparents = append(traceparents, r.Header.Get("Traceparent"))
			mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	})}).Serve(up)

	h := start(t, "telemetry: {otlp_endpoint: 'http://"+otlp.Addr().String()+"'}\n",
		extraServer{id: "echo", url: "http://" + up.Addr().String() + "/mcp", tools: "{write: {labels: [external_sink]}}"})
	cs := h.connect("assistant", nil, "")
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "echo__write"}); err != nil {
		t.Fatal(err)
	}
	evs := h.events(audit.Filter{Agent: "assistant", Tool: "write"}, 2)
	if len(evs) < 2 {
		t.Fatalf("%d audit records for the call, want intent and outcome", len(evs))
	}
	h.stop() // flushes the spans

	sink.mu.Lock()
	spans := append([]*tracepb.Span(nil), sink.spans...)
	sink.mu.Unlock()
	var req *tracepb.Span
	for _, s := range spans {
		if s.GetName() == "tools/call" && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER && spanAttrs(s)["gatehouse.tool"] == "write" {
			req = s
		}
	}
	if req == nil {
		var names []string
		for _, s := range spans {
			names = append(names, s.GetName())
		}
		t.Fatalf("no server span for the call among %d spans: %v", len(spans), names)
	}
	trace := hex.EncodeToString(req.GetTraceId())
	a := spanAttrs(req)
	if a["gatehouse.agent_id"] != "assistant" || a["gatehouse.server"] != "echo" || a["gatehouse.outcome"] != "allow" {
		t.Errorf("request span attributes %v", a)
	}
	if md, _ := evs[0]["metadata"].(map[string]any); md == nil || a["gatehouse.correlation_id"] != md["correlation_uid"] {
		t.Errorf("request span correlation id %q, want the audit records' %v", a["gatehouse.correlation_id"], md)
	}
	stages := map[string]bool{}
	var upstream *tracepb.Span
	for _, s := range spans {
		if !bytes.Equal(s.GetTraceId(), req.GetTraceId()) || !bytes.Equal(s.GetParentSpanId(), req.GetSpanId()) {
			continue
		}
		if st := spanAttrs(s)["gatehouse.stage"]; st != "" {
			stages[st] = true
		}
		if strings.HasPrefix(s.GetName(), "upstream ") && s.GetKind() == tracepb.Span_SPAN_KIND_CLIENT {
			upstream = s
		}
	}
	for _, want := range []string{"locks", "record_intent", "record_outcome"} {
		if !stages[want] {
			t.Errorf("no %s stage span under the request span; stages: %v", want, stages)
		}
	}
	if len(stages) < 4 {
		t.Errorf("only %d stage spans under the request span: %v", len(stages), stages)
	}
	if upstream == nil {
		t.Fatal("no upstream client span under the request span")
	}
	mu.Lock()
	defer mu.Unlock()
	want := "00-" + trace + "-" + hex.EncodeToString(upstream.GetSpanId()) + "-01"
	if len(traceparents) != 1 || traceparents[0] != want {
		t.Errorf("upstream traceparent %q, want %q", traceparents, want)
	}
	for _, ev := range evs {
		if got := unmapped(ev, "trace_id"); got != trace {
			t.Errorf("audit record (phase %v) trace id %v, want %s", unmapped(ev, "phase"), got, trace)
		}
	}
}
