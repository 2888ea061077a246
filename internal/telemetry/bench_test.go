package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/telemetry"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

func newBench(b *testing.B, cfg telemetry.Config) *telemetry.T {
	b.Helper()
	tel, err := telemetry.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func BenchmarkObserveRequest(b *testing.B) {
	tel := newBench(b, telemetry.Config{})
	b.ReportAllocs()
	for b.Loop() {
		tel.ObserveRequest("tools/call", "bank", "transfer", "payments-agent", telemetry.OutcomeAllow, time.Millisecond)
	}
}

func BenchmarkObserveRequestParallel(b *testing.B) {
	tel := newBench(b, telemetry.Config{})
	agents := []string{"a1", "a2", "a3", "a4"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tel.ObserveRequest("tools/call", "bank", "transfer", agents[i%4], telemetry.OutcomeAllow, time.Millisecond)
			i++
		}
	})
}

// BenchmarkObserveRequestOverflow is the cost of a label combination
// past the series bound (an abusive stream of new values).
func BenchmarkObserveRequestOverflow(b *testing.B) {
	tel := newBench(b, telemetry.Config{MaxSeries: 1})
	tel.ObserveRequest("tools/call", "bank", "transfer", "first", telemetry.OutcomeAllow, 0)
	b.ReportAllocs()
	for b.Loop() {
		tel.ObserveRequest("tools/call", "bank", "transfer", "late", telemetry.OutcomeAllow, time.Millisecond)
	}
}

func BenchmarkObserveStage(b *testing.B) {
	tel := newBench(b, telemetry.Config{})
	b.ReportAllocs()
	for b.Loop() {
		tel.ObserveStage("authorize", 3*time.Microsecond)
	}
}

func BenchmarkObserveVerdict2Reasons(b *testing.B) {
	tel := newBench(b, telemetry.Config{})
	v := verdict.Deny(verdict.Execution, "policy.forbid", "no").Combine(verdict.Deny(verdict.Semantic, "semantic.injection", "no"))
	b.ReportAllocs()
	for b.Loop() {
		tel.ObserveVerdict(v)
	}
}

func BenchmarkObserveUpstream(b *testing.B) {
	tel := newBench(b, telemetry.Config{})
	b.ReportAllocs()
	for b.Loop() {
		tel.ObserveUpstream("bank", 20*time.Millisecond, nil)
	}
}

// spans runs the span calls of one request: extract, request span, three
// stages, the upstream span with injection, annotate, end.
func spans(tel *telemetry.T, ctx context.Context, in, out http.Header) {
	ctx = tel.Extract(ctx, in)
	ctx, span := tel.StartRequest(ctx, "tools/call", telemetry.Attrs{CorrelationID: "c-1"})
	for _, stage := range [...]string{"locks", "authorize", "limits"} {
		_, s := tel.StartStage(ctx, stage)
		telemetry.End(s, nil)
	}
	uctx, us := tel.StartUpstream(ctx, "bank", "tools/call")
	tel.Inject(uctx, out)
	telemetry.End(us, nil)
	telemetry.Annotate(span, telemetry.Attrs{Agent: "payments-agent", Server: "bank", Tool: "transfer", Outcome: telemetry.OutcomeAllow})
	telemetry.End(span, nil)
}

func BenchmarkSpansOff(b *testing.B) {
	tel := newBench(b, telemetry.Config{})
	in, out := http.Header{}, http.Header{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		spans(tel, ctx, in, out)
	}
}

func BenchmarkSpansNil(b *testing.B) {
	var tel *telemetry.T
	in, out := http.Header{}, http.Header{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		spans(tel, ctx, in, out)
	}
}

// BenchmarkSpansOn records and exports (to a loopback receiver that
// discards) all five spans of a request.
func BenchmarkSpansOn(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer sink.Close()
	tel := newBench(b, telemetry.Config{OTLPEndpoint: sink.URL})
	in := http.Header{"Traceparent": {agentParent}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		spans(tel, ctx, in, http.Header{})
	}
}

func BenchmarkSpansOnSampledOut(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer sink.Close()
	tel := newBench(b, telemetry.Config{OTLPEndpoint: sink.URL, SampleRatio: 1e-9})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		spans(tel, ctx, http.Header{}, http.Header{})
	}
}

func BenchmarkLogHandler(b *testing.B) {
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(io.Discard, nil)))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		log.WarnContext(ctx, "upstream request failed", "server", "bank", "method", "tools/call", "correlation_id", "c-1", "err", io.EOF)
	}
}

func BenchmarkLogPlain(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		log.WarnContext(ctx, "upstream request failed", "server", "bank", "method", "tools/call", "correlation_id", "c-1", "err", io.EOF)
	}
}
