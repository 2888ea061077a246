package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Flow is the durable store of information-flow labels kept per task and
// per token (implements pipeline.FlowStore), shared by every replica.
//
// One row per (key, label) holds the time until which the label counts.
// Raising a label again only ever extends that time, so a label once
// raised holds until the later of its deadlines. Expired rows are ignored
// by Labels and deleted now and then by Raise.
//
// Each Flow remembers, until they expire, the labels it made durable and
// until when: raising one again no later than that is already durable (a
// row is never shortened, and only expired rows are deleted), so Raise
// skips the write transaction that every tool call raising its tool's
// labels would otherwise cost.
type Flow struct {
	db  *DB
	now func() time.Time
	// labels is the read of every admitted call, prepared once: parsing
	// it again cost as much as running it.
	labels *sql.Stmt
	raises atomic.Int64

	mu     sync.Mutex
	raised map[flowLabel]int64 // until_ns made durable by this Flow
}

type flowLabel struct {
	key   string
	label verdict.Label
}

// maxRaised bounds the labels a Flow remembers.
const maxRaised = 1 << 16

var flowMigrations = []string{`
CREATE TABLE IF NOT EXISTS flow_labels (
	flow_key TEXT NOT NULL,
	label TEXT NOT NULL,
	until_ns BIGINT NOT NULL,
	PRIMARY KEY (flow_key, label)
);
CREATE INDEX IF NOT EXISTS flow_labels_until ON flow_labels (until_ns)`}

// NewFlow migrates the schema and returns the store.
func NewFlow(ctx context.Context, db *DB, now func() time.Time) (*Flow, error) {
	if err := db.Migrate(ctx, "flow", flowMigrations); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	labels, err := db.PrepareContext(ctx, `SELECT label FROM flow_labels WHERE flow_key = $1 AND until_ns > $2 ORDER BY label`)
	if err != nil {
		return nil, fmt.Errorf("preparing the information-flow label read: %w", err)
	}
	return &Flow{db: db, now: now, labels: labels, raised: map[flowLabel]int64{}}, nil
}

// Labels implements pipeline.FlowStore.
func (f *Flow) Labels(ctx context.Context, key string) ([]verdict.Label, error) {
	if f.db.Dialect == SQLite {
		// An indexed read that a writer cannot block (WAL): run it without
		// ctx's cancellation, for which database/sql and the driver would
		// each start a goroutine on every tool call.
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading information-flow labels: %w", err)
		}
		ctx = context.WithoutCancel(ctx)
	}
	rows, err := f.labels.QueryContext(ctx, key, f.now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("reading information-flow labels: %w", err)
	}
	defer rows.Close()
	var out []verdict.Label
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return nil, fmt.Errorf("reading information-flow labels: %w", err)
		}
		out = append(out, verdict.Label(l))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading information-flow labels: %w", err)
	}
	return out, nil
}

// Raise implements pipeline.FlowStore: every label is written, or none.
func (f *Flow) Raise(ctx context.Context, key string, labels []verdict.Label, until time.Time) error {
	if key == "" {
		return fmt.Errorf("raising information-flow labels: empty key")
	}
	u := until.UnixNano()
	labels = f.unraised(key, labels, u)
	if len(labels) == 0 {
		return nil
	}
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("raising information-flow labels: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, l := range labels {
		if _, err := tx.ExecContext(ctx, `INSERT INTO flow_labels (flow_key, label, until_ns) VALUES ($1, $2, $3)
			ON CONFLICT (flow_key, label) DO UPDATE SET until_ns = excluded.until_ns WHERE flow_labels.until_ns < excluded.until_ns`,
			key, string(l), u); err != nil {
			return fmt.Errorf("raising information-flow label %s: %w", l, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("raising information-flow labels: %w", err)
	}
	f.remember(key, labels, u)
	if f.raises.Add(1)%sweepEvery == 0 {
		_, _ = f.db.ExecContext(ctx, `DELETE FROM flow_labels WHERE until_ns <= $1`, f.now().UnixNano())
	}
	return nil
}

// unraised returns the labels of key that this Flow has not made durable
// until u or later.
func (f *Flow) unraised(key string, labels []verdict.Label, u int64) []verdict.Label {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []verdict.Label
	for _, l := range labels {
		if f.raised[flowLabel{key, l}] < u {
			out = append(out, l)
		}
	}
	return out
}

// remember notes that labels of key are durable until u.
func (f *Flow) remember(key string, labels []verdict.Label, u int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.raised) >= maxRaised {
		now := f.now().UnixNano()
		for k, v := range f.raised {
			if v <= now {
				delete(f.raised, k)
			}
		}
		if len(f.raised) >= maxRaised {
			clear(f.raised)
		}
	}
	for _, l := range labels {
		k := flowLabel{key, l}
		f.raised[k] = max(f.raised[k], u)
	}
}

// Adopt moves the unexpired labels that an older layout kept in from (the
// main SQLite store, before labels had a file of their own) into f, so that
// a task's labels survive the upgrade, and deletes them from from. A store
// without the table has nothing to adopt.
func (f *Flow) Adopt(ctx context.Context, from *DB) error {
	ok, err := from.hasTable(ctx, "flow_labels")
	if err != nil {
		return fmt.Errorf("adopting information-flow labels: %w", err)
	}
	if !ok {
		return nil
	}
	rows, err := from.QueryContext(ctx, `SELECT flow_key, label, until_ns FROM flow_labels WHERE until_ns > $1`, f.now().UnixNano())
	if err != nil {
		return fmt.Errorf("adopting information-flow labels: %w", err)
	}
	type row struct {
		key, label string
		until      int64
	}
	var old []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.key, &r.label, &r.until); err != nil {
			rows.Close()
			return fmt.Errorf("adopting information-flow labels: %w", err)
		}
		old = append(old, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("adopting information-flow labels: %w", err)
	}
	for _, r := range old {
		if err := f.Raise(ctx, r.key, []verdict.Label{verdict.Label(r.label)}, time.Unix(0, r.until)); err != nil {
			return err
		}
	}
	if _, err := from.ExecContext(ctx, `DELETE FROM flow_labels`); err != nil {
		return fmt.Errorf("adopting information-flow labels: %w", err)
	}
	return nil
}
