package limits_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/limits"
	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// benchLimiter has the rules a production gateway would run on every call:
// rates per agent, per agent and tool, and per task; a concurrency limit on
// the server; and a value rule with two running totals on the bank's
// transfer tool (in the memory ledger).
func benchLimiter(b *testing.B) *limits.Limiter {
	l, err := limits.New(limits.Config{
		Ledger: limits.NewMemoryLedger(),
		Rates: []limits.Rate{
			{Name: "agent", Per: []limits.Dimension{limits.PerAgent}, Limit: 1 << 30, Interval: time.Second},
			{Name: "agent-tool", Per: []limits.Dimension{limits.PerAgent, limits.PerTool}, Limit: 1 << 30, Interval: time.Second},
			{Name: "task", Per: []limits.Dimension{limits.PerTask}, Limit: 1 << 30, Interval: time.Second},
		},
		Concurrency: []limits.Concurrency{{Server: "bank", Max: 1 << 20}},
		Values: []limits.Value{{Server: "bank", Tool: "transfer", Argument: "amount", Decimals: 2, Ceiling: "1000000",
			Totals: []limits.Total{
				{Per: limits.PerAgent, Window: 24 * time.Hour, Limit: "1000000000000"},
				{Per: limits.PerUser, Window: 24 * time.Hour, Limit: "1000000000000"},
			}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func benchCheckFinish(b *testing.B, stages []pipeline.Stage, r *pipeline.Request) {
	ctx := context.Background()
	o := &pipeline.Outcome{Status: "ok"}
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range stages {
			v, err := s.Check(ctx, r)
			if err != nil || v.Outcome != verdict.Allow {
				b.Fatal(v, err)
			}
		}
		for _, s := range stages {
			if f, ok := s.(pipeline.Finisher); ok {
				f.Finish(ctx, r, o)
			}
		}
	}
}

func BenchmarkLimiter(b *testing.B) {
	l := benchLimiter(b)
	b.Run("unvalued", func(b *testing.B) {
		benchCheckFinish(b, []pipeline.Stage{l}, call("a1", "u1", "t1", "bank", "balance", `{"account":"x"}`))
	})
	b.Run("valued", func(b *testing.B) {
		benchCheckFinish(b, []pipeline.Stage{l}, call("a1", "u1", "t1", "bank", "transfer", `{"to":"y","amount":12.5,"memo":"rent"}`))
	})
}

func BenchmarkBreakers(b *testing.B) {
	br, err := limits.NewBreakers(limits.BreakerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	benchCheckFinish(b, []pipeline.Stage{br}, call("a1", "u1", "t1", "bank", "transfer", `{}`))
}

// BenchmarkExecutionControls is this layer's share of a tools/call: the
// kill switch (with 400 locks in force elsewhere), the limits and the
// breakers, Check and Finish.
func BenchmarkExecutionControls(b *testing.B) {
	ctx := context.Background()
	m, err := lock.New(ctx, lock.Config{Store: lock.NewMemoryStore(), MaxStale: time.Hour, Audit: func(context.Context, lock.Change) error { return nil }})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		for _, sc := range []lock.Scope{lock.Agent, lock.User, lock.Task, lock.Server} {
			if _, err := m.Lock(ctx, lock.Lock{Scope: sc, Target: fmt.Sprint("other", i), Reason: "r", By: "a"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	br, err := limits.NewBreakers(limits.BreakerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	stages := []pipeline.Stage{m, benchLimiter(b), br}
	b.Run("unvalued", func(b *testing.B) {
		benchCheckFinish(b, stages, call("a1", "u1", "t1", "bank", "balance", `{"account":"x"}`))
	})
	b.Run("valued", func(b *testing.B) {
		benchCheckFinish(b, stages, call("a1", "u1", "t1", "bank", "transfer", `{"to":"y","amount":12.5,"memo":"rent"}`))
	})
}
