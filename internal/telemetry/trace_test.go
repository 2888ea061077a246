package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/gatehouse/gatehouse/internal/telemetry"
)

const (
	agentTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	agentSpan   = "00f067aa0ba902b7"
	agentParent = "00-" + agentTrace + "-" + agentSpan + "-01"
	// secret and payload stand for what must never reach a span.
	secret  = "Bearer eyJhbGciOiJFZERTQSJ9.s3cret"
	payload = `{"account":"DE89370400440532013000","amount":1000000}`
)

// upstream is a loopback upstream MCP server that records the headers of
// what it receives.
type upstream struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []http.Header
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.got = append(u.got, r.Header.Clone())
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) headers() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got
}

// mediate plays one tools/call through the gateway the way the pipeline
// and the MCP proxy are meant to call telemetry, and returns the trace id
// the audit log would record.
func mediate(t *testing.T, tel *telemetry.T, up *upstream, in http.Header) string {
	t.Helper()
	var traceID string
	h := tel.Middleware("mcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tel.StartRequest(r.Context(), "tools/call", telemetry.Attrs{CorrelationID: "c-1"})
		for _, stage := range []string{"locks", "authorize"} {
			_, s := tel.StartStage(ctx, stage)
			telemetry.End(s, nil)
		}
		uctx, us := tel.StartUpstream(ctx, "bank", "tools/call")
		req, err := http.NewRequestWithContext(uctx, http.MethodPost, up.srv.URL, strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer upstream-credential")
		tel.Inject(uctx, req.Header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		telemetry.End(us, nil)
		telemetry.Annotate(span, telemetry.Attrs{Agent: "payments-agent", Server: "bank", Tool: "transfer", Outcome: telemetry.OutcomeAllow})
		traceID = telemetry.TraceID(ctx)
		telemetry.End(span, nil)
		w.WriteHeader(http.StatusOK)
	}))
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(payload))
	for k, v := range in {
		r.Header[k] = v
	}
	r.Header.Set("Authorization", secret)
	h.ServeHTTP(httptest.NewRecorder(), r)
	return traceID
}

func newTracing(t *testing.T, c *collector, trust bool) *telemetry.T {
	t.Helper()
	tel, err := telemetry.New(telemetry.Config{
		ServiceName: "gatehouse-test", Version: "9.9.9",
		OTLPEndpoint:  c.srv.URL,
		OTLPHeaders:   map[string]string{"X-Collector-Key": "k1"},
		BatchTimeout:  10 * time.Millisecond,
		TrustIncoming: trust,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

func shutdown(t *testing.T, tel *telemetry.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// one returns the only span named name.
func one(t *testing.T, spans map[string][]*tracepb.Span, name string) *tracepb.Span {
	t.Helper()
	if len(spans[name]) != 1 {
		t.Fatalf("got %d spans named %q, want 1 (spans: %v)", len(spans[name]), name, names(spans))
	}
	return spans[name][0]
}

func names(spans map[string][]*tracepb.Span) []string {
	var out []string
	for n := range spans {
		out = append(out, n)
	}
	return out
}

// allowedAttrs are the only span attribute keys telemetry may emit.
var allowedAttrs = map[string]bool{
	"mcp.method.name": true, "gatehouse.agent_id": true, "gatehouse.server": true, "gatehouse.tool": true,
	"gatehouse.stage": true, "gatehouse.outcome": true, "gatehouse.correlation_id": true, "error.type": true,
}

func checkNoLeaks(t *testing.T, spans []*tracepb.Span) {
	t.Helper()
	for _, s := range spans {
		for k, v := range attrs(s) {
			if !allowedAttrs[k] {
				t.Errorf("span %q has attribute %q, which is not on the allowed list", s.GetName(), k)
			}
			for _, bad := range []string{"s3cret", "upstream-credential", "DE89370400440532013000"} {
				if strings.Contains(v, bad) {
					t.Errorf("span %q attribute %q carries %q", s.GetName(), k, bad)
				}
			}
		}
	}
}

func TestTraceTrustedParent(t *testing.T) {
	c := newCollector(t)
	up := newUpstream(t)
	tel := newTracing(t, c, true)
	traceID := mediate(t, tel, up, http.Header{"Traceparent": {agentParent}, "Tracestate": {"vendor=abc"}, "Baggage": {"user=mallory"}})
	shutdown(t, tel)

	spans := c.collected()
	req := one(t, spans, "tools/call")
	if req.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("request span kind = %v, want server", req.GetKind())
	}
	if got := hexID(req.GetTraceId()); got != agentTrace {
		t.Errorf("request span trace id = %s, want the agent's %s", got, agentTrace)
	}
	if got := hexID(req.GetParentSpanId()); got != agentSpan {
		t.Errorf("request span parent = %s, want the agent's span %s", got, agentSpan)
	}
	if traceID != agentTrace {
		t.Errorf("TraceID = %q, want %q", traceID, agentTrace)
	}
	want := map[string]string{"mcp.method.name": "tools/call", "gatehouse.correlation_id": "c-1",
		"gatehouse.agent_id": "payments-agent", "gatehouse.server": "bank", "gatehouse.tool": "transfer", "gatehouse.outcome": "allow"}
	if diff := cmp.Diff(want, attrs(req)); diff != "" {
		t.Errorf("request span attributes (-want +got):\n%s", diff)
	}
	for _, stage := range []string{"locks", "authorize"} {
		s := one(t, spans, stage)
		if !cmp.Equal(s.GetParentSpanId(), req.GetSpanId()) || !cmp.Equal(s.GetTraceId(), req.GetTraceId()) {
			t.Errorf("stage span %s is not a child of the request span", stage)
		}
		if attrs(s)["gatehouse.stage"] != stage {
			t.Errorf("stage span %s attributes = %v", stage, attrs(s))
		}
	}
	upSpan := one(t, spans, "upstream tools/call")
	if upSpan.GetKind() != tracepb.Span_SPAN_KIND_CLIENT || attrs(upSpan)["gatehouse.server"] != "bank" {
		t.Errorf("upstream span: kind %v, attributes %v", upSpan.GetKind(), attrs(upSpan))
	}
	if !cmp.Equal(upSpan.GetParentSpanId(), req.GetSpanId()) {
		t.Error("upstream span is not a child of the request span")
	}
	got := up.headers()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests", len(got))
	}
	wantTP := "00-" + agentTrace + "-" + hexID(upSpan.GetSpanId()) + "-01"
	if tp := got[0].Get("Traceparent"); tp != wantTP {
		t.Errorf("upstream traceparent = %q, want %q", tp, wantTP)
	}
	if ts := got[0].Get("Tracestate"); ts != "vendor=abc" {
		t.Errorf("upstream tracestate = %q, want the trusted caller's", ts)
	}
	if b := got[0].Get("Baggage"); b != "" {
		t.Errorf("the agent's baggage reached the upstream: %q", b)
	}
	checkNoLeaks(t, c.all())
	if len(c.resources) == 0 {
		t.Fatal("no resource")
	}
	res := map[string]string{}
	for _, kv := range c.resources[0].GetAttributes() {
		res[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if res["service.name"] != "gatehouse-test" || res["service.version"] != "9.9.9" {
		t.Errorf("resource = %v", res)
	}
	if h := c.headers[0].Get("X-Collector-Key"); h != "k1" {
		t.Errorf("collector header = %q, want the configured one", h)
	}
}

func TestTraceUntrustedCallerIsLinked(t *testing.T) {
	c := newCollector(t)
	up := newUpstream(t)
	tel := newTracing(t, c, false)
	traceID := mediate(t, tel, up, http.Header{"Traceparent": {agentParent}, "Tracestate": {"vendor=abc"}, "Baggage": {"user=mallory"}})
	shutdown(t, tel)

	var req *tracepb.Span
	for _, s := range c.all() {
		if s.GetKind() == tracepb.Span_SPAN_KIND_SERVER {
			req = s
		}
	}
	if req == nil {
		t.Fatal("no request span")
	}
	tid := hexID(req.GetTraceId())
	if tid == agentTrace || len(req.GetParentSpanId()) != 0 {
		t.Errorf("an untrusted caller chose the trace: trace %s parent %x", tid, req.GetParentSpanId())
	}
	if traceID != tid {
		t.Errorf("TraceID = %q, want the gateway's %q", traceID, tid)
	}
	if len(req.GetLinks()) != 1 || hexID(req.GetLinks()[0].GetTraceId()) != agentTrace || hexID(req.GetLinks()[0].GetSpanId()) != agentSpan {
		t.Errorf("request span links = %v, want one to the caller's span", req.GetLinks())
	}
	h := up.headers()[0]
	if tp := h.Get("Traceparent"); !strings.HasPrefix(tp, "00-"+tid+"-") {
		t.Errorf("upstream traceparent = %q, want the gateway's trace %s", tp, tid)
	}
	if h.Get("Tracestate") != "" || h.Get("Baggage") != "" {
		t.Errorf("the caller's tracestate or baggage reached the upstream: %v", h)
	}
	checkNoLeaks(t, c.all())
}

func TestTracingOff(t *testing.T) {
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trust=%v", trust), func(t *testing.T) {
			tel, err := telemetry.New(telemetry.Config{TrustIncoming: trust})
			if err != nil {
				t.Fatal(err)
			}
			if tel.Tracing() {
				t.Fatal("tracing on without an endpoint")
			}
			up := newUpstream(t)
			traceID := mediate(t, tel, up, http.Header{"Traceparent": {agentParent}})
			tp := up.headers()[0].Get("Traceparent")
			if trust {
				// Passed through unchanged: the gateway adds no span.
				if traceID != agentTrace || tp != agentParent {
					t.Errorf("trusted, tracing off: trace id %q, upstream traceparent %q; want the caller's", traceID, tp)
				}
			} else if traceID != "" || tp != "" {
				t.Errorf("untrusted, tracing off: trace id %q, upstream traceparent %q; want none", traceID, tp)
			}
			ctx := context.Background()
			if got, span := tel.StartRequest(ctx, "tools/call", telemetry.Attrs{}); got != ctx || span.IsRecording() {
				t.Error("StartRequest with tracing off changed the context or recorded")
			}
		})
	}
}

func TestSampledOutStillPropagates(t *testing.T) {
	c := newCollector(t)
	tel, err := telemetry.New(telemetry.Config{OTLPEndpoint: c.srv.URL + "/v1/traces", SampleRatio: 1e-12, BatchTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t)
	traceID := mediate(t, tel, up, nil)
	shutdown(t, tel)
	if n := len(c.all()); n != 0 {
		t.Errorf("%d spans exported at a sample ratio of 1e-12", n)
	}
	tp := up.headers()[0].Get("Traceparent")
	if traceID == "" || !strings.HasPrefix(tp, "00-"+traceID+"-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("sampled out: trace id %q, upstream traceparent %q; want the trace propagated, unsampled", traceID, tp)
	}
}

func TestExportFailureIsCounted(t *testing.T) {
	c := newCollector(t)
	c.setStatus(http.StatusBadRequest) // not retried
	tel := newTracing(t, c, false)
	_, span := tel.StartRequest(context.Background(), "ping", telemetry.Attrs{})
	span.End()
	shutdown(t, tel)
	if c.requests() == 0 {
		t.Fatal("the collector got no export")
	}
	err := testutil.GatherAndCompare(tel.Gatherer(), strings.NewReader(`
# HELP gatehouse_trace_export_failures_total Span batches the OTLP collector did not accept (the spans are lost).
# TYPE gatehouse_trace_export_failures_total counter
gatehouse_trace_export_failures_total 1
# HELP gatehouse_trace_spans_exported_total Spans handed to the OTLP collector successfully.
# TYPE gatehouse_trace_spans_exported_total counter
gatehouse_trace_spans_exported_total 0
`), "gatehouse_trace_export_failures_total", "gatehouse_trace_spans_exported_total")
	if err != nil {
		t.Error(err)
	}
}

func TestEndRecordsErrorKindNotText(t *testing.T) {
	c := newCollector(t)
	tel := newTracing(t, c, false)
	ctx, span := tel.StartRequest(context.Background(), "tools/call", telemetry.Attrs{})
	_, us := tel.StartUpstream(ctx, "bank", "tools/call")
	telemetry.End(us, fmt.Errorf("upstream bank: invalid JSON %s: %w", payload, context.DeadlineExceeded))
	telemetry.Annotate(span, telemetry.Attrs{Outcome: telemetry.OutcomeError})
	span.End()
	shutdown(t, tel)
	for _, s := range c.all() {
		if s.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("span %q (kind %v) status = %v, want error", s.GetName(), s.GetKind(), s.GetStatus())
		}
		if strings.Contains(s.GetStatus().GetMessage(), "DE89") {
			t.Errorf("span status carries the payload: %q", s.GetStatus().GetMessage())
		}
		if s.GetKind() == tracepb.Span_SPAN_KIND_CLIENT && attrs(s)["error.type"] != "timeout" {
			t.Errorf("upstream span error.type = %q, want timeout", attrs(s)["error.type"])
		}
	}
	checkNoLeaks(t, c.all())
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []telemetry.Config{
		{SampleRatio: -0.1},
		{SampleRatio: 1.5},
		{OTLPEndpoint: "collector:4318"},
		{OTLPEndpoint: "grpc://collector:4317"},
		{OTLPEndpoint: "http://user:pw@collector:4318"},
		{OTLPEndpoint: "http://"},
	} {
		if _, err := telemetry.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

type kindError string

func (k kindError) Error() string     { return "kind " + string(k) }
func (k kindError) ErrorKind() string { return string(k) }

func TestErrorKind(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, dialErr := net.DialTimeout("tcp", addr, time.Second)
	if dialErr == nil {
		t.Skip("a closed port accepted a connection")
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("upstream x: %w", context.Canceled), "cancelled"},
		{fmt.Errorf("upstream x: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("upstream x: unreachable: %w", dialErr), "connect"},
		{fmt.Errorf("wrapped: %w", kindError("http")), "http"},
		{kindError("protocol"), "protocol"},
		{kindError("made-up"), "other"},
		{errors.New("boom"), "other"},
	} {
		if got := telemetry.ErrorKind(tc.err); got != tc.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestTraceID(t *testing.T) {
	if got := telemetry.TraceID(context.Background()); got != "" {
		t.Errorf("TraceID of an empty context = %q", got)
	}
	tid, _ := trace.TraceIDFromHex(agentTrace)
	sid, _ := trace.SpanIDFromHex(agentSpan)
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	if got := telemetry.TraceID(ctx); got != agentTrace {
		t.Errorf("TraceID = %q, want %q", got, agentTrace)
	}
}
