package approval_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/store"
)

// TestBundleOverSQLite runs the whole flow on the SQLite store with the
// real clock: what is stored, read back and bundled must match what was
// recorded, to the nanosecond.
func TestBundleOverSQLite(t *testing.T) {
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	st, err := store.NewApprovals(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *approval.Config) {
		c.Store = st
		c.Now = time.Now
		c.Rules["financial"] = approval.Rule{MaxUses: 2}
	})
	a, err := f.m.Request(ctx, evidence(sendArgs))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve, Comment: "<ok> & fine"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Correlation: "call-2", Value: "1500"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Revoke(ctx, a.ID, "secops", "enough"); err != nil {
		t.Fatal(err)
	}
	f.waitDeliveries(t, a.ID, 3)
	b, err := f.m.Bundle(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := b.Encode()
	rep, err := approval.VerifyBundle(data, f.verifier)
	if err != nil || !rep.OK() || rep.Status != approval.Revoked {
		t.Fatalf("bundle over SQLite: %+v, %v", rep, err)
	}
}
