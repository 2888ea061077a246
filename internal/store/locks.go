package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/gatehouse/gatehouse/internal/lock"
)

// Locks is the kill switch's durable store (implements lock.Store and
// lock.Watcher). Every change bumps a version counter in the same
// transaction; on PostgreSQL it also sends a notification on channel
// gatehouse_locks, delivered to every replica's Watch when the transaction
// commits.
type Locks struct {
	db *DB
}

const locksChannel = "gatehouse_locks"

var lockMigrations = []string{`
CREATE TABLE IF NOT EXISTS locks (
	scope TEXT NOT NULL,
	target TEXT NOT NULL,
	reason TEXT NOT NULL,
	created_by TEXT NOT NULL,
	created BIGINT NOT NULL,
	expires BIGINT NOT NULL,
	PRIMARY KEY (scope, target)
);
CREATE TABLE IF NOT EXISTS lock_version (id INTEGER PRIMARY KEY, version BIGINT NOT NULL);
INSERT INTO lock_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`}

// NewLocks migrates the schema and returns the store.
func NewLocks(ctx context.Context, db *DB) (*Locks, error) {
	if err := db.Migrate(ctx, "locks", lockMigrations); err != nil {
		return nil, err
	}
	return &Locks{db: db}, nil
}

// change runs f and bumps the version in one transaction.
func (s *Locks) change(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE lock_version SET version = version + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("bumping lock version: %w", err)
	}
	if s.db.Dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, locksChannel); err != nil {
			return fmt.Errorf("notifying lock change: %w", err)
		}
	}
	return tx.Commit()
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Put implements lock.Store.
func (s *Locks) Put(ctx context.Context, l lock.Lock) error {
	return s.change(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO locks (scope, target, reason, created_by, created, expires) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (scope, target) DO UPDATE SET reason = excluded.reason, created_by = excluded.created_by,
			created = excluded.created, expires = excluded.expires`,
			string(l.Scope), l.Target, l.Reason, l.By, unixNano(l.Created), unixNano(l.Expires))
		if err != nil {
			return fmt.Errorf("storing lock: %w", err)
		}
		return nil
	})
}

// Delete implements lock.Store.
func (s *Locks) Delete(ctx context.Context, scope lock.Scope, target string) error {
	return s.change(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM locks WHERE scope = $1 AND target = $2`, string(scope), target)
		if err != nil {
			return fmt.Errorf("removing lock: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return lock.ErrNotLocked
		}
		return nil
	})
}

// List implements lock.Store.
func (s *Locks) List(ctx context.Context) ([]lock.Lock, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT scope, target, reason, created_by, created, expires FROM locks ORDER BY scope, target`)
	if err != nil {
		return nil, fmt.Errorf("listing locks: %w", err)
	}
	defer rows.Close()
	var out []lock.Lock
	for rows.Next() {
		var l lock.Lock
		var created, expires int64
		if err := rows.Scan(&l.Scope, &l.Target, &l.Reason, &l.By, &created, &expires); err != nil {
			return nil, fmt.Errorf("reading lock: %w", err)
		}
		l.Created, l.Expires = fromUnixNano(created), fromUnixNano(expires)
		out = append(out, l)
	}
	return out, rows.Err()
}

// ReadLocks lists the locks straight from the store, for tools that must
// not migrate it (the store may be opened read-only): none when no gateway
// has created the table yet.
func ReadLocks(ctx context.Context, db *DB) ([]lock.Lock, error) {
	ok, err := db.hasTable(ctx, "locks")
	if err != nil {
		return nil, fmt.Errorf("listing locks: %w", err)
	}
	if !ok {
		return nil, nil
	}
	return (&Locks{db: db}).List(ctx)
}

// DeleteExpired removes the locks that expired before t (expired locks are
// not enforced; this only keeps the table small). It does not bump the
// version.
func (s *Locks) DeleteExpired(ctx context.Context, t time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM locks WHERE expires <> 0 AND expires <= $1`, t.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("removing expired locks: %w", err)
	}
	return res.RowsAffected()
}

// Version implements lock.Store.
func (s *Locks) Version(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM lock_version WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading lock version: %w", err)
	}
	return v, nil
}

// Watch implements lock.Watcher on PostgreSQL with LISTEN on a dedicated
// connection; on SQLite it returns errors.ErrUnsupported (one process owns
// the file and the Manager polls the version).
func (s *Locks) Watch(ctx context.Context, changed func()) error {
	if s.db.Dialect != Postgres {
		return errors.ErrUnsupported
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("opening a connection to listen on: %w", err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("listening for lock changes: unexpected driver connection %T", dc)
		}
		pc := sc.Conn()
		if _, err := pc.Exec(ctx, "LISTEN "+locksChannel); err != nil {
			return fmt.Errorf("%w: listening for lock changes: %w", driver.ErrBadConn, err)
		}
		changed() // catch up with changes made before the subscription
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				// The connection still listens (or is broken): never
				// return it to the pool.
				return fmt.Errorf("%w: waiting for lock changes: %w", driver.ErrBadConn, err)
			}
			changed()
		}
	})
}
