package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/store"
)

func openSQLiteAudit(t *testing.T) *store.AuditLog {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAuditSQLiteContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audittest.Store { return openSQLiteAudit(t) })
}

// openPostgresAudit returns an audit backend in a fresh schema of the
// database named by GATEHOUSE_TEST_POSTGRES, or skips.
func openPostgresAudit(t *testing.T) *store.AuditLog {
	t.Helper()
	dsn := os.Getenv("GATEHOUSE_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("GATEHOUSE_TEST_POSTGRES not set")
	}
	ctx := context.Background()
	admin, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var b [6]byte
	rand.Read(b[:])
	schema := "audit_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a, err := store.Open(context.Background(), dsn); err == nil {
			a.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			a.Close()
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := store.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAuditPostgresContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audittest.Store { return openPostgresAudit(t) })
}
