package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"golang.org/x/mod/sumdb/tlog"
)

// AuditLog is the audit log's storage in SQLite or PostgreSQL. It
// implements audit.Backend, audit.CheckpointStore, audit.Searcher and
// audit.CursorStore.
//
// Each entry row also holds, in column tree, the tlog stored hashes that
// its append added (its leaf hash and the subtree hashes it completed), so
// one row is written per record and a proof reads O(log n) rows.
//
// Durability: Append writes a batch in one transaction; on SQLite the store
// runs in WAL mode with synchronous=FULL, so a committed transaction
// survives power loss; on PostgreSQL it relies on the server's
// synchronous_commit (on by default). Append checks, inside the
// transaction, that the batch starts at the current size, and on PostgreSQL
// serialises appends from several replicas with an advisory lock.
type AuditLog struct {
	db *DB
	// Statements of the append path, prepared once (PostgreSQL).
	prepOnce sync.Once
	prepErr  error
	sizeStmt *sql.Stmt
	insStmt  *sql.Stmt

	// On SQLite the writer appends on a connection of its own (see
	// appendSQLite), opened on first use and closed with the database.
	mu     sync.Mutex
	closed bool
	wconn  *sql.Conn
	wsize  *sql.Stmt
	wins   *sql.Stmt

	// j, when set (UseJournal), makes appends durable in a journal file
	// and applies them to SQLite in the background.
	j *auditJournal
}

// The statements an append runs: the log's size, and one entry's insert.
const (
	sizeQuery   = `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries`
	insertEntry = `INSERT INTO audit_entries (idx, data, hash, time_ms, class_uid, agent, tool, outcome, correlation, tree) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
)

func (a *AuditLog) prepare(ctx context.Context) error {
	a.prepOnce.Do(func() {
		if a.sizeStmt, a.prepErr = a.db.PrepareContext(ctx, sizeQuery); a.prepErr != nil {
			return
		}
		a.insStmt, a.prepErr = a.db.PrepareContext(ctx, insertEntry)
	})
	return a.prepErr
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
	correlation TEXT NOT NULL,
	tree BLOB NOT NULL
);
CREATE INDEX audit_entries_agent ON audit_entries (agent, idx);
CREATE INDEX audit_entries_tool ON audit_entries (tool, idx);
CREATE INDEX audit_entries_correlation ON audit_entries (correlation, idx);
CREATE INDEX audit_entries_time ON audit_entries (time_ms);
CREATE TABLE audit_checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB NOT NULL, time_ms INTEGER NOT NULL);
CREATE TABLE audit_cursors (name TEXT PRIMARY KEY, idx INTEGER NOT NULL)`,
		// Every index is written on the append path, which must stay cheap:
		// keep those for the frequent filters (agent, correlation); a
		// search by tool or time scans in index order.
		dropRarelyUsedIndexes},
	Postgres: {`CREATE TABLE audit_entries (
	idx BIGINT PRIMARY KEY,
	data BYTEA NOT NULL,
	hash BYTEA NOT NULL,
	time_ms BIGINT NOT NULL,
	class_uid INTEGER NOT NULL,
	agent TEXT NOT NULL,
	tool TEXT NOT NULL,
	outcome TEXT NOT NULL,
	correlation TEXT NOT NULL,
	tree BYTEA NOT NULL
);
CREATE INDEX audit_entries_agent ON audit_entries (agent, idx);
CREATE INDEX audit_entries_tool ON audit_entries (tool, idx);
CREATE INDEX audit_entries_correlation ON audit_entries (correlation, idx);
CREATE INDEX audit_entries_time ON audit_entries (time_ms);
CREATE TABLE audit_checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, note BYTEA NOT NULL, time_ms BIGINT NOT NULL);
CREATE TABLE audit_cursors (name TEXT PRIMARY KEY, idx BIGINT NOT NULL)`,
		dropRarelyUsedIndexes},
}

const dropRarelyUsedIndexes = `DROP INDEX IF EXISTS audit_entries_tool;
DROP INDEX IF EXISTS audit_entries_time`

// OpenAuditLog migrates the audit tables and returns the backend.
func OpenAuditLog(ctx context.Context, db *DB) (*AuditLog, error) {
	if err := db.Migrate(ctx, "audit", auditSchema[db.Dialect]); err != nil {
		return nil, err
	}
	a := &AuditLog{db: db}
	if db.Dialect == SQLite {
		db.onClose(func() {
			if a.j != nil {
				a.j.close() // commits what the journal holds first
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			a.closed = true
			a.dropConn()
		})
	}
	return a, nil
}

// writerConn opens the writer's connection and its statements (a.mu held).
func (a *AuditLog) writerConn(ctx context.Context) error {
	if a.closed {
		return errors.New("sql: database is closed")
	}
	if a.wconn != nil {
		return nil
	}
	c, err := a.db.Conn(ctx)
	if err != nil {
		return err
	}
	size, err := c.PrepareContext(ctx, sizeQuery)
	if err != nil {
		c.Close()
		return err
	}
	ins, err := c.PrepareContext(ctx, insertEntry)
	if err != nil {
		size.Close()
		c.Close()
		return err
	}
	a.wconn, a.wsize, a.wins = c, size, ins
	return nil
}

// dropConn closes the writer's connection (a.mu held); the next append
// opens a new one.
func (a *AuditLog) dropConn() {
	if a.wconn == nil {
		return
	}
	a.wsize.Close()
	a.wins.Close()
	a.wconn.Close()
	a.wconn, a.wsize, a.wins = nil, nil, nil
}

// auditChunk bounds the parameters of one query (IN lists).
const auditChunk = 500

// Append implements audit.Backend. On SQLite see appendSQLite; on
// PostgreSQL it appends in a transaction that holds an advisory lock, so
// that replicas append one at a time.
func (a *AuditLog) Append(ctx context.Context, b audit.Batch) error {
	if len(b.Entries) == 0 {
		return nil
	}
	if a.j != nil {
		return a.j.append(ctx, b)
	}
	if a.db.Dialect == SQLite {
		return a.appendSQLite(ctx, b)
	}
	if err := a.prepare(ctx); err != nil {
		return fmt.Errorf("preparing audit statements: %w", err)
	}
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("appending audit batch: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('gatehouse.audit.append'))`); err != nil {
		return fmt.Errorf("locking audit log: %w", err)
	}
	var size int64
	if err := tx.StmtContext(ctx, a.sizeStmt).QueryRowContext(ctx).Scan(&size); err != nil {
		return fmt.Errorf("reading audit log size: %w", err)
	}
	if size != b.Entries[0].Index {
		return fmt.Errorf("%w: batch starts at %d, size is %d", audit.ErrConflict, b.Entries[0].Index, size)
	}
	// One prepared single-row statement per table, which costs far less
	// than a multi-row VALUES list.
	ins := tx.StmtContext(ctx, a.insStmt)
	defer ins.Close()
	if err := insertEntries(ctx, ins, b); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing audit batch: %w", err)
	}
	return nil
}

// appendSQLite appends b on the writer's own connection, in a transaction
// it begins (BEGIN IMMEDIATE) and commits itself: the same statements, and
// the same durability (the connection has the pool's pragmas, WAL and
// synchronous=FULL), as a database/sql transaction. It avoids what that
// would add on a path taken once per write-ahead intent: database/sql starts
// a goroutine per transaction to watch ctx, and the driver one per statement
// run with a cancellable context, and their start and wake-up cost more
// than the statements. The statements therefore run without ctx's deadline:
// SQLite cannot interrupt a write that is in progress anyway, and a wait for
// another writer's lock is bounded by busy_timeout. A batch whose ctx has
// ended before it starts is not appended.
func (a *AuditLog) appendSQLite(ctx context.Context, b audit.Batch) (err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("appending audit batch: %w", err)
	}
	ctx = context.WithoutCancel(ctx)
	if err := a.writerConn(ctx); err != nil {
		return fmt.Errorf("appending audit batch: %w", err)
	}
	if _, err := a.wconn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		a.dropConn()
		return fmt.Errorf("appending audit batch: %w", err)
	}
	defer func() {
		if err != nil {
			// A failed COMMIT may have ended the transaction already; a
			// connection in an unknown state is replaced.
			if _, rerr := a.wconn.ExecContext(ctx, `ROLLBACK`); rerr != nil {
				a.dropConn()
			}
		}
	}()
	var size int64
	if err := a.wsize.QueryRowContext(ctx).Scan(&size); err != nil {
		return fmt.Errorf("reading audit log size: %w", err)
	}
	if size != b.Entries[0].Index {
		return fmt.Errorf("%w: batch starts at %d, size is %d", audit.ErrConflict, b.Entries[0].Index, size)
	}
	if err := insertEntries(ctx, a.wins, b); err != nil {
		return err
	}
	if _, err := a.wconn.ExecContext(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("committing audit batch: %w", err)
	}
	return nil
}

// insertEntries inserts b's entries with ins, each with the tlog hashes
// its append added.
func insertEntries(ctx context.Context, ins *sql.Stmt, b audit.Batch) error {
	var tree []byte
	for _, e := range b.Entries {
		lo, hi := tlog.StoredHashIndex(0, e.Index)-b.HashStart, tlog.StoredHashIndex(0, e.Index+1)-b.HashStart
		if lo < 0 || hi > int64(len(b.Hashes)) {
			return fmt.Errorf("appending audit batch: hashes do not cover entry %d", e.Index)
		}
		tree = tree[:0]
		for _, h := range b.Hashes[lo:hi] {
			tree = append(tree, h[:]...)
		}
		if _, err := ins.ExecContext(ctx, e.Index, e.Data, e.Hash[:], e.Time, e.Class, e.Agent, e.Tool, e.Outcome, e.Correlation, tree); err != nil {
			return fmt.Errorf("inserting audit entry %d: %w", e.Index, err)
		}
	}
	return nil
}

// Tidy implements audit.Tidier. On SQLite it checkpoints the write-ahead
// log (PASSIVE: it never waits for readers or writers). The log's writer
// calls it between commits, so the checkpoint usually copies every frame,
// and the next commit then rewrites the WAL from its start: the file stops
// growing, and syncing a commit no longer has to journal a larger file
// size. The background checkpointer (DB.checkpoint) alone rarely finishes
// while commits keep arriving. On PostgreSQL it does nothing.
//
// With a journal, the journal's applier checkpoints after its own commits
// instead, and Tidy does nothing: the log's writer never waits for SQLite.
func (a *AuditLog) Tidy(ctx context.Context) error {
	if a.db.Dialect != SQLite || a.j != nil {
		return nil
	}
	return a.checkpointWAL(ctx)
}

// checkpointWAL runs a PASSIVE checkpoint on the writer's connection.
func (a *AuditLog) checkpointWAL(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.writerConn(ctx); err != nil {
		return fmt.Errorf("checkpointing the write-ahead log: %w", err)
	}
	if _, err := a.wconn.ExecContext(context.WithoutCancel(ctx), `PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
		a.dropConn()
		return fmt.Errorf("checkpointing the write-ahead log: %w", err)
	}
	return nil
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
	if err := a.Settle(ctx); err != nil {
		return nil, fmt.Errorf("reading audit entries: %w", err)
	}
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

// Hashes implements audit.Backend. The node at stored index x was added by
// the record that completed it: n = (k+1)·2^level − 1 for x = (level, k).
func (a *AuditLog) Hashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	if err := a.Settle(ctx); err != nil {
		return nil, fmt.Errorf("reading audit hashes: %w", err)
	}
	owner := make([]int64, len(indexes))
	need := map[int64]bool{}
	for i, x := range indexes {
		level, k := tlog.SplitStoredHashIndex(x)
		owner[i] = (k+1)<<level - 1
		need[owner[i]] = true
	}
	ids := make([]int64, 0, len(need))
	for n := range need {
		ids = append(ids, n)
	}
	trees := make(map[int64][]byte, len(ids))
	for lo := 0; lo < len(ids); lo += auditChunk {
		chunk := ids[lo:min(lo+auditChunk, len(ids))]
		var q strings.Builder
		q.WriteString(`SELECT idx, tree FROM audit_entries WHERE idx IN (`)
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
			var n int64
			var t []byte
			if err := rows.Scan(&n, &t); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading audit hashes: %w", err)
			}
			trees[n] = t
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("reading audit hashes: %w", err)
		}
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		off := (x - tlog.StoredHashIndex(0, owner[i])) * tlog.HashSize
		t := trees[owner[i]]
		if off < 0 || off+tlog.HashSize > int64(len(t)) {
			return nil, fmt.Errorf("%w: stored hash %d", audit.ErrNotFound, x)
		}
		copy(out[i][:], t[off:])
	}
	return out, nil
}

// Size implements audit.Backend.
func (a *AuditLog) Size(ctx context.Context) (int64, error) {
	if a.j != nil {
		a.j.mu.Lock()
		defer a.j.mu.Unlock()
		return a.j.size, nil
	}
	var n int64
	if err := a.db.QueryRowContext(ctx, sizeQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading audit log size: %w", err)
	}
	return n, nil
}

// PutCheckpoint implements audit.CheckpointStore.
// With a journal it first waits until SQLite holds the records c covers,
// so that a reader of the file never finds a checkpoint beyond its log.
func (a *AuditLog) PutCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	if err := a.Settle(ctx); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
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
	if err := a.Settle(ctx); err != nil {
		return nil, fmt.Errorf("searching audit log: %w", err)
	}
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

// Settle waits, with a journal, until SQLite holds every durable record,
// so that another connection or process reading the file sees them too;
// every read method calls it first. Without a journal it returns at once.
func (a *AuditLog) Settle(ctx context.Context) error {
	if a.j == nil {
		return nil
	}
	return a.j.sync(ctx)
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
