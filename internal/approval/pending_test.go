package approval_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
)

// gauge records the values a Manager reports to Config.Pending.
type gauge struct{ n atomic.Int64 }

func newGauge() *gauge {
	g := &gauge{}
	g.n.Store(-1) // nothing reported yet
	return g
}

func (g *gauge) set(n int) { g.n.Store(int64(n)) }

// waitFor waits up to 5s for the gauge to read want.
func (g *gauge) waitFor(t *testing.T, want int64, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.n.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: pending gauge %d, want %d", what, g.n.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPendingGauge checks that Config.Pending follows the requests waiting
// for a decision: on this replica soon after each change, and on another
// replica sharing the store within its sweep interval.
func TestPendingGauge(t *testing.T) {
	local := newGauge()
	// Without sweeps, only this Manager's own changes update its gauge.
	f := newFixture(t, func(c *approval.Config) { c.Pending = local.set; c.SweepInterval = time.Hour })
	local.waitFor(t, 0, "at start")

	// Another replica on the same store, which makes no change itself.
	remote := newGauge()
	other, err := approval.New(approval.Config{Store: f.st, Audit: f.log.Append, Pending: remote.set, SweepInterval: 50 * time.Millisecond, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = other.Run(rctx) }()
	defer func() { cancel(); <-done }()
	remote.waitFor(t, 0, "remote at start")

	a, err := f.m.Request(ctx, evidence(sendArgs))
	if err != nil {
		t.Fatal(err)
	}
	local.waitFor(t, 1, "after a request")
	remote.waitFor(t, 1, "remote after a request")
	b, err := f.m.Request(ctx, evidence(`{"to": "DE89 3704 0044 0532 0130 00", "amount": 2500, "memo": "x"}`))
	if err != nil || b.ID == a.ID {
		t.Fatalf("second request: %v", err)
	}
	local.waitFor(t, 2, "after a second request")
	if _, err := f.m.Request(ctx, evidence(sendArgs)); err != nil { // the retry finds the same request
		t.Fatal(err)
	}
	remote.waitFor(t, 2, "remote after the retry")

	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
		t.Fatal(err)
	}
	local.waitFor(t, 1, "after an approval")
	if _, err := other.Decide(ctx, b.ID, human("bob", "finance-approvers"), approval.Decision{Vote: approval.Deny, Comment: "no"}); err != nil {
		t.Fatal(err)
	}
	remote.waitFor(t, 0, "remote after its denial")
	// Expiry by the sweep counts too.
	c, err := f.m.Request(ctx, evidence(`{"to": "DE89 3704 0044 0532 0130 00", "amount": 3500, "memo": "y"}`))
	if err != nil {
		t.Fatal(err)
	}
	remote.waitFor(t, 1, "remote after a third request")
	f.clock.Advance(time.Hour)
	remote.waitFor(t, 0, "remote after expiry")
	if got, _ := f.m.Get(ctx, c.ID); got.Status != approval.Expired {
		t.Errorf("status %s, want expired", got.Status)
	}
}
