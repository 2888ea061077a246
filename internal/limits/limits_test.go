package limits_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/limits"
	"github.com/gatehouse/gatehouse/internal/limits/limitstest"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func call(agent, user, task, server, tool, args string) *pipeline.Request {
	return &pipeline.Request{ID: "c", Phase: pipeline.PhaseCall, Action: pipeline.ActionCallTool,
		Caller: &pipeline.Caller{Agent: agent, User: user, Task: task}, Server: server, Target: tool, Arguments: json.RawMessage(args)}
}

type stage interface {
	pipeline.Stage
	pipeline.Finisher
}

func check(t *testing.T, s stage, r *pipeline.Request) verdict.Verdict {
	t.Helper()
	v, err := s.Check(context.Background(), r)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return v
}

// wantBlock asserts a refusal with code.
func wantBlock(t *testing.T, v verdict.Verdict, code string) verdict.Reason {
	t.Helper()
	if v.Outcome != verdict.Block || v.First().Code != code || v.First().Layer != verdict.Execution {
		t.Fatalf("verdict = %+v, want block %s", v, code)
	}
	return v.First()
}

func wantAllow(t *testing.T, v verdict.Verdict) {
	t.Helper()
	if v.Outcome != verdict.Allow {
		t.Fatalf("verdict = %+v, want allow", v)
	}
}

func finish(s stage, r *pipeline.Request, status string) {
	s.Finish(context.Background(), r, &pipeline.Outcome{Status: status})
}

func TestParseAmount(t *testing.T) {
	for _, tc := range []struct {
		in       string
		decimals int
		want     int64
		err      bool
	}{
		{"0", 2, 0, false},
		{"12.34", 2, 1234, false},
		{"12.3", 2, 1230, false},
		{"12", 2, 1200, false},
		{"12.345", 2, 1235, false}, // rounded up
		{"12.341", 2, 1235, false},
		{"0.001", 2, 1, false},
		{"1e3", 2, 100000, false},
		{"1.5E-1", 2, 15, false},
		{"2.5", 0, 3, false},
		{"-0", 2, 0, false},
		{"-0.01", 2, 0, true},
		{"-5", 2, 0, true},
		{"abc", 2, 0, true},
		{"1,000", 2, 0, true},
		{"", 2, 0, true},
		{".", 2, 0, true},
		{"1e400", 2, 0, true},
		{"92233720368547758.08", 2, 0, true},
		{"92233720368547758.07", 2, 9223372036854775807, false},
		{"NaN", 2, 0, true},
		{"0x10", 2, 0, true},
		{strings.Repeat("1", 70), 2, 0, true},
	} {
		got, err := limits.ParseAmount(tc.in, tc.decimals)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseAmount(%q, %d) = %d, %v; want %d, err=%v", tc.in, tc.decimals, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"12.34", "1e3", "-1", "0.000001", "1E-40", "99999999999999999999"} {
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, s string, decimals int) {
		decimals = ((decimals % 19) + 19) % 19
		v, err := limits.ParseAmount(s, decimals)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseAmount(%q) = %d, negative", s, v)
		}
		// Round trip: the formatted value parses back to itself, and is at
		// least the input (rounding is upwards).
		back, err := limits.ParseAmount(limits.FormatAmount(v, decimals), decimals)
		if err != nil || back != v {
			t.Fatalf("round trip of %q: %d → %q → %d, %v", s, v, limits.FormatAmount(v, decimals), back, err)
		}
	})
}

func TestFormatAmount(t *testing.T) {
	for _, tc := range []struct {
		v        int64
		decimals int
		want     string
	}{{1234, 2, "12.34"}, {5, 2, "0.05"}, {0, 2, "0.00"}, {100, 0, "100"}, {-5, 3, "-0.005"}} {
		if got := limits.FormatAmount(tc.v, tc.decimals); got != tc.want {
			t.Errorf("FormatAmount(%d, %d) = %q, want %q", tc.v, tc.decimals, got, tc.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in  string
		n   int
		per time.Duration
		err bool
	}{
		{"100/1m", 100, time.Minute, false},
		{"5/s", 5, time.Second, false},
		{"1000/d", 1000, 24 * time.Hour, false},
		{" 3 / 10s ", 3, 10 * time.Second, false},
		{"0/s", 0, 0, true},
		{"-1/s", 0, 0, true},
		{"10", 0, 0, true},
		{"10/fortnight", 0, 0, true},
	} {
		n, per, err := limits.ParseRate(tc.in)
		if (err != nil) != tc.err || n != tc.n || per != tc.per {
			t.Errorf("ParseRate(%q) = %d, %v, %v", tc.in, n, per, err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  limits.Config
		want string
	}{
		{"rate without name", limits.Config{Rates: []limits.Rate{{Limit: 1, Interval: time.Second}}}, "name"},
		{"duplicate rate", limits.Config{Rates: []limits.Rate{{Name: "a", Limit: 1, Interval: time.Second}, {Name: "a", Limit: 1, Interval: time.Second}}}, "duplicate"},
		{"bad per", limits.Config{Rates: []limits.Rate{{Name: "a", Per: []limits.Dimension{"planet"}, Limit: 1, Interval: time.Second}}}, "per"},
		{"zero rate", limits.Config{Rates: []limits.Rate{{Name: "a"}}}, "positive"},
		{"concurrency without max", limits.Config{Concurrency: []limits.Concurrency{{Server: "bank"}}}, "max"},
		{"value without argument", limits.Config{Values: []limits.Value{{Server: "bank", Tool: "t", Ceiling: "1"}}}, "argument"},
		{"value without limits", limits.Config{Values: []limits.Value{{Server: "bank", Tool: "t", Argument: "a"}}}, "ceiling or totals"},
		{"bad ceiling", limits.Config{Values: []limits.Value{{Server: "bank", Tool: "t", Argument: "a", Ceiling: "ten"}}}, "ceiling"},
		{"totals without ledger", limits.Config{Values: []limits.Value{{Server: "bank", Tool: "t", Argument: "a",
			Totals: []limits.Total{{Per: limits.PerAgent, Window: time.Hour, Limit: "10"}}}}}, "ledger"},
		{"total per server", limits.Config{Ledger: limits.NewMemoryLedger(), Values: []limits.Value{{Server: "bank", Tool: "t", Argument: "a",
			Totals: []limits.Total{{Per: limits.PerServer, Window: time.Hour, Limit: "10"}}}}}, "per"},
		{"sub-second window", limits.Config{Ledger: limits.NewMemoryLedger(), Values: []limits.Value{{Server: "bank", Tool: "t", Argument: "a",
			Totals: []limits.Total{{Per: limits.PerAgent, Window: 1500 * time.Millisecond, Limit: "10"}}}}}, "window"},
		{"unit argument without unit", limits.Config{Values: []limits.Value{{Server: "bank", Tool: "t", Argument: "a", Ceiling: "1", UnitArgument: "c"}}}, "unit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := limits.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestRateLimits(t *testing.T) {
	clk := newClock()
	l, err := limits.New(limits.Config{Now: clk.Now, Rates: []limits.Rate{
		{Name: "per-agent", Per: []limits.Dimension{limits.PerAgent}, Limit: 2, Interval: time.Minute},
		{Name: "transfer-per-task", Per: []limits.Dimension{limits.PerTask}, Server: "bank", Tool: "transfer", Limit: 1, Interval: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	wantAllow(t, check(t, l, call("a1", "", "t1", "bank", "balance", `{}`)))
	wantAllow(t, check(t, l, call("a1", "", "t1", "bank", "balance", `{}`)))
	reason := wantBlock(t, check(t, l, call("a1", "", "t1", "bank", "balance", `{}`)), "limits.rate")
	if d, ok := limits.RetryAfter(reason); !ok || d != 30*time.Second {
		t.Fatalf("RetryAfter(%q) = %v, %v; want 30s", reason.Message, d, ok)
	}
	if s, ok := limits.RetryAfterSeconds(reason); !ok || s != "30" {
		t.Fatalf("RetryAfterSeconds = %q, %v", s, ok)
	}
	if diff := cmp.Diff([]string{"per-agent"}, reason.Policies); diff != "" {
		t.Fatalf("policies: %s", diff)
	}
	// Another agent has its own bucket.
	wantAllow(t, check(t, l, call("a2", "", "t2", "bank", "transfer", `{}`)))
	// Not counted: list-time checks and other actions.
	lr := call("a1", "", "t1", "bank", "balance", `{}`)
	lr.Phase = pipeline.PhaseList
	wantAllow(t, check(t, l, lr))
	rr := call("a1", "", "t1", "bank", "", ``)
	rr.Action = pipeline.ActionReadResource
	wantAllow(t, check(t, l, rr))
	// The per-task transfer rule: a refused call returns the tokens it
	// took from the other rules.
	wantAllow(t, check(t, l, call("a3", "", "t9", "bank", "transfer", `{}`)))
	wantBlock(t, check(t, l, call("a3", "", "t9", "bank", "transfer", `{}`)), "limits.rate")
	wantAllow(t, check(t, l, call("a3", "", "t8", "bank", "balance", `{}`))) // a3's second call of the minute
	// Time refills the bucket.
	clk.Add(30 * time.Second)
	wantAllow(t, check(t, l, call("a1", "", "t1", "bank", "balance", `{}`)))
	wantBlock(t, check(t, l, call("a1", "", "t1", "bank", "balance", `{}`)), "limits.rate")
}

func TestConcurrency(t *testing.T) {
	l, err := limits.New(limits.Config{Concurrency: []limits.Concurrency{{Server: "bank", Max: 2}, {Server: "bank", Tool: "transfer", Max: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	r1 := call("a", "", "", "bank", "transfer", `{}`)
	wantAllow(t, check(t, l, r1))
	r2 := call("a", "", "", "bank", "transfer", `{}`)
	reason := wantBlock(t, check(t, l, r2), "limits.concurrency")
	if d, ok := limits.RetryAfter(reason); !ok || d != time.Second {
		t.Fatalf("retry hint %q", reason.Message)
	}
	// The refusal by the tool's limit gave back the server slot it took.
	if n := l.InFlight("bank", ""); n != 1 {
		t.Fatalf("server in flight = %d, want 1", n)
	}
	r3 := call("a", "", "", "bank", "balance", `{}`)
	wantAllow(t, check(t, l, r3))
	wantBlock(t, check(t, l, call("a", "", "", "bank", "balance", `{}`)), "limits.concurrency")
	// Other servers are not limited; list-time checks take no slot.
	wantAllow(t, check(t, l, call("a", "", "", "ws", "read", `{}`)))
	lr := call("a", "", "", "bank", "balance", `{}`)
	lr.Phase = pipeline.PhaseList
	wantAllow(t, check(t, l, lr))
	finish(l, r1, "upstream_error")
	wantAllow(t, check(t, l, r2))
	finish(l, r2, "ok")
	finish(l, r3, "ok")
	finish(l, r3, "ok") // a second Finish must not free a slot twice
	if n := l.InFlight("bank", ""); n != 0 {
		t.Fatalf("in flight after every Finish = %d", n)
	}
}

func valueLimiter(t *testing.T, clk *clock, ledger limits.Ledger, mode limits.FailMode, reg prometheus.Registerer) *limits.Limiter {
	t.Helper()
	l, err := limits.New(limits.Config{Now: clk.Now, Ledger: ledger, Registerer: reg,
		Concurrency: []limits.Concurrency{{Server: "bank", Max: 100}},
		Values: []limits.Value{{
			Server: "bank", Tool: "transfer", Argument: "payment.amount", Decimals: 2, Unit: "EUR", UnitArgument: "payment.currency",
			Ceiling: "5000", FailMode: mode,
			Totals: []limits.Total{
				{Per: limits.PerAgent, Window: 24 * time.Hour, Limit: "10000"},
				{Name: "user-hourly", Per: limits.PerUser, Window: time.Hour, Limit: "12000"},
			},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func transfer(agent, user, amount string) *pipeline.Request {
	return call(agent, user, "", "bank", "transfer", `{"to":"x","payment":{"amount":`+amount+`,"currency":"EUR"}}`)
}

func TestValueCeilingAndArguments(t *testing.T) {
	l := valueLimiter(t, newClock(), limits.NewMemoryLedger(), limits.FailClosed, nil)
	for _, tc := range []struct {
		name, args, code string
	}{
		{"above the ceiling", `{"payment":{"amount":5000.01,"currency":"EUR"}}`, "limits.value_ceiling"},
		{"missing", `{"payment":{"currency":"EUR"}}`, "limits.value_invalid"},
		{"null", `{"payment":{"amount":null,"currency":"EUR"}}`, "limits.value_invalid"},
		{"no arguments", ``, "limits.value_invalid"},
		{"negative", `{"payment":{"amount":-100,"currency":"EUR"}}`, "limits.value_invalid"},
		{"not a number", `{"payment":{"amount":"lots","currency":"EUR"}}`, "limits.value_invalid"},
		{"an object", `{"payment":{"amount":{"v":1},"currency":"EUR"}}`, "limits.value_invalid"},
		{"other currency", `{"payment":{"amount":10,"currency":"USD"}}`, "limits.value_invalid"},
		{"no currency", `{"payment":{"amount":10}}`, "limits.value_invalid"},
		{"malformed", `{"payment":`, "limits.value_invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason := wantBlock(t, check(t, l, call("a", "u", "", "bank", "transfer", tc.args)), tc.code)
			if _, ok := limits.RetryAfter(reason); ok {
				t.Fatalf("a refusal that retrying cannot cure has a retry hint: %q", reason.Message)
			}
		})
	}
	if n := l.InFlight("bank", ""); n != 0 {
		t.Fatalf("refused calls hold %d slots", n)
	}
	// A string amount and a lower-case currency are accepted; the ceiling is
	// inclusive.
	r := call("a", "u", "", "bank", "transfer", `{"payment":{"amount":"5000.00","currency":"eur"}}`)
	wantAllow(t, check(t, l, r))
	finish(l, r, "ok")
	// Other tools of the server are not valued.
	wantAllow(t, check(t, l, call("a", "u", "", "bank", "balance", `{}`)))
}

func TestRunningTotals(t *testing.T) {
	clk := newClock()
	ledger := limits.NewMemoryLedger()
	l := valueLimiter(t, clk, ledger, limits.FailClosed, nil)

	// Two calls in flight: the second cannot overrun the agent's 10,000.
	r1 := transfer("a1", "u1", "4000")
	wantAllow(t, check(t, l, r1))
	r2 := transfer("a1", "u1", "4000")
	wantAllow(t, check(t, l, r2))
	r3 := transfer("a1", "u1", "2500")
	reason := wantBlock(t, check(t, l, r3), "limits.running_total")
	if !strings.Contains(reason.Message, "2500.00 EUR would exceed the limit of 10000.00 EUR per agent per 24h0m0s (8000.00 EUR used)") {
		t.Fatalf("message %q", reason.Message)
	}
	// Retry when the UTC day ends (it is noon).
	if d, ok := limits.RetryAfter(reason); !ok || d != 12*time.Hour {
		t.Fatalf("RetryAfter = %v, %v", d, ok)
	}
	// A failed tool call gives its amount back; a successful one keeps it.
	finish(l, r1, "tool_error")
	finish(l, r2, "ok")
	r4 := transfer("a1", "u1", "5000")
	wantAllow(t, check(t, l, r4))
	// Refused by a later stage: released.
	finish(l, r4, "refused")
	// An upstream failure leaves the outcome unknown: committed.
	r5 := transfer("a1", "u1", "5000")
	wantAllow(t, check(t, l, r5))
	finish(l, r5, "upstream_error")
	wantBlock(t, check(t, l, transfer("a1", "u1", "1000.01")), "limits.running_total")
	// The user's hourly total (12,000) is shared by the user's agents.
	r6 := transfer("a2", "u1", "2000")
	wantAllow(t, check(t, l, r6))
	finish(l, r6, "ok")
	reason = wantBlock(t, check(t, l, transfer("a3", "u1", "1000.01")), "limits.running_total")
	if diff := cmp.Diff([]string{"user-hourly"}, reason.Policies); diff != "" {
		t.Fatalf("policies: %s", diff)
	}
	// A zero amount reserves nothing and passes.
	r7 := transfer("a1", "u1", "0")
	wantAllow(t, check(t, l, r7))
	finish(l, r7, "ok")

	want := []limits.Usage{
		{Bucket: limits.Bucket{Rule: "bank/transfer/agent/24h0m0s", Key: "a1", Start: 1772323200, End: 1772409600}, Committed: 900000},
		{Bucket: limits.Bucket{Rule: "bank/transfer/agent/24h0m0s", Key: "a2", Start: 1772323200, End: 1772409600}, Committed: 200000},
		{Bucket: limits.Bucket{Rule: "user-hourly", Key: "u1", Start: 1772366400, End: 1772370000}, Committed: 1100000},
	}
	if diff := cmp.Diff(want, ledger.Usage()); diff != "" {
		t.Fatalf("ledger (-want +got):\n%s", diff)
	}
	// A new day (and hour) starts afresh.
	clk.Add(12 * time.Hour)
	r8 := transfer("a1", "u1", "5000")
	wantAllow(t, check(t, l, r8))
	finish(l, r8, "ok")
}

// TestTotalView: policy reads a running total for the request's subject,
// calls in flight included, in the value's units; a reference that names no
// total, or several, is refused; an unavailable ledger is an error.
func TestTotalView(t *testing.T) {
	clk := newClock()
	ledger := limits.NewMemoryLedger()
	l := valueLimiter(t, clk, ledger, limits.FailClosed, nil)
	for _, tc := range []struct {
		ref  limits.TotalRef
		want string
	}{
		{limits.TotalRef{Value: "bank/payments", Per: limits.PerAgent}, `no value rule is named "bank/payments"`},
		{limits.TotalRef{Value: "bank/transfer", Per: limits.PerTask}, "no running total per task"},
		{limits.TotalRef{Value: "bank/transfer", Per: limits.PerAgent, Window: time.Hour}, "no running total per agent over 1h0m0s"},
	} {
		if _, err := l.View(tc.ref); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("View(%+v) = %v, want %q", tc.ref, err, tc.want)
		}
	}
	two, err := limits.New(limits.Config{Ledger: ledger, Values: []limits.Value{{Server: "bank", Tool: "transfer", Argument: "amount",
		Totals: []limits.Total{{Per: limits.PerAgent, Window: time.Hour, Limit: "10"}, {Per: limits.PerAgent, Window: 24 * time.Hour, Limit: "100"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := two.View(limits.TotalRef{Value: "bank/transfer", Per: limits.PerAgent}); err == nil || !strings.Contains(err.Error(), "name the window") {
		t.Errorf("ambiguous reference: %v", err)
	}
	if _, err := two.View(limits.TotalRef{Value: "bank/transfer", Per: limits.PerAgent, Window: 24 * time.Hour}); err != nil {
		t.Errorf("reference with a window: %v", err)
	}

	agentDay, err := l.View(limits.TotalRef{Value: "bank/transfer", Per: limits.PerAgent})
	if err != nil {
		t.Fatal(err)
	}
	userHour, err := l.View(limits.TotalRef{Value: "bank/transfer", Per: limits.PerUser, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	used := func(v *limits.TotalView, r *pipeline.Request) float64 {
		t.Helper()
		f, err := v.Used(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	r1 := transfer("a1", "u1", "1200.50")
	if got := used(agentDay, r1); got != 0 {
		t.Errorf("before any payment: %v", got)
	}
	wantAllow(t, check(t, l, r1))
	// In flight counts.
	if got := used(agentDay, transfer("a1", "u1", "1")); got != 1200.5 {
		t.Errorf("with a payment in flight: %v, want 1200.5", got)
	}
	finish(l, r1, "ok")
	r2 := transfer("a2", "u1", "99.99")
	wantAllow(t, check(t, l, r2))
	finish(l, r2, "ok")
	if a1, a2, u1 := used(agentDay, transfer("a1", "", "1")), used(agentDay, transfer("a2", "", "1")), used(userHour, transfer("a3", "u1", "1")); a1 != 1200.5 || a2 != 99.99 || u1 != 1300.49 {
		t.Errorf("per agent %v and %v, per user %v; want 1200.5, 99.99, 1300.49", a1, a2, u1)
	}
	// The next hour starts the user's total afresh; the agent's day goes on.
	clk.Add(time.Hour)
	if a1, u1 := used(agentDay, transfer("a1", "u1", "1")), used(userHour, transfer("a1", "u1", "1")); a1 != 1200.5 || u1 != 0 {
		t.Errorf("an hour later: agent %v, user %v", a1, u1)
	}
	ledger.SetError(errors.New("database down"))
	if _, err := agentDay.Used(context.Background(), transfer("a1", "u1", "1")); err == nil {
		t.Error("an unavailable ledger reported a total")
	}
}

// TestConcurrentCallsCannotOverrun races many calls against one total.
func TestConcurrentCallsCannotOverrun(t *testing.T) {
	ledger := limits.NewMemoryLedger()
	l := valueLimiter(t, newClock(), ledger, limits.FailClosed, nil)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := transfer("a1", fmt.Sprint("u", i), "1000")
			v, err := l.Check(context.Background(), r)
			if err != nil {
				t.Error(err)
				return
			}
			if v.Outcome == verdict.Allow {
				allowed.Add(1)
				finish(l, r, "ok")
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 10 {
		t.Fatalf("%d calls of 1000 allowed under a total of 10000", got)
	}
}

func TestLedgerFailModes(t *testing.T) {
	for _, mode := range []limits.FailMode{limits.FailClosed, limits.FailOpen} {
		t.Run(mode.String(), func(t *testing.T) {
			ledger := limits.NewMemoryLedger()
			reg := prometheus.NewRegistry()
			l := valueLimiter(t, newClock(), ledger, mode, reg)
			ledger.SetError(errors.New("database down"))
			r := transfer("a1", "u1", "100")
			v := check(t, l, r)
			if mode == limits.FailClosed {
				wantBlock(t, v, "limits.unavailable")
				if n := l.InFlight("bank", ""); n != 0 {
					t.Fatalf("a refusal for an unavailable ledger holds %d slots", n)
				}
			} else {
				wantAllow(t, v)
				ledger.SetError(nil)
				finish(l, r, "ok")
				if u := ledger.Usage(); len(u) != 0 {
					t.Fatalf("an uncounted call was settled: %+v", u)
				}
			}
			if got := counter(t, reg, "gatehouse_control_failures_total", map[string]string{"control": "limits.value:bank/transfer", "fail_mode": mode.String()}); got != 1 {
				t.Fatalf("gatehouse_control_failures_total = %v", got)
			}
		})
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestSettleSurvivesCancelledContext(t *testing.T) {
	ledger := limits.NewMemoryLedger()
	l := valueLimiter(t, newClock(), ledger, limits.FailClosed, nil)
	r := transfer("a1", "u1", "100")
	wantAllow(t, check(t, l, r))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l.Finish(ctx, r, &pipeline.Outcome{Status: "refused"})
	for _, u := range ledger.Usage() {
		if u.Reserved != 0 || u.Committed != 0 {
			t.Fatalf("not released: %+v", u)
		}
	}
}

func TestSweepReleasesLeakedHolds(t *testing.T) {
	clk := newClock()
	ledger := limits.NewMemoryLedger()
	l := valueLimiter(t, clk, ledger, limits.FailClosed, nil)
	r := transfer("a1", "u1", "100")
	wantAllow(t, check(t, l, r))
	clk.Add(10 * time.Minute)
	l.Sweep(context.Background())
	if n := l.InFlight("bank", ""); n != 1 {
		t.Fatalf("a young hold was released: in flight %d", n)
	}
	clk.Add(10 * time.Minute)
	l.Sweep(context.Background())
	if n := l.InFlight("bank", ""); n != 0 {
		t.Fatalf("a leaked hold was kept: in flight %d", n)
	}
	for _, u := range ledger.Usage() {
		if u.Reserved != 0 || u.Committed != 10000 {
			t.Fatalf("a leaked reservation must be committed: %+v", u)
		}
	}
	finish(l, r, "ok") // too late: nothing happens twice
	for _, u := range ledger.Usage() {
		if u.Committed != 10000 {
			t.Fatalf("settled twice: %+v", u)
		}
	}
}

func TestCheckWithoutCallerIsAnError(t *testing.T) {
	l, err := limits.New(limits.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Check(context.Background(), &pipeline.Request{Phase: pipeline.PhaseCall, Server: "bank"}); err == nil {
		t.Fatal("Check without a caller did not fail")
	}
}

func TestMemoryLedgerContract(t *testing.T) {
	l := limits.NewMemoryLedger()
	limitstest.TestLedger(t, l, l)
}

// TestPipeline runs the stages inside a real pipeline: a refusal by a later
// stage releases what the limits took.
func TestPipeline(t *testing.T) {
	ledger := limits.NewMemoryLedger()
	l := valueLimiter(t, newClock(), ledger, limits.FailClosed, nil)
	b, err := limits.NewBreakers(limits.BreakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	refuseBig := stageFunc(func(r *pipeline.Request) verdict.Verdict {
		if strings.Contains(string(r.Arguments), "4999") {
			return verdict.Deny(verdict.Governance, "test.refused", "no")
		}
		return verdict.Verdict{}
	})
	p, err := pipeline.New(pipeline.Config{Stages: []pipeline.Stage{l, b, refuseBig}, Recorder: nopRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	caller := &pipeline.Caller{Agent: "a1", User: "u1", Servers: []string{"bank"}}
	r := transfer("a1", "u1", "4999")
	r.Caller = caller
	if v := p.Admit(ctx, r); v.Outcome != verdict.Block || v.First().Code != "test.refused" {
		t.Fatalf("Admit = %+v", v)
	}
	if n := l.InFlight("bank", ""); n != 0 {
		t.Fatalf("a refused call holds %d slots", n)
	}
	r = transfer("a1", "u1", "3000")
	r.Caller = caller
	if v := p.Admit(ctx, r); v.Outcome != verdict.Allow {
		t.Fatalf("Admit = %+v", v)
	}
	p.Complete(ctx, r, &pipeline.Outcome{Status: "ok"})
	u := ledger.Usage()
	if len(u) != 2 || u[0].Committed != 300000 || u[0].Reserved != 0 {
		t.Fatalf("ledger %+v", u)
	}
}

type stageFunc func(*pipeline.Request) verdict.Verdict

func (f stageFunc) Name() string { return "test" }
func (f stageFunc) Check(_ context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	return f(r), nil
}

type nopRecorder struct{}

func (nopRecorder) Record(context.Context, *pipeline.Record) error { return nil }
func (nopRecorder) Enqueue(*pipeline.Record)                       {}

func TestAsyncSettle(t *testing.T) {
	ledger := limits.NewMemoryLedger()
	l, err := limits.New(limits.Config{Ledger: ledger, AsyncSettle: true, Now: newClock().Now,
		Concurrency: []limits.Concurrency{{Server: "bank", Max: 1}},
		Values: []limits.Value{{Server: "bank", Tool: "transfer", Argument: "amount",
			Totals: []limits.Total{{Per: limits.PerAgent, Window: time.Hour, Limit: "100"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	r := call("a1", "", "", "bank", "transfer", `{"amount":60}`)
	wantAllow(t, check(t, l, r))
	finish(l, r, "ok")
	if n := l.InFlight("bank", ""); n != 0 {
		t.Fatalf("the slot is still held after Finish: %d", n)
	}
	cancel()
	<-done // Run waits for the settlement
	if u := ledger.Usage(); len(u) != 1 || u[0].Committed != 60 || u[0].Reserved != 0 {
		t.Fatalf("ledger %+v", u)
	}
}

func TestCheckedTwiceDoesNotLeak(t *testing.T) {
	l, err := limits.New(limits.Config{Concurrency: []limits.Concurrency{{Server: "bank", Max: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	r := call("a1", "", "", "bank", "x", `{}`)
	wantAllow(t, check(t, l, r))
	wantAllow(t, check(t, l, r)) // a caller's bug: checked again before Finish
	finish(l, r, "ok")
	if n := l.InFlight("bank", ""); n != 0 {
		t.Fatalf("in flight %d", n)
	}
}
