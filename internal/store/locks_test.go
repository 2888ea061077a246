package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/lock/locktest"
	"github.com/gatehouse/gatehouse/internal/store"
)

func TestLocksContract(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			st, err := store.NewLocks(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			locktest.TestStore(t, st)
		})
	}
}

// TestLocksPropagation runs two lock Managers (replicas) on one database.
// On PostgreSQL the replicas poll only every 10 s, so the lock reaches the
// other replica within 1 s only through LISTEN/NOTIFY.
func TestLocksPropagation(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st1, err := store.NewLocks(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			st2, err := store.NewLocks(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			poll := 250 * time.Millisecond
			if db.Dialect == store.Postgres {
				poll = 10 * time.Second
			}
			locktest.Propagation(t, st1, st2, poll)
		})
	}
}
