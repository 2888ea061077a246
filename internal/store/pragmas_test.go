package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/gatehouse/gatehouse/internal/store"
)

// TestSQLiteDurabilitySettings checks the settings the audit log's
// durability rests on, on every connection of the pool (the audit writer
// takes one of its own): WAL journal and synchronous=FULL, so that a
// committed transaction has been fsync'ed to the WAL. The kill -9 crash
// tests cannot see a weaker setting (a killed process loses no written
// page); a power failure would.
func TestSQLiteDurabilitySettings(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var conns []*sql.Conn
	for range 3 { // held at once: three distinct connections
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		var journal string
		var sync int
		if err := c.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&journal); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if journal != "wal" || sync != 2 {
			t.Errorf("connection %d: journal_mode %q, synchronous %d; want wal and 2 (FULL)", i, journal, sync)
		}
		c.Close()
	}
}
