package audit_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"golang.org/x/mod/sumdb/tlog"
)

// TestVerifySQLiteTampering tampers with a SQLite log of 10,000 entries
// (three reads of verification's pipeline) with SQL, as someone with access
// to the file would, near and across the boundaries between reads, and
// checks that verification, which reads such a store in one pass
// (audit.LeafReader), locates each change.
func TestVerifySQLiteTampering(t *testing.T) {
	const n = 10000
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	path := filepath.Join(t.TempDir(), "audit.db")
	db, a := audittest.OpenSQLite(t, path, false)
	l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1, MaxBatch: 4096})
	if err != nil {
		t.Fatal(err)
	}
	// Two halves of concurrent appends, a checkpoint after each.
	for half := range 2 {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= n/2 {
					if _, err := l.Append(ctx, audittest.Event("agent", "tool", "c", verdict.Allow)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if half == 0 {
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	pristine := filepath.Join(t.TempDir(), "pristine.db")
	copyDB(t, path, pristine)

	for _, tc := range []struct {
		name  string
		sql   []string
		want  []want
		roots bool // both signed roots verify
	}{
		{"intact", nil, nil, true},
		{"edit", []string{`UPDATE audit_entries SET data = replace(data, '"agent"', '"agenX"') WHERE idx = 5000`},
			[]want{{audit.Modified, 5000}}, false},
		{"edit and rehash", []string{`UPDATE audit_entries SET data = replace(data, '"agent"', '"agenX"') WHERE idx = 4096`,
			rehash}, []want{{audit.Modified, 4096}}, false},
		{"tree leaf at a read boundary", []string{`UPDATE audit_entries SET tree = zeroblob(32) || substr(tree, 33) WHERE idx = 4096`},
			[]want{{audit.Modified, 4096}}, true},
		{"tree leaf of the last entry of a read", []string{`UPDATE audit_entries SET tree = zeroblob(32) || substr(tree, 33) WHERE idx = 8191`},
			[]want{{audit.Modified, 8191}}, true},
		{"swap across a read boundary", []string{
			`UPDATE audit_entries SET idx = -1 WHERE idx = 4095`,
			`UPDATE audit_entries SET idx = 4095 WHERE idx = 4096`,
			`UPDATE audit_entries SET idx = 4096 WHERE idx = -1`,
			// The rows keep their tree columns: put them back.
			`UPDATE audit_entries SET tree = (SELECT tree FROM pristine.audit_entries p WHERE p.idx = audit_entries.idx) WHERE idx IN (4095, 4096)`,
		}, []want{{audit.Reordered, 4096}}, true},
		{"delete", []string{`DELETE FROM audit_entries WHERE idx = 7000`}, []want{{audit.Deleted, 7000}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "audit.db")
			copyDB(t, pristine, p)
			db, a := audittest.OpenSQLite(t, p, false)
			defer db.Close()
			if len(tc.sql) > 0 {
				if _, err := db.Exec(`ATTACH DATABASE ? AS pristine`, pristine); err != nil {
					t.Fatal(err)
				}
				for _, q := range tc.sql {
					if q == rehash {
						rehashAll(t, db)
						continue
					}
					if _, err := db.Exec(q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
			}
			rep, err := audit.VerifyBackend(ctx, a, a, audit.VerifyOptions{Verifier: verifier})
			if err != nil {
				t.Fatal(err)
			}
			if got := located(rep); !slices.Equal(got, tc.want) {
				t.Errorf("located %v, want %v\nreport: %+v", got, tc.want, rep.Discrepancies)
			}
			if rep.Entries < n-1 {
				t.Errorf("read %d entries", rep.Entries)
			}
			if tc.roots != (len(rep.Verified) == 2) {
				t.Errorf("signed roots verified: %v (want both: %v); warnings %v", rep.Verified, tc.roots, rep.Warnings)
			}
		})
	}
}

// rehash stands for updating the recorded hashes of edited entries to
// match their data, as a careful attacker would.
const rehash = "rehash"

func rehashAll(t *testing.T, db *store.DB) {
	t.Helper()
	rows, err := db.Query(`SELECT idx, data, hash FROM audit_entries`)
	if err != nil {
		t.Fatal(err)
	}
	fix := map[int64][]byte{}
	for rows.Next() {
		var idx int64
		var data, h []byte
		if err := rows.Scan(&idx, &data, &h); err != nil {
			t.Fatal(err)
		}
		if rh := tlog.RecordHash(data); string(rh[:]) != string(h) {
			fix[idx] = rh[:]
		}
	}
	rows.Close()
	if len(fix) == 0 {
		t.Fatal("nothing to rehash")
	}
	for idx, h := range fix {
		if _, err := db.Exec(`UPDATE audit_entries SET hash = ? WHERE idx = ?`, h, idx); err != nil {
			t.Fatal(err)
		}
	}
}

// copyDB copies a closed SQLite store with VACUUM INTO.
func copyDB(t *testing.T, from, to string) {
	t.Helper()
	db, err := sql.Open("sqlite", from)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`VACUUM INTO ?`, to); err != nil {
		t.Fatal(err)
	}
}
