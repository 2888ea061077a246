// Package limitstest is the contract test suite that every limits.Ledger
// must pass.
package limitstest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gatehouse/gatehouse/internal/limits"
)

// TestLedger checks a ledger against the limits.Ledger contract. l1 and l2
// must share one empty storage (two replicas); they may be the same value.
func TestLedger(t *testing.T, l1, l2 limits.Ledger) {
	t.Helper()
	ctx := context.Background()
	day := int64(86400)
	start := int64(1772323200) // 2026-03-01T00:00:00Z
	agent := limits.Bucket{Rule: "bank/transfer/agent/24h", Key: "a1", Start: start, End: start + day, Limit: 10000}
	user := limits.Bucket{Rule: "bank/transfer/user/24h", Key: "u1", Start: start, End: start + day, Limit: 15000}
	both := []limits.Bucket{agent, user}

	reserve := func(l limits.Ledger, amount int64, bs []limits.Bucket) (int, int64) {
		t.Helper()
		full, used, err := l.Reserve(ctx, amount, bs)
		if err != nil {
			t.Fatalf("Reserve(%d): %v", amount, err)
		}
		return full, used
	}
	settle := func(l limits.Ledger, amount int64, bs []limits.Bucket, commit bool) {
		t.Helper()
		if err := l.Settle(ctx, amount, bs, commit); err != nil {
			t.Fatalf("Settle(%d, %v): %v", amount, commit, err)
		}
	}

	// A ledger that reports use (limits.TotalReader, for policy) reports
	// committed + reserved, seen from the other replica; nothing is 0.
	wantUsed := func(b limits.Bucket, want int64) {
		t.Helper()
		r, ok := l2.(limits.TotalReader)
		if !ok {
			return
		}
		if got, err := r.Used(ctx, b); err != nil || got != want {
			t.Errorf("Used(%s/%s) = %d, %v; want %d", b.Rule, b.Key, got, err, want)
		}
	}
	wantUsed(agent, 0)

	// In-flight reservations count against the limit.
	if full, _ := reserve(l1, 6000, both); full != -1 {
		t.Fatalf("first reservation refused by bucket %d", full)
	}
	wantUsed(agent, 6000)
	if full, used := reserve(l2, 6000, both); full != 0 || used != 6000 {
		t.Fatalf("second reservation: full=%d used=%d, want bucket 0 with 6000 used", full, used)
	}
	// A refused reservation reserved nothing, in any bucket.
	if full, used := reserve(l2, 9001, []limits.Bucket{user}); full != 0 || used != 6000 {
		t.Fatalf("user bucket after a refused reservation: full=%d used=%d, want 0, 6000", full, used)
	}
	// Release gives the amount back.
	settle(l1, 6000, both, false)
	if full, _ := reserve(l2, 10000, both); full != -1 {
		t.Fatalf("after release, a reservation of the whole limit was refused by %d", full)
	}
	settle(l2, 10000, both, true)
	// Committed amounts count.
	if full, used := reserve(l1, 1, both); full != 0 || used != 10000 {
		t.Fatalf("after commit: full=%d used=%d", full, used)
	}
	wantUsed(agent, 10000)
	wantUsed(limits.Bucket{Rule: agent.Rule, Key: "a1", Start: start + day, End: start + 2*day, Limit: 10000}, 0)
	// The second bucket can be the one that is full.
	if full, used := reserve(l1, 5001, []limits.Bucket{{Rule: agent.Rule, Key: "a2", Start: start, End: start + day, Limit: 10000}, user}); full != 1 || used != 10000 {
		t.Fatalf("user bucket: full=%d used=%d, want 1, 10000", full, used)
	}
	// Other keys and other windows are separate.
	next := agent
	next.Start, next.End = start+day, start+2*day
	if full, _ := reserve(l1, 10000, []limits.Bucket{next}); full != -1 {
		t.Fatal("the next window is not separate")
	}
	settle(l1, 10000, []limits.Bucket{next}, true)

	// Concurrent reservations from both replicas never overrun the limit.
	fresh := limits.Bucket{Rule: "race", Key: "k", Start: start, End: start + day, Limit: 1000}
	var ok atomic.Int64
	var wg sync.WaitGroup
	const workers, amount = 16, 100
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := l1
			if i%2 == 1 {
				l = l2
			}
			full, _, err := l.Reserve(ctx, amount, []limits.Bucket{fresh, {Rule: "race-other", Key: fmt.Sprint(i % 3), Start: start, End: start + day, Limit: 1 << 40}})
			if err != nil {
				t.Error(err)
				return
			}
			if full == -1 {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := ok.Load(); got != 1000/amount {
		t.Fatalf("%d concurrent reservations of %d succeeded under a limit of 1000, want %d", got, amount, 1000/amount)
	}

	if p, isPruner := l1.(limits.Pruner); isPruner {
		if _, err := p.Prune(ctx, start+day+1); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		if full, _ := reserve(l1, 10000, []limits.Bucket{agent}); full != -1 {
			t.Fatal("Prune did not drop an ended window")
		}
		if full, _ := reserve(l1, 1, []limits.Bucket{next}); full != 0 {
			t.Fatal("Prune dropped a window that had not ended")
		}
	}
}
