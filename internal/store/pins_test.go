package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/internal/store"
)

func TestPinsContract(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			pins, err := store.NewPins(ctx, db, nil)
			if err != nil {
				t.Fatal(err)
			}
			defA, defB := json.RawMessage(`{"name":"t","description":"a"}`), json.RawMessage(`{"name":"t","description":"b"}`)
			st, err := pins.Observe(ctx, "bank", "t", "ha", defA)
			if err != nil || st.Quarantined() || st.Approved != "ha" {
				t.Fatalf("first sighting: %+v, %v", st, err)
			}
			st, err = pins.Observe(ctx, "bank", "t", "ha", defA)
			if err != nil || st.Quarantined() {
				t.Fatalf("same definition: %+v, %v", st, err)
			}
			st, err = pins.Observe(ctx, "bank", "t", "hb", defB)
			if err != nil || !st.Quarantined() || st.Approved != "ha" || st.Seen != "hb" || string(st.SeenDef) != string(defB) {
				t.Fatalf("changed definition: %+v, %v", st, err)
			}
			if _, err := pins.Approve(ctx, "bank", "t", "hx"); !errors.Is(err, store.ErrPinMismatch) {
				t.Fatalf("approving an unreviewed hash: %v", err)
			}
			if _, err := pins.Approve(ctx, "bank", "nope", ""); !errors.Is(err, store.ErrNoPin) {
				t.Fatalf("approving an unknown tool: %v", err)
			}
			st, err = pins.Approve(ctx, "bank", "t", "hb")
			if err != nil || st.Quarantined() || st.Approved != "hb" {
				t.Fatalf("approve: %+v, %v", st, err)
			}
			// Reverting to the old definition is a change again.
			st, err = pins.Observe(ctx, "bank", "t", "ha", defA)
			if err != nil || !st.Quarantined() {
				t.Fatalf("revert: %+v, %v", st, err)
			}
			// Concurrent first sightings agree on one pin.
			var wg sync.WaitGroup
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := pins.Observe(ctx, "ws", "race", "h1", defA); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			all, err := pins.List(ctx)
			if err != nil || len(all) != 2 {
				t.Fatalf("List = %d pins, %v", len(all), err)
			}
		})
	}
}
