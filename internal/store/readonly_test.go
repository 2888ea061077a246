package store_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/store"
)

// readOnlyPair returns, for each backend, a read-write store and a
// read-only handle on the same database (SQLite always; PostgreSQL when
// GATEHOUSE_TEST_POSTGRES is set).
func readOnlyPair(t *testing.T) map[string][2]*store.DB {
	t.Helper()
	ctx := context.Background()
	out := map[string][2]*store.DB{}
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	rw, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Close() })
	ro, err := store.OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	out["sqlite"] = [2]*store.DB{rw, ro}

	dsn, ok := postgresSchema(t)
	if !ok {
		return out
	}
	pg, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	pgro, err := store.OpenReadOnly(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pgro.Close() })
	out["postgres"] = [2]*store.DB{pg, pgro}
	return out
}

// TestReadAgentReadOnly reads the durable agent registry through a
// read-only handle, as the CLI does next to a running gateway: it sees
// committed changes, tells an absent registry from an absent agent, cannot
// write, and neither waits for the writer nor makes it wait.
func TestReadAgentReadOnly(t *testing.T) {
	for name, dbs := range readOnlyPair(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			rw, ro := dbs[0], dbs[1]
			if _, err := store.ReadAgent(ctx, ro, "billing-bot"); !errors.Is(err, store.ErrNoRegistry) {
				t.Fatalf("before any gateway: %v, want ErrNoRegistry", err)
			}
			log := &changeLog{}
			reg, err := store.NewAgents(ctx, rw, store.AgentsConfig{Audit: log.audit})
			if err != nil {
				t.Fatal(err)
			}
			by := identity.ChangeInfo{By: "alice@example.com", Reason: "test"}
			for _, id := range []string{"billing-bot", "paused-bot"} {
				if _, err := reg.Create(ctx, &identity.Agent{ID: id, Owner: "alice@example.com", Servers: []string{"bank"}}, by); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := reg.SetStatus(ctx, "paused-bot", identity.StatusSuspended, by); err != nil {
				t.Fatal(err)
			}
			for _, tt := range []struct {
				id      string
				status  identity.Status
				enabled bool
				err     error
			}{
				{"billing-bot", identity.StatusActive, true, nil},
				{"paused-bot", identity.StatusSuspended, false, nil},
				{"ghost", "", false, identity.ErrNoAgent},
			} {
				a, err := store.ReadAgent(ctx, ro, tt.id)
				if !errors.Is(err, tt.err) {
					t.Errorf("%s: %v, want %v", tt.id, err, tt.err)
					continue
				}
				if err == nil && (a.ID != tt.id || a.Status != tt.status || a.Enabled != tt.enabled || a.Owner != "alice@example.com") {
					t.Errorf("%s: %+v", tt.id, a)
				}
			}
			if _, err := ro.ExecContext(ctx, `DELETE FROM agents`); err == nil {
				t.Error("a write through the read-only handle succeeded")
			}
			if a, err := store.ReadAgent(ctx, ro, "billing-bot"); err != nil || a.Status != identity.StatusActive {
				t.Errorf("after the refused write: %v, %v", a, err)
			}

			// A writer holding its transaction open does not block the
			// reader, which sees the last committed state.
			tx, err := rw.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE agents SET status = 'retired' WHERE id = 'billing-bot'`); err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			a, err := store.ReadAgent(rctx, ro, "billing-bot")
			cancel()
			if err != nil || a.Status != identity.StatusActive {
				t.Errorf("reading while a write is open: %v, %v", a, err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}

			// A reader in the middle of a transaction does not block a
			// registry change.
			rtx, err := ro.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.ReadAgent(ctx, ro, "paused-bot"); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := rtx.QueryRowContext(ctx, `SELECT count(*) FROM agents`).Scan(&n); err != nil || n != 2 {
				t.Fatalf("count: %d, %v", n, err)
			}
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = reg.SetStatus(wctx, "paused-bot", identity.StatusActive, by)
			cancel()
			if err != nil {
				t.Errorf("changing an agent while a reader is open: %v", err)
			}
			_ = rtx.Rollback()
			if a, err := store.ReadAgent(ctx, ro, "paused-bot"); err != nil || a.Status != identity.StatusActive || !a.Enabled {
				t.Errorf("after resume: %v, %v", a, err)
			}
		})
	}
}

// TestOpenReadOnlyMissing: a read-only open never creates the store.
func TestOpenReadOnlyMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "gatehouse.db")
	if _, err := store.OpenReadOnly(context.Background(), path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenReadOnly of a missing store: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenReadOnly created %s", filepath.Dir(path))
	}
}
