package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
)

// Agents is the durable agent registry (implements identity.AgentStore).
//
// Lookups read an in-memory snapshot, so the authentication path never
// waits on the database. Every change bumps a registry version in the same
// transaction; Watch polls that version (one indexed single-row read every
// Poll) and reloads the snapshot when it moves, so a suspension committed
// by any replica is seen by every replica within Poll plus one reload. A
// snapshot that could not be refreshed for StaleAfter makes every lookup
// fail (closed): a replica cut off from the database does not keep
// honouring agents that may have been suspended.
type Agents struct {
	db  *DB
	cfg AgentsConfig

	mu      sync.Mutex // serialises reloads
	snap    atomic.Pointer[agentSnapshot]
	checked atomic.Int64 // unix nanos of the last successful version check
}

// AgentsConfig configures Agents.
type AgentsConfig struct {
	// Audit records a change inside its transaction; an error aborts the
	// change. Required.
	Audit func(ctx context.Context, c identity.AgentChange) error
	// Poll is how often Watch checks the registry version. Default 250ms.
	Poll time.Duration
	// StaleAfter fails lookups when the snapshot was not confirmed for
	// this long. Default 5s.
	StaleAfter time.Duration
	Now        func() time.Time
}

type agentSnapshot struct {
	version int64
	agents  map[string]*identity.Agent
	creds   map[string]string
}

var agentMigrations = []string{`
CREATE TABLE IF NOT EXISTS agents (
	id TEXT PRIMARY KEY,
	doc TEXT NOT NULL,
	status TEXT NOT NULL,
	version BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_credentials (
	source TEXT NOT NULL,
	tenant TEXT NOT NULL,
	subject TEXT NOT NULL,
	agent_id TEXT NOT NULL REFERENCES agents (id),
	PRIMARY KEY (source, tenant, subject)
);
CREATE TABLE IF NOT EXISTS agent_registry_version (
	id INTEGER PRIMARY KEY,
	version BIGINT NOT NULL
);
INSERT INTO agent_registry_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`}

// NewAgents migrates the schema and loads the registry.
func NewAgents(ctx context.Context, db *DB, cfg AgentsConfig) (*Agents, error) {
	if cfg.Audit == nil {
		return nil, errors.New("agent registry needs an audit function")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := db.Migrate(ctx, "agents", agentMigrations); err != nil {
		return nil, err
	}
	s := &Agents{db: db, cfg: cfg}
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Watch keeps the snapshot current until ctx ends. Run it for the
// registry's lifetime: without it lookups fail after StaleAfter.
func (s *Agents) Watch(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = s.Refresh(ctx) // a failure shows as staleness
		}
	}
}

// Refresh checks the registry version and reloads the snapshot when it
// changed.
func (s *Agents) Refresh(ctx context.Context) error {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM agent_registry_version WHERE id = 1`).Scan(&v); err != nil {
		return fmt.Errorf("reading agent registry version: %w", err)
	}
	if cur := s.snap.Load(); cur == nil || cur.version != v {
		if err := s.reload(ctx); err != nil {
			return err
		}
	}
	s.checked.Store(s.cfg.Now().UnixNano())
	return nil
}

func (s *Agents) reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: s.db.Dialect == Postgres})
	if err != nil {
		return fmt.Errorf("loading agents: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var v int64
	if err := tx.QueryRowContext(ctx, `SELECT version FROM agent_registry_version WHERE id = 1`).Scan(&v); err != nil {
		return fmt.Errorf("loading agents: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT doc FROM agents`)
	if err != nil {
		return fmt.Errorf("loading agents: %w", err)
	}
	snap := &agentSnapshot{version: v, agents: map[string]*identity.Agent{}, creds: map[string]string{}}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			_ = rows.Close()
			return fmt.Errorf("loading agents: %w", err)
		}
		var a identity.Agent
		if err := json.Unmarshal([]byte(doc), &a); err != nil {
			_ = rows.Close()
			return fmt.Errorf("loading agents: %w", err)
		}
		snap.agents[a.ID] = &a
		for _, c := range a.Credentials {
			snap.creds[c.Key()] = a.ID
		}
	}
	_ = rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("loading agents: %w", err)
	}
	if cur := s.snap.Load(); cur == nil || cur.version <= v {
		s.snap.Store(snap)
	}
	return nil
}

var errStale = errors.New("the agent registry has not been refreshed recently")

func (s *Agents) current() (*agentSnapshot, error) {
	if s.cfg.Now().UnixNano()-s.checked.Load() > int64(s.cfg.StaleAfter) {
		return nil, errStale
	}
	return s.snap.Load(), nil
}

// Agent implements identity.Registry.
func (s *Agents) Agent(_ context.Context, id string) (*identity.Agent, error) {
	snap, err := s.current()
	if err != nil {
		return nil, err
	}
	a, ok := snap.agents[id]
	if !ok {
		return nil, identity.ErrNoAgent
	}
	c := *a
	return &c, nil
}

// AgentByCredential implements identity.Registry.
func (s *Agents) AgentByCredential(ctx context.Context, source, tenant, subject string) (*identity.Agent, error) {
	snap, err := s.current()
	if err != nil {
		return nil, err
	}
	id, ok := snap.creds[identity.FederatedCredential{Source: source, Tenant: tenant, Subject: subject}.Key()]
	if !ok {
		return nil, identity.ErrNoAgent
	}
	return s.Agent(ctx, id)
}

// List implements identity.AgentStore.
func (s *Agents) List(ctx context.Context) ([]*identity.Agent, error) {
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	snap := s.snap.Load()
	out := make([]*identity.Agent, 0, len(snap.agents))
	for _, a := range snap.agents {
		c := *a
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// change runs one registry change. The change is computed from the
// current agent, recorded in the audit log (an audit failure refuses it),
// then applied in a transaction that bumps the registry version (which
// serialises writers) and checks that the agent did not change meanwhile.
// Auditing before the transaction keeps the audit log's writer and the
// registry's from waiting on each other (SQLite has one writer); a change
// recorded but not applied gets a second record marked Failed. The
// snapshot is refreshed afterwards.
func (s *Agents) change(ctx context.Context, id, action string, ci identity.ChangeInfo, apply func(before *identity.Agent) (*identity.Agent, error)) (*identity.Agent, error) {
	if ci.By == "" {
		return nil, &identity.ValidationError{Err: errors.New("a registry change must name who makes it")}
	}
	before, err := readAgent(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	after, err := apply(cloneAgent(before))
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	after.Updated = now
	after.Enabled = after.Status == identity.StatusActive
	change := identity.AgentChange{Action: action, ChangeInfo: ci, Time: now, Before: before, After: after}
	if err := s.cfg.Audit(ctx, change); err != nil {
		return nil, fmt.Errorf("auditing the change of agent %s (not applied): %w", id, err)
	}
	out, err := s.applyChange(ctx, id, before, after, now)
	if err != nil {
		change.Failed, change.Error = true, err.Error()
		if aerr := s.cfg.Audit(ctx, change); aerr != nil {
			err = errors.Join(err, fmt.Errorf("recording that the change was not applied: %w", aerr))
		}
		return nil, err
	}
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

func cloneAgent(a *identity.Agent) *identity.Agent {
	if a == nil {
		return nil
	}
	c := *a
	return &c
}

// readAgent reads one agent (nil when absent).
func readAgent(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) (*identity.Agent, error) {
	var doc string
	switch err := q.QueryRowContext(ctx, `SELECT doc FROM agents WHERE id = $1`, id).Scan(&doc); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading agent %s: %w", id, err)
	}
	a := new(identity.Agent)
	if err := json.Unmarshal([]byte(doc), a); err != nil {
		return nil, fmt.Errorf("reading agent %s: %w", id, err)
	}
	return a, nil
}

// applyChange writes after in a transaction, provided the stored agent is
// still before.
func (s *Agents) applyChange(ctx context.Context, id string, before, after *identity.Agent, now time.Time) (*identity.Agent, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("changing agent %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }()
	var v int64
	if err := tx.QueryRowContext(ctx, `UPDATE agent_registry_version SET version = version + 1 WHERE id = 1 RETURNING version`).Scan(&v); err != nil {
		return nil, fmt.Errorf("changing agent %s: %w", id, err)
	}
	cur, err := readAgent(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if (cur == nil) != (before == nil) || cur != nil && cur.Version != before.Version {
		if before == nil {
			return nil, fmt.Errorf("%w: %s", identity.ErrAgentExists, id)
		}
		return nil, identity.ErrVersionConflict
	}
	after.Version = v
	b, err := json.Marshal(after)
	if err != nil {
		return nil, err
	}
	if before == nil {
		_, err = tx.ExecContext(ctx, `INSERT INTO agents (id, doc, status, version, updated_at) VALUES ($1, $2, $3, $4, $5)`,
			after.ID, string(b), string(after.Status), v, now.UnixNano())
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE agents SET doc = $1, status = $2, version = $3, updated_at = $4 WHERE id = $5`,
			string(b), string(after.Status), v, now.UnixNano(), after.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("writing agent %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM agent_credentials WHERE agent_id = $1`, after.ID); err != nil {
		return nil, fmt.Errorf("writing agent %s: %w", id, err)
	}
	for _, c := range after.Credentials {
		var owner string
		err := tx.QueryRowContext(ctx, `SELECT agent_id FROM agent_credentials WHERE source = $1 AND tenant = $2 AND subject = $3`,
			c.Source, c.Tenant, c.Subject).Scan(&owner)
		if err == nil {
			return nil, fmt.Errorf("%w: %s/%s is registered to %s", identity.ErrCredentialTaken, c.Source, c.Subject, owner)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("writing agent %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO agent_credentials (source, tenant, subject, agent_id) VALUES ($1, $2, $3, $4)`,
			c.Source, c.Tenant, c.Subject, after.ID); err != nil {
			return nil, fmt.Errorf("writing agent %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("committing the change of agent %s: %w", id, err)
	}
	return after, nil
}

// Create implements identity.AgentStore.
func (s *Agents) Create(ctx context.Context, a *identity.Agent, ci identity.ChangeInfo) (*identity.Agent, error) {
	n := *a
	if n.Status == "" {
		n.Status = identity.StatusActive
	}
	if err := identity.ValidateAgent(&n); err != nil {
		return nil, &identity.ValidationError{Err: err}
	}
	return s.change(ctx, n.ID, "agent.create", ci, func(before *identity.Agent) (*identity.Agent, error) {
		if before != nil {
			return nil, identity.ErrAgentExists
		}
		return &n, nil
	})
}

// Update implements identity.AgentStore.
func (s *Agents) Update(ctx context.Context, a *identity.Agent, ci identity.ChangeInfo) (*identity.Agent, error) {
	n := *a
	if err := identity.ValidateAgent(&n); err != nil {
		return nil, &identity.ValidationError{Err: err}
	}
	return s.change(ctx, n.ID, "agent.update", ci, func(before *identity.Agent) (*identity.Agent, error) {
		if before == nil {
			return nil, identity.ErrNoAgent
		}
		if before.Version != n.Version {
			return nil, identity.ErrVersionConflict
		}
		n.Status = before.Status // status changes go through SetStatus
		return &n, nil
	})
}

// SetStatus implements identity.AgentStore.
func (s *Agents) SetStatus(ctx context.Context, id string, st identity.Status, ci identity.ChangeInfo) (*identity.Agent, error) {
	action := map[identity.Status]string{identity.StatusActive: "agent.resume", identity.StatusSuspended: "agent.suspend", identity.StatusRetired: "agent.retire"}[st]
	if action == "" {
		return nil, &identity.ValidationError{Err: fmt.Errorf("unknown status %q", st)}
	}
	return s.change(ctx, id, action, ci, func(before *identity.Agent) (*identity.Agent, error) {
		if before == nil {
			return nil, identity.ErrNoAgent
		}
		if before.Status == identity.StatusRetired {
			return nil, identity.ErrRetired
		}
		n := *before
		n.Status = st
		if st == identity.StatusRetired {
			// A retired agent's credentials are released.
			n.Credentials = nil
		}
		return &n, nil
	})
}

// Seed creates the agents of the configuration file that the store does
// not hold yet; agents already stored (and their runtime status) are left
// alone.
func (s *Agents) Seed(ctx context.Context, agents []*identity.Agent, ci identity.ChangeInfo) error {
	for _, a := range agents {
		a := *a
		if a.Status == "" && !a.Enabled {
			a.Status = identity.StatusSuspended
		}
		if _, err := s.Create(ctx, &a, ci); err != nil && !errors.Is(err, identity.ErrAgentExists) {
			return fmt.Errorf("seeding agent %s: %w", a.ID, err)
		}
	}
	return nil
}

// ErrNoRegistry means the store holds no agent registry yet: no gateway
// has opened it (the gateway creates the registry, seeded with the
// configuration's agents, when it starts).
var ErrNoRegistry = errors.New("the store holds no agent registry yet")

// ReadAgent reads one agent straight from the store, for tools that must
// not write to a store a running gateway uses (the CLI, on a store from
// OpenReadOnly): it neither migrates the schema nor keeps a snapshot. It
// returns identity.ErrNoAgent for an unknown agent and ErrNoRegistry when
// the registry's tables do not exist.
func ReadAgent(ctx context.Context, db *DB, id string) (*identity.Agent, error) {
	ok, err := db.hasTable(ctx, "agents")
	if err != nil {
		return nil, fmt.Errorf("reading agent %s: %w", id, err)
	}
	if !ok {
		return nil, ErrNoRegistry
	}
	a, err := readAgent(ctx, db, id)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, identity.ErrNoAgent
	}
	return a, nil
}

// Replay is a durable identity.ReplayCache shared by replicas: DPoP proof
// jtis and single-use task-token jtis. (It lives here with the rest of the
// identity layer's storage.)
type Replay struct {
	db   *DB
	now  func() time.Time
	uses atomic.Int64
}

// sweepEvery is how many writes a Replay or Flow makes between deletions
// of its expired rows.
const sweepEvery = 1024

var replayMigrations = []string{`
CREATE TABLE IF NOT EXISTS replay_ids (
	id TEXT PRIMARY KEY,
	until_ns BIGINT NOT NULL
)`}

// NewReplay migrates the schema and returns the cache.
func NewReplay(ctx context.Context, db *DB, now func() time.Time) (*Replay, error) {
	if err := db.Migrate(ctx, "replay", replayMigrations); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Replay{db: db, now: now}, nil
}

// Use implements identity.ReplayCache: one statement inserts the id, or
// takes over an expired row; a live row means a replay.
func (r *Replay) Use(ctx context.Context, id string, until time.Time) error {
	now := r.now().UnixNano()
	res, err := r.db.ExecContext(ctx, `INSERT INTO replay_ids (id, until_ns) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET until_ns = excluded.until_ns WHERE replay_ids.until_ns < $3`, id, until.UnixNano(), now)
	if err != nil {
		return fmt.Errorf("recording a one-time id: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("recording a one-time id: %w", err)
	}
	if n == 0 {
		return identity.ErrReplay
	}
	if r.uses.Add(1)%sweepEvery == 0 {
		_, _ = r.db.ExecContext(ctx, `DELETE FROM replay_ids WHERE until_ns < $1`, now)
	}
	return nil
}
