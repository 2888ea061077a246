package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// FailMode says what Check does when the lock snapshot is stale because the
// store cannot be read.
type FailMode uint8

const (
	// FailClosed refuses every request (the default).
	FailClosed FailMode = iota
	// FailOpen keeps enforcing the last snapshot read.
	FailOpen
)

// ParseFailMode parses "closed" (or "") and "open".
func ParseFailMode(s string) (FailMode, error) {
	switch s {
	case "", "closed":
		return FailClosed, nil
	case "open":
		return FailOpen, nil
	}
	return FailClosed, fmt.Errorf("unknown fail mode %q (want closed or open)", s)
}

func (f FailMode) String() string {
	if f == FailOpen {
		return "open"
	}
	return "closed"
}

// Change describes one lock change for the audit log.
type Change struct {
	// Action is "lock" or "unlock".
	Action string
	// Lock is the lock set, or the lock removed.
	Lock Lock
	// By names who made the change.
	By   string
	Time time.Time
	// Failed is set on a second record of a change that was recorded but
	// could not be applied; Error says why.
	Failed bool
	Error  string
}

// Config configures a Manager.
type Config struct {
	// Store holds the locks. Required.
	Store Store
	// Audit records every change before it is applied; when it returns an
	// error the change is refused (ErrAudit). Required.
	Audit func(ctx context.Context, c Change) error
	// PollInterval is how often the store's version is read. Default 250ms.
	PollInterval time.Duration
	// MaxStale is how long the snapshot may go without a successful
	// refresh before the fail mode applies. Default 5s; at least
	// 2×PollInterval.
	MaxStale time.Duration
	// FailMode applies when the snapshot is stale. Default FailClosed.
	FailMode FailMode
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Manager enforces and changes locks. It is safe for concurrent use; Run
// must be running for the snapshot to follow the store.
type Manager struct {
	cfg     Config
	snap    atomic.Pointer[snapshot]
	okAt    atomic.Int64 // UnixNano of the last successful refresh
	refresh sync.Mutex   // serialises refreshes
	kick    chan struct{}
	subsMu  sync.Mutex
	subs    map[int]func(Lock)
	nextSub int
	met     *metrics
}

// New reads the locks from the store and returns a Manager. With
// FailClosed, a store that cannot be read is an error; with FailOpen the
// Manager starts with no locks and keeps trying.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("lock: a store is required")
	}
	if cfg.Audit == nil {
		return nil, errors.New("lock: an audit function is required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = 5 * time.Second
	}
	cfg.MaxStale = max(cfg.MaxStale, 2*cfg.PollInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, kick: make(chan struct{}, 1), subs: map[int]func(Lock){}}
	m.met = newMetrics(cfg.Registerer, cfg.Logger, m.activeLocks)
	m.snap.Store(buildSnapshot(-1, nil))
	if err := m.reload(ctx, true); err != nil {
		if cfg.FailMode == FailClosed {
			return nil, fmt.Errorf("reading locks: %w", err)
		}
		cfg.Logger.Error("reading locks failed; starting without locks (fail mode open)", "err", err)
	}
	return m, nil
}

// Run follows the store until ctx ends: it polls the version every
// PollInterval and, when the store is a Watcher, reloads as soon as a change
// is announced.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if w, ok := m.cfg.Store.(Watcher); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.watch(ctx, w)
		}()
	}
	t := time.NewTicker(m.cfg.PollInterval)
	defer func() {
		t.Stop()
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
		}
		if err := m.reload(ctx, false); err != nil && ctx.Err() == nil {
			m.cfg.Logger.Warn("refreshing locks failed", "err", err)
		}
	}
}

func (m *Manager) watch(ctx context.Context, w Watcher) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := w.Watch(ctx, func() {
			select {
			case m.kick <- struct{}{}:
			default:
			}
		})
		if errors.Is(err, errors.ErrUnsupported) || ctx.Err() != nil {
			return
		}
		m.cfg.Logger.Warn("watching lock changes failed; polling until it recovers", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// reload refreshes the snapshot when the store's version changed (or
// always, with force) and tells subscribers of new locks.
func (m *Manager) reload(ctx context.Context, force bool) error {
	m.refresh.Lock()
	added, err := m.reloadLocked(ctx, force)
	m.refresh.Unlock()
	if err != nil {
		m.met.up.Set(0)
		return err
	}
	m.met.up.Set(1)
	if len(added) > 0 {
		m.subsMu.Lock()
		subs := make([]func(Lock), 0, len(m.subs))
		for _, f := range m.subs {
			subs = append(subs, f)
		}
		m.subsMu.Unlock()
		for _, l := range added {
			for _, f := range subs {
				f(l)
			}
		}
	}
	return nil
}

func (m *Manager) reloadLocked(ctx context.Context, force bool) ([]Lock, error) {
	cur := m.snap.Load()
	v, err := m.cfg.Store.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading lock version: %w", err)
	}
	if v == cur.version && !force {
		m.okAt.Store(m.cfg.Now().UnixNano())
		return nil, nil
	}
	ls, err := m.cfg.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing locks: %w", err)
	}
	now := m.cfg.Now()
	next := buildSnapshot(v, ls)
	var added []Lock
	for _, l := range next.all {
		if !l.Active(now) {
			continue
		}
		if old := cur.lookup(l.Scope, l.Target); old == nil || !old.Created.Equal(l.Created) || !old.Expires.Equal(l.Expires) {
			added = append(added, l)
		}
	}
	m.snap.Store(next)
	m.okAt.Store(now.UnixNano())
	return added, nil
}

// activeLocks counts the locks of the current snapshot in force now
// (gatehouse_locks_active).
func (m *Manager) activeLocks() float64 {
	s := m.snap.Load()
	if s == nil { // scraped while New runs
		return 0
	}
	now, n := m.cfg.Now(), 0
	for _, l := range s.all {
		if l.Active(now) {
			n++
		}
	}
	return float64(n)
}

// Subscribe calls f for every lock that appears (set on this replica or
// another, or changed), after it is enforced, so that the gateway can
// cancel the in-flight and held requests that it matches (Lock.Matches).
// f runs on the refreshing goroutine: it must not block, nor change locks.
// The returned function ends the subscription.
func (m *Manager) Subscribe(f func(Lock)) (cancel func()) {
	m.subsMu.Lock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = f
	m.subsMu.Unlock()
	return func() {
		m.subsMu.Lock()
		delete(m.subs, id)
		m.subsMu.Unlock()
	}
}

// Lock sets l (replacing a lock with the same scope and target) and
// returns it as stored. Created defaults to now; a zero Expires never
// expires. The change is audited first: when the audit record fails, no
// lock is set and the error wraps ErrAudit. The lock is enforced by this
// Manager on return and by every replica within about PollInterval.
func (m *Manager) Lock(ctx context.Context, l Lock) (Lock, error) {
	if l.Created.IsZero() {
		l.Created = m.cfg.Now()
	}
	l.Created = l.Created.UTC().Truncate(time.Microsecond)
	if !l.Expires.IsZero() {
		l.Expires = l.Expires.UTC().Truncate(time.Microsecond)
	}
	if err := l.Validate(); err != nil {
		return Lock{}, err
	}
	c := Change{Action: "lock", Lock: l, By: l.By, Time: m.cfg.Now()}
	if err := m.cfg.Audit(ctx, c); err != nil {
		m.met.auditFailures.Inc()
		m.cfg.Logger.Error("auditing a lock failed; the lock was not set", "scope", l.Scope, "target", l.Target, "err", err)
		return Lock{}, fmt.Errorf("%w: %w", ErrAudit, err)
	}
	if err := m.cfg.Store.Put(ctx, l); err != nil {
		m.recordFailure(ctx, c, err)
		return Lock{}, fmt.Errorf("storing lock: %w", err)
	}
	m.cfg.Logger.Info("lock set", "scope", l.Scope, "target", l.Target, "by", l.By, "expires", l.Expires)
	if err := m.reload(ctx, true); err != nil {
		m.cfg.Logger.Warn("refreshing locks after a change failed", "err", err)
	}
	return l, nil
}

// Unlock removes the lock with scope and target (empty or "-" for global)
// on behalf of by. It returns ErrNotLocked when there is none; the change
// is audited first, as for Lock.
func (m *Manager) Unlock(ctx context.Context, scope Scope, target, by string) error {
	if _, err := ParseScope(string(scope)); err != nil {
		return err
	}
	if scope == Global && target == "-" {
		target = ""
	}
	if by == "" {
		return fmt.Errorf("%w: an unlock needs an author", ErrInvalid)
	}
	ls, err := m.cfg.Store.List(ctx)
	if err != nil {
		return fmt.Errorf("reading locks: %w", err)
	}
	var found *Lock
	for i := range ls {
		if ls[i].Scope == scope && ls[i].Target == target {
			found = &ls[i]
		}
	}
	if found == nil {
		return ErrNotLocked
	}
	c := Change{Action: "unlock", Lock: *found, By: by, Time: m.cfg.Now()}
	if err := m.cfg.Audit(ctx, c); err != nil {
		m.met.auditFailures.Inc()
		m.cfg.Logger.Error("auditing an unlock failed; the lock stays", "scope", scope, "target", target, "err", err)
		return fmt.Errorf("%w: %w", ErrAudit, err)
	}
	if err := m.cfg.Store.Delete(ctx, scope, target); err != nil {
		m.recordFailure(ctx, c, err)
		if errors.Is(err, ErrNotLocked) {
			return err
		}
		return fmt.Errorf("removing lock: %w", err)
	}
	m.cfg.Logger.Info("lock removed", "scope", scope, "target", target, "by", by)
	if err := m.reload(ctx, true); err != nil {
		m.cfg.Logger.Warn("refreshing locks after a change failed", "err", err)
	}
	return nil
}

// recordFailure audits that a recorded change could not be applied (best
// effort: the change itself has already failed).
func (m *Manager) recordFailure(ctx context.Context, c Change, err error) {
	c.Failed, c.Error, c.Time = true, err.Error(), m.cfg.Now()
	if aerr := m.cfg.Audit(ctx, c); aerr != nil {
		m.met.auditFailures.Inc()
		m.cfg.Logger.Error("auditing a failed lock change failed", "action", c.Action, "err", aerr)
	}
}

// List returns the locks in force, read from the store, broadest first.
func (m *Manager) List(ctx context.Context) ([]Lock, error) {
	ls, err := m.cfg.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading locks: %w", err)
	}
	now := m.cfg.Now()
	out := ls[:0]
	for _, l := range ls {
		if l.Active(now) {
			out = append(out, l)
		}
	}
	sortLocks(out)
	return out, nil
}

// Active returns the locks of the current snapshot that are in force.
func (m *Manager) Active() []Lock {
	now := m.cfg.Now()
	var out []Lock
	for _, l := range m.snap.Load().all {
		if l.Active(now) {
			out = append(out, l)
		}
	}
	return out
}
