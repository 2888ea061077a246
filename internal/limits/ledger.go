package limits

import (
	"context"
	"sort"
	"sync"
)

// Bucket is one running total in one window: the total named Rule, for Key
// (an agent, user or task id), over [Start, End) in Unix seconds, capped at
// Limit minor units.
type Bucket struct {
	Rule  string
	Key   string
	Start int64
	End   int64
	Limit int64
}

// Ledger keeps running totals. Each bucket has a committed amount (calls
// that happened, or whose outcome is unknown) and a reserved amount (calls
// in flight); both count against the limit, so concurrent calls cannot
// overrun it.
//
// Implementations must be safe for concurrent use, also across processes
// sharing the same storage (gateway replicas): Reserve is atomic over all
// its buckets — it reserves amount in every bucket or in none — and only
// when, for every bucket, committed + reserved + amount ≤ Limit at that
// moment. Reserve, and Settle with commit, must be durable on return.
type Ledger interface {
	// Reserve returns full = -1 when amount was reserved in every bucket;
	// otherwise it reserved nothing and full is the index of a bucket that
	// could not take amount, with used its committed + reserved amount.
	Reserve(ctx context.Context, amount int64, buckets []Bucket) (full int, used int64, err error)
	// Settle ends a reservation made by Reserve with the same amount and
	// buckets: commit moves the amount from reserved to committed,
	// otherwise it is released.
	Settle(ctx context.Context, amount int64, buckets []Bucket, commit bool) error
}

// TotalReader is implemented by ledgers that can report a bucket's use,
// for policy (Limiter.Used). Used returns the bucket's committed plus
// reserved amount as the ledger holds it now (0 for a bucket it does not
// hold); an error means the use is unknown.
type TotalReader interface {
	Used(ctx context.Context, b Bucket) (int64, error)
}

// Pruner is implemented by ledgers that can drop buckets whose window ended
// before a time (Unix seconds); Limiter.Run calls it.
type Pruner interface {
	Prune(ctx context.Context, endedBefore int64) (int64, error)
}

// MemoryLedger is a Ledger in memory, for tests and single-process use
// without durability.
type MemoryLedger struct {
	mu  sync.Mutex
	m   map[bucketKey]*counts
	err error
}

type bucketKey struct {
	rule, key string
	start     int64
}

type counts struct {
	end                 int64
	committed, reserved int64
}

// NewMemoryLedger returns an empty ledger.
func NewMemoryLedger() *MemoryLedger { return &MemoryLedger{m: map[bucketKey]*counts{}} }

// SetError makes every later call fail with err (nil heals the ledger).
func (l *MemoryLedger) SetError(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

// Reserve implements Ledger.
func (l *MemoryLedger) Reserve(_ context.Context, amount int64, buckets []Bucket) (int, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, 0, l.err
	}
	for i, b := range buckets {
		c := l.m[bucketKey{b.Rule, b.Key, b.Start}]
		var used int64
		if c != nil {
			used = c.committed + c.reserved
		}
		if amount > b.Limit-used {
			return i, used, nil
		}
	}
	for _, b := range buckets {
		k := bucketKey{b.Rule, b.Key, b.Start}
		c := l.m[k]
		if c == nil {
			c = &counts{end: b.End}
			l.m[k] = c
		}
		c.reserved += amount
	}
	return -1, 0, nil
}

// Settle implements Ledger.
func (l *MemoryLedger) Settle(_ context.Context, amount int64, buckets []Bucket, commit bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	for _, b := range buckets {
		c := l.m[bucketKey{b.Rule, b.Key, b.Start}]
		if c == nil {
			continue
		}
		c.reserved -= amount
		if commit {
			c.committed += amount
		}
	}
	return nil
}

// Used implements TotalReader.
func (l *MemoryLedger) Used(_ context.Context, b Bucket) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	c := l.m[bucketKey{b.Rule, b.Key, b.Start}]
	if c == nil {
		return 0, nil
	}
	return c.committed + c.reserved, nil
}

// Prune implements Pruner.
func (l *MemoryLedger) Prune(_ context.Context, endedBefore int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for k, c := range l.m {
		if c.end < endedBefore {
			delete(l.m, k)
			n++
		}
	}
	return n, nil
}

// Usage is a bucket's committed and reserved amounts.
type Usage struct {
	Bucket
	Committed int64
	Reserved  int64
}

// Usage returns every bucket, ordered by rule, key and start (for tests
// and the console).
func (l *MemoryLedger) Usage() []Usage {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Usage, 0, len(l.m))
	for k, c := range l.m {
		out = append(out, Usage{Bucket: Bucket{Rule: k.rule, Key: k.key, Start: k.start, End: c.end}, Committed: c.committed, Reserved: c.reserved})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Start < b.Start
	})
	return out
}
