package limits_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/limits"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

func TestBreakerOpensAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var changes []string
		reg := prometheus.NewRegistry()
		b, err := limits.NewBreakers(limits.BreakerConfig{
			Server:     limits.BreakerSettings{Failures: 3, Open: 10 * time.Second},
			Tool:       limits.BreakerSettings{Off: true},
			Registerer: reg,
			OnStateChange: func(name, from, to string) {
				mu.Lock()
				changes = append(changes, name+":"+from+"→"+to)
				mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		attempt := func(status string) verdict.Verdict {
			r := call("a", "", "", "bank", "transfer", `{}`)
			v := check(t, b, r)
			if v.Outcome == verdict.Allow {
				finish(b, r, status)
			}
			return v
		}
		// Tool errors, JSON-RPC errors, refusals and cancellations do not
		// count as failures.
		for _, s := range []string{"tool_error", "error", "refused", "cancelled", "upstream_error", "upstream_error", "ok"} {
			wantAllow(t, attempt(s))
		}
		for range 3 {
			wantAllow(t, attempt("upstream_error"))
		}
		if s := b.State("bank"); s != "open" {
			t.Fatalf("state after 3 failures = %s", s)
		}
		wantState(t, reg, "bank", 2)
		wantState(t, reg, "ws", -1) // not created before its first call
		time.Sleep(4 * time.Second)
		reason := wantBlock(t, attempt("ok"), "breaker.open")
		if d, ok := limits.RetryAfter(reason); !ok || d != 6*time.Second {
			t.Fatalf("retry hint of %q = %v, %v", reason.Message, d, ok)
		}
		// Other servers are unaffected; list-time checks pass.
		wantAllow(t, check(t, b, call("a", "", "", "ws", "read", `{}`)))
		lr := call("a", "", "", "bank", "transfer", `{}`)
		lr.Phase = pipeline.PhaseList
		wantAllow(t, check(t, b, lr))

		// Half-open: one probe at a time; a probe's failure reopens.
		time.Sleep(6*time.Second + time.Millisecond)
		probe := call("a", "", "", "bank", "transfer", `{}`)
		wantAllow(t, check(t, b, probe))
		wantState(t, reg, "bank", 1)
		wantBlock(t, attempt("ok"), "breaker.open")
		finish(b, probe, "upstream_error")
		if s := b.State("bank"); s != "open" {
			t.Fatalf("state after a failed probe = %s", s)
		}
		// A refused probe frees its place; a successful one closes.
		time.Sleep(10*time.Second + time.Millisecond)
		probe = call("a", "", "", "bank", "transfer", `{}`)
		wantAllow(t, check(t, b, probe))
		finish(b, probe, "refused")
		wantAllow(t, attempt("ok"))
		if s := b.State("bank"); s != "closed" {
			t.Fatalf("state after a successful probe = %s", s)
		}
		wantState(t, reg, "bank", 0)
		wantState(t, reg, "ws", 0)
		mu.Lock()
		defer mu.Unlock()
		want := []string{"bank:closed→open", "bank:open→half-open", "bank:half-open→open", "bank:open→half-open", "bank:half-open→closed"}
		if len(changes) != len(want) {
			t.Fatalf("state changes %v, want %v", changes, want)
		}
		for i := range want {
			if changes[i] != want[i] {
				t.Fatalf("state changes %v, want %v", changes, want)
			}
		}
		if got := counter(t, reg, "gatehouse_breaker_refusals_total", map[string]string{"breaker": "bank"}); got != 2 {
			t.Fatalf("refusals metric = %v", got)
		}
	})
}

// wantState checks gatehouse_breaker_state{breaker=name} (0 closed, 1
// half-open, 2 open; -1: no such series).
func wantState(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := -1.0
	for _, mf := range mfs {
		if mf.GetName() != "gatehouse_breaker_state" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == name {
				got = m.GetGauge().GetValue()
			}
		}
	}
	if got != want {
		t.Errorf("gatehouse_breaker_state{breaker=%q} = %v, want %v", name, got, want)
	}
}

func TestToolBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := limits.NewBreakers(limits.BreakerConfig{
			Server:    limits.BreakerSettings{Failures: 100},
			Tool:      limits.BreakerSettings{Failures: 2, Open: time.Minute},
			Overrides: map[string]limits.BreakerSettings{"bank/slow": {Failures: 1, Slow: time.Second}},
		})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			r := call("a", "", "", "bank", "transfer", `{}`)
			wantAllow(t, check(t, b, r))
			finish(b, r, "upstream_error")
		}
		wantBlock(t, check(t, b, call("a", "", "", "bank", "transfer", `{}`)), "breaker.open")
		// The server's other tools still work, and the refused call did not
		// leave a half-counted server request behind.
		r := call("a", "", "", "bank", "balance", `{}`)
		wantAllow(t, check(t, b, r))
		finish(b, r, "ok")
		if s := b.State("bank"); s != "closed" {
			t.Fatalf("server breaker = %s", s)
		}
		// A slow call is a failure where Slow is set.
		r = call("a", "", "", "bank", "slow", `{}`)
		wantAllow(t, check(t, b, r))
		b.Finish(context.Background(), r, &pipeline.Outcome{Status: "ok", Duration: 2 * time.Second})
		if s := b.State("bank/slow"); s != "open" {
			t.Fatalf("slow tool breaker = %s", s)
		}
		// Resource reads count for the server only.
		rr := call("a", "", "", "bank", "file:///x", ``)
		rr.Action = pipeline.ActionReadResource
		wantAllow(t, check(t, b, rr))
		finish(b, rr, "ok")
		if s := b.State("bank/file:///x"); s != "closed" {
			t.Fatalf("a resource got a tool breaker: %s", s)
		}
	})
}

func TestBreakerOverrideValidation(t *testing.T) {
	if _, err := limits.NewBreakers(limits.BreakerConfig{Overrides: map[string]limits.BreakerSettings{"bank": {Failures: -1}}}); err == nil {
		t.Fatal("a negative override was accepted")
	}
}
