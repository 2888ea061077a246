package store_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/limits"
	"github.com/gatehouse/gatehouse/internal/limits/limitstest"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

func TestTotalsContract(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			l1, err := store.NewTotals(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			l2, err := store.NewTotals(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			limitstest.TestLedger(t, l1, l2)
		})
	}
}

// TestTotalsSurviveRestart: a day's running total is still there after the
// gateway reopens its SQLite store.
func TestTotalsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	now := func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
	newLimiter := func(db *store.DB) *limits.Limiter {
		t.Helper()
		totals, err := store.NewTotals(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		l, err := limits.New(limits.Config{Ledger: totals, Now: now, Values: []limits.Value{{Server: "bank", Tool: "transfer", Argument: "amount", Decimals: 2,
			Totals: []limits.Total{{Per: limits.PerAgent, Window: 24 * time.Hour, Limit: "10000"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	req := func(amount string) *pipeline.Request {
		return &pipeline.Request{ID: "c", Phase: pipeline.PhaseCall, Action: pipeline.ActionCallTool, Caller: &pipeline.Caller{Agent: "a1"},
			Server: "bank", Target: "transfer", Arguments: json.RawMessage(`{"amount":` + amount + `}`)}
	}
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	l := newLimiter(db)
	r := req("9000")
	if v, err := l.Check(ctx, r); err != nil || v.Outcome != verdict.Allow {
		t.Fatalf("Check = %+v, %v", v, err)
	}
	l.Finish(ctx, r, &pipeline.Outcome{Status: "ok"})
	db.Close()

	db, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l = newLimiter(db)
	v, err := l.Check(ctx, req("1000.01"))
	if err != nil || v.Outcome != verdict.Block || v.First().Code != "limits.running_total" {
		t.Fatalf("after restart: %+v, %v", v, err)
	}
	totals, _ := store.NewTotals(ctx, db)
	u, err := totals.Usage(ctx, now().Unix())
	if err != nil || len(u) != 1 || u[0].Committed != 900000 || u[0].Reserved != 0 {
		t.Fatalf("Usage = %+v, %v", u, err)
	}
}

func BenchmarkTotalsReserveSettle(b *testing.B) {
	for name, db := range benchDBs(b) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			totals, err := store.NewTotals(ctx, db)
			if err != nil {
				b.Fatal(err)
			}
			buckets := []limits.Bucket{
				{Rule: "bank/transfer/agent/24h", Key: "a1", Start: 1772323200, End: 1772409600, Limit: 1 << 60},
				{Rule: "bank/transfer/user/24h", Key: "u1", Start: 1772323200, End: 1772409600, Limit: 1 << 60},
			}
			for b.Loop() {
				full, _, err := totals.Reserve(ctx, 100, buckets)
				if err != nil || full != -1 {
					b.Fatal(full, err)
				}
				if err := totals.Settle(ctx, 100, buckets, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchDBs opens SQLite and, when GATEHOUSE_TEST_POSTGRES is set, a fresh
// PostgreSQL schema, for benchmarks.
func benchDBs(b *testing.B) map[string]*store.DB {
	b.Helper()
	ctx := context.Background()
	out := map[string]*store.DB{}
	lite, err := store.Open(ctx, filepath.Join(b.TempDir(), "gatehouse.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lite.Close() })
	out["sqlite"] = lite
	dsn, ok := postgresSchema(b)
	if !ok {
		return out
	}
	pg, err := store.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pg.Close() })
	out["postgres"] = pg
	return out
}
