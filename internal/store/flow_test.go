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
