package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"golang.org/x/mod/sumdb/tlog"
)

func testBatch(first int64, n int) audit.Batch {
	b := audit.Batch{HashStart: tlog.StoredHashIndex(0, first)}
	for i := range n {
		idx := first + int64(i)
		b.Entries = append(b.Entries, audit.Entry{Index: idx, Data: []byte(`{"event":{}}`), Hash: tlog.Hash{byte(idx)},
			Time: 1700000000000 + idx, Class: 6003, Agent: "a", Tool: "t", Outcome: "allow", Correlation: "c"})
	}
	for range tlog.StoredHashIndex(0, first+int64(n)) - b.HashStart {
		b.Hashes = append(b.Hashes, tlog.Hash{0xab})
	}
	return b
}

func TestJournalRecordRoundTrip(t *testing.T) {
	for _, b := range []audit.Batch{testBatch(0, 1), testBatch(7, 3), testBatch(1<<40, 2)} {
		rec := encodeJournal(nil, b)
		got, ok := readJournal(bufio.NewReader(bytes.NewReader(rec)), int64(len(rec)))
		if !ok {
			t.Fatalf("batch at %d: record not read back", b.Entries[0].Index)
		}
		if again := encodeJournal(nil, got); !bytes.Equal(again, rec) {
			t.Fatalf("batch at %d: decoded batch encodes differently", b.Entries[0].Index)
		}
		// Every shorter prefix is a torn record.
		for cut := range len(rec) {
			if _, ok := readJournal(bufio.NewReader(bytes.NewReader(rec[:cut])), int64(len(rec))); ok {
				t.Fatalf("a record cut at %d of %d bytes was accepted", cut, len(rec))
			}
		}
	}
	// A batch's merge and trim keep entries and hashes aligned.
	m := trimBatch(mergeBatches([]audit.Batch{testBatch(3, 2), testBatch(5, 4)}), 6)
	if m.Entries[0].Index != 6 || len(m.Entries) != 3 || m.HashStart != tlog.StoredHashIndex(0, 6) ||
		int64(len(m.Hashes)) != tlog.StoredHashIndex(0, 9)-m.HashStart {
		t.Fatalf("trimmed batch: first %d, %d entries, hashes from %d, %d hashes", m.Entries[0].Index, len(m.Entries), m.HashStart, len(m.Hashes))
	}
	if e := trimBatch(testBatch(3, 2), 5); len(e.Entries) != 0 || len(e.Hashes) != 0 {
		t.Fatalf("a batch trimmed past its end keeps %d entries", len(e.Entries))
	}
}

// FuzzJournalRecord: any bytes read as a journal record either fail or
// decode to a batch that encodes back to the same record; nothing panics.
func FuzzJournalRecord(f *testing.F) {
	f.Add(encodeJournal(nil, testBatch(0, 1)))
	f.Add(encodeJournal(nil, testBatch(9, 2)))
	f.Add([]byte("GHJ1\xff\xff\xff\xff\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, ok := readJournal(bufio.NewReader(bytes.NewReader(data)), 1<<20)
		if !ok {
			return
		}
		rec := encodeJournal(nil, b)
		if !bytes.Equal(rec, data[:len(rec)]) {
			t.Fatalf("decoded record re-encodes differently")
		}
	})
}

// TestJournalRecoversBothHalves: recovery reads the chain of each half,
// puts them in index order and applies what SQLite lacks; stale records
// after a chain are ignored.
func TestJournalRecoversBothHalves(t *testing.T) {
	for _, stored := range []int64{0, 20} {
		t.Run(fmt.Sprint("stored ", stored), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "gatehouse.db")
			size := int64(64 << 10) // smaller than journalSize: read at its own size first
			j := make([]byte, size)
			put := func(off int64, first, n int64) int64 {
				for i := first; i < first+n; i++ {
					off += int64(copy(j[off:], encodeJournal(nil, testBatch(i, 1))))
				}
				return off
			}
			put(size/2, 0, 15)    // the older half: records 0–14
			end := put(0, 15, 15) // the newer half, started again: 15–29 …
			put(end, 5, 2)        // … followed by stale records of an earlier pass
			if err := os.WriteFile(journalPath(path), j, 0o600); err != nil {
				t.Fatal(err)
			}
			a := openAuditLog(t, path)
			if stored > 0 {
				if err := a.appendSQLite(ctx, testBatch(0, int(stored))); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.UseJournal(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if n, err := a.Size(ctx); err != nil || n != 30 {
				t.Fatalf("Size = %d, %v; want 30", n, err)
			}
			es, err := a.Entries(ctx, 0, 30)
			if err != nil || len(es) != 30 {
				t.Fatalf("Entries: %d, %v", len(es), err)
			}
			for i, e := range es {
				if e.Index != int64(i) || e.Time != 1700000000000+int64(i) {
					t.Fatalf("entry %d: index %d, time %d", i, e.Index, e.Time)
				}
			}
		})
	}
}

// TestJournalHalfBoundary: a record that ends exactly at the middle of the
// file belongs to the first half, so the writer waits for it before it
// reuses that half.
func TestJournalHalfBoundary(t *testing.T) {
	var half int64 // four records fill a half exactly
	for i := range 4 {
		half += int64(len(encodeJournal(nil, testBatch(int64(i), 1))))
	}
	old := journalSize
	journalSize = 2 * half
	defer func() { journalSize = old }()
	ctx := context.Background()
	a := openAuditLog(t, filepath.Join(t.TempDir(), "gatehouse.db"))
	if err := a.UseJournal(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := a.Append(ctx, testBatch(int64(i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	if a.j.off != journalSize/2 || a.j.ends != [2]int64{4, 0} {
		t.Fatalf("after four records: offset %d, ends %v; want %d, [4 0]", a.j.off, a.j.ends, journalSize/2)
	}
}

// openAuditLog opens the SQLite store at path (closed with t) and its
// audit backend, without the journal.
func openAuditLog(t *testing.T, path string) *AuditLog {
	t.Helper()
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a, err := OpenAuditLog(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
