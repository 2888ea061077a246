package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gatehouse/gatehouse/internal/telemetry"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// scrape fetches the exposition from the handler over HTTP and parses it.
func scrape(t *testing.T, tel *telemetry.T) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, b)
	}
	return string(b), mfs
}

// value returns the value of the series of family name with exactly the
// labels want, and whether it exists.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if want[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsScrape(t *testing.T) {
	tel, err := telemetry.New(telemetry.Config{Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	tel.ObserveRequest("tools/call", "bank", "transfer", "payments-agent", telemetry.OutcomeAllow, 12*time.Millisecond)
	tel.ObserveRequest("tools/call", "bank", "transfer", "payments-agent", telemetry.OutcomeAllow, 3*time.Millisecond)
	tel.ObserveRequest("tools/call", "bank", "transfer", "payments-agent", telemetry.OutcomeChallenge, time.Millisecond)
	tel.ObserveRequest("tools/list", "", "", "payments-agent", telemetry.OutcomeAllow, time.Millisecond)
	tel.ObserveVerdict(verdict.Deny(verdict.Execution, "policy.forbid", "no").Combine(
		verdict.Challenged(verdict.Governance, "approval.required", "ask", "treasury")))
	tel.ObserveReason("execution", "lock.agent")
	tel.ObserveStage("authorize", 40*time.Microsecond)
	tel.ObserveStage("authorize", 2*time.Microsecond)
	tel.ObserveStage(telemetry.StageRecordIntent, 3*time.Millisecond)
	tel.ObserveUpstream("bank", 20*time.Millisecond, nil)
	tel.ObserveUpstream("bank", 5*time.Second, context.DeadlineExceeded)
	tel.ObserveDetection("injection", "prompt_injection", "tool_output")
	tel.ObserveDetection("secret", "secret", "tool_input")
	tel.SessionsActive(3)
	tel.AddSessions(1)
	tel.AddSessions(-2)
	tel.ApprovalsPending(4)

	text, mfs := scrape(t, tel)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gatehouse_build_info", map[string]string{"version": "1.2.3", "goversion": runtime.Version()}, 1},
		{"gatehouse_requests_total", map[string]string{"method": "tools/call", "server": "bank", "tool": "transfer", "agent": "payments-agent", "outcome": "allow"}, 2},
		{"gatehouse_requests_total", map[string]string{"method": "tools/call", "server": "bank", "tool": "transfer", "agent": "payments-agent", "outcome": "challenge"}, 1},
		{"gatehouse_requests_total", map[string]string{"method": "tools/list", "server": "", "tool": "", "agent": "payments-agent", "outcome": "allow"}, 1},
		{"gatehouse_request_duration_seconds", map[string]string{"method": "tools/call", "outcome": "allow"}, 2},
		{"gatehouse_decisions_total", map[string]string{"layer": "execution", "code": "policy.forbid"}, 1},
		{"gatehouse_decisions_total", map[string]string{"layer": "governance", "code": "approval.required"}, 1},
		{"gatehouse_decisions_total", map[string]string{"layer": "execution", "code": "lock.agent"}, 1},
		{"gatehouse_stage_duration_seconds", map[string]string{"stage": "authorize"}, 2},
		{"gatehouse_stage_duration_seconds", map[string]string{"stage": "record_intent"}, 1},
		{"gatehouse_upstream_duration_seconds", map[string]string{"server": "bank"}, 2},
		{"gatehouse_upstream_errors_total", map[string]string{"server": "bank", "kind": "timeout"}, 1},
		{"gatehouse_detector_hits_total", map[string]string{"detector": "injection", "kind": "prompt_injection", "surface": "tool_output"}, 1},
		{"gatehouse_detector_hits_total", map[string]string{"detector": "secret", "kind": "secret", "surface": "tool_input"}, 1},
		{"gatehouse_sessions_active", map[string]string{}, 2},
		{"gatehouse_approvals_pending", map[string]string{}, 4},
	} {
		got, ok := value(mfs, tc.name, tc.labels)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	// The Go and process collectors are there.
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total"} {
		if mfs[name] == nil {
			t.Errorf("%s missing from the exposition", name)
		}
	}
	// The stage histogram resolves microseconds.
	if !strings.Contains(text, `gatehouse_stage_duration_seconds_bucket{stage="authorize",le="2.5e-06"} 1`) {
		t.Errorf("the stage histogram has no 2.5µs bucket holding the 2µs observation:\n%s", grep(text, "gatehouse_stage_duration_seconds_bucket"))
	}
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestScrapeAndCompare(t *testing.T) {
	tel, err := telemetry.New(telemetry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tel.ObserveUpstream("crm", time.Millisecond, errors.New("boom"))
	tel.ObserveUpstream("crm", time.Millisecond, context.Canceled)
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	err = testutil.ScrapeAndCompare(srv.URL, strings.NewReader(`
# HELP gatehouse_upstream_errors_total Failed upstream calls by upstream server and kind (timeout, connect, cancelled, http, protocol, other).
# TYPE gatehouse_upstream_errors_total counter
gatehouse_upstream_errors_total{kind="cancelled",server="crm"} 1
gatehouse_upstream_errors_total{kind="other",server="crm"} 1
`), "gatehouse_upstream_errors_total")
	if err != nil {
		t.Error(err)
	}
}

func TestOtherComponentsRegister(t *testing.T) {
	tel, err := telemetry.New(telemetry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gatehouse_locks_active", Help: "Locks in the current snapshot."})
	if err := tel.Registerer().Register(c); err != nil {
		t.Fatal(err)
	}
	c.Set(2)
	_, mfs := scrape(t, tel)
	if got, ok := value(mfs, "gatehouse_locks_active", map[string]string{}); !ok || got != 2 {
		t.Errorf("gatehouse_locks_active = %v (present %v), want 2", got, ok)
	}
}

func TestLabelBounds(t *testing.T) {
	tel, err := telemetry.New(telemetry.Config{MaxSeries: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, agent := range []string{"a1", "a2", "a3", "a4", "a5", "a1"} {
		tel.ObserveRequest("tools/call", "bank", "transfer", agent, telemetry.OutcomeAllow, time.Millisecond)
	}
	tel.ObserveRequest("evil/method\n", "bank", "transfer", "a1", "maybe", time.Millisecond)
	tel.ObserveReason("made-up-layer", "x")
	tel.ObserveStage(strings.Repeat("s", 200), time.Millisecond)
	tel.ObserveDetection("injection", "prompt_injection", "tool\xffoutput")

	_, mfs := scrape(t, tel)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		// The first three combinations are kept as given...
		{"gatehouse_requests_total", map[string]string{"method": "tools/call", "server": "bank", "tool": "transfer", "agent": "a1", "outcome": "allow"}, 2},
		{"gatehouse_requests_total", map[string]string{"method": "tools/call", "server": "bank", "tool": "transfer", "agent": "a3", "outcome": "allow"}, 1},
		// ...later ones lose their request-derived labels, not their
		// fixed-set ones.
		{"gatehouse_requests_total", map[string]string{"method": "tools/call", "server": "other", "tool": "other", "agent": "other", "outcome": "allow"}, 2},
		// Unknown methods and outcomes map onto the fixed sets (the
		// vector is full, so the rest collapses too).
		{"gatehouse_requests_total", map[string]string{"method": "other", "server": "other", "tool": "other", "agent": "other", "outcome": "other"}, 1},
		{"gatehouse_decisions_total", map[string]string{"layer": "other", "code": "x"}, 1},
		{"gatehouse_stage_duration_seconds", map[string]string{"stage": "other"}, 1},
		{"gatehouse_detector_hits_total", map[string]string{"detector": "injection", "kind": "prompt_injection", "surface": "other"}, 1},
		{"gatehouse_telemetry_series_overflow_total", map[string]string{"metric": "gatehouse_requests_total"}, 3},
	} {
		got, ok := value(mfs, tc.name, tc.labels)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if n := len(mfs["gatehouse_requests_total"].GetMetric()); n > 5 {
		t.Errorf("gatehouse_requests_total has %d series with a bound of 3 (+ collapsed ones)", n)
	}

	// Many distinct values stay bounded.
	for i := range 10000 {
		tel.ObserveRequest("tools/call", "bank", "tool-"+strings.Repeat("x", i%50)+string(rune('a'+i%26)), "agent", telemetry.OutcomeBlock, 0)
	}
	n, err := testutil.GatherAndCount(tel.Gatherer(), "gatehouse_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	if n > 6 {
		t.Errorf("gatehouse_requests_total has %d series after 10000 distinct tools", n)
	}
}

func TestMiddlewareCountsAndFlushes(t *testing.T) {
	tel, err := telemetry.New(telemetry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		if _, ok := w.(http.Flusher); !ok {
			t.Error("the wrapped writer is not a Flusher")
		}
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("ResponseController.Flush: %v", err)
		}
		_, _ = io.WriteString(w, "data: {}\n\n")
	})
	mux.HandleFunc("/quiet", func(http.ResponseWriter, *http.Request) {})
	srv := httptest.NewServer(tel.Middleware("mcp", mux))
	defer srv.Close()
	for _, tc := range []struct {
		path, auth string
	}{{"/mcp", ""}, {"/mcp", ""}, {"/mcp", "Bearer x"}, {"/quiet", ""}, {"/missing", ""}} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	_, mfs := scrape(t, tel)
	for code, want := range map[string]float64{"401": 2, "200": 2, "404": 1} {
		if got, ok := value(mfs, "gatehouse_http_responses_total", map[string]string{"listener": "mcp", "code": code}); !ok || got != want {
			t.Errorf("gatehouse_http_responses_total{code=%q} = %v (present %v), want %v", code, got, ok, want)
		}
	}
}

func TestNilIsNoop(t *testing.T) {
	var tel *telemetry.T
	ctx := context.Background()
	tel.ObserveRequest("tools/call", "s", "t", "a", telemetry.OutcomeAllow, time.Second)
	tel.ObserveVerdict(verdict.Deny(verdict.Core, "x", "y"))
	tel.ObserveReason("core", "x")
	tel.ObserveStage("x", time.Second)
	tel.ObserveUpstream("s", time.Second, errors.New("x"))
	tel.ObserveDetection("d", "k", "s")
	tel.SessionsActive(1)
	tel.AddSessions(1)
	tel.ApprovalsPending(1)
	if got := tel.Extract(ctx, http.Header{"Traceparent": {agentParent}}); got != ctx {
		t.Error("nil Extract changed the context")
	}
	c2, span := tel.StartRequest(ctx, "ping", telemetry.Attrs{})
	telemetry.Annotate(span, telemetry.Attrs{Outcome: telemetry.OutcomeError})
	telemetry.End(span, errors.New("x"))
	_, s := tel.StartStage(c2, "x")
	s.End()
	_, s = tel.StartUpstream(c2, "s", "tools/call")
	s.End()
	h := http.Header{}
	tel.Inject(ctx, h)
	if len(h) != 0 {
		t.Errorf("nil Inject wrote %v", h)
	}
	if tel.Tracing() || tel.Registerer() != nil || tel.Shutdown(ctx) != nil {
		t.Error("nil T claims to do something")
	}
	next := http.NotFoundHandler()
	if tel.Middleware("mcp", next) == nil {
		t.Error("nil Middleware returned nil")
	}
}

// TestHotPathsDoNotAllocate checks what the benchmarks measure: a known
// label combination and a no-op tracer cost no allocation.
func TestHotPathsDoNotAllocate(t *testing.T) {
	tel, err := telemetry.New(telemetry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h := http.Header{}
	v := verdict.Deny(verdict.Execution, "policy.forbid", "no")
	for name, f := range map[string]func(){
		"ObserveRequest": func() {
			tel.ObserveRequest("tools/call", "bank", "transfer", "payments-agent", telemetry.OutcomeAllow, time.Millisecond)
		},
		"ObserveStage":    func() { tel.ObserveStage("authorize", time.Microsecond) },
		"ObserveVerdict":  func() { tel.ObserveVerdict(v) },
		"ObserveUpstream": func() { tel.ObserveUpstream("bank", time.Millisecond, nil) },
		"spans off": func() {
			c := tel.Extract(ctx, h)
			c, span := tel.StartRequest(c, "tools/call", telemetry.Attrs{Agent: "a", CorrelationID: "c"})
			telemetry.AnnotateContext(c, telemetry.Attrs{Server: "bank", Tool: "transfer", CorrelationID: "c"})
			_, s := tel.StartStage(c, "authorize")
			telemetry.End(s, nil)
			uc, us := tel.StartUpstream(c, "bank", "tools/call")
			tel.Inject(uc, h)
			telemetry.End(us, nil)
			telemetry.Annotate(span, telemetry.Attrs{Outcome: telemetry.OutcomeAllow})
			telemetry.End(span, nil)
		},
	} {
		f() // create the series
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

// TestConcurrentObservationsAreConserved checks that, with many goroutines
// creating and overflowing series at once, every observation is counted
// exactly once.
func TestConcurrentObservationsAreConserved(t *testing.T) {
	tel, err := telemetry.New(telemetry.Config{MaxSeries: 50})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				tel.ObserveRequest("tools/call", "bank", fmt.Sprintf("tool-%d", (i*7+w)%120), "agent", telemetry.OutcomeAllow, time.Millisecond)
			}
		}()
	}
	wg.Wait()
	mfs, err := tel.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total, series float64
	for _, mf := range mfs {
		if mf.GetName() == "gatehouse_requests_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
				series++
			}
		}
	}
	if total != workers*each {
		t.Errorf("counted %v requests, want %d", total, workers*each)
	}
	if series > 51 {
		t.Errorf("%v series with a bound of 50", series)
	}
}
