package store_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/pipeline/flowtest"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

func TestFlowContract(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			flowtest.TestStore(t, func(now func() time.Time) pipeline.FlowStore {
				f, err := store.NewFlow(context.Background(), db, now)
				if err != nil {
					t.Fatal(err)
				}
				return f
			})
		})
	}
}

// TestFlowRaiseAgainWritesNothing checks that raising a label this Flow
// already made durable, no later than before, needs no write transaction:
// it succeeds while another connection holds SQLite's write lock, where
// raising it further must wait for the lock.
func TestFlowRaiseAgainWritesNothing(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "flow.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f, err := store.NewFlow(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	labels := []verdict.Label{verdict.SessionUntrustedContent}
	if err := f.Raise(ctx, "token:a:1", labels, until); err != nil {
		t.Fatal(err)
	}
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	defer lock.ExecContext(ctx, `ROLLBACK`)

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := f.Raise(short, "token:a:1", labels, until.Add(-time.Minute)); err != nil {
		t.Errorf("raising a durable label again: %v", err)
	}
	if err := f.Raise(short, "token:a:1", labels, until.Add(time.Minute)); err == nil {
		t.Error("raising a label further succeeded without the write lock")
	}
	ls, err := f.Labels(ctx, "token:a:1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ls, labels) {
		t.Errorf("labels = %v, want %v", ls, labels)
	}
}

// TestFlowAdopt: labels an older layout kept in the main store move into
// the labels' own file — unexpired ones only — and leave the main store.
func TestFlowAdopt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	main, err := store.Open(ctx, filepath.Join(dir, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer main.Close()
	old, err := store.NewFlow(ctx, main, clock)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Raise(ctx, "task:a", []verdict.Label{verdict.SessionUntrustedContent}, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := old.Raise(ctx, "task:b", []verdict.Label{verdict.SessionPrivateData}, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	own, err := store.Open(ctx, filepath.Join(dir, "flow.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	now = now.Add(2 * time.Minute) // task:b's label has expired
	f, err := store.NewFlow(ctx, own, clock)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Adopt(ctx, main); err != nil {
		t.Fatal(err)
	}
	if ls, err := f.Labels(ctx, "task:a"); err != nil || len(ls) != 1 || ls[0] != verdict.SessionUntrustedContent {
		t.Errorf("adopted labels of task:a: %v, %v", ls, err)
	}
	if ls, err := f.Labels(ctx, "task:b"); err != nil || len(ls) != 0 {
		t.Errorf("expired label adopted: %v, %v", ls, err)
	}
	if ls, err := old.Labels(ctx, "task:a"); err != nil || len(ls) != 0 {
		t.Errorf("labels left in the main store: %v, %v", ls, err)
	}
	// Adopting again (every start) finds nothing and changes nothing.
	if err := f.Adopt(ctx, main); err != nil {
		t.Fatal(err)
	}
	if ls, _ := f.Labels(ctx, "task:a"); len(ls) != 1 {
		t.Errorf("labels after a second adoption: %v", ls)
	}
	// A store that never had the table has nothing to adopt.
	fresh, err := store.Open(ctx, filepath.Join(dir, "fresh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := f.Adopt(ctx, fresh); err != nil {
		t.Errorf("adopting from a store without labels: %v", err)
	}
}
