package lock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/lock/locktest"
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

// auditLog collects audited changes; fail makes the next calls fail.
type auditLog struct {
	mu      sync.Mutex
	changes []lock.Change
	fail    error
}

func (a *auditLog) record(_ context.Context, c lock.Change) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.changes = append(a.changes, c)
	return nil
}

func (a *auditLog) all() []lock.Change {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]lock.Change(nil), a.changes...)
}

func newManager(t *testing.T, st lock.Store, cfg lock.Config) *lock.Manager {
	t.Helper()
	cfg.Store = st
	if cfg.Audit == nil {
		cfg.Audit = (&auditLog{}).record
	}
	m, err := lock.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func request(agent, user, task, server, target string) *pipeline.Request {
	return &pipeline.Request{ID: "c1", Phase: pipeline.PhaseCall, Action: pipeline.ActionCallTool,
		Caller: &pipeline.Caller{Agent: agent, User: user, Task: task}, Server: server, Target: target}
}

func check(t *testing.T, m *lock.Manager, r *pipeline.Request) verdict.Verdict {
	t.Helper()
	v, err := m.Check(context.Background(), r)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return v
}

func TestValidate(t *testing.T) {
	now := time.Now()
	ok := lock.Lock{Reason: "incident 7", By: "alice", Created: now}
	for _, tc := range []struct {
		name   string
		scope  lock.Scope
		target string
		mod    func(*lock.Lock)
		valid  bool
	}{
		{"global", lock.Global, "", nil, true},
		{"global with target", lock.Global, "x", nil, false},
		{"agent", lock.Agent, "a1", nil, true},
		{"agent without target", lock.Agent, "", nil, false},
		{"tool", lock.Tool, "bank/transfer", nil, true},
		{"tool without server", lock.Tool, "transfer", nil, false},
		{"tool with empty name", lock.Tool, "bank/", nil, false},
		{"unknown scope", "planet", "earth", nil, false},
		{"no reason", lock.User, "u", func(l *lock.Lock) { l.Reason = " " }, false},
		{"no author", lock.User, "u", func(l *lock.Lock) { l.By = "" }, false},
		{"expired at creation", lock.Task, "t", func(l *lock.Lock) { l.Expires = now.Add(-time.Second) }, false},
		{"long reason", lock.Task, "t", func(l *lock.Lock) { l.Reason = strings.Repeat("x", 2000) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := ok
			l.Scope, l.Target = tc.scope, tc.target
			if tc.mod != nil {
				tc.mod(&l)
			}
			err := l.Validate()
			if (err == nil) != tc.valid {
				t.Fatalf("Validate() = %v, want valid=%v", err, tc.valid)
			}
			if err != nil && !errors.Is(err, lock.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestCheckScopes(t *testing.T) {
	ctx := context.Background()
	base := request("a1", "u1", "t1", "bank", "transfer")
	other := request("a2", "u2", "t2", "ws", "read")
	for _, tc := range []struct {
		scope  lock.Scope
		target string
		// also lists a request the lock must not stop.
		spared *pipeline.Request
	}{
		{lock.Global, "", nil},
		{lock.Agent, "a1", other},
		{lock.User, "u1", other},
		{lock.Task, "t1", other},
		{lock.Server, "bank", other},
		{lock.Tool, "bank/transfer", request("a1", "u1", "t1", "bank", "balance")},
	} {
		t.Run(string(tc.scope), func(t *testing.T) {
			audit := &auditLog{}
			m := newManager(t, lock.NewMemoryStore(), lock.Config{Audit: audit.record})
			if v := check(t, m, base); v.Outcome != verdict.Allow {
				t.Fatalf("before the lock: %+v", v)
			}
			if _, err := m.Lock(ctx, lock.Lock{Scope: tc.scope, Target: tc.target, Reason: "secret incident details", By: "alice"}); err != nil {
				t.Fatal(err)
			}
			v := check(t, m, base)
			if v.Outcome != verdict.Block || v.First().Code != "lock."+string(tc.scope) || v.First().Layer != verdict.Execution {
				t.Fatalf("after the lock: %+v", v)
			}
			if strings.Contains(v.First().Message, "secret") {
				t.Fatalf("the agent sees the operator's reason: %q", v.First().Message)
			}
			// At list time the item is hidden as well.
			lr := *base
			lr.Phase = pipeline.PhaseList
			if v := check(t, m, &lr); v.Outcome != verdict.Block {
				t.Fatalf("list phase: %+v", v)
			}
			if tc.spared != nil {
				if v := check(t, m, tc.spared); v.Outcome != verdict.Allow {
					t.Fatalf("unrelated request refused: %+v", v)
				}
			}
			if err := m.Unlock(ctx, tc.scope, tc.target, "bob"); err != nil {
				t.Fatal(err)
			}
			if v := check(t, m, base); v.Outcome != verdict.Allow {
				t.Fatalf("after unlock: %+v", v)
			}
			ch := audit.all()
			if len(ch) != 2 || ch[0].Action != "lock" || ch[0].By != "alice" || ch[1].Action != "unlock" || ch[1].By != "bob" ||
				ch[1].Lock.Reason != "secret incident details" {
				t.Fatalf("audit = %+v", ch)
			}
		})
	}
}

func TestUserAndTaskLocksIgnoreEmptyIDs(t *testing.T) {
	m := newManager(t, lock.NewMemoryStore(), lock.Config{})
	ctx := context.Background()
	if _, err := m.Lock(ctx, lock.Lock{Scope: lock.User, Target: "u1", Reason: "r", By: "a"}); err != nil {
		t.Fatal(err)
	}
	if v := check(t, m, request("a1", "", "", "bank", "x")); v.Outcome != verdict.Allow {
		t.Fatalf("a request without user was refused: %+v", v)
	}
	if v := check(t, m, &pipeline.Request{Server: "bank"}); v.Outcome != verdict.Allow {
		t.Fatalf("a request without caller was refused: %+v", v)
	}
}

func TestExpiry(t *testing.T) {
	clk := newClock()
	st := lock.NewMemoryStore()
	m := newManager(t, st, lock.Config{Now: clk.Now, MaxStale: 24 * time.Hour})
	ctx := context.Background()
	l, err := m.Lock(ctx, lock.Lock{Scope: lock.Agent, Target: "a1", Reason: "r", By: "a", Expires: clk.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	v := check(t, m, request("a1", "", "", "", ""))
	if v.Outcome != verdict.Block || !strings.Contains(v.First().Message, "until 2026-03-01T13:00:00Z") {
		t.Fatalf("%+v", v)
	}
	if got, ok := m.Match(request("a1", "", "", "", "")); !ok || got.Target != "a1" {
		t.Fatalf("Match = %+v, %v", got, ok)
	}
	clk.Add(time.Hour)
	if v := check(t, m, request("a1", "", "", "", "")); v.Outcome != verdict.Allow {
		t.Fatalf("expired lock still enforced: %+v", v)
	}
	ls, err := m.List(ctx)
	if err != nil || len(ls) != 0 {
		t.Fatalf("List after expiry = %v, %v (lock %v)", ls, err, l)
	}
}

// TestActiveLocksMetric checks gatehouse_locks_active: it counts the locks
// in force, drops on an unlock, and drops when a lock's TTL runs out
// although the expired lock stays in the store.
func TestActiveLocksMetric(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	reg := prometheus.NewRegistry()
	m := newManager(t, lock.NewMemoryStore(), lock.Config{Now: clk.Now, MaxStale: 24 * time.Hour, Registerer: reg})
	active := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "gatehouse_locks_active" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("gatehouse_locks_active is not registered")
		return 0
	}
	if got := active(); got != 0 {
		t.Fatalf("no lock: %v", got)
	}
	for _, l := range []lock.Lock{
		{Scope: lock.Agent, Target: "a1", Reason: "r", By: "ops"},
		{Scope: lock.Server, Target: "bank", Reason: "r", By: "ops", Expires: clk.Now().Add(time.Hour)},
		{Scope: lock.Global, Reason: "r", By: "ops"},
	} {
		if _, err := m.Lock(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if got := active(); got != 3 {
		t.Fatalf("three locks: %v", got)
	}
	if err := m.Unlock(ctx, lock.Global, "", "ops"); err != nil {
		t.Fatal(err)
	}
	if got := active(); got != 2 {
		t.Fatalf("after an unlock: %v", got)
	}
	clk.Add(time.Hour)
	if got := active(); got != 1 {
		t.Fatalf("after the server lock expired: %v", got)
	}
}

func TestAuditFailureRefusesChange(t *testing.T) {
	ctx := context.Background()
	audit := &auditLog{}
	st := lock.NewMemoryStore()
	m := newManager(t, st, lock.Config{Audit: audit.record})
	audit.fail = errors.New("audit log down")
	if _, err := m.Lock(ctx, lock.Lock{Scope: lock.Agent, Target: "a1", Reason: "r", By: "a"}); !errors.Is(err, lock.ErrAudit) {
		t.Fatalf("Lock with a failing audit = %v", err)
	}
	if ls, _ := st.List(ctx); len(ls) != 0 {
		t.Fatalf("an unaudited lock was stored: %v", ls)
	}
	audit.fail = nil
	if _, err := m.Lock(ctx, lock.Lock{Scope: lock.Agent, Target: "a1", Reason: "r", By: "a"}); err != nil {
		t.Fatal(err)
	}
	audit.fail = errors.New("audit log down")
	if err := m.Unlock(ctx, lock.Agent, "a1", "b"); !errors.Is(err, lock.ErrAudit) {
		t.Fatalf("Unlock with a failing audit = %v", err)
	}
	if v := check(t, m, request("a1", "", "", "", "")); v.Outcome != verdict.Block {
		t.Fatalf("an unaudited unlock took effect: %+v", v)
	}
}

func TestStoreFailureAfterAudit(t *testing.T) {
	ctx := context.Background()
	audit := &auditLog{}
	st := lock.NewMemoryStore()
	m := newManager(t, st, lock.Config{Audit: audit.record})
	st.SetError(errors.New("disk full"))
	if _, err := m.Lock(ctx, lock.Lock{Scope: lock.Agent, Target: "a1", Reason: "r", By: "a"}); err == nil {
		t.Fatal("Lock succeeded on a failing store")
	}
	ch := audit.all()
	if len(ch) != 2 || ch[0].Failed || !ch[1].Failed || !strings.Contains(ch[1].Error, "disk full") {
		t.Fatalf("audit = %+v", ch)
	}
}

func TestUnlockErrors(t *testing.T) {
	ctx := context.Background()
	audit := &auditLog{}
	m := newManager(t, lock.NewMemoryStore(), lock.Config{Audit: audit.record})
	if err := m.Unlock(ctx, lock.Agent, "nobody", "b"); !errors.Is(err, lock.ErrNotLocked) {
		t.Fatalf("Unlock of nothing = %v", err)
	}
	if err := m.Unlock(ctx, "planet", "x", "b"); !errors.Is(err, lock.ErrInvalid) {
		t.Fatalf("Unlock of a bad scope = %v", err)
	}
	if len(audit.all()) != 0 {
		t.Fatalf("refused unlocks were audited: %+v", audit.all())
	}
	if _, err := m.Lock(ctx, lock.Lock{Scope: lock.Global, Reason: "r", By: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlock(ctx, lock.Global, "-", "b"); err != nil {
		t.Fatalf("Unlock global with target -: %v", err)
	}
}

// TestPropagation shows a lock set through one replica's Manager stopping
// requests on another replica (sharing the store) within one second.
func TestPropagation(t *testing.T) {
	st := lock.NewMemoryStore()
	locktest.Propagation(t, st, st, 250*time.Millisecond)
}

func TestMemoryStoreContract(t *testing.T) {
	locktest.TestStore(t, lock.NewMemoryStore())
}

func TestFailModes(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []lock.FailMode{lock.FailClosed, lock.FailOpen} {
		t.Run(mode.String(), func(t *testing.T) {
			clk := newClock()
			st := lock.NewMemoryStore()
			reg := prometheus.NewRegistry()
			m := newManager(t, st, lock.Config{Now: clk.Now, FailMode: mode, Registerer: reg, MaxStale: 5 * time.Second, PollInterval: time.Millisecond})
			if _, err := m.Lock(ctx, lock.Lock{Scope: lock.Agent, Target: "a1", Reason: "r", By: "a"}); err != nil {
				t.Fatal(err)
			}
			st.SetError(errors.New("database down"))
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { _ = m.Run(runCtx); close(done) }()
			defer func() { cancel(); <-done }()
			clk.Add(4 * time.Second)
			if v := check(t, m, request("a2", "", "", "", "")); v.Outcome != verdict.Allow {
				t.Fatalf("within MaxStale: %+v", v)
			}
			clk.Add(2 * time.Second)
			v := check(t, m, request("a2", "", "", "", ""))
			want := verdict.Block
			if mode == lock.FailOpen {
				want = verdict.Allow
			}
			if v.Outcome != want {
				t.Fatalf("stale snapshot, fail %s: %+v", mode, v)
			}
			if mode == lock.FailClosed && v.First().Code != "lock.unavailable" {
				t.Fatalf("code = %q", v.First().Code)
			}
			// The last snapshot is still enforced in open mode.
			if v := check(t, m, request("a1", "", "", "", "")); v.Outcome != verdict.Block {
				t.Fatalf("known lock not enforced while stale: %+v", v)
			}
			if got := failures(t, reg, "locks", mode.String()); got < 1 {
				t.Fatalf("gatehouse_control_failures_total{control=locks} = %v", got)
			}
			// The store heals; the next refresh brings the Manager back.
			st.SetError(nil)
			deadline := time.Now().Add(2 * time.Second)
			for check(t, m, request("a2", "", "", "", "")).Outcome != verdict.Allow {
				if time.Now().After(deadline) {
					t.Fatal("the Manager did not recover")
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
}

// failures reads gatehouse_control_failures_total{control, fail_mode}.
func failures(t *testing.T, reg *prometheus.Registry, control, mode string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gatehouse_control_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["control"] == control && labels["fail_mode"] == mode {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no gatehouse_control_failures_total{control=%q,fail_mode=%q}", control, mode)
	return 0
}

func TestNewFailsClosedOnUnreadableStore(t *testing.T) {
	st := lock.NewMemoryStore()
	st.SetError(errors.New("down"))
	audit := &auditLog{}
	if _, err := lock.New(context.Background(), lock.Config{Store: st, Audit: audit.record}); err == nil {
		t.Fatal("New succeeded on an unreadable store in fail mode closed")
	}
	m, err := lock.New(context.Background(), lock.Config{Store: st, Audit: audit.record, FailMode: lock.FailOpen})
	if err != nil {
		t.Fatalf("fail mode open: %v", err)
	}
	if v := check(t, m, request("a", "", "", "", "")); v.Outcome != verdict.Allow {
		t.Fatalf("%+v", v)
	}
	if _, err := lock.New(context.Background(), lock.Config{Store: st}); err == nil {
		t.Fatal("New without an audit function succeeded")
	}
}

func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	m, err := lock.New(ctx, lock.Config{Store: lock.NewMemoryStore(), MaxStale: time.Hour, Audit: func(context.Context, lock.Change) error { return nil }})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		for _, sc := range []lock.Scope{lock.Agent, lock.User, lock.Task, lock.Server} {
			if _, err := m.Lock(ctx, lock.Lock{Scope: sc, Target: "x" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Reason: "r", By: "a"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	r := request("a1", "u1", "t1", "bank", "transfer")
	b.ReportAllocs()
	for b.Loop() {
		if v, _ := m.Check(ctx, r); v.Outcome != verdict.Allow {
			b.Fatal(v)
		}
	}
}
