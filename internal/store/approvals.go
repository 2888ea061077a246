package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
)

// Approvals is the governance layer's durable store (implements
// approval.Store).
//
// An approval is one row: the columns the queries filter on, and the
// approval itself as JSON in doc (without status, uses and version, which
// are columns). open_key holds the call hash while the approval is open
// (pending or approved) and NULL otherwise; its UNIQUE index makes "one
// open approval per call" a database invariant across replicas.
//
// Use is one conditional UPDATE ... RETURNING — the row changes only if
// the grant is approved, in its window and has uses left — followed by the
// insert of the use, in one transaction: on PostgreSQL the row lock makes
// concurrent uses queue and re-check the condition, on SQLite the
// immediate transaction serialises writers, so a single-use grant is used
// once whatever the concurrency.
type Approvals struct {
	db *DB
}

var approvalMigrations = []string{`
CREATE TABLE IF NOT EXISTS approvals (
	id TEXT PRIMARY KEY,
	kind TEXT NOT NULL,
	status TEXT NOT NULL,
	reason TEXT NOT NULL,
	call_hash TEXT NOT NULL,
	open_key TEXT UNIQUE,
	agent TEXT NOT NULL,
	created BIGINT NOT NULL,
	expires BIGINT NOT NULL,
	grant_start BIGINT NOT NULL,
	grant_expires BIGINT NOT NULL,
	max_uses BIGINT NOT NULL,
	uses BIGINT NOT NULL,
	version BIGINT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_hash ON approvals (call_hash, created);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, created);
CREATE INDEX IF NOT EXISTS approvals_agent ON approvals (agent, created);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals (created);
CREATE TABLE IF NOT EXISTS approval_uses (
	approval_id TEXT NOT NULL,
	seq BIGINT NOT NULL,
	doc TEXT NOT NULL,
	PRIMARY KEY (approval_id, seq)
);
CREATE TABLE IF NOT EXISTS approval_deliveries (
	id TEXT PRIMARY KEY,
	approval_id TEXT NOT NULL,
	at BIGINT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approval_deliveries_approval ON approval_deliveries (approval_id, at);
CREATE TABLE IF NOT EXISTS approval_review_items (
	id TEXT PRIMARY KEY,
	approval_id TEXT NOT NULL,
	status TEXT NOT NULL,
	created BIGINT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approval_review_items_status ON approval_review_items (status, created)`}

// NewApprovals migrates the schema and returns the store.
func NewApprovals(ctx context.Context, db *DB) (*Approvals, error) {
	if err := db.Migrate(ctx, "approvals", approvalMigrations); err != nil {
		return nil, err
	}
	return &Approvals{db: db}, nil
}

// row holds an approval's columns.
type approvalRow struct {
	openKey                  sql.NullString
	grantStart, grantExpires int64
	maxUses                  int64
	doc                      []byte
}

func toRow(a *approval.Approval) (approvalRow, error) {
	var r approvalRow
	if a.Status.Open() && a.CallHash() != "" {
		r.openKey = sql.NullString{String: a.CallHash(), Valid: true}
	}
	if g := a.Grant; g != nil {
		r.grantStart, r.grantExpires, r.maxUses = g.Start.UnixNano(), g.Expires.UnixNano(), int64(g.MaxUses)
	}
	d := *a
	d.Status, d.Reason, d.Uses = "", "", nil
	if d.Grant != nil {
		g := *d.Grant
		g.Uses = 0
		d.Grant = &g
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // no HTML escaping: embedded JSON keeps its bytes
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return r, fmt.Errorf("encoding approval %s: %w", a.ID, err)
	}
	r.doc = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return r, nil
}

const approvalColumns = `id, status, reason, uses, version, doc`

type scanner interface{ Scan(...any) error }

func scanApproval(s scanner) (approval.Approval, error) {
	var a approval.Approval
	var id, status, reason string
	var uses, version int64
	var doc []byte
	if err := s.Scan(&id, &status, &reason, &uses, &version, &doc); err != nil {
		return a, err
	}
	if err := json.Unmarshal(doc, &a); err != nil {
		return a, fmt.Errorf("decoding approval %s: %w", id, err)
	}
	a.Status, a.Reason, a.Version = approval.Status(status), reason, version
	if a.Grant != nil {
		a.Grant.Uses = int(uses)
	}
	return a, nil
}

// withUses loads the uses of the approvals.
func (s *Approvals) withUses(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, as []approval.Approval) error {
	for i := range as {
		if as[i].Grant == nil || as[i].Grant.Uses == 0 {
			continue
		}
		rows, err := q.QueryContext(ctx, `SELECT doc FROM approval_uses WHERE approval_id = $1 ORDER BY seq`, as[i].ID)
		if err != nil {
			return fmt.Errorf("reading uses of %s: %w", as[i].ID, err)
		}
		for rows.Next() {
			var doc []byte
			var u approval.Use
			if err := rows.Scan(&doc); err != nil {
				_ = rows.Close()
				return err
			}
			if err := json.Unmarshal(doc, &u); err != nil {
				_ = rows.Close()
				return fmt.Errorf("decoding a use of %s: %w", as[i].ID, err)
			}
			as[i].Uses = append(as[i].Uses, u)
		}
		_ = rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (s *Approvals) one(ctx context.Context, query string, args ...any) (approval.Approval, error) {
	a, err := scanApproval(s.db.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return a, approval.ErrNotFound
	}
	if err != nil {
		return a, fmt.Errorf("reading approval: %w", err)
	}
	as := []approval.Approval{a}
	if err := s.withUses(ctx, s.db, as); err != nil {
		return a, err
	}
	return as[0], nil
}

// Create implements approval.Store.
func (s *Approvals) Create(ctx context.Context, a approval.Approval) (approval.Approval, bool, error) {
	a.Version = 1
	r, err := toRow(&a)
	if err != nil {
		return a, false, err
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO approvals (id, kind, status, reason, call_hash, open_key, agent, created, expires,
		grant_start, grant_expires, max_uses, uses, version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 1, $13)
		ON CONFLICT (open_key) DO NOTHING`,
		a.ID, string(a.Kind), string(a.Status), a.Reason, a.CallHash(), r.openKey, a.Agent(), a.Created.UnixNano(), a.Expires.UnixNano(),
		r.grantStart, r.grantExpires, r.maxUses, string(r.doc))
	if err != nil {
		return a, false, fmt.Errorf("storing approval %s: %w", a.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return a, false, err
	} else if n == 1 {
		return a, true, nil
	}
	open, err := s.one(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE open_key = $1`, a.CallHash())
	if err != nil {
		return a, false, fmt.Errorf("reading the open approval of %s: %w", a.CallHash(), err)
	}
	return open, false, nil
}

// Get implements approval.Store.
func (s *Approvals) Get(ctx context.Context, id string) (approval.Approval, error) {
	return s.one(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = $1`, id)
}

// Latest implements approval.Store.
func (s *Approvals) Latest(ctx context.Context, callHash string) (approval.Approval, error) {
	if callHash == "" {
		return approval.Approval{}, approval.ErrNotFound
	}
	return s.one(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE call_hash = $1 ORDER BY created DESC, id DESC LIMIT 1`, callHash)
}

func (s *Approvals) many(ctx context.Context, query string, args ...any) ([]approval.Approval, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing approvals: %w", err)
	}
	var out []approval.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			_ = rows.Close()
			return nil, err
		}
		out = append(out, a)
	}
	_ = rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, s.withUses(ctx, s.db, out)
}

// List implements approval.Store.
func (s *Approvals) List(ctx context.Context, q approval.Query) ([]approval.Approval, error) {
	where, args := approvalFilter(q)
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	query := `SELECT ` + approvalColumns + ` FROM approvals` + where + fmt.Sprintf(" ORDER BY created DESC, id DESC LIMIT $%d", len(args))
	return s.many(ctx, query, args...)
}

// Count implements approval.Store.
func (s *Approvals) Count(ctx context.Context, q approval.Query) (int, error) {
	where, args := approvalFilter(q)
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approvals`+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting approvals: %w", err)
	}
	return n, nil
}

// approvalFilter returns the WHERE clause (with a leading space, or
// empty) and arguments of q's filters.
func approvalFilter(q approval.Query) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if q.Status != "" {
		where = append(where, "status = "+arg(string(q.Status)))
	}
	if q.Kind != "" {
		where = append(where, "kind = "+arg(string(q.Kind)))
	}
	if q.Agent != "" {
		where = append(where, "agent = "+arg(q.Agent))
	}
	if q.Open {
		where = append(where, "status IN ('pending', 'approved')")
	}
	if len(where) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(where, " AND "), args
}

// Due implements approval.Store.
func (s *Approvals) Due(ctx context.Context, now time.Time, limit int) ([]approval.Approval, error) {
	return s.many(ctx, `SELECT `+approvalColumns+` FROM approvals
		WHERE (status = 'pending' AND expires <= $1) OR (status = 'approved' AND grant_expires <= $1)
		ORDER BY created, id LIMIT $2`, now.UnixNano(), limit)
}

// Update implements approval.Store.
func (s *Approvals) Update(ctx context.Context, a approval.Approval, prev int64) error {
	r, err := toRow(&a)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE approvals SET status = $1, reason = $2, open_key = $3, expires = $4, grant_start = $5,
		grant_expires = $6, max_uses = $7, doc = $8, version = version + 1 WHERE id = $9 AND version = $10`,
		string(a.Status), a.Reason, r.openKey, a.Expires.UnixNano(), r.grantStart, r.grantExpires, r.maxUses, string(r.doc), a.ID, prev)
	if err != nil {
		return fmt.Errorf("updating approval %s: %w", a.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 1 {
		return nil
	}
	var v int64
	err = s.db.QueryRowContext(ctx, `SELECT version FROM approvals WHERE id = $1`, a.ID).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return approval.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("updating approval %s: %w", a.ID, err)
	}
	return approval.ErrConflict
}

// Use implements approval.Store.
func (s *Approvals) Use(ctx context.Context, id string, u approval.Use, now time.Time) (approval.Approval, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return approval.Approval{}, fmt.Errorf("using approval %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }()
	t := now.UnixNano()
	var uses int64
	err = tx.QueryRowContext(ctx, `UPDATE approvals SET uses = uses + 1, version = version + 1,
		status = CASE WHEN max_uses > 0 AND uses + 1 >= max_uses THEN 'used' ELSE status END,
		reason = CASE WHEN max_uses > 0 AND uses + 1 >= max_uses THEN 'approval.used' ELSE reason END,
		open_key = CASE WHEN max_uses > 0 AND uses + 1 >= max_uses THEN NULL ELSE open_key END
		WHERE id = $1 AND status = 'approved' AND grant_start <= $2 AND grant_expires > $2 AND (max_uses = 0 OR uses < max_uses)
		RETURNING uses`, id, t).Scan(&uses)
	if errors.Is(err, sql.ErrNoRows) {
		return approval.Approval{}, approval.ErrNoGrant
	}
	if err != nil {
		return approval.Approval{}, fmt.Errorf("using approval %s: %w", id, err)
	}
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM approval_uses WHERE approval_id = $1`, id).Scan(&seq); err != nil {
		return approval.Approval{}, fmt.Errorf("numbering the use of %s: %w", id, err)
	}
	u.Seq = int(seq)
	u.Time = u.Time.UTC()
	doc, err := json.Marshal(u)
	if err != nil {
		return approval.Approval{}, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO approval_uses (approval_id, seq, doc) VALUES ($1, $2, $3)`, id, seq, string(doc)); err != nil {
		return approval.Approval{}, fmt.Errorf("recording the use of %s: %w", id, err)
	}
	a, err := scanApproval(tx.QueryRowContext(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = $1`, id))
	if err != nil {
		return approval.Approval{}, fmt.Errorf("reading approval %s: %w", id, err)
	}
	as := []approval.Approval{a}
	if err := s.withUses(ctx, tx, as); err != nil {
		return approval.Approval{}, err
	}
	if err := tx.Commit(); err != nil {
		return approval.Approval{}, fmt.Errorf("committing the use of %s: %w", id, err)
	}
	return as[0], nil
}

// Unuse implements approval.Store.
func (s *Approvals) Unuse(ctx context.Context, id string, seq int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("giving back a use of %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }()
	var taken bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM approvals a JOIN approvals o ON o.open_key = a.call_hash
		WHERE a.id = $1 AND a.status = 'used' AND o.id <> a.id)`, id).Scan(&taken); err != nil {
		return fmt.Errorf("giving back a use of %s: %w", id, err)
	}
	if taken {
		return nil
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM approval_uses WHERE approval_id = $1 AND seq = $2`, id, seq)
	if err != nil {
		return fmt.Errorf("giving back a use of %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE approvals SET uses = uses - 1, version = version + 1,
		status = CASE WHEN status = 'used' THEN 'approved' ELSE status END,
		reason = CASE WHEN status = 'used' THEN 'approval.granted' ELSE reason END,
		open_key = CASE WHEN status = 'used' AND call_hash <> '' THEN call_hash ELSE open_key END
		WHERE id = $1`, id); err != nil {
		return fmt.Errorf("giving back a use of %s: %w", id, err)
	}
	return tx.Commit()
}

// AddDelivery implements approval.Store.
func (s *Approvals) AddDelivery(ctx context.Context, d approval.Delivery) error {
	d.Time = d.Time.UTC()
	doc, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO approval_deliveries (id, approval_id, at, doc) VALUES ($1, $2, $3, $4)`,
		d.ID, d.Approval, d.Time.UnixNano(), string(doc)); err != nil {
		return fmt.Errorf("recording delivery %s: %w", d.ID, err)
	}
	return nil
}

// Deliveries implements approval.Store.
func (s *Approvals) Deliveries(ctx context.Context, id string) ([]approval.Delivery, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT doc FROM approval_deliveries WHERE approval_id = $1 ORDER BY at, id`, id)
	if err != nil {
		return nil, fmt.Errorf("reading deliveries of %s: %w", id, err)
	}
	defer func() { _ = rows.Close() }()
	var out []approval.Delivery
	for rows.Next() {
		var doc []byte
		var d approval.Delivery
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(doc, &d); err != nil {
			return nil, fmt.Errorf("decoding a delivery of %s: %w", id, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// PutReviewItem implements approval.Store.
func (s *Approvals) PutReviewItem(ctx context.Context, it approval.ReviewItem) error {
	doc, err := json.Marshal(it)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO approval_review_items (id, approval_id, status, created, doc) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc`,
		it.ID, it.Approval, it.Status, it.Created.UnixNano(), string(doc)); err != nil {
		return fmt.Errorf("storing review item %s: %w", it.ID, err)
	}
	return nil
}

func scanItem(s scanner) (approval.ReviewItem, error) {
	var doc []byte
	var it approval.ReviewItem
	if err := s.Scan(&doc); err != nil {
		return it, err
	}
	if err := json.Unmarshal(doc, &it); err != nil {
		return it, fmt.Errorf("decoding a review item: %w", err)
	}
	return it, nil
}

// ReviewItem implements approval.Store.
func (s *Approvals) ReviewItem(ctx context.Context, id string) (approval.ReviewItem, error) {
	it, err := scanItem(s.db.QueryRowContext(ctx, `SELECT doc FROM approval_review_items WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return it, approval.ErrNotFound
	}
	return it, err
}

// ReviewItems implements approval.Store.
func (s *Approvals) ReviewItems(ctx context.Context, status string) ([]approval.ReviewItem, error) {
	query, args := `SELECT doc FROM approval_review_items ORDER BY created, id`, []any{}
	if status != "" {
		query, args = `SELECT doc FROM approval_review_items WHERE status = $1 ORDER BY created, id`, []any{status}
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing review items: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []approval.ReviewItem
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}
