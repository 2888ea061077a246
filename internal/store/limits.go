package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/gatehouse/gatehouse/internal/limits"
)

// Totals is the durable ledger of running totals (implements limits.Ledger,
// limits.TotalReader and limits.Pruner).
//
// One row per bucket (rule, subject, window) holds the committed and the
// reserved amounts. Reserve runs one conditional upsert per bucket inside a
// transaction — the row is updated only when committed + reserved + amount
// stays within the limit — so concurrent reservations from any number of
// replicas sharing PostgreSQL cannot overrun a limit, and a refused
// reservation rolls back whole. Rows are touched in a fixed order, so two
// transactions never deadlock. On SQLite the store's immediate transactions
// serialise writers (one process owns the file).
type Totals struct {
	db *DB
}

var totalsMigrations = []string{`
CREATE TABLE IF NOT EXISTS limit_totals (
	rule TEXT NOT NULL,
	subject TEXT NOT NULL,
	window_start BIGINT NOT NULL,
	window_end BIGINT NOT NULL,
	committed BIGINT NOT NULL,
	reserved BIGINT NOT NULL,
	PRIMARY KEY (rule, subject, window_start)
);
CREATE INDEX IF NOT EXISTS limit_totals_end ON limit_totals (window_end)`}

// NewTotals migrates the schema and returns the ledger.
func NewTotals(ctx context.Context, db *DB) (*Totals, error) {
	if err := db.Migrate(ctx, "limits", totalsMigrations); err != nil {
		return nil, err
	}
	return &Totals{db: db}, nil
}

// order returns the indices of buckets in the store's locking order.
func order(buckets []limits.Bucket) []int {
	idx := make([]int, len(buckets))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(x, y int) bool {
		a, b := buckets[idx[x]], buckets[idx[y]]
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Start < b.Start
	})
	return idx
}

// Reserve implements limits.Ledger.
func (s *Totals) Reserve(ctx context.Context, amount int64, buckets []limits.Bucket) (int, int64, error) {
	if amount < 0 {
		return 0, 0, fmt.Errorf("reserving a negative amount %d", amount)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("reserving: %w", err)
	}
	defer tx.Rollback()
	for _, i := range order(buckets) {
		b := buckets[i]
		var n int64
		if amount <= b.Limit {
			// committed + reserved ≤ Limit always holds, so the condition
			// is written without a sum that could overflow.
			res, err := tx.ExecContext(ctx, `INSERT INTO limit_totals (rule, subject, window_start, window_end, committed, reserved)
				VALUES ($1, $2, $3, $4, 0, $5)
				ON CONFLICT (rule, subject, window_start) DO UPDATE SET reserved = limit_totals.reserved + excluded.reserved
				WHERE limit_totals.committed + limit_totals.reserved <= $6 - excluded.reserved`,
				b.Rule, b.Key, b.Start, b.End, amount, b.Limit)
			if err != nil {
				return 0, 0, fmt.Errorf("reserving in %s: %w", b.Rule, err)
			}
			if n, err = res.RowsAffected(); err != nil {
				return 0, 0, fmt.Errorf("reserving in %s: %w", b.Rule, err)
			}
		}
		if n == 0 {
			var used int64
			err := tx.QueryRowContext(ctx, `SELECT committed + reserved FROM limit_totals WHERE rule = $1 AND subject = $2 AND window_start = $3`,
				b.Rule, b.Key, b.Start).Scan(&used)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return 0, 0, fmt.Errorf("reading %s: %w", b.Rule, err)
			}
			return i, used, nil
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("committing reservation: %w", err)
	}
	return -1, 0, nil
}

// Settle implements limits.Ledger.
func (s *Totals) Settle(ctx context.Context, amount int64, buckets []limits.Bucket, commit bool) error {
	add := int64(0)
	if commit {
		add = amount
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("settling: %w", err)
	}
	defer tx.Rollback()
	for _, i := range order(buckets) {
		b := buckets[i]
		if _, err := tx.ExecContext(ctx, `UPDATE limit_totals SET reserved = reserved - $1, committed = committed + $2
			WHERE rule = $3 AND subject = $4 AND window_start = $5`, amount, add, b.Rule, b.Key, b.Start); err != nil {
			return fmt.Errorf("settling %s: %w", b.Rule, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing settlement: %w", err)
	}
	return nil
}

// Used implements limits.TotalReader.
func (s *Totals) Used(ctx context.Context, b limits.Bucket) (int64, error) {
	var used int64
	err := s.db.QueryRowContext(ctx, `SELECT committed + reserved FROM limit_totals WHERE rule = $1 AND subject = $2 AND window_start = $3`,
		b.Rule, b.Key, b.Start).Scan(&used)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading running total %s: %w", b.Rule, err)
	}
	return used, nil
}

// Prune implements limits.Pruner.
func (s *Totals) Prune(ctx context.Context, endedBefore int64) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM limit_totals WHERE window_end < $1`, endedBefore)
	if err != nil {
		return 0, fmt.Errorf("pruning running totals: %w", err)
	}
	return res.RowsAffected()
}

// Usage lists the buckets whose window ends after t (Unix seconds), for the
// admin API and the console.
func (s *Totals) Usage(ctx context.Context, endsAfter int64) ([]limits.Usage, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT rule, subject, window_start, window_end, committed, reserved FROM limit_totals
		WHERE window_end > $1 ORDER BY rule, subject, window_start`, endsAfter)
	if err != nil {
		return nil, fmt.Errorf("reading running totals: %w", err)
	}
	defer rows.Close()
	var out []limits.Usage
	for rows.Next() {
		var u limits.Usage
		if err := rows.Scan(&u.Rule, &u.Key, &u.Start, &u.End, &u.Committed, &u.Reserved); err != nil {
			return nil, fmt.Errorf("reading running totals: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
