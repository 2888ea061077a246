package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"golang.org/x/mod/sumdb/tlog"
)

// AuditLog is the audit log's storage in SQLite or PostgreSQL. It
// implements audit.Backend, audit.CheckpointStore, audit.Searcher and
// audit.CursorStore.
//
// Durability: Append writes a batch in one transaction; on SQLite the store
// runs in WAL mode with synchronous=FULL, so a committed transaction
// survives power loss; on PostgreSQL it relies on the server's
// synchronous_commit (on by default). Append checks, inside the
// transaction, that the batch starts at the current size, and on PostgreSQL
// serialises appends from several replicas with an advisory lock.
type AuditLog struct {
	db *DB
}

var auditSchema = map[Dialect][]string{
	SQLite: {`CREATE TABLE audit_entries (
	idx INTEGER PRIMARY KEY,
	data BLOB NOT NULL,
	hash BLOB NOT NULL,
	time_ms INTEGER NOT NULL,
	class_uid INTEGER NOT NULL,
	agent TEXT NOT NULL,
	tool TEXT NOT NULL,
	outcome TEXT NOT NULL,
	correlation TEXT NOT NULL
);
CREATE INDEX audit_entries_agent ON audit_entries (agent, idx);
CREATE INDEX audit_entries_tool ON audit_entries (tool, idx);
CREATE INDEX audit_entries_correlation ON audit_entries (correlation, idx);
CREATE INDEX audit_entries_time ON audit_entries (time_ms);
CREATE TABLE audit_hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE audit_checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB NOT NULL, time_ms INTEGER NOT NULL);
CREATE TABLE audit_cursors (name TEXT PRIMARY KEY, idx INTEGER NOT NULL)`},
	Postgres: {`CREATE TABLE audit_entries (
	idx BIGINT PRIMARY KEY,
	data BYTEA NOT NULL,
	hash BYTEA NOT NULL,
	time_ms BIGINT NOT NULL,
	class_uid INTEGER NOT NULL,
	agent TEXT NOT NULL,
	tool TEXT NOT NULL,
	outcome TEXT NOT NULL,
	correlation TEXT NOT NULL
);
CREATE INDEX audit_entries_agent ON audit_entries (agent, idx);
CREATE INDEX audit_entries_tool ON audit_entries (tool, idx);
CREATE INDEX audit_entries_correlation ON audit_entries (correlation, idx);
CREATE INDEX audit_entries_time ON audit_entries (time_ms);
CREATE TABLE audit_hashes (idx BIGINT PRIMARY KEY, hash BYTEA NOT NULL);
CREATE TABLE audit_checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, note BYTEA NOT NULL, time_ms BIGINT NOT NULL);
CREATE TABLE audit_cursors (name TEXT PRIMARY KEY, idx BIGINT NOT NULL)`},
}

// OpenAuditLog migrates the audit tables and returns the backend.
func OpenAuditLog(ctx context.Context, db *DB) (*AuditLog, error) {
	if err := db.Migrate(ctx, "audit", auditSchema[db.Dialect]); err != nil {
		return nil, err
	}
	return &AuditLog{db: db}, nil
}

// rows per INSERT statement: 9 columns × 500 stays under SQLite's and
// PostgreSQL's parameter limits.
const auditChunk = 500

// Append implements audit.Backend.
func (a *AuditLog) Append(ctx context.Context, b audit.Batch) error {
	if len(b.Entries) == 0 {
		return nil
	}
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("appending audit batch: %w", err)
	}
	defer tx.Rollback()
	if a.db.Dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('gatehouse.audit.append'))`); err != nil {
			return fmt.Errorf("locking audit log: %w", err)
		}
	}
	var size int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries`).Scan(&size); err != nil {
		return fmt.Errorf("reading audit log size: %w", err)
	}
	if size != b.Entries[0].Index {
		return fmt.Errorf("%w: batch starts at %d, size is %d", audit.ErrConflict, b.Entries[0].Index, size)
	}
	var q strings.Builder
	args := make([]any, 0, 9*auditChunk)
	for lo := 0; lo < len(b.Entries); lo += auditChunk {
		q.Reset()
		args = args[:0]
		q.WriteString(`INSERT INTO audit_entries (idx, data, hash, time_ms, class_uid, agent, tool, outcome, correlation) VALUES `)
		for i, e := range b.Entries[lo:min(lo+auditChunk, len(b.Entries))] {
			if i > 0 {
				q.WriteByte(',')
			}
			placeholders(&q, len(args), 9)
			args = append(args, e.Index, e.Data, e.Hash[:], e.Time, e.Class, e.Agent, e.Tool, e.Outcome, e.Correlation)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("inserting audit entries: %w", err)
		}
	}
	for lo := 0; lo < len(b.Hashes); lo += 4 * auditChunk {
		q.Reset()
		args = args[:0]
		q.WriteString(`INSERT INTO audit_hashes (idx, hash) VALUES `)
		for i, h := range b.Hashes[lo:min(lo+4*auditChunk, len(b.Hashes))] {
			if i > 0 {
				q.WriteByte(',')
			}
			placeholders(&q, len(args), 2)
			args = append(args, b.HashStart+int64(lo+i), h[:])
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("inserting audit hashes: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing audit batch: %w", err)
	}
	return nil
}

func placeholders(q *strings.Builder, start, n int) {
	q.WriteByte('(')
	for j := range n {
		if j > 0 {
			q.WriteByte(',')
		}
		q.WriteByte('$')
		q.WriteString(strconv.Itoa(start + j + 1))
	}
	q.WriteByte(')')
}

const auditColumns = `idx, data, hash, time_ms, class_uid, agent, tool, outcome, correlation`

func scanEntries(rows *sql.Rows) ([]audit.Entry, error) {
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var e audit.Entry
		var h []byte
		if err := rows.Scan(&e.Index, &e.Data, &h, &e.Time, &e.Class, &e.Agent, &e.Tool, &e.Outcome, &e.Correlation); err != nil {
			return nil, err
		}
		copy(e.Hash[:], h)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Entries implements audit.Backend.
func (a *AuditLog) Entries(ctx context.Context, from, to int64) ([]audit.Entry, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx`, from, to)
	if err != nil {
		return nil, fmt.Errorf("reading audit entries: %w", err)
	}
	es, err := scanEntries(rows)
	if err != nil {
		return nil, fmt.Errorf("reading audit entries: %w", err)
	}
	return es, nil
}

// Hashes implements audit.Backend.
func (a *AuditLog) Hashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	found := make(map[int64]tlog.Hash, len(indexes))
	for lo := 0; lo < len(indexes); lo += 4 * auditChunk {
		chunk := indexes[lo:min(lo+4*auditChunk, len(indexes))]
		var q strings.Builder
		q.WriteString(`SELECT idx, hash FROM audit_hashes WHERE idx IN (`)
		args := make([]any, len(chunk))
		for i, x := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("$" + strconv.Itoa(i+1))
			args[i] = x
		}
		q.WriteByte(')')
		rows, err := a.db.QueryContext(ctx, q.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("reading audit hashes: %w", err)
		}
		for rows.Next() {
			var x int64
			var h []byte
			if err := rows.Scan(&x, &h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading audit hashes: %w", err)
			}
			var hh tlog.Hash
			copy(hh[:], h)
			found[x] = hh
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("reading audit hashes: %w", err)
		}
	}
	for i, x := range indexes {
		h, ok := found[x]
		if !ok {
			return nil, fmt.Errorf("%w: stored hash %d", audit.ErrNotFound, x)
		}
		out[i] = h
	}
	return out, nil
}

// Size implements audit.Backend.
func (a *AuditLog) Size(ctx context.Context) (int64, error) {
	var n int64
	if err := a.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries`).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading audit log size: %w", err)
	}
	return n, nil
}

// PutCheckpoint implements audit.CheckpointStore.
func (a *AuditLog) PutCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	_, err := a.db.ExecContext(ctx, `INSERT INTO audit_checkpoints (size, root, note, time_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING`,
		c.Size, c.Root[:], c.Note, c.Time.UnixMilli())
	if err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	var root []byte
	if err := a.db.QueryRowContext(ctx, `SELECT root FROM audit_checkpoints WHERE size = $1`, c.Size).Scan(&root); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	if string(root) != string(c.Root[:]) {
		return fmt.Errorf("%w: different checkpoint for size %d already stored", audit.ErrConflict, c.Size)
	}
	return nil
}

// Checkpoints implements audit.CheckpointStore.
func (a *AuditLog) Checkpoints(ctx context.Context) ([]audit.Checkpoint, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT size, root, note, time_ms FROM audit_checkpoints ORDER BY size`)
	if err != nil {
		return nil, fmt.Errorf("reading checkpoints: %w", err)
	}
	defer rows.Close()
	var out []audit.Checkpoint
	for rows.Next() {
		var c audit.Checkpoint
		var root []byte
		var ms int64
		if err := rows.Scan(&c.Size, &root, &c.Note, &ms); err != nil {
			return nil, fmt.Errorf("reading checkpoints: %w", err)
		}
		copy(c.Root[:], root)
		c.Time = time.UnixMilli(ms)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Search implements audit.Searcher.
func (a *AuditLog) Search(ctx context.Context, f audit.Filter) ([]audit.Entry, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1))
	}
	add("idx >= ?", f.From)
	if f.Agent != "" {
		add("agent = ?", f.Agent)
	}
	if f.Tool != "" {
		add("tool = ?", f.Tool)
	}
	if f.Outcome != "" {
		add("outcome = ?", f.Outcome)
	}
	if f.Class != 0 {
		add("class_uid = ?", f.Class)
	}
	if f.Correlation != "" {
		add("correlation = ?", f.Correlation)
	}
	if !f.Since.IsZero() {
		add("time_ms >= ?", f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		add("time_ms < ?", f.Until.UnixMilli())
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, limit)
	q := `SELECT ` + auditColumns + ` FROM audit_entries WHERE ` + strings.Join(where, " AND ") + ` ORDER BY idx LIMIT $` + strconv.Itoa(len(args))
	rows, err := a.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("searching audit log: %w", err)
	}
	es, err := scanEntries(rows)
	if err != nil {
		return nil, fmt.Errorf("searching audit log: %w", err)
	}
	return es, nil
}

// Cursor implements audit.CursorStore.
func (a *AuditLog) Cursor(ctx context.Context, name string) (int64, error) {
	var idx int64
	err := a.db.QueryRowContext(ctx, `SELECT idx FROM audit_cursors WHERE name = $1`, name).Scan(&idx)
	if errors.Is(err, sql.ErrNoRows) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading cursor %s: %w", name, err)
	}
	return idx, nil
}

// SetCursor implements audit.CursorStore.
func (a *AuditLog) SetCursor(ctx context.Context, name string, index int64) error {
	_, err := a.db.ExecContext(ctx, `INSERT INTO audit_cursors (name, idx) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET idx = excluded.idx`, name, index)
	if err != nil {
		return fmt.Errorf("storing cursor %s: %w", name, err)
	}
	return nil
}
