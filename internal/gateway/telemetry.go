package gateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/telemetry"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// openTelemetry builds metrics and tracing from the telemetry section.
func (g *Gateway) openTelemetry() error {
	tc := g.cfg.Telemetry
	headers := map[string]string{}
	for name, file := range tc.OTLPHeaderFiles {
		v, err := g.cfg.ReadSecret(file)
		if err != nil {
			return err
		}
		headers[name] = v
	}
	t, err := telemetry.New(telemetry.Config{ServiceName: tc.ServiceName, Version: Version, OTLPEndpoint: tc.OTLPEndpoint,
		OTLPHeaders: headers, SampleRatio: tc.SampleRatio, TrustIncoming: tc.TrustIncomingTraceContext, MaxSeries: tc.MaxSeries, Logger: g.log})
	if err != nil {
		return err
	}
	g.tel = t
	g.registerer = t.Registerer()
	g.controlFailed = g.controlFailures()
	g.closers = append(g.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return t.Shutdown(ctx)
	})
	if tc.MetricsTokenFile != "" {
		if g.metricsToken, err = g.cfg.ReadSecret(tc.MetricsTokenFile); err != nil {
			return err
		}
	}
	return nil
}

// controlFailuresHelp is the help text of gatehouse_control_failures_total,
// which the lock and limits packages register too (the first registration
// wins, the others share it); it must be identical everywhere.
const controlFailuresHelp = "Requests that a control could not decide because a dependency failed, by control and fail mode (closed: refused, open: allowed)."

// controlFailures returns the function that counts a request a control
// could not decide in gatehouse_control_failures_total{control, fail_mode}:
// the pipeline's failures (a stage whose check failed, "flow", "screen";
// always closed, pipeline.Config.Failed) and the semantic layer's failed
// detectors ("semantic:<detector>", in the detector's fail mode). Locks
// and limits count their own dependency failures there under their own
// control names.
func (g *Gateway) controlFailures() func(control, failMode string) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatehouse_control_failures_total", Help: controlFailuresHelp},
		[]string{"control", "fail_mode"})
	if g.registerer != nil {
		if err := g.registerer.Register(c); err != nil {
			// Already registered by locks or limits: share theirs.
			var are prometheus.AlreadyRegisteredError
			ex, ok := c, false
			if errors.As(err, &are) {
				ex, ok = are.ExistingCollector.(*prometheus.CounterVec)
			}
			if !ok {
				g.log.Warn("registering gatehouse_control_failures_total", "err", err)
			} else {
				c = ex
			}
		}
	}
	return func(control, failMode string) { c.WithLabelValues(control, failMode).Inc() }
}

// metricsHandler serves /metrics to the admin credential or, when one is
// configured, the scrape credential.
func (g *Gateway) metricsHandler() http.Handler {
	h := g.tel.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ok := g.checkAdmin(r) || g.metricsToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(g.metricsToken)) == 1
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse-metrics"`)
			writeJSON(w, http.StatusUnauthorized, apiError{"metrics credential required"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// observer adapts telemetry to the MCP proxy and the pipeline.
type observer struct{ t *telemetry.T }

func (o observer) StartRequest(ctx context.Context, method, agent string) (context.Context, func(string)) {
	ctx, span := o.t.StartRequest(ctx, method, telemetry.Attrs{Agent: agent})
	return ctx, func(outcome string) {
		telemetry.Annotate(span, telemetry.Attrs{Outcome: outcome})
		telemetry.End(span, nil)
	}
}

func (o observer) StartUpstream(ctx context.Context, server, method string) (context.Context, func(error)) {
	start := time.Now()
	ctx, span := o.t.StartUpstream(ctx, server, method)
	return ctx, func(err error) {
		d := time.Since(start)
		o.t.ObserveUpstream(server, d, err)
		o.t.ObserveStage(telemetry.StageUpstream, d)
		telemetry.End(span, err)
	}
}

func (o observer) SessionsChanged(delta int) { o.t.AddSessions(delta) }

func (o observer) StartStage(ctx context.Context, stage string) (context.Context, func(error)) {
	start := time.Now()
	ctx, span := o.t.StartStage(ctx, stage)
	return ctx, func(err error) {
		o.t.ObserveStage(stage, time.Since(start))
		telemetry.End(span, err)
	}
}

// measured wraps the pipeline as the proxy's Mediator and counts every
// request by outcome; it also stamps requests with their trace id for the
// audit log.
type measured struct {
	p *pipeline.Pipeline
	t *telemetry.T
}

func (m measured) Admit(ctx context.Context, r *pipeline.Request) verdict.Verdict {
	r.TraceID = telemetry.TraceID(ctx)
	// The request span names what the proxy resolved, and the correlation
	// id that finds the request's records in the audit log.
	telemetry.AnnotateContext(ctx, telemetry.Attrs{Server: r.Server, Tool: r.Target, CorrelationID: r.ID})
	start := time.Now()
	v := m.p.Admit(ctx, r)
	m.t.ObserveVerdict(v)
	if v.Outcome != verdict.Allow {
		m.t.ObserveRequest(r.Method, r.Server, r.Target, agentOf(r), v.Outcome.String(), time.Since(start))
	}
	return v
}

func (m measured) Complete(ctx context.Context, r *pipeline.Request, o *pipeline.Outcome) {
	sctx, end := observer{m.t}.StartStage(ctx, telemetry.StageRecordOutcome)
	m.p.Complete(sctx, r, o)
	end(nil)
	outcome := telemetry.OutcomeAllow
	if o.Status == "upstream_error" || o.Status == "cancelled" {
		outcome = telemetry.OutcomeError
	}
	m.t.ObserveRequest(r.Method, r.Server, r.Target, agentOf(r), outcome, o.Duration)
}

func (m measured) Visible(ctx context.Context, r *pipeline.Request) bool { return m.p.Visible(ctx, r) }

func (m measured) Screen(ctx context.Context, r *pipeline.Request, o *pipeline.Outcome) verdict.Verdict {
	v := m.p.Screen(ctx, r, o)
	if v.Outcome != verdict.Allow {
		m.t.ObserveVerdict(v)
	}
	return v
}

func (m measured) Refuse(ctx context.Context, r *pipeline.Request, v verdict.Verdict) {
	r.TraceID = telemetry.TraceID(ctx)
	m.p.Refuse(ctx, r, v)
	m.t.ObserveVerdict(v)
	m.t.ObserveRequest(r.Method, r.Server, r.Target, agentOf(r), v.Outcome.String(), 0)
}

func agentOf(r *pipeline.Request) string {
	if r.Caller == nil {
		return ""
	}
	return r.Caller.Agent
}
