// Package flowtest holds the contract every pipeline.FlowStore must pass,
// and an in-memory FlowStore for tests.
package flowtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Memory is a pipeline.FlowStore in memory (one process, not durable).
type Memory struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time

	mu  sync.Mutex
	m   map[string]map[verdict.Label]time.Time
	err error
}

// SetError makes every later call fail with err (nil heals the store).
func (m *Memory) SetError(err error) {
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
}

func (m *Memory) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Labels implements pipeline.FlowStore.
func (m *Memory) Labels(_ context.Context, key string) ([]verdict.Label, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	now := m.now()
	var out []verdict.Label
	for l, until := range m.m[key] {
		if until.After(now) {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Raise implements pipeline.FlowStore.
func (m *Memory) Raise(_ context.Context, key string, labels []verdict.Label, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if key == "" {
		return errors.New("empty key")
	}
	if m.m == nil {
		m.m = map[string]map[verdict.Label]time.Time{}
	}
	if m.m[key] == nil {
		m.m[key] = map[verdict.Label]time.Time{}
	}
	for _, l := range labels {
		if until.After(m.m[key][l]) {
			m.m[key][l] = until
		}
	}
	return nil
}

// TestStore runs the FlowStore contract. open returns a store using the
// given clock; it is called twice, and both stores must share their
// storage (two replicas on one database).
func TestStore(t *testing.T, open func(now func() time.Time) pipeline.FlowStore) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	a, b := open(clock), open(clock)
	t0 := clock()
	priv, untrusted := verdict.SessionPrivateData, verdict.SessionUntrustedContent
	labels := func(s pipeline.FlowStore, key string) []verdict.Label {
		t.Helper()
		ls, err := s.Labels(ctx, key)
		if err != nil {
			t.Fatalf("Labels(%s): %v", key, err)
		}
		slices.Sort(ls)
		return ls
	}
	want := func(s pipeline.FlowStore, key string, exp ...verdict.Label) {
		t.Helper()
		slices.Sort(exp)
		if got := labels(s, key); !slices.Equal(got, exp) {
			t.Errorf("labels of %s = %v, want %v", key, got, exp)
		}
	}

	want(a, "task:t1")
	if err := a.Raise(ctx, "task:t1", []verdict.Label{priv}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.Raise(ctx, "task:t1", []verdict.Label{untrusted}, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The other replica sees them; other keys are clean.
	want(b, "task:t1", priv, untrusted)
	want(b, "task:t2")
	want(b, "token:agent:t1")

	// A raise with an earlier deadline does not shorten a label's time.
	if err := b.Raise(ctx, "task:t1", []verdict.Label{untrusted}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	advance(90 * time.Minute)
	want(a, "task:t1", untrusted)
	advance(time.Hour)
	want(a, "task:t1")
	// A label raised again after it expired counts again.
	if err := b.Raise(ctx, "task:t1", []verdict.Label{priv}, clock().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	want(a, "task:t1", priv)

	// Concurrent raises from both replicas all land.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			errs <- s.Raise(ctx, "task:busy", []verdict.Label{verdict.Label(fmt.Sprintf("l%02d", i)), priv}, clock().Add(time.Hour))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := labels(b, "task:busy"); len(got) != 21 {
		t.Errorf("after concurrent raises: %d labels (%v), want 21", len(got), got)
	}
}
