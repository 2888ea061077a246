package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/store"
)

// testDBs returns a fresh SQLite store and, when GATEHOUSE_TEST_POSTGRES
// names a PostgreSQL DSN, a fresh schema in PostgreSQL: the contract tests
// run against every backend.
func testDBs(t *testing.T) map[string]*store.DB {
	t.Helper()
	ctx := context.Background()
	out := map[string]*store.DB{}
	lite, err := store.Open(ctx, filepath.Join(t.TempDir(), "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lite.Close() })
	out["sqlite"] = lite
	dsn, ok := postgresSchema(t)
	if !ok {
		return out
	}
	pg, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	out["postgres"] = pg
	return out
}

// postgresSchema creates a fresh schema in the GATEHOUSE_TEST_POSTGRES
// database, dropped when t ends, and returns a DSN whose search_path is
// that schema; ok is false when the variable is unset. Cleanups run last
// in first out, so stores opened on the DSN afterwards close first.
func postgresSchema(t testing.TB) (dsn string, ok bool) {
	t.Helper()
	dsn = os.Getenv("GATEHOUSE_TEST_POSTGRES")
	if dsn == "" {
		return "", false
	}
	ctx := context.Background()
	admin, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("GATEHOUSE_TEST_POSTGRES is set but unusable: %v", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema, true
}
