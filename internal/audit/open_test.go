package audit_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// TestOpenRefusesTamperedStore checks the check Open makes before it
// appends: a store that holds fewer entries than its latest signed
// checkpoint, or whose stored tree no longer hashes to that checkpoint's
// root, is refused, so the log never extends a modified history.
func TestOpenRefusesTamperedStore(t *testing.T) {
	ctx := context.Background()
	signer, _, _ := audittest.Keys(t)
	for _, tc := range []struct {
		name, sql, want string
	}{
		{"intact", ``, ``},
		{"tail deleted", `DELETE FROM audit_entries WHERE idx >= 15`, "entries were deleted"},
		// Entry 15 added the stored hash of the subtree [0, 16), which
		// the root of size 20 is computed from.
		{"tree edited", `UPDATE audit_entries SET tree = zeroblob(length(tree)) WHERE idx = 15`, "the log was modified"},
		// The writer resumes from the last entry: its leaf must be the
		// tree's.
		{"last entry's tree edited", `UPDATE audit_entries SET tree = zeroblob(length(tree)) WHERE idx = 19`, "differs from the tree's leaf hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			db, a := audittest.OpenSQLite(t, path, false)
			l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				if _, err := l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow)); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil { // signs a checkpoint of size 20
				t.Fatal(err)
			}
			if tc.sql != "" {
				if _, err := db.Exec(tc.sql); err != nil {
					t.Fatal(err)
				}
			}
			db.Close()

			db, a = audittest.OpenSQLite(t, path, false)
			defer db.Close()
			l, err = audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Open of an intact store: %v", err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatal("Open accepted a tampered store")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want it to say %q", err, tc.want)
			}
		})
	}
}
