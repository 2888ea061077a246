package telemetry

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Request outcomes, the outcome label of gatehouse_requests_total.
const (
	// OutcomeAllow: the request was admitted and the upstream answered
	// (even with a JSON-RPC or tool error: the gateway's part succeeded).
	OutcomeAllow = "allow"
	// OutcomeChallenge: the request was held for human approval.
	OutcomeChallenge = "challenge"
	// OutcomeBlock: the request was refused (by a stage, the transport or
	// a failed write-ahead record).
	OutcomeBlock = "block"
	// OutcomeError: the request was admitted but the upstream call failed
	// (unreachable, timed out, cancelled, invalid answer).
	OutcomeError = "error"
)

// Stage names for StartStage and ObserveStage outside the pipeline's own
// stages (which use their Stage.Name()).
const (
	StageAuthenticate  = "authenticate"
	StageRecordIntent  = "record_intent"
	StageUpstream      = "upstream"
	StageScreenOutput  = "screen_output"
	StageRecordOutcome = "record_outcome"
)

var (
	outcomes = newOneOf(OutcomeAllow, OutcomeChallenge, OutcomeBlock, OutcomeError)
	layers   = newOneOf("", string(verdict.Core), string(verdict.Identity), string(verdict.Semantic),
		string(verdict.Execution), string(verdict.Governance), string(verdict.Audit))
	// methods are the MCP methods of every supported protocol version and
	// the HTTP methods the transport refuses at the HTTP level; anything
	// else (an agent can send any string) is "other".
	methods = newOneOf("",
		"initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get",
		"resources/list", "resources/templates/list", "resources/read", "resources/subscribe",
		"resources/unsubscribe", "completion/complete", "logging/setLevel", "roots/list",
		"sampling/createMessage", "elicitation/create", "server/discover", "subscriptions/listen",
		"tasks/get", "tasks/list", "tasks/result", "tasks/cancel",
		"notifications/initialized", "notifications/cancelled", "notifications/progress",
		"notifications/roots/list_changed",
		"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS")
	// statusCodes holds the label values of HTTP status codes 100..599.
	statusCodes [600]string
)

func init() {
	for c := 100; c < len(statusCodes); c++ {
		statusCodes[c] = strconv.Itoa(c)
	}
}

// Histogram buckets, in seconds.
var (
	// stageBuckets span a cached check (µs) to a remote detector or a
	// durable commit under load (s).
	stageBuckets = []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
		.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// callBuckets span a local answer (100 µs) to the default upstream
	// timeout (60 s).
	callBuckets = []float64{1e-4, 2.5e-4, 5e-4, .001, .0025, .005, .01, .025, .05, .1, .25, .5,
		1, 2.5, 5, 10, 30, 60}
)

// metrics are the request metrics of the gateway.
type metrics struct {
	overflow *prometheus.CounterVec

	requestsVec   *prometheus.CounterVec
	requestDurVec *prometheus.HistogramVec
	decisionsVec  *prometheus.CounterVec
	stageVec      *prometheus.HistogramVec
	upstreamVec   *prometheus.HistogramVec
	upErrorsVec   *prometheus.CounterVec
	detectorVec   *prometheus.CounterVec
	httpVec       *prometheus.CounterVec

	requests    *series[requestChildren]     // method, server, tool, agent, outcome
	decisions   *series[prometheus.Counter]  // layer, code
	stage       *series[prometheus.Observer] // stage
	upstream    *series[prometheus.Observer] // server
	upErrors    *series[prometheus.Counter]  // server, kind
	detector    *series[prometheus.Counter]  // detector, kind, surface
	http        *series[prometheus.Counter]  // listener, code
	sessions    prometheus.Gauge
	approvals   prometheus.Gauge
	exported    prometheus.Counter
	exportFails prometheus.Counter
}

func newMetrics(max int) *metrics {
	m := &metrics{
		overflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_telemetry_series_overflow_total",
			Help: "Observations whose label values were replaced by \"other\" because the metric reached its series bound (telemetry.max_series), by metric."},
			[]string{"metric"}),
		requestsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_requests_total",
			Help: "Mediated requests by MCP method, upstream server, tool, agent and outcome (allow, challenge, block, error)."},
			[]string{"method", "server", "tool", "agent", "outcome"}),
		requestDurVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_request_duration_seconds",
			Help:    "Time from receiving a request to answering it, upstream call included, by MCP method and outcome.",
			Buckets: callBuckets},
			[]string{"method", "outcome"}),
		decisionsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_decisions_total",
			Help: "Reasons given in verdicts, by layer and reason code (a refused request counts once per reason)."},
			[]string{"layer", "code"}),
		stageVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_stage_duration_seconds",
			Help:    "Time spent in each pipeline stage.",
			Buckets: stageBuckets},
			[]string{"stage"}),
		upstreamVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_upstream_duration_seconds",
			Help:    "Time of upstream calls, failed ones included, by upstream server.",
			Buckets: callBuckets},
			[]string{"server"}),
		upErrorsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_upstream_errors_total",
			Help: "Failed upstream calls by upstream server and kind (timeout, connect, cancelled, http, protocol, other)."},
			[]string{"server", "kind"}),
		detectorVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_detector_hits_total",
			Help: "Semantic findings by detector, finding kind and surface (prompt, tool_input, tool_output, ...)."},
			[]string{"detector", "kind", "surface"}),
		httpVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_http_responses_total",
			Help: "HTTP responses by listener and status code (401: authentication failures)."},
			[]string{"listener", "code"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_sessions_active",
			Help: "Open MCP sessions."}),
		approvals: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_approvals_pending",
			Help: "Approval requests waiting for a human decision."}),
		exported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_trace_spans_exported_total",
			Help: "Spans handed to the OTLP collector successfully."}),
		exportFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_trace_export_failures_total",
			Help: "Span batches the OTLP collector did not accept (the spans are lost)."}),
	}
	counter := func(v *prometheus.CounterVec) func(...string) prometheus.Counter { return v.WithLabelValues }
	observer := func(v *prometheus.HistogramVec) func(...string) prometheus.Observer { return v.WithLabelValues }
	m.requests = newSeries("gatehouse_requests_total", func(lvs ...string) requestChildren {
		return requestChildren{m.requestsVec.WithLabelValues(lvs...), m.requestDurVec.WithLabelValues(lvs[0], lvs[4])}
	}, []bool{false, true, true, true, false}, max, m.overflow)
	m.decisions = newSeries("gatehouse_decisions_total", counter(m.decisionsVec), []bool{false, true}, max, m.overflow)
	m.stage = newSeries("gatehouse_stage_duration_seconds", observer(m.stageVec), []bool{true}, max, m.overflow)
	m.upstream = newSeries("gatehouse_upstream_duration_seconds", observer(m.upstreamVec), []bool{true}, max, m.overflow)
	m.upErrors = newSeries("gatehouse_upstream_errors_total", counter(m.upErrorsVec), []bool{true, false}, max, m.overflow)
	m.detector = newSeries("gatehouse_detector_hits_total", counter(m.detectorVec), []bool{true, true, true}, max, m.overflow)
	m.http = newSeries("gatehouse_http_responses_total", counter(m.httpVec), []bool{true, false}, max, m.overflow)
	return m
}

// requestChildren are the series one request updates, looked up together.
type requestChildren struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.overflow, m.requestsVec, m.requestDurVec, m.decisionsVec, m.stageVec,
		m.upstreamVec, m.upErrorsVec, m.detectorVec, m.httpVec, m.sessions, m.approvals, m.exported, m.exportFails}
}

// ObserveRequest counts one finished request and its duration: method is
// the MCP method, server and tool the upstream target ("" when none),
// agent the authenticated agent id ("" when unauthenticated) and outcome
// one of the Outcome constants. Pass only values the gateway resolved
// (a configured agent, a known tool), never raw input from the caller.
func (t *T) ObserveRequest(method, server, tool, agent, outcome string, d time.Duration) {
	if t == nil {
		return
	}
	method, outcome = methods.get(method), outcomes.get(outcome)
	c := t.m.requests.get(method, server, tool, agent, outcome)
	c.count.Inc()
	c.duration.Observe(d.Seconds())
}

// ObserveVerdict counts every reason of v in gatehouse_decisions_total.
func (t *T) ObserveVerdict(v verdict.Verdict) {
	if t == nil {
		return
	}
	for i := range v.Reasons {
		t.ObserveReason(string(v.Reasons[i].Layer), v.Reasons[i].Code)
	}
}

// ObserveReason counts one reason of a verdict by layer and code.
func (t *T) ObserveReason(layer, code string) {
	if t == nil {
		return
	}
	t.m.decisions.get(layers.get(layer), code).Inc()
}

// ObserveStage records the duration of one pipeline stage.
func (t *T) ObserveStage(stage string, d time.Duration) {
	if t == nil {
		return
	}
	t.m.stage.get(stage).Observe(d.Seconds())
}

// ObserveUpstream records one call to an upstream server that took d and
// failed with err (nil: the server answered). Errors are counted by
// ErrorKind.
func (t *T) ObserveUpstream(server string, d time.Duration, err error) {
	if t == nil {
		return
	}
	t.m.upstream.get(server).Observe(d.Seconds())
	if err != nil {
		t.m.upErrors.get(server, ErrorKind(err)).Inc()
	}
}

// ObserveDetection counts one semantic finding: detector is the finding's
// detector ("injection", "remote:NAME", ...), kind its kind
// ("prompt_injection", "secret", ...) and surface where the text arrived
// ("tool_output", ...).
func (t *T) ObserveDetection(detector, kind, surface string) {
	if t == nil {
		return
	}
	t.m.detector.get(detector, kind, surface).Inc()
}

// SessionsActive sets the number of open MCP sessions.
func (t *T) SessionsActive(n int) {
	if t == nil {
		return
	}
	t.m.sessions.Set(float64(n))
}

// AddSessions adds delta (+1 opened, -1 closed) to the open sessions.
func (t *T) AddSessions(delta int) {
	if t == nil {
		return
	}
	t.m.sessions.Add(float64(delta))
}

// ApprovalsPending sets the number of approval requests awaiting a
// decision.
func (t *T) ApprovalsPending(n int) {
	if t == nil {
		return
	}
	t.m.approvals.Set(float64(n))
}

// observeHTTP counts one HTTP response.
func (t *T) observeHTTP(listener string, code int) {
	c := other
	if code >= 100 && code < len(statusCodes) {
		c = statusCodes[code]
	}
	t.m.http.get(listener, c).Inc()
}
