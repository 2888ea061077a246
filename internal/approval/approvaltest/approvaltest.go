// Package approvaltest is the contract test suite that every
// approval.Store must pass (memory, SQLite, PostgreSQL).
package approvaltest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func call(id, hash string, created time.Time) approval.Approval {
	return approval.Approval{
		ID: id, Kind: approval.KindCall, Status: approval.Pending,
		Evidence: &approval.Evidence{Correlation: "c-" + id, Agent: "agent-1", Owner: "olivia", User: "ursula", Task: "t1",
			Server: "bank", Tool: "send_money", Arguments: json.RawMessage(`{"amount":1500,"to":"x"}`),
			ArgumentsHash: "sha256:aa", CallHash: hash, PolicyVersion: "p1", Value: "1500",
			Obligations: []verdict.Obligation{{Kind: verdict.ObligationApproval, Group: "finance", Detail: "financial"}},
			Reasons:     []verdict.Reason{{Layer: verdict.Execution, Code: "policy.challenge", Policies: []string{"payments-over-1000"}, Outcome: verdict.Challenge}},
			Labels:      []verdict.Label{verdict.Financial}, SessionLabels: []verdict.Label{verdict.SessionPrivateData}, Time: created},
		Requirements: []approval.Requirement{{Group: "finance", Risk: "financial", Quorum: 2}},
		Created:      created, Expires: created.Add(15 * time.Minute), Updated: created,
	}
}

func approve(a approval.Approval, now time.Time, maxUses int) approval.Approval {
	a.Status, a.Reason = approval.Approved, approval.CodeGranted
	a.Reviews = append(a.Reviews, approval.Review{Approver: approval.Approver{Subject: "alice", Groups: []string{"finance"}, Method: "oidc", AuthTime: now.Add(-time.Minute), ACR: "mfa", Human: true},
		Vote: approval.Approve, Comment: "ok <&>", Counted: []string{"finance"}, Time: now})
	a.Grant = &approval.Grant{Approval: a.ID, Kind: a.Kind, Agent: a.Agent(), CallHash: a.CallHash(), Start: now, Expires: now.Add(5 * time.Minute), MaxUses: maxUses}
	a.Updated = now
	return a
}

// TestStore checks st, which must be empty, against the approval.Store
// contract.
func TestStore(t *testing.T, st approval.Store) {
	t.Helper()
	ctx := context.Background()
	opts := cmp.Options{cmp.Comparer(func(x, y json.RawMessage) bool { return string(x) == string(y) })}

	t.Run("create and read", func(t *testing.T) {
		a := call("apr_1", "sha256:h1", t0)
		got, created, err := st.Create(ctx, a)
		if err != nil || !created {
			t.Fatalf("Create = %v, %v", created, err)
		}
		if got.Version != 1 {
			t.Errorf("Version = %d, want 1", got.Version)
		}
		r, err := st.Get(ctx, "apr_1")
		if err != nil {
			t.Fatal(err)
		}
		a.Version = 1
		if d := cmp.Diff(a, r, opts); d != "" {
			t.Errorf("Get differs (-want +got):\n%s", d)
		}
		if _, err := st.Get(ctx, "apr_none"); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("Get(unknown) = %v, want ErrNotFound", err)
		}
		if _, err := st.Latest(ctx, "sha256:none"); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("Latest(unknown) = %v, want ErrNotFound", err)
		}
	})

	t.Run("one open approval per call hash", func(t *testing.T) {
		dup := call("apr_2", "sha256:h1", t0.Add(time.Second))
		got, created, err := st.Create(ctx, dup)
		if err != nil || created || got.ID != "apr_1" {
			t.Fatalf("Create(duplicate) = %s, %v, %v; want apr_1, false", got.ID, created, err)
		}
		if _, err := st.Get(ctx, "apr_2"); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("the duplicate was stored: %v", err)
		}
		// Concurrent creations for one hash: exactly one wins.
		var wg sync.WaitGroup
		wins := make(chan string, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := call(fmt.Sprintf("apr_race%d", i), "sha256:race", t0.Add(time.Duration(i)*time.Second))
				if _, created, err := st.Create(ctx, a); err != nil {
					t.Errorf("Create: %v", err)
				} else if created {
					wins <- a.ID
				}
			}()
		}
		wg.Wait()
		close(wins)
		if n := len(wins); n != 1 {
			t.Errorf("%d concurrent creations won, want 1", n)
		}
	})

	t.Run("update is a compare-and-swap", func(t *testing.T) {
		cur, err := st.Get(ctx, "apr_1")
		if err != nil {
			t.Fatal(err)
		}
		next := cur
		next.Requirements = []approval.Requirement{{Group: "finance", Risk: "financial", Quorum: 2, Approvals: []string{"alice"}}}
		next.Version = cur.Version + 1
		if err := st.Update(ctx, next, cur.Version); err != nil {
			t.Fatal(err)
		}
		stale := cur
		stale.Status = approval.Denied
		stale.Version = cur.Version + 1
		if err := st.Update(ctx, stale, cur.Version); !errors.Is(err, approval.ErrConflict) {
			t.Fatalf("stale Update = %v, want ErrConflict", err)
		}
		got, err := st.Get(ctx, "apr_1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != cur.Version+1 || got.Status != approval.Pending || len(got.Requirements[0].Approvals) != 1 {
			t.Errorf("after update: version %d status %s approvals %v", got.Version, got.Status, got.Requirements[0].Approvals)
		}
		if err := st.Update(ctx, approval.Approval{ID: "apr_none", Version: 2}, 1); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("Update(unknown) = %v, want ErrNotFound", err)
		}
	})

	t.Run("use", func(t *testing.T) {
		cur, _ := st.Get(ctx, "apr_1")
		now := t0.Add(time.Minute)
		if _, err := st.Use(ctx, "apr_1", approval.Use{Correlation: "early"}, now); !errors.Is(err, approval.ErrNoGrant) {
			t.Fatalf("Use of a pending approval = %v, want ErrNoGrant", err)
		}
		next := approve(cur, now, 2)
		next.Version = cur.Version + 1
		if err := st.Update(ctx, next, cur.Version); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Use(ctx, "apr_1", approval.Use{}, now.Add(-time.Second)); !errors.Is(err, approval.ErrNoGrant) {
			t.Errorf("Use before the grant's start = %v, want ErrNoGrant", err)
		}
		a, err := st.Use(ctx, "apr_1", approval.Use{Correlation: "call-1", Value: "1500", Time: now.Add(time.Second)}, now.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if a.Status != approval.Approved || a.Grant.Uses != 1 || len(a.Uses) != 1 || a.Uses[0].Seq != 1 || a.Uses[0].Correlation != "call-1" || a.Version != next.Version+1 {
			t.Fatalf("after first use: status %s uses %d/%v version %d", a.Status, a.Grant.Uses, a.Uses, a.Version)
		}
		a, err = st.Use(ctx, "apr_1", approval.Use{Correlation: "call-2", Time: now.Add(2 * time.Second)}, now.Add(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if a.Status != approval.Used || a.Grant.Uses != 2 || a.Uses[1].Seq != 2 {
			t.Fatalf("after last use: status %s uses %d", a.Status, a.Grant.Uses)
		}
		if _, err := st.Use(ctx, "apr_1", approval.Use{}, now.Add(3*time.Second)); !errors.Is(err, approval.ErrNoGrant) {
			t.Errorf("Use of a used grant = %v, want ErrNoGrant", err)
		}
		// Unuse gives the last use back and reopens the grant.
		if err := st.Unuse(ctx, "apr_1", 2); err != nil {
			t.Fatal(err)
		}
		got, _ := st.Get(ctx, "apr_1")
		if got.Status != approval.Approved || got.Grant.Uses != 1 || len(got.Uses) != 1 || got.Version != a.Version+1 {
			t.Errorf("after Unuse: status %s uses %d/%d version %d", got.Status, got.Grant.Uses, len(got.Uses), got.Version)
		}
		// Reads return the uses with their data.
		want := approval.Use{Seq: 1, Correlation: "call-1", Value: "1500", Time: now.Add(time.Second)}
		if d := cmp.Diff(want, got.Uses[0]); d != "" {
			t.Errorf("use differs:\n%s", d)
		}
		a, err = st.Use(ctx, "apr_1", approval.Use{Correlation: "call-3", Time: now.Add(3 * time.Second)}, now.Add(3*time.Second))
		if err != nil || a.Status != approval.Used || a.Uses[1].Seq != 2 {
			t.Fatalf("use after Unuse: %v, %+v", err, a.Uses)
		}
		// A used approval no longer blocks a new one for the same call.
		if _, created, err := st.Create(ctx, call("apr_3", "sha256:h1", now.Add(time.Minute))); err != nil || !created {
			t.Errorf("Create after use = %v, %v; want created", created, err)
		}
		if l, err := st.Latest(ctx, "sha256:h1"); err != nil || l.ID != "apr_3" {
			t.Errorf("Latest = %s, %v; want apr_3", l.ID, err)
		}
		// With another open approval for the call, a use cannot be given
		// back: it stays consumed (fail closed).
		if err := st.Unuse(ctx, "apr_1", 2); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Get(ctx, "apr_1"); got.Status != approval.Used || len(got.Uses) != 2 {
			t.Errorf("Unuse reopened a grant whose call has a newer open approval: %s, %d uses", got.Status, len(got.Uses))
		}
	})

	t.Run("concurrent uses of a single-use grant", func(t *testing.T) {
		a := call("apr_single", "sha256:single", t0)
		if _, _, err := st.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
		cur, _ := st.Get(ctx, a.ID)
		next := approve(cur, t0, 1)
		next.Version = cur.Version + 1
		if err := st.Update(ctx, next, cur.Version); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, refused := 0, 0
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := st.Use(ctx, a.ID, approval.Use{Correlation: fmt.Sprint("c", i)}, t0.Add(time.Second))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, approval.ErrNoGrant):
					refused++
				default:
					t.Errorf("Use: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || refused != 15 {
			t.Errorf("%d uses succeeded and %d were refused, want 1 and 15", wins, refused)
		}
		got, _ := st.Get(ctx, a.ID)
		if got.Status != approval.Used || len(got.Uses) != 1 {
			t.Errorf("status %s with %d uses, want used with 1", got.Status, len(got.Uses))
		}
	})

	t.Run("expired grant", func(t *testing.T) {
		a := call("apr_exp", "sha256:exp", t0)
		if _, _, err := st.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
		cur, _ := st.Get(ctx, a.ID)
		next := approve(cur, t0, 1)
		next.Version = cur.Version + 1
		if err := st.Update(ctx, next, cur.Version); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Use(ctx, a.ID, approval.Use{}, next.Grant.Expires); !errors.Is(err, approval.ErrNoGrant) {
			t.Errorf("Use at the grant's end = %v, want ErrNoGrant", err)
		}
	})

	t.Run("list and due", func(t *testing.T) {
		all, err := st.List(ctx, approval.Query{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(all); i++ {
			if all[i].Created.After(all[i-1].Created) {
				t.Errorf("List is not newest first: %s after %s", all[i].ID, all[i-1].ID)
			}
		}
		pending, err := st.List(ctx, approval.Query{Status: approval.Pending, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range pending {
			if a.Status != approval.Pending {
				t.Errorf("List(pending) returned %s %s", a.ID, a.Status)
			}
		}
		if len(pending) == 0 {
			t.Error("List(pending) is empty")
		}
		open, _ := st.List(ctx, approval.Query{Open: true, Agent: "agent-1", Limit: 1000})
		for _, a := range open {
			if !a.Status.Open() {
				t.Errorf("List(open) returned %s %s", a.ID, a.Status)
			}
		}
		if l, _ := st.List(ctx, approval.Query{Limit: 2}); len(l) != 2 {
			t.Errorf("List(limit 2) = %d", len(l))
		}
		if l, _ := st.List(ctx, approval.Query{Agent: "nobody"}); len(l) != 0 {
			t.Errorf("List(other agent) = %d", len(l))
		}
		// Count counts what List lists, whatever the limit.
		for _, q := range []approval.Query{{}, {Status: approval.Pending}, {Open: true, Agent: "agent-1"}, {Kind: approval.KindCall, Limit: 1}, {Agent: "nobody"}} {
			n, err := st.Count(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			lq := q
			lq.Limit = 1000
			l, _ := st.List(ctx, lq)
			if n != len(l) {
				t.Errorf("Count(%+v) = %d, List lists %d", q, n, len(l))
			}
		}
		if n, _ := st.Count(ctx, approval.Query{Status: approval.Pending}); n == 0 {
			t.Error("Count(pending) is 0")
		}
		due, err := st.Due(ctx, t0.Add(time.Hour), 1000)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, a := range due {
			ids[a.ID] = true
		}
		race := false
		for id := range ids {
			race = race || strings.HasPrefix(id, "apr_race")
		}
		if !ids["apr_exp"] || !race {
			t.Errorf("Due misses the lapsed grant or the expired requests: %v", ids)
		}
		if ids["apr_single"] {
			t.Error("Due returned a used approval")
		}
		if d, _ := st.Due(ctx, t0.Add(-time.Hour), 1000); len(d) != 0 {
			t.Errorf("Due before anything expires = %d", len(d))
		}
	})

	t.Run("deliveries and review items", func(t *testing.T) {
		d1 := approval.Delivery{ID: "dlv_1.1", Approval: "apr_1", Notifier: "hook", Event: approval.EventRequested, Attempt: 1, Time: t0, Status: 500, Error: "boom"}
		d2 := d1
		d2.ID, d2.Attempt, d2.OK, d2.Status, d2.Error, d2.Time = "dlv_1.2", 2, true, 200, "", t0.Add(time.Second)
		for _, d := range []approval.Delivery{d1, d2} {
			if err := st.AddDelivery(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.Deliveries(ctx, "apr_1")
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]approval.Delivery{d1, d2}, got); d != "" {
			t.Errorf("Deliveries differ:\n%s", d)
		}
		it := approval.ReviewItem{ID: "rvw_1", Approval: "apr_1", Status: approval.ItemOpen, Reason: "break_glass", By: "bob", Justification: "prod down", Created: t0}
		if err := st.PutReviewItem(ctx, it); err != nil {
			t.Fatal(err)
		}
		it2 := approval.ReviewItem{ID: "rvw_2", Approval: "apr_3", Status: approval.ItemOpen, Reason: "break_glass", By: "bob", Created: t0.Add(time.Second)}
		if err := st.PutReviewItem(ctx, it2); err != nil {
			t.Fatal(err)
		}
		closed := it
		closed.Status, closed.Closed, closed.Comment = approval.ItemClosed, t0.Add(time.Hour), "fine"
		closed.ClosedBy = &approval.Approver{Subject: "carol", Method: "admin-token", Human: true}
		if err := st.PutReviewItem(ctx, closed); err != nil {
			t.Fatal(err)
		}
		g, err := st.ReviewItem(ctx, "rvw_1")
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(closed, g); d != "" {
			t.Errorf("ReviewItem differs:\n%s", d)
		}
		open, _ := st.ReviewItems(ctx, approval.ItemOpen)
		if len(open) != 1 || open[0].ID != "rvw_2" {
			t.Errorf("open items = %v", open)
		}
		all, _ := st.ReviewItems(ctx, "")
		if len(all) != 2 || all[0].ID != "rvw_1" {
			t.Errorf("all items = %v", all)
		}
		if _, err := st.ReviewItem(ctx, "rvw_none"); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("ReviewItem(unknown) = %v", err)
		}
	})
}
