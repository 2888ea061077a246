package store_test

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/internal/approval/approvaltest"
	"github.com/gatehouse/gatehouse/internal/store"
)

func TestApprovalsContract(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			st, err := store.NewApprovals(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			approvaltest.TestStore(t, st)
		})
	}
}
