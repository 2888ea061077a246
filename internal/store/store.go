// Package store opens the gateway's durable store and implements the storage
// interfaces that the other packages declare.
//
// Two backends share one SQL dialect subset: SQLite (embedded default,
// pure Go via modernc.org/sqlite, WAL journal, synchronous=FULL) and
// PostgreSQL (github.com/jackc/pgx/v5 through database/sql). Queries use
// $1, $2, ... placeholders in order of appearance, which both accept.
//
// Schemas are versioned per component: Migrate applies a component's
// statements in order and records the version in schema_migrations, inside
// one transaction, so a half-applied migration is never visible.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// Dialect names the SQL backend.
type Dialect string

// Backends.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open store.
type DB struct {
	*sql.DB
	Dialect Dialect
	// Path is the SQLite file (empty for PostgreSQL).
	Path string
	// stop ends the SQLite checkpointer.
	stop chan struct{}
	done chan struct{}

	// closers release connections held outside the pool (the audit
	// writer's) before the database closes.
	closersMu sync.Mutex
	closers   []func()
}

// Close stops background work and closes the database.
func (db *DB) Close() error {
	db.closersMu.Lock()
	closers := db.closers
	db.closers = nil
	db.closersMu.Unlock()
	for _, c := range closers {
		c()
	}
	if db.stop != nil {
		close(db.stop)
		<-db.done
		db.stop = nil
	}
	return db.DB.Close()
}

// onClose registers f to run when the database closes.
func (db *DB) onClose(f func()) {
	db.closersMu.Lock()
	defer db.closersMu.Unlock()
	db.closers = append(db.closers, f)
}

// checkpoint moves the SQLite write-ahead log into the database file in
// the background (PASSIVE: it never blocks writers), instead of letting a
// committing transaction do it, which would add its cost to that commit's
// latency. At close it truncates the WAL.
func (db *DB) checkpoint(every time.Duration) {
	defer close(db.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = db.DB.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
			cancel()
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = db.DB.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
			cancel()
		}
	}
}

// Open opens the store named by dsn. A dsn beginning with "postgres://" or
// "postgresql://" opens PostgreSQL; anything else is a SQLite file path
// (created with its directory when missing).
func Open(ctx context.Context, dsn string) (*DB, error) {
	if dsn == "" {
		return nil, errors.New("opening store: empty data source")
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("opening postgres: %w", err)
		}
		db.SetMaxOpenConns(16)
		db.SetMaxIdleConns(16) // the default of 2 reconnects under any concurrency
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("connecting to postgres: %w", err)
		}
		return &DB{DB: db, Dialect: Postgres}, nil
	}
	path := strings.TrimPrefix(dsn, "sqlite://")
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating data directory: %w", err)
		}
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(ON)", "wal_autocheckpoint(0)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := openSQLite(ctx, path, "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	d := &DB{DB: db, Dialect: SQLite, Path: path, stop: make(chan struct{}), done: make(chan struct{})}
	go d.checkpoint(time.Second)
	return d, nil
}

// OpenReadOnly opens an existing store for reading only, for tools that
// run next to a gateway using the same store (the CLI): it never creates
// the store, migrates a schema or writes. SQLite opens the file with
// mode=ro (every write fails), without the WAL checkpointer and with
// deferred transactions, so it takes no write lock and a running gateway
// neither blocks it (readers of a WAL database do not wait for the
// writer) nor waits for it; a missing file is an error wrapping
// fs.ErrNotExist. PostgreSQL sessions default to read-only transactions.
func OpenReadOnly(ctx context.Context, dsn string) (*DB, error) {
	if dsn == "" {
		return nil, errors.New("opening store: empty data source")
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, errors.New("opening postgres: the DSN is not a valid URL") // the DSN may hold a password
		}
		q := u.Query()
		q.Set("default_transaction_read_only", "on")
		u.RawQuery = q.Encode()
		return Open(ctx, u.String())
	}
	path := strings.TrimPrefix(dsn, "sqlite://")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "query_only(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("mode", "ro")
	q.Set("_txlock", "deferred")
	// SQLite URI: a path's %, ? and # must be escaped.
	name := "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path) + "?" + q.Encode()
	db, err := openSQLite(ctx, path, name)
	if err != nil {
		return nil, err
	}
	return &DB{DB: db, Dialect: SQLite, Path: path}, nil
}

// openSQLite opens the SQLite database at path through its URI name and
// checks that it answers.
func openSQLite(ctx context.Context, path, name string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", name)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	// Keep readers' connections: a new one opens the file, runs the
	// pragmas, reads the schema and prepares statements again (database/sql
	// keeps 2 idle connections by default, so concurrent reads — a tool
	// call's label read, the lock and registry pollers — kept reconnecting).
	db.SetMaxIdleConns(16)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	return db, nil
}

// hasTable reports whether the store holds table (in the current schema).
func (db *DB) hasTable(ctx context.Context, table string) (bool, error) {
	q := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`
	if db.Dialect == Postgres {
		q = `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`
	}
	var n int
	if err := db.QueryRowContext(ctx, q, table).Scan(&n); err != nil {
		return false, fmt.Errorf("looking for table %s: %w", table, err)
	}
	return n > 0, nil
}

// Migrate brings component's schema up to len(steps): step i (0-based) is
// applied when the recorded version is ≤ i. Each step may hold several
// statements separated by ";\n".
func (db *DB) Migrate(ctx context.Context, component string, steps []string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrating %s: %w", component, err)
	}
	defer tx.Rollback()
	if db.Dialect == Postgres {
		// Serialise concurrent migrations from several replicas.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "gatehouse.migrate."+component); err != nil {
			return fmt.Errorf("locking migrations for %s: %w", component, err)
		}
	}
	var version int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_migrations WHERE component = $1`, component).Scan(&version)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("reading schema version of %s: %w", component, err)
	}
	if version > len(steps) {
		return fmt.Errorf("schema of %s is at version %d, newer than this binary knows (%d)", component, version, len(steps))
	}
	for i := version; i < len(steps); i++ {
		for _, stmt := range strings.Split(steps[i], ";\n") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrating %s to version %d: %w", component, i+1, err)
			}
		}
	}
	if version != len(steps) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version) VALUES ($1, $2)
			ON CONFLICT (component) DO UPDATE SET version = excluded.version`, component, len(steps)); err != nil {
			return fmt.Errorf("recording schema version of %s: %w", component, err)
		}
	}
	return tx.Commit()
}
