package telemetry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Span attribute keys: the only attributes telemetry puts on spans.
const (
	AttrMethod        = attribute.Key("mcp.method.name")
	AttrAgent         = attribute.Key("gatehouse.agent_id")
	AttrServer        = attribute.Key("gatehouse.server")
	AttrTool          = attribute.Key("gatehouse.tool")
	AttrStage         = attribute.Key("gatehouse.stage")
	AttrOutcome       = attribute.Key("gatehouse.outcome")
	AttrCorrelationID = attribute.Key("gatehouse.correlation_id")
	AttrErrorKind     = attribute.Key("error.type")
)

// Upstream error kinds (the kind label of gatehouse_upstream_errors_total
// and the error.type of failed spans).
const (
	KindTimeout   = "timeout"   // a deadline passed
	KindConnect   = "connect"   // the server could not be reached
	KindCancelled = "cancelled" // the caller went away
	KindHTTP      = "http"      // an unexpected HTTP status
	KindProtocol  = "protocol"  // an answer that is not valid MCP
	KindOther     = "other"
)

var kinds = newOneOf(KindTimeout, KindConnect, KindCancelled, KindHTTP, KindProtocol, KindOther)

// ErrorKind classifies err into one of the Kind constants without looking
// at its text: context errors, network timeouts and dial failures are
// recognised through the error chain, and an error in the chain with a
// method ErrorKind() string names its own kind (one of the constants;
// anything else reads "other"). It returns "" for nil.
func ErrorKind(err error) string {
	if err == nil {
		return ""
	}
	var k interface{ ErrorKind() string }
	if errors.As(err, &k) {
		return kinds.get(k.ErrorKind())
	}
	switch {
	case errors.Is(err, context.Canceled):
		return KindCancelled
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindTimeout
	}
	var oe *net.OpError
	var de *net.DNSError
	if (errors.As(err, &oe) && oe.Op == "dial") || errors.As(err, &de) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH) {
		return KindConnect
	}
	return KindOther
}

// noopSpan is returned by the span starters when tracing is off.
var noopSpan = trace.SpanFromContext(context.Background())

// linkKey holds an untrusted caller's span context, to be linked from the
// next request span.
type linkKey struct{}

// Extract reads the caller's W3C trace context (traceparent, tracestate)
// from h. With Config.TrustIncoming it becomes the parent of the request
// span started from the returned context (and is propagated upstream even
// when tracing is off); otherwise, with tracing on, it is kept to be
// linked from the request span; otherwise it is ignored. Baggage is never
// read. Without a traceparent header Extract returns ctx at no cost.
func (t *T) Extract(ctx context.Context, h http.Header) context.Context {
	if t == nil || len(h["Traceparent"]) == 0 {
		return ctx
	}
	if t.cfg.TrustIncoming {
		return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(h))
	}
	if t.tracer == nil {
		return ctx
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(h)))
	if !sc.IsValid() {
		return ctx
	}
	return context.WithValue(ctx, linkKey{}, sc)
}

// Attrs are the request attributes a span may carry; empty fields are
// left out. There is deliberately no field for arguments, results,
// tokens, session ids or messages.
type Attrs struct {
	Agent         string
	Server        string
	Tool          string
	CorrelationID string
	// Outcome is one of the Outcome constants; OutcomeError also marks the
	// span as failed.
	Outcome string
}

func (a *Attrs) appendTo(kv []attribute.KeyValue) []attribute.KeyValue {
	add := func(k attribute.Key, v string) {
		if v != "" {
			kv = append(kv, k.String(attrValue(v)))
		}
	}
	add(AttrAgent, a.Agent)
	add(AttrServer, a.Server)
	add(AttrTool, a.Tool)
	add(AttrCorrelationID, a.CorrelationID)
	if a.Outcome != "" {
		kv = append(kv, AttrOutcome.String(outcomes.get(a.Outcome)))
	}
	return kv
}

// attrValue bounds an attribute value: valid UTF-8, at most 256 bytes.
func attrValue(v string) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	if len(v) <= 256 {
		return v
	}
	v = v[:256]
	for !utf8.ValidString(v) { // only the cut rune can be broken
		v = v[:len(v)-1]
	}
	return v
}

// StartRequest starts the server span of one incoming MCP request (call
// it once per JSON-RPC request, after Extract). The span is named after
// the method. End it with End; add what becomes known later (agent,
// target, outcome) with Annotate. With tracing off it returns ctx and a
// no-op span.
func (t *T) StartRequest(ctx context.Context, method string, a Attrs) (context.Context, trace.Span) {
	if t == nil || t.tracer == nil {
		return ctx, noopSpan
	}
	name := methods.get(method)
	if name == "" {
		name = "request"
	}
	kv := a.appendTo(append(make([]attribute.KeyValue, 0, 6), AttrMethod.String(name)))
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(kv...)}
	if sc, ok := ctx.Value(linkKey{}).(trace.SpanContext); ok {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	ctx, span := t.tracer.Start(ctx, name, opts...)
	if a.Outcome == OutcomeError {
		span.SetStatus(codes.Error, OutcomeError)
	}
	return ctx, span
}

// StartStage starts the span of one pipeline stage, a child of the request
// span in ctx. Time the stage with ObserveStage too: spans are sampled,
// the histogram is not.
func (t *T) StartStage(ctx context.Context, stage string) (context.Context, trace.Span) {
	if t == nil || t.tracer == nil {
		return ctx, noopSpan
	}
	stage = cleanLabel(stage)
	return t.tracer.Start(ctx, stage, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrStage.String(stage)))
}

// StartUpstream starts the client span of a call to an upstream server,
// named "upstream METHOD".
// Inject, called with the returned context, propagates this span to the
// server.
func (t *T) StartUpstream(ctx context.Context, server, method string) (context.Context, trace.Span) {
	if t == nil || t.tracer == nil {
		return ctx, noopSpan
	}
	name := methods.get(method)
	return t.tracer.Start(ctx, "upstream "+name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(AttrMethod.String(name), AttrServer.String(attrValue(server))))
}

// Annotate adds a's non-empty fields to span.
func Annotate(span trace.Span, a Attrs) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(a.appendTo(make([]attribute.KeyValue, 0, 5))...)
	if a.Outcome == OutcomeError {
		span.SetStatus(codes.Error, OutcomeError)
	}
}

// AnnotateContext is Annotate on the span ctx carries: the request span,
// for the context StartRequest returned or one derived from it outside any
// stage.
func AnnotateContext(ctx context.Context, a Attrs) { Annotate(trace.SpanFromContext(ctx), a) }

// End ends span; a non-nil err marks it failed with the error's kind
// (ErrorKind), never its text.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		k := ErrorKind(err)
		span.SetAttributes(AttrErrorKind.String(k))
		span.SetStatus(codes.Error, k)
	}
	span.End()
}

// Inject writes the W3C trace context of ctx (traceparent, tracestate)
// into h, the headers of an upstream request; it has the signature of
// mcp.Config.InjectHeaders. Baggage is written only if the gateway itself
// put some in ctx.
func (t *T) Inject(ctx context.Context, h http.Header) {
	if t == nil || (t.tracer == nil && !t.cfg.TrustIncoming) {
		// Tracing off and no caller context kept: nothing to propagate.
		return
	}
	t.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// TraceID returns the trace id of ctx in hex, or "" when ctx carries no
// trace (the audit log's trace_id).
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// Middleware wraps the handler of a listener ("mcp", "admin"): it extracts
// the caller's trace context into the request context (Extract) and counts
// responses by status code in gatehouse_http_responses_total{listener}.
// The response writer it passes on still implements http.Flusher and
// unwraps for http.ResponseController.
func (t *T) Middleware(listener string, next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ctx := t.Extract(r.Context(), r.Header); ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		sw := &statusWriter{ResponseWriter: w, t: t, listener: listener}
		next.ServeHTTP(sw, r)
		if !sw.counted {
			sw.count(http.StatusOK)
		}
	})
}

// statusWriter counts the status of a response when its header is
// written, so long-lived streams are counted when they start.
type statusWriter struct {
	http.ResponseWriter
	t        *T
	listener string
	counted  bool
}

func (w *statusWriter) count(code int) {
	if !w.counted {
		w.counted = true
		w.t.observeHTTP(w.listener, code)
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.count(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.count(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	w.count(http.StatusOK)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// exporter counts exports and logs failures (at most once a minute) on
// the gateway's logger instead of OpenTelemetry's global error handler.
type exporter struct {
	sdktrace.SpanExporter
	t *T

	mu      sync.Mutex
	logged  time.Time
	dropped int
}

func (e *exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		e.t.m.exported.Add(float64(len(spans)))
		return nil
	}
	e.t.m.exportFails.Inc()
	e.mu.Lock()
	e.dropped += len(spans)
	now := time.Now()
	if now.Sub(e.logged) >= time.Minute {
		e.t.log.Warn("exporting spans failed; spans were dropped", "spans", e.dropped, "err", err)
		e.logged, e.dropped = now, 0
	}
	e.mu.Unlock()
	// Handled here: returning err would log it again through the global
	// OpenTelemetry error handler, outside the gateway's logs.
	return nil
}
