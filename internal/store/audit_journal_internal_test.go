package store

import (
	"bufio"
	"bytes"
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
