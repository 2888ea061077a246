package telemetry_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse/gatehouse/internal/telemetry"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Example shows the calls the gateway makes for one tools/call, in the
// order the pipeline and the MCP proxy make them.
func Example() {
	// Composition root: one T for the process.
	tel, err := telemetry.New(telemetry.Config{
		Version: "0.1.0",
		// OTLPEndpoint: "http://otel-collector:4318", // tracing on
		Logger: slog.New(telemetry.LogHandler(slog.NewJSONHandler(os.Stderr, nil))),
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	admin := http.NewServeMux()
	admin.Handle("GET /metrics", tel.Handler())

	// The MCP listener's handler, wrapped once.
	mcp := tel.Middleware("mcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// One JSON-RPC request.
		ctx, span := tel.StartRequest(r.Context(), "tools/call", telemetry.Attrs{CorrelationID: "c-42"})
		traceID := telemetry.TraceID(ctx) // for pipeline.Request.TraceID and the audit log
		_ = traceID

		// Each pipeline stage.
		for _, stage := range []string{"locks", "authorize"} {
			t0 := time.Now()
			_, s := tel.StartStage(ctx, stage)
			v := verdict.Verdict{} // stage.Check(sctx, r)
			tel.ObserveStage(stage, time.Since(t0))
			tel.ObserveVerdict(v)
			telemetry.End(s, nil)
		}

		// The upstream call; mcp.Config.InjectHeaders = tel.Inject puts the
		// traceparent on the upstream request.
		t0 := time.Now()
		_, us := tel.StartUpstream(ctx, "bank", "tools/call")
		var upErr error // the call's transport error
		tel.ObserveUpstream("bank", time.Since(t0), upErr)
		tel.ObserveStage(telemetry.StageUpstream, time.Since(t0))
		telemetry.End(us, upErr)

		// The request's end.
		a := telemetry.Attrs{Agent: "payments-agent", Server: "bank", Tool: "transfer", Outcome: telemetry.OutcomeAllow}
		telemetry.Annotate(span, a)
		telemetry.End(span, nil)
		tel.ObserveRequest("tools/call", a.Server, a.Tool, a.Agent, a.Outcome, time.Since(start))
	}))
	mcp.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader("{}")))

	n, _ := testutil.GatherAndCount(tel.Gatherer(), "gatehouse_requests_total", "gatehouse_http_responses_total")
	fmt.Println("series:", n)
	// Output: series: 2
}
