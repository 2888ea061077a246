// Package audittest is the contract test suite that every audit log
// backend (memory, SQLite, PostgreSQL) must pass.
package audittest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Store is everything a full audit backend implements.
type Store interface {
	audit.Backend
	audit.CheckpointStore
	audit.Searcher
	audit.CursorStore
}

// OpenSQLite opens the SQLite store at path and its audit backend, with
// the audit journal on if journal is set (which replays what the journal
// holds and SQLite lacks). The caller closes the store.
func OpenSQLite(t testing.TB, path string, journal bool) (*store.DB, *store.AuditLog) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := store.OpenAuditLog(ctx, db)
	if err == nil && journal {
		err = a.UseJournal(ctx, nil)
	}
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db, a
}

// Keys returns a fresh Ed25519 note signer and its verifier.
func Keys(t testing.TB) (note.Signer, note.Verifier, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "gatehouse.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v, vkey
}

// Event returns a tool-call intent event for agent/tool with outcome o.
func Event(agent, tool, correlation string, o verdict.Outcome) *audit.Event {
	v := verdict.Verdict{Outcome: o}
	if o != verdict.Allow {
		v.Reasons = []verdict.Reason{{Layer: verdict.Execution, Code: "policy.forbid", Outcome: o, Policies: []string{"p1"}}}
	}
	return audit.APIActivity(audit.Subject{Agent: agent, Instance: agent + "-1", User: "alice", Task: "t1", Correlation: correlation, TraceID: "trace"},
		audit.Call{Phase: audit.PhaseIntent, Server: "crm", Tool: tool, Arguments: []byte(`{"id":1}`)}, v)
}

// Run runs the contract suite. open returns a new, empty store each call.
func Run(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	signer, verifier, _ := Keys(t)

	t.Run("Empty", func(t *testing.T) {
		s := open(t)
		if n, err := s.Size(ctx); err != nil || n != 0 {
			t.Fatalf("Size = %d, %v; want 0", n, err)
		}
		if es, err := s.Entries(ctx, 0, 10); err != nil || len(es) != 0 {
			t.Fatalf("Entries = %v, %v; want none", es, err)
		}
		if cs, err := s.Checkpoints(ctx); err != nil || len(cs) != 0 {
			t.Fatalf("Checkpoints = %v, %v; want none", cs, err)
		}
		if c, err := s.Cursor(ctx, "x"); err != nil || c != -1 {
			t.Fatalf("Cursor = %d, %v; want -1", c, err)
		}
	})

	t.Run("AppendProveVerify", func(t *testing.T) {
		s := open(t)
		l, err := audit.Open(ctx, audit.Config{Backend: s, Signer: signer, CheckpointInterval: -1, MaxBatch: 64})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		const n = 300
		var wg sync.WaitGroup
		receipts := make([]audit.Receipt, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				receipts[i], errs[i] = l.Append(ctx, Event(fmt.Sprint("agent", i%3), "tool", fmt.Sprint("c", i), verdict.Allow))
			}()
			if i == 100 {
				wg.Wait()
			}
		}
		wg.Wait()
		seen := map[int64]bool{}
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Append %d: %v", i, errs[i])
			}
			if seen[receipts[i].Index] {
				t.Fatalf("index %d returned twice", receipts[i].Index)
			}
			seen[receipts[i].Index] = true
		}
		if size, err := s.Size(ctx); err != nil || size != n {
			t.Fatalf("Size = %d, %v; want %d", size, err, n)
		}
		es, err := s.Entries(ctx, 0, n)
		if err != nil || len(es) != n {
			t.Fatalf("Entries: %d, %v", len(es), err)
		}
		for i, e := range es {
			if e.Index != int64(i) || tlog.RecordHash(e.Data) != e.Hash {
				t.Fatalf("entry %d: index %d, hash mismatch %v", i, e.Index, tlog.RecordHash(e.Data) != e.Hash)
			}
		}
		for _, r := range receipts {
			if es[r.Index].Hash != r.Hash {
				t.Fatalf("receipt %d hash differs from stored", r.Index)
			}
		}
		if lr, ok := s.(audit.LeafReader); ok {
			// ReadLeaves returns what Entries and Hashes return.
			rows, err := lr.ReadLeaves(ctx, 10, n+5)
			if err != nil || len(rows) != n-10 {
				t.Fatalf("ReadLeaves: %d rows, %v; want %d", len(rows), err, n-10)
			}
			idx := make([]int64, len(rows))
			for i, r := range rows {
				idx[i] = tlog.StoredHashIndex(0, r.Index)
			}
			leaves, err := s.Hashes(ctx, idx)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range rows {
				e := es[10+i]
				if r.Index != e.Index || string(r.Data) != string(e.Data) || r.Hash != e.Hash || !r.HasTreeLeaf || r.TreeLeaf != leaves[i] {
					t.Fatalf("ReadLeaves row %d = %+v; want entry %d with tree leaf %v", i, r, e.Index, leaves[i])
				}
			}
		}
		c1, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c1.Size != n {
			t.Fatalf("checkpoint size %d, want %d", c1.Size, n)
		}
		if _, err := audit.OpenCheckpoint(c1.Note, verifier); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int64{0, 1, 127, 128, n - 1} {
			p, err := l.InclusionProof(ctx, i, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(p, n, c1.Root, i, es[i].Hash); err != nil {
				t.Errorf("inclusion of %d: %v", i, err)
			}
			if err := tlog.CheckRecord(p, n, c1.Root, i, tlog.RecordHash([]byte("forged"))); err == nil {
				t.Errorf("inclusion of a forged leaf at %d verified", i)
			}
		}
		for i := range 50 {
			if _, err := l.Append(ctx, Event("agent9", "other", "x", verdict.Block)); err != nil {
				t.Fatalf("Append %d: %v", i, err)
			}
		}
		c2, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := l.ConsistencyProof(ctx, c1.Size, c2.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(tp, c2.Size, c2.Root, c1.Size, c1.Root); err != nil {
			t.Errorf("consistency %d→%d: %v", c1.Size, c2.Size, err)
		}
		if err := tlog.CheckTree(tp, c2.Size, c2.Root, c1.Size, tlog.RecordHash([]byte("x"))); err == nil {
			t.Errorf("consistency with a wrong old root verified")
		}
		cs, err := s.Checkpoints(ctx)
		if err != nil || len(cs) != 2 || cs[0].Size != c1.Size || cs[1].Size != c2.Size || cs[1].Root != c2.Root {
			t.Fatalf("Checkpoints = %+v, %v", cs, err)
		}
		rep, err := audit.VerifyBackend(ctx, s, s, audit.VerifyOptions{Verifier: verifier})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Verified) != 2 || rep.Entries != n+50 {
			t.Fatalf("verify: %+v", rep)
		}
		rep, err = audit.VerifyBackend(ctx, s, s, audit.VerifyOptions{Verifier: verifier, From: 100, To: 200})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Verified) != 1 || rep.Entries != 100 {
			t.Fatalf("verify range: %+v", rep)
		}
	})

	t.Run("Reopen", func(t *testing.T) {
		s := open(t)
		for round := range 3 {
			l, err := audit.Open(ctx, audit.Config{Backend: s, Signer: signer, CheckpointInterval: -1})
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			for i := range 37 {
				r, err := l.Append(ctx, Event("a", "t", "c", verdict.Allow))
				if err != nil {
					t.Fatal(err)
				}
				if want := int64(round*37 + i); r.Index != want {
					t.Fatalf("index %d, want %d", r.Index, want)
				}
			}
			if round != 1 { // round 1 leaves its tail to the final checkpoint of Close
				if _, err := l.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := audit.VerifyBackend(ctx, s, s, audit.VerifyOptions{Verifier: verifier})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Unsigned != 0 || len(rep.Verified) != 3 {
			t.Fatalf("verify after reopen: %+v", rep)
		}
	})

	t.Run("Conflict", func(t *testing.T) {
		s := open(t)
		l, err := audit.Open(ctx, audit.Config{Backend: s, Signer: signer, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ctx, Event("a", "t", "c", verdict.Allow)); err != nil {
			t.Fatal(err)
		}
		l.Close()
		err = s.Append(ctx, audit.Batch{Entries: []audit.Entry{{Index: 0, Data: []byte("{}")}}, HashStart: 0, Hashes: []tlog.Hash{{}}})
		if !errors.Is(err, audit.ErrConflict) {
			t.Fatalf("Append at a used index: %v, want ErrConflict", err)
		}
		if n, _ := s.Size(ctx); n != 1 {
			t.Fatalf("size after conflict = %d", n)
		}
	})

	t.Run("Search", func(t *testing.T) {
		s := open(t)
		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		clock := now
		l, err := audit.Open(ctx, audit.Config{Backend: s, Signer: signer, CheckpointInterval: -1, Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		outcomes := []verdict.Outcome{verdict.Allow, verdict.Challenge, verdict.Block}
		for i := range 30 {
			clock = now.Add(time.Duration(i) * time.Minute)
			if _, err := l.Append(ctx, Event(fmt.Sprint("agent", i%2), fmt.Sprint("tool", i%3), fmt.Sprint("corr", i/10), outcomes[i%3])); err != nil {
				t.Fatal(err)
			}
		}
		count := func(f audit.Filter) int {
			t.Helper()
			rs, err := l.Query(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(rs); i++ {
				if rs[i].Index <= rs[i-1].Index {
					t.Fatalf("results not in index order")
				}
			}
			return len(rs)
		}
		for _, tc := range []struct {
			name string
			f    audit.Filter
			want int
		}{
			{"all", audit.Filter{}, 30},
			{"agent", audit.Filter{Agent: "agent1"}, 15},
			{"tool", audit.Filter{Tool: "tool2"}, 10},
			{"outcome", audit.Filter{Outcome: "block"}, 10},
			{"agent+outcome", audit.Filter{Agent: "agent0", Outcome: "allow"}, 5},
			{"correlation", audit.Filter{Correlation: "corr2"}, 10},
			{"class", audit.Filter{Class: audit.ClassAPIActivity}, 30},
			{"other class", audit.Filter{Class: audit.ClassAuthentication}, 0},
			{"since", audit.Filter{Since: now.Add(20 * time.Minute)}, 10},
			{"until", audit.Filter{Until: now.Add(5 * time.Minute)}, 5},
			{"limit", audit.Filter{Limit: 7}, 7},
			{"from", audit.Filter{From: 25}, 5},
		} {
			if got := count(tc.f); got != tc.want {
				t.Errorf("%s: %d results, want %d", tc.name, got, tc.want)
			}
		}
		rs, err := l.Query(ctx, audit.Filter{Tool: "tool1", Limit: 1})
		if err != nil || len(rs) != 1 || rs[0].Event.Unmapped.Tool != "tool1" || rs[0].Index != 1 {
			t.Fatalf("Query = %+v, %v", rs, err)
		}
	})

	t.Run("Cursor", func(t *testing.T) {
		s := open(t)
		for _, v := range []int64{0, 41, 7} {
			if err := s.SetCursor(ctx, "siem", v); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Cursor(ctx, "siem"); err != nil || got != v {
				t.Fatalf("Cursor = %d, %v; want %d", got, err, v)
			}
		}
		if got, _ := s.Cursor(ctx, "other"); got != -1 {
			t.Fatalf("unknown cursor = %d", got)
		}
	})

	t.Run("CheckpointIdempotent", func(t *testing.T) {
		s := open(t)
		c := audit.Checkpoint{Size: 3, Root: tlog.RecordHash([]byte("r")), Note: []byte("n"), Time: time.Unix(1, 0)}
		for range 2 {
			if err := s.PutCheckpoint(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if cs, err := s.Checkpoints(ctx); err != nil || len(cs) != 1 {
			t.Fatalf("Checkpoints = %v, %v", cs, err)
		}
	})
}
