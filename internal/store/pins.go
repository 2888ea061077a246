package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/internal/mcp"
)

// Pins is the durable tool-pin store (implements mcp.PinStore).
type Pins struct {
	db  *DB
	now func() time.Time
}

var pinMigrations = []string{`
CREATE TABLE IF NOT EXISTS tool_pins (
	server TEXT NOT NULL,
	tool TEXT NOT NULL,
	approved_hash TEXT NOT NULL,
	approved_def TEXT NOT NULL,
	seen_hash TEXT NOT NULL,
	seen_def TEXT NOT NULL,
	first_seen BIGINT NOT NULL,
	changed_at BIGINT NOT NULL,
	PRIMARY KEY (server, tool)
)`}

// NewPins migrates the schema and returns the store.
func NewPins(ctx context.Context, db *DB, now func() time.Time) (*Pins, error) {
	if err := db.Migrate(ctx, "pins", pinMigrations); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Pins{db: db, now: now}, nil
}

// ErrPinMismatch is returned by Approve when the definition seen now is not
// the one the operator reviewed.
var ErrPinMismatch = errors.New("the tool's definition changed again since it was reviewed")

// ErrNoPin is returned for a tool that was never seen.
var ErrNoPin = errors.New("no such pinned tool")

func (p *Pins) get(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, server, tool string) (mcp.PinState, error) {
	var st mcp.PinState
	var ad, sd string
	var first, changed int64
	err := q.QueryRowContext(ctx, `SELECT approved_hash, approved_def, seen_hash, seen_def, first_seen, changed_at
		FROM tool_pins WHERE server = $1 AND tool = $2`, server, tool).Scan(&st.Approved, &ad, &st.Seen, &sd, &first, &changed)
	if err != nil {
		return st, err
	}
	st.Server, st.Tool = server, tool
	st.ApprovedDef, st.SeenDef = json.RawMessage(ad), json.RawMessage(sd)
	st.FirstSeen, st.ChangedAt = time.Unix(0, first).UTC(), time.Unix(0, changed).UTC()
	return st, nil
}

// Observe implements mcp.PinStore.
func (p *Pins) Observe(ctx context.Context, server, tool, hash string, def json.RawMessage) (mcp.PinState, error) {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return mcp.PinState{}, fmt.Errorf("observing pin: %w", err)
	}
	defer tx.Rollback()
	st, err := p.get(ctx, tx, server, tool)
	now := p.now().UnixNano()
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO tool_pins (server, tool, approved_hash, approved_def, seen_hash, seen_def, first_seen, changed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (server, tool) DO NOTHING`, server, tool, hash, string(def), hash, string(def), now, now); err != nil {
			return mcp.PinState{}, fmt.Errorf("recording pin: %w", err)
		}
	case err != nil:
		return mcp.PinState{}, fmt.Errorf("reading pin: %w", err)
	case st.Seen == hash:
		return st, tx.Commit()
	default:
		if _, err := tx.ExecContext(ctx, `UPDATE tool_pins SET seen_hash = $1, seen_def = $2, changed_at = $3 WHERE server = $4 AND tool = $5`,
			hash, string(def), now, server, tool); err != nil {
			return mcp.PinState{}, fmt.Errorf("recording changed definition: %w", err)
		}
	}
	st, err = p.get(ctx, tx, server, tool)
	if err != nil {
		return mcp.PinState{}, fmt.Errorf("reading pin: %w", err)
	}
	return st, tx.Commit()
}

// Approve implements mcp.PinStore.
func (p *Pins) Approve(ctx context.Context, server, tool, expected string) (mcp.PinState, error) {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return mcp.PinState{}, fmt.Errorf("approving pin: %w", err)
	}
	defer tx.Rollback()
	st, err := p.get(ctx, tx, server, tool)
	if errors.Is(err, sql.ErrNoRows) {
		return mcp.PinState{}, ErrNoPin
	}
	if err != nil {
		return mcp.PinState{}, fmt.Errorf("reading pin: %w", err)
	}
	if expected != "" && st.Seen != expected {
		return st, ErrPinMismatch
	}
	if _, err := tx.ExecContext(ctx, `UPDATE tool_pins SET approved_hash = seen_hash, approved_def = seen_def, changed_at = $1 WHERE server = $2 AND tool = $3`,
		p.now().UnixNano(), server, tool); err != nil {
		return mcp.PinState{}, fmt.Errorf("approving pin: %w", err)
	}
	st, err = p.get(ctx, tx, server, tool)
	if err != nil {
		return mcp.PinState{}, err
	}
	return st, tx.Commit()
}

// List implements mcp.PinStore.
func (p *Pins) List(ctx context.Context) ([]mcp.PinState, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT server, tool FROM tool_pins ORDER BY server, tool`)
	if err != nil {
		return nil, fmt.Errorf("listing pins: %w", err)
	}
	var keys [][2]string
	for rows.Next() {
		var k [2]string
		if err := rows.Scan(&k[0], &k[1]); err != nil {
			rows.Close()
			return nil, err
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]mcp.PinState, 0, len(keys))
	for _, k := range keys {
		st, err := p.get(ctx, p.db, k[0], k[1])
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
