package store_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"golang.org/x/mod/sumdb/note"
)

func TestAuditJournalContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audittest.Store {
		db, a := audittest.OpenSQLite(t, filepath.Join(t.TempDir(), "gatehouse.db"), true)
		t.Cleanup(func() { db.Close() })
		return a
	})
}

// appendEvents appends n intent events through a Log on a.
func appendEvents(t *testing.T, l *audit.Log, n int, tag string) {
	t.Helper()
	for i := range n {
		e := audittest.Event("agent-"+tag, "tool", fmt.Sprintf("%s-%d", tag, i), verdict.Allow)
		if _, err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// session opens the store at path with the journal, appends n events
// tagged tag through a log, and closes both.
func session(t *testing.T, path string, signer note.Signer, n int, tag string) {
	t.Helper()
	db, a := audittest.OpenSQLite(t, path, true)
	l := openLog(t, a, signer)
	appendEvents(t, l, n, tag)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// lagSQLite runs a session of n appends, keeps a copy of SQLite's files,
// runs a session of m appends (tagged "b") and puts the copy back: the
// journal alone holds those m records, as after a crash before the
// applier committed them.
func lagSQLite(t *testing.T, path string, signer note.Signer, n, m int) {
	t.Helper()
	dir := filepath.Dir(path)
	session(t, path, signer, n, "a")
	saved := copyFiles(t, dir, "gatehouse.db", "gatehouse.db-wal")
	session(t, path, signer, m, "b")
	restoreFiles(t, dir, saved)
}

func openLog(t *testing.T, b audit.Backend, signer note.Signer) *audit.Log {
	t.Helper()
	l, err := audit.Open(context.Background(), audit.Config{Backend: b, Signer: signer, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestAuditJournalReplay: records that reached the journal but not SQLite
// (the process died in between) are in SQLite after the next open, and the
// log verifies.
func TestAuditJournalReplay(t *testing.T) {
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	lagSQLite(t, path, signer, 5, 7) // records 5–11 in the journal only

	db, a := audittest.OpenSQLite(t, path, true)
	defer db.Close()
	if n, err := a.Size(ctx); err != nil || n != 12 {
		t.Fatalf("Size after replay = %d, %v; want 12", n, err)
	}
	es, err := a.Search(ctx, audit.Filter{Agent: "agent-b"})
	if err != nil || len(es) != 7 {
		t.Fatalf("replayed records: %d, %v; want 7", len(es), err)
	}
	l := openLog(t, a, signer)
	appendEvents(t, l, 2, "c")
	if err := l.Close(); err != nil { // issues a checkpoint at 14
		t.Fatal(err)
	}
	if n, _ := a.Size(ctx); n != 14 {
		t.Fatalf("Size after more appends = %d; want 14", n)
	}
	verify(t, a, verifier)
}

// TestAuditJournalTornTail: a record cut short or corrupted by a crash
// ends the journal; the intact records before it are replayed.
func TestAuditJournalTornTail(t *testing.T) {
	for _, damage := range []string{"truncate", "flip"} {
		t.Run(damage, func(t *testing.T) {
			ctx := context.Background()
			signer, _, _ := audittest.Keys(t)
			path := filepath.Join(t.TempDir(), "gatehouse.db")
			lagSQLite(t, path, signer, 0, 3) // three records of one batch each

			// Damage the third record.
			jpath := path + "-audit-journal"
			j, err := os.ReadFile(jpath)
			if err != nil {
				t.Fatal(err)
			}
			third := nthRecord(t, j, 2)
			switch damage {
			case "truncate": // the write stopped half-way: zeros follow
				clear(j[third+20:])
			case "flip":
				j[third+30] ^= 0x40
			}
			if err := os.WriteFile(jpath, j, 0o600); err != nil {
				t.Fatal(err)
			}
			db, a := audittest.OpenSQLite(t, path, true)
			defer db.Close()
			if n, err := a.Size(ctx); err != nil || n != 2 {
				t.Fatalf("Size = %d, %v; want the 2 intact records", n, err)
			}
		})
	}
}

// TestAuditJournalGap: a journal that starts beyond what SQLite holds (the
// database was replaced by an older copy) refuses to open.
func TestAuditJournalGap(t *testing.T) {
	signer, _, _ := audittest.Keys(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "gatehouse.db")
	session(t, path, signer, 0, "")
	empty := copyFiles(t, dir, "gatehouse.db", "gatehouse.db-wal")
	session(t, path, signer, 3, "a")
	// All three are in SQLite, so the next record starts the journal again
	// at its front, with index 3.
	session(t, path, signer, 1, "b")
	restoreFiles(t, dir, empty)

	db2, a2 := audittest.OpenSQLite(t, path, false)
	defer db2.Close()
	err := a2.UseJournal(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("UseJournal = %v; want an error about missing records", err)
	}
}

// TestAuditJournalWraps: the journal is reused from its start once SQLite
// holds everything, so it never grows; records stay readable and the log
// verifies. A small journal takes both ways back to the front: at once
// when SQLite has caught up (after a read), and after a wait for the
// applier when the file is full.
func TestAuditJournalWraps(t *testing.T) {
	store.SetJournalSize(t, 64<<10)
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "gatehouse.db")
	db, a := audittest.OpenSQLite(t, path, true)
	defer db.Close()
	l := openLog(t, a, signer)
	for round := range 6 {
		appendEvents(t, l, 50, fmt.Sprint(round))
		es, err := a.Search(ctx, audit.Filter{Agent: fmt.Sprint("agent-", round)})
		if err != nil || len(es) != 50 {
			t.Fatalf("round %d: %d records, %v", round, len(es), err)
		}
	}
	st, err := os.Stat(path + "-audit-journal")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 64<<10 {
		t.Fatalf("the journal is %d bytes, want %d", st.Size(), 64<<10)
	}
	j, err := os.ReadFile(path + "-audit-journal")
	if err != nil {
		t.Fatal(err)
	}
	// Each half holds a chain; the newer one ends with the last record.
	f0, n0 := chain(j[:len(j)/2])
	f1, n1 := chain(j[len(j)/2:])
	if end := max(f0+int64(n0), f1+int64(n1)); end != 300 || n0+n1 >= 300 {
		t.Fatalf("journal chains: %d records from %d, %d from %d; want the latest records, ending at 300", n0, f0, n1, f1)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	verify(t, a, verifier)
}

// chain returns the first index and the number of records of the chain
// at the start of j (one entry per record).
func chain(j []byte) (first int64, n int) {
	off, next := 0, int64(-1)
	for off+12 <= len(j) && string(j[off:off+4]) == "GHJ1" {
		size := int(binary.LittleEndian.Uint32(j[off+4:]))
		idx, _ := binary.Uvarint(j[off+12:])
		if next >= 0 && int64(idx) != next {
			break
		}
		if next < 0 {
			first = int64(idx)
		}
		next = int64(idx) + 1
		n++
		off += 12 + size
	}
	return first, n
}

func verify(t *testing.T, a *store.AuditLog, v note.Verifier) {
	t.Helper()
	rep, err := audit.VerifyBackend(context.Background(), a, a, audit.VerifyOptions{Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Verified) == 0 || rep.Unsigned != 0 {
		t.Fatalf("verify: %+v", rep)
	}
}

// nthRecord returns the offset of the journal's record i.
func nthRecord(t *testing.T, j []byte, i int) int {
	t.Helper()
	off := 0
	for range i {
		if string(j[off:off+4]) != "GHJ1" {
			t.Fatalf("no record at %d", off)
		}
		n := int(binary.LittleEndian.Uint32(j[off+4:]))
		off += 12 + n
	}
	return off
}

func copyFiles(t *testing.T, dir string, names ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	return out
}

func restoreFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for _, n := range []string{"gatehouse.db", "gatehouse.db-wal", "gatehouse.db-shm"} {
		os.Remove(filepath.Join(dir, n))
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditJournalRetire: a store that turns the journal off first gets
// what the journal alone held, and the journal file is gone.
func TestAuditJournalRetire(t *testing.T) {
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	lagSQLite(t, path, signer, 4, 6) // records 4–9 in the journal only

	db, a := audittest.OpenSQLite(t, path, false)
	defer db.Close()
	if err := a.RetireJournal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-audit-journal"); !os.IsNotExist(err) {
		t.Fatalf("the journal file is still there: %v", err)
	}
	if n, err := a.Size(ctx); err != nil || n != 10 {
		t.Fatalf("Size = %d, %v; want 10", n, err)
	}
	l := openLog(t, a, signer) // appends without the journal
	appendEvents(t, l, 1, "c")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	verify(t, a, verifier)
	if err := a.RetireJournal(ctx); err != nil { // no journal: nothing to do
		t.Fatal(err)
	}
}

// TestAuditJournalExclusive: a second store on the same file cannot use
// (or retire) the journal while the first holds it.
func TestAuditJournalExclusive(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	db, _ := audittest.OpenSQLite(t, path, true)
	db2, a2 := audittest.OpenSQLite(t, path, false)
	defer db2.Close()
	for name, f := range map[string]func() error{
		"UseJournal":    func() error { return a2.UseJournal(ctx, nil) },
		"RetireJournal": func() error { return a2.RetireJournal(ctx) },
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Errorf("%s while another store holds the journal: %v", name, err)
		}
	}
	db.Close() // releases the journal
	if err := a2.UseJournal(ctx, nil); err != nil {
		t.Fatalf("UseJournal after the first store closed: %v", err)
	}
}
