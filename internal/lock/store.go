package lock

import (
	"context"
	"sort"
	"sync"
)

// Store keeps lock records shared by every gateway replica.
//
// Implementations must be safe for concurrent use, must make Put and Delete
// durable before returning, and must increase the version returned by
// Version on every Put and Delete, so that a replica that sees an unchanged
// version may keep its snapshot. Put replaces the lock with the same scope
// and target. Delete returns ErrNotLocked when there is no such lock.
//
// A store may also implement Watcher to push changes.
type Store interface {
	Put(ctx context.Context, l Lock) error
	Delete(ctx context.Context, scope Scope, target string) error
	List(ctx context.Context) ([]Lock, error)
	Version(ctx context.Context) (int64, error)
}

// Watcher is implemented by stores that can announce changes (PostgreSQL
// LISTEN/NOTIFY). Watch calls changed after it has subscribed and then on
// every change made by any replica, until ctx ends or the subscription
// fails; it returns errors.ErrUnsupported when the backend cannot watch,
// and the Manager then relies on polling alone.
type Watcher interface {
	Watch(ctx context.Context, changed func()) error
}

// MemoryStore is a Store in memory, for tests and single-process use. Two
// Managers sharing one MemoryStore behave like two replicas sharing a
// database.
type MemoryStore struct {
	mu      sync.Mutex
	locks   map[[2]string]Lock
	version int64
	// Err, when set, is returned by every method (to test outages).
	err error
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{locks: map[[2]string]Lock{}} }

// SetError makes every later call fail with err (nil heals the store).
func (s *MemoryStore) SetError(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// Put implements Store.
func (s *MemoryStore) Put(_ context.Context, l Lock) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.locks[[2]string{string(l.Scope), l.Target}] = l
	s.version++
	return nil
}

// Delete implements Store.
func (s *MemoryStore) Delete(_ context.Context, scope Scope, target string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	k := [2]string{string(scope), target}
	if _, ok := s.locks[k]; !ok {
		return ErrNotLocked
	}
	delete(s.locks, k)
	s.version++
	return nil
}

// List implements Store.
func (s *MemoryStore) List(_ context.Context) ([]Lock, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	out := make([]Lock, 0, len(s.locks))
	for _, l := range s.locks {
		out = append(out, l)
	}
	sortLocks(out)
	return out, nil
}

// Version implements Store.
func (s *MemoryStore) Version(_ context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	return s.version, nil
}

// sortLocks orders locks by scope (broadest first), then target.
func sortLocks(ls []Lock) {
	rank := func(s Scope) int {
		for i, sc := range Scopes {
			if sc == s {
				return i
			}
		}
		return len(Scopes)
	}
	sort.Slice(ls, func(i, j int) bool {
		if a, b := rank(ls[i].Scope), rank(ls[j].Scope); a != b {
			return a < b
		}
		return ls[i].Target < ls[j].Target
	})
}
