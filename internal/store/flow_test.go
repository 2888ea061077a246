package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/pipeline/flowtest"
	"github.com/gatehouse/gatehouse/internal/store"
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
