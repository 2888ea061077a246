// Package locktest is the contract test suite that every lock.Store must
// pass, and the propagation test shared by the store backends.
package locktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// TestStore checks st, which must be empty, against the lock.Store contract.
func TestStore(t *testing.T, st lock.Store) {
	t.Helper()
	ctx := context.Background()
	v0, err := st.Version(ctx)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if ls, err := st.List(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("List of an empty store = %v, %v", ls, err)
	}
	created := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	a := lock.Lock{Scope: lock.Agent, Target: "a1", Reason: "incident 7", By: "alice", Created: created}
	g := lock.Lock{Scope: lock.Global, Reason: "freeze", By: "bob", Created: created, Expires: created.Add(time.Hour)}
	tool := lock.Lock{Scope: lock.Tool, Target: "bank/transfer", Reason: "r", By: "carol", Created: created}
	for _, l := range []lock.Lock{a, g, tool} {
		if err := st.Put(ctx, l); err != nil {
			t.Fatalf("Put(%v): %v", l, err)
		}
	}
	v1, err := st.Version(ctx)
	if err != nil || v1 < v0+3 {
		t.Fatalf("Version after 3 puts = %d, %v (was %d)", v1, err, v0)
	}
	ls, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]lock.Lock{}
	for _, l := range ls {
		got[l.String()] = l
	}
	for _, want := range []lock.Lock{a, g, tool} {
		l, ok := got[want.String()]
		if !ok || l.Reason != want.Reason || l.By != want.By || !l.Created.Equal(want.Created) || !l.Expires.Equal(want.Expires) {
			t.Fatalf("List has %+v for %v, want %+v", l, want, want)
		}
	}
	if len(ls) != 3 {
		t.Fatalf("List = %d locks, want 3", len(ls))
	}
	// Put replaces.
	a2 := a
	a2.Reason, a2.Expires = "updated", created.Add(2*time.Hour)
	if err := st.Put(ctx, a2); err != nil {
		t.Fatal(err)
	}
	ls, _ = st.List(ctx)
	for _, l := range ls {
		if l.Scope == lock.Agent && (l.Reason != "updated" || !l.Expires.Equal(a2.Expires)) {
			t.Fatalf("Put did not replace: %+v", l)
		}
	}
	if len(ls) != 3 {
		t.Fatalf("Put of an existing lock added one: %d locks", len(ls))
	}
	// Delete.
	v2, _ := st.Version(ctx)
	if err := st.Delete(ctx, lock.Global, ""); err != nil {
		t.Fatalf("Delete global: %v", err)
	}
	if err := st.Delete(ctx, lock.Global, ""); !errors.Is(err, lock.ErrNotLocked) {
		t.Fatalf("second Delete = %v, want ErrNotLocked", err)
	}
	if err := st.Delete(ctx, lock.Agent, "nobody"); !errors.Is(err, lock.ErrNotLocked) {
		t.Fatalf("Delete of a missing lock = %v, want ErrNotLocked", err)
	}
	if v3, err := st.Version(ctx); err != nil || v3 <= v2 {
		t.Fatalf("Version after Delete = %d, %v (was %d)", v3, err, v2)
	}
	if ls, _ := st.List(ctx); len(ls) != 2 {
		t.Fatalf("List after Delete = %v", ls)
	}
	// Concurrent changes are all kept and all counted.
	v4, _ := st.Version(ctx)
	var wg sync.WaitGroup
	const n = 8
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.Put(ctx, lock.Lock{Scope: lock.Task, Target: fmt.Sprint("t", i), Reason: "r", By: "x", Created: created}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ls, _ := st.List(ctx); len(ls) != 2+n {
		t.Fatalf("after concurrent puts: %d locks", len(ls))
	}
	if v5, _ := st.Version(ctx); v5 < v4+n {
		t.Fatalf("Version after %d concurrent puts = %d (was %d)", n, v5, v4)
	}
}

// Propagation shows a lock set through a Manager on st1 stopping requests
// at a Manager on st2 (another replica on the same store) within one
// second, and st2's subscribers hearing of it; then the unlock. poll is the
// replicas' PollInterval (a long one tests a Watcher's notifications).
func Propagation(t *testing.T, st1, st2 lock.Store, poll time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nop := func(context.Context, lock.Change) error { return nil }
	m1, err := lock.New(ctx, lock.Config{Store: st1, Audit: nop, PollInterval: poll, MaxStale: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m2, err := lock.New(ctx, lock.Config{Store: st2, Audit: nop, PollInterval: poll, MaxStale: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, m := range []*lock.Manager{m1, m2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.Run(ctx)
		}()
	}
	defer wg.Wait()
	defer cancel()
	heard := make(chan lock.Lock, 4)
	defer m2.Subscribe(func(l lock.Lock) { heard <- l })()
	r := &pipeline.Request{ID: "c1", Phase: pipeline.PhaseCall, Action: pipeline.ActionCallTool,
		Caller: &pipeline.Caller{Agent: "a1"}, Server: "bank", Target: "transfer"}
	outcome := func() verdict.Outcome {
		v, err := m2.Check(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return v.Outcome
	}
	if o := outcome(); o != verdict.Allow {
		t.Fatalf("before the lock: %v", o)
	}
	// Let a Watcher subscribe before the change.
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if _, err := m1.Lock(ctx, lock.Lock{Scope: lock.Agent, Target: "a1", Reason: "r", By: "a"}); err != nil {
		t.Fatal(err)
	}
	for outcome() != verdict.Block {
		if time.Since(start) > time.Second {
			t.Fatal("the lock was not enforced by the other replica within 1s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("lock enforced by the other replica after %v", time.Since(start))
	select {
	case l := <-heard:
		if !l.Matches(r) {
			t.Fatalf("subscriber heard %+v, which does not match the request", l)
		}
	case <-time.After(time.Second):
		t.Fatal("the other replica's subscriber was not told")
	}
	start = time.Now()
	if err := m1.Unlock(ctx, lock.Agent, "a1", "b"); err != nil {
		t.Fatal(err)
	}
	for outcome() != verdict.Allow {
		if time.Since(start) > time.Second {
			t.Fatal("the unlock was not seen by the other replica within 1s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
