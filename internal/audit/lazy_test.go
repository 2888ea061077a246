package audit_test

import (
	"context"
	"crypto/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// countingBackend counts the batches committed.
type countingBackend struct {
	*audit.Memory
	batches atomic.Int32
}

func (c *countingBackend) Append(ctx context.Context, b audit.Batch) error {
	c.batches.Add(1)
	return c.Memory.Append(ctx, b)
}

func TestAppendLazySharesCommits(t *testing.T) {
	ctx := context.Background()
	skey, _, err := note.GenerateKey(rand.Reader, "gatehouse.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	b := &countingBackend{Memory: audit.NewMemory()}
	l, err := audit.Open(ctx, audit.Config{Backend: b, Checkpoints: b.Memory, Signer: signer, CheckpointInterval: -1, LazyDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ev := func() *audit.Event {
		return audit.APIActivity(audit.Subject{Agent: "a"}, audit.Call{Phase: audit.PhaseOutcome, Server: "s", Tool: "t"}, verdict.Verdict{})
	}
	base := b.batches.Load()

	// A lazy record alone waits for LazyDelay, then commits.
	start := time.Now()
	if _, err := l.AppendLazy(ctx, ev()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("a lone lazy record committed after %v, before LazyDelay", d)
	}
	if got := b.batches.Load() - base; got != 1 {
		t.Errorf("%d commits, want 1", got)
	}

	// Lazy records ride along with the next record that is waited on.
	base = b.batches.Load()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.AppendLazy(ctx, ev()); err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // the lazy records are queued
	start = time.Now()
	if _, err := l.Append(ctx, ev()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("the eager append and its riders took %v", d)
	}
	if got := b.batches.Load() - base; got != 1 {
		t.Errorf("%d commits for 3 lazy + 1 eager records, want 1", got)
	}
	if l.Size() != 5 {
		t.Errorf("size %d, want 5", l.Size())
	}
}
