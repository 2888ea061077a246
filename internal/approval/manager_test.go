package approval_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

var ctx = context.Background()

// waitAsync starts Wait on id and returns its result channel.
func waitAsync(f *fixture, id string) <-chan approval.Approval {
	out := make(chan approval.Approval, 1)
	go func() {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		a, _ := f.m.Wait(c, id)
		out <- a
	}()
	return out
}

func TestRequestWaitApproveConsume(t *testing.T) {
	f := newFixture(t, nil)
	ev := evidence(sendArgs)
	a, err := f.m.Request(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != approval.Pending || a.Kind != approval.KindCall || !strings.HasPrefix(a.ID, "apr_") {
		t.Fatalf("new approval: %+v", a)
	}
	wantHash, _ := approval.CallHash("bank", "send_money", []byte(sendArgs), "payments-agent", "ursula", "task-7", "pv1")
	if a.Evidence.CallHash != wantHash {
		t.Errorf("call hash %s, want %s", a.Evidence.CallHash, wantHash)
	}
	if string(a.Evidence.Arguments) != `{"amount":1500,"memo":"invoice <42> & co","to":"DE89 3704 0044 0532 0130 00"}` {
		t.Errorf("evidence arguments not canonical: %s", a.Evidence.Arguments)
	}
	if v := a.Verdict(); v.Outcome != verdict.Challenge || v.First().Code != approval.CodePending || !strings.Contains(v.First().Message, a.ID) {
		t.Errorf("pending verdict %+v", v)
	}
	if got := f.m.StatusURL(a.ID); got != "https://gw.example/approvals/"+a.ID {
		t.Errorf("status URL %s", got)
	}
	// The identical call asked again (the agent's retry) finds the same
	// approval, even with other whitespace and key order.
	again, err := f.m.Request(ctx, evidence(`{"memo":"invoice <42> & co","amount":1.5e3,"to":"DE89 3704 0044 0532 0130 00"}`))
	if err != nil || again.ID != a.ID {
		t.Fatalf("retry of the identical call: %s, %v; want %s", again.ID, err, a.ID)
	}
	// Nothing is granted while pending.
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Correlation: "call-2", Value: "1500"}); !errors.Is(err, approval.ErrApprovalPending) {
		t.Errorf("Consume while pending = %v", err)
	}
	f.hook.waitFor(t, approval.EventRequested)

	done := waitAsync(f, a.ID)
	select {
	case got := <-done:
		t.Fatalf("Wait returned %s before a decision", got.Status)
	case <-time.After(50 * time.Millisecond):
	}
	dec, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve, Comment: "invoice checked"})
	if err != nil {
		t.Fatal(err)
	}
	if dec.Status != approval.Approved || dec.Grant == nil || dec.Grant.MaxUses != 1 || !dec.Grant.Expires.Equal(f.clock.Now().Add(5*time.Minute)) {
		t.Fatalf("after approval: %s %+v", dec.Status, dec.Grant)
	}
	select {
	case got := <-done:
		if got.Status != approval.Approved {
			t.Fatalf("Wait returned %s", got.Status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the approval")
	}
	// While approved, Request returns the approved approval.
	if again, err := f.m.Request(ctx, ev); err != nil || again.ID != a.ID || again.Status != approval.Approved {
		t.Errorf("Request while approved = %s %s, %v", again.ID, again.Status, err)
	}
	// The changed call is not approved: another hash.
	changed := evidence(`{"to": "DE89 3704 0044 0532 0130 00", "amount": 15000, "memo": "invoice <42> & co"}`)
	h2, _ := approval.CallHash(changed.Server, changed.Tool, changed.Arguments, changed.Agent, changed.User, changed.Task, changed.PolicyVersion)
	if _, err := f.m.Consume(ctx, h2, approval.Use{Correlation: "call-x", Value: "15000"}); !errors.Is(err, approval.ErrNoGrant) {
		t.Errorf("Consume of changed arguments = %v, want ErrNoGrant", err)
	}
	g, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Correlation: "call-2", Value: "1500"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Uses != 1 || g.Approval != a.ID {
		t.Errorf("grant after use: %+v", g)
	}
	// Single use: the replay is refused.
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Correlation: "call-3", Value: "1500"}); !errors.Is(err, approval.ErrGrantUsed) {
		t.Errorf("reuse of a single-use grant = %v, want ErrGrantUsed", err)
	}
	if v := approval.Refusal(approval.ErrGrantUsed); v.Outcome != verdict.Block || v.First().Code != approval.CodeUsed {
		t.Errorf("Refusal(ErrGrantUsed) = %+v", v)
	}
	got, _ := f.m.Get(ctx, a.ID)
	if got.Status != approval.Used || len(got.Uses) != 1 || got.Uses[0].Correlation != "call-2" {
		t.Errorf("after use: %s %+v", got.Status, got.Uses)
	}
	if diff := slices.Compare(f.changes(t, a.ID), []string{"created", "approved", "used"}); diff != 0 {
		t.Errorf("audit changes %v", f.changes(t, a.ID))
	}
	// A new request for the same call is a new approval.
	next, err := f.m.Request(ctx, ev)
	if err != nil || next.ID == a.ID || next.Status != approval.Pending {
		t.Errorf("request after use = %s %s, %v", next.ID, next.Status, err)
	}
}

func TestDeny(t *testing.T) {
	f := newFixture(t, nil)
	a, err := f.m.Request(ctx, evidence(sendArgs))
	if err != nil {
		t.Fatal(err)
	}
	done := waitAsync(f, a.ID)
	// The owner may not approve but may deny.
	d, err := f.m.Decide(ctx, a.ID, human("olivia", "finance-approvers"), approval.Decision{Vote: approval.Deny, Comment: "not this vendor"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != approval.Denied {
		t.Fatalf("status %s", d.Status)
	}
	if got := <-done; got.Status != approval.Denied {
		t.Fatalf("Wait returned %s", got.Status)
	}
	v := d.Verdict()
	if v.Outcome != verdict.Block || v.First().Code != approval.CodeDenied || strings.Contains(v.First().Message, "vendor") {
		t.Errorf("denied verdict %+v (must name the code, not the internal comment)", v)
	}
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Value: "1500"}); !errors.Is(err, approval.ErrDenied) {
		t.Errorf("Consume after denial = %v", err)
	}
	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); !errors.Is(err, approval.ErrNotPending) {
		t.Errorf("approval after denial = %v", err)
	}
	f.hook.waitFor(t, approval.EventDenied)
}

func TestExpiry(t *testing.T) {
	f := newFixture(t, nil)
	a, err := f.m.Request(ctx, evidence(sendArgs))
	if err != nil {
		t.Fatal(err)
	}
	done := waitAsync(f, a.ID)
	f.clock.Advance(15*time.Minute + time.Second)
	got := <-done
	if got.Status != approval.Expired || got.Verdict().First().Code != approval.CodeExpired {
		t.Fatalf("Wait after the deadline: %s", got.Status)
	}
	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); !errors.Is(err, approval.ErrNotPending) {
		t.Errorf("approving an expired request = %v", err)
	}
	// Sweep expires requests nobody waits for.
	b, _ := f.m.Request(ctx, evidence(`{"amount":2000}`))
	f.clock.Advance(time.Hour)
	if n, err := f.m.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want 1", n, err)
	}
	if b, _ = f.m.Get(ctx, b.ID); b.Status != approval.Expired {
		t.Errorf("swept request is %s", b.Status)
	}

	// An approved grant that is not used in time lapses.
	c, _ := f.m.Request(ctx, evidence(`{"amount":3000}`))
	if _, err := f.m.Decide(ctx, c.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(5*time.Minute + time.Second)
	if _, err := f.m.Consume(ctx, c.Evidence.CallHash, approval.Use{Value: "3000"}); !errors.Is(err, approval.ErrGrantExpired) {
		t.Errorf("Consume of an expired grant = %v, want ErrGrantExpired", err)
	}
	if c, _ = f.m.Get(ctx, c.ID); c.Status != approval.Lapsed {
		t.Errorf("expired grant is %s, want lapsed", c.Status)
	}
	if !slices.Contains(f.changes(t, c.ID), "lapsed") {
		t.Errorf("no lapsed record: %v", f.changes(t, c.ID))
	}
}

func TestQuorumAndSeparationOfDuties(t *testing.T) {
	f := newFixture(t, nil)
	ev := evidence(`{"user":"mallory","role":"admin"}`)
	ev.Tool = "grant_role"
	ev.Obligations = []verdict.Obligation{{Kind: verdict.ObligationApproval, Group: "identity-admins", Detail: "privilege"}}
	a, err := f.m.Request(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if a.Requirements[0].Quorum != 2 {
		t.Fatalf("quorum %d, want 2", a.Requirements[0].Quorum)
	}
	fresh := func(name string, groups ...string) approval.Approver {
		return approval.Approver{Subject: name, Groups: groups, Method: approval.MethodOIDC, Issuer: "https://idp", AuthTime: f.clock.Now().Add(-time.Minute), ACR: "mfa", Human: true}
	}
	robot := fresh("ci-bot", "identity-admins")
	robot.Human = false
	agentItself := fresh("payments-agent", "identity-admins")
	stale := fresh("erin", "identity-admins")
	stale.AuthTime = f.clock.Now().Add(-time.Hour)
	weak := fresh("frank", "identity-admins")
	weak.ACR = "pwd"
	for _, tc := range []struct {
		name string
		who  approval.Approver
		want error
	}{
		{"owner", fresh("olivia", "identity-admins"), approval.ErrSeparation},
		{"on-behalf-of user", fresh("ursula", "identity-admins"), approval.ErrSeparation},
		{"non-human", robot, approval.ErrNotHuman},
		{"the agent", agentItself, approval.ErrSeparation},
		{"not in group", fresh("gina", "finance-approvers"), approval.ErrNotEligible},
		{"admin token", human("hank", "identity-admins"), approval.ErrAuthTooWeak},
		{"stale login", stale, approval.ErrAuthTooWeak},
		{"weak acr", weak, approval.ErrAuthTooWeak},
		{"unnamed", fresh("", "identity-admins"), approval.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.m.Decide(ctx, a.ID, tc.who, approval.Decision{Vote: approval.Approve})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decide = %v, want %v", err, tc.want)
			}
			if got.Status != approval.Pending || len(got.Reviews) != 0 {
				t.Errorf("a refused decision changed the approval: %s, %d reviews", got.Status, len(got.Reviews))
			}
		})
	}
	refused := 0
	for _, r := range f.records(t, a.ID) {
		if r["change"] == "refused" {
			refused++
		}
	}
	if refused != 9 {
		t.Errorf("%d refused decisions recorded, want 9", refused)
	}
	one, err := f.m.Decide(ctx, a.ID, fresh("alice", "identity-admins"), approval.Decision{Vote: approval.Approve})
	if err != nil {
		t.Fatal(err)
	}
	if one.Status != approval.Pending || one.Requirements[0].Approvals[0] != "alice" {
		t.Fatalf("after one of two: %s %v", one.Status, one.Requirements)
	}
	if _, err := f.m.Decide(ctx, a.ID, fresh("alice", "identity-admins"), approval.Decision{Vote: approval.Approve}); !errors.Is(err, approval.ErrAlreadyReviewed) {
		t.Errorf("second approval by alice = %v", err)
	}
	two, err := f.m.Decide(ctx, a.ID, fresh("bob", "identity-admins"), approval.Decision{Vote: approval.Approve})
	if err != nil {
		t.Fatal(err)
	}
	if two.Status != approval.Approved || len(two.Reviews) != 2 {
		t.Fatalf("after two of two: %s", two.Status)
	}
	for _, r := range two.Reviews {
		if r.Approver.Method != approval.MethodOIDC || r.Approver.ACR != "mfa" || r.Approver.AuthTime.IsZero() {
			t.Errorf("review does not record how the approver authenticated: %+v", r.Approver)
		}
	}
}

func TestOwnerMayApproveWhenConfigured(t *testing.T) {
	f := newFixture(t, func(c *approval.Config) {
		c.Rules["financial"] = approval.Rule{OwnerMayApprove: true}
	})
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	if got, err := f.m.Decide(ctx, a.ID, human("olivia", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil || got.Status != approval.Approved {
		t.Errorf("owner approval with OwnerMayApprove = %s, %v", got.Status, err)
	}
}

func TestDenyVetoesPartialQuorum(t *testing.T) {
	f := newFixture(t, func(c *approval.Config) {
		c.Rules["financial"] = approval.Rule{Quorum: 2}
	})
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
		t.Fatal(err)
	}
	got, err := f.m.Decide(ctx, a.ID, human("bob", "finance-approvers"), approval.Decision{Vote: approval.Deny})
	if err != nil || got.Status != approval.Denied {
		t.Errorf("deny after one approval = %s, %v", got.Status, err)
	}
	// Somebody outside the groups cannot veto.
	b, _ := f.m.Request(ctx, evidence(`{"amount":5}`))
	if _, err := f.m.Decide(ctx, b.ID, human("zed", "marketing"), approval.Decision{Vote: approval.Deny}); !errors.Is(err, approval.ErrNotEligible) {
		t.Errorf("deny by an outsider = %v", err)
	}
}

func TestApproverCannotWiden(t *testing.T) {
	f := newFixture(t, nil)
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	alice := human("alice", "finance-approvers")
	for _, d := range []approval.Decision{
		{Vote: approval.Approve, TTL: time.Hour},
		{Vote: approval.Approve, MaxUses: 5},
	} {
		if _, err := f.m.Decide(ctx, a.ID, alice, d); !errors.Is(err, approval.ErrWiden) {
			t.Errorf("Decide(%+v) = %v, want ErrWiden", d, err)
		}
	}
	got, err := f.m.Decide(ctx, a.ID, alice, approval.Decision{Vote: approval.Approve, TTL: time.Minute, ValueCeiling: "1000"})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Grant.Expires.Equal(f.clock.Now().Add(time.Minute)) || got.Grant.ValueCeiling != "1000" {
		t.Errorf("narrowed grant %+v", got.Grant)
	}
	// The call's value exceeds the ceiling the approver set.
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Value: "1500"}); !errors.Is(err, approval.ErrValueCeiling) {
		t.Errorf("Consume above the ceiling = %v", err)
	}
}

func TestConcurrentConsume(t *testing.T) {
	f := newFixture(t, nil)
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, used int
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Correlation: fmt.Sprint("c", i), Value: "1500"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, approval.ErrGrantUsed):
				used++
			default:
				t.Errorf("Consume: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || used != 31 {
		t.Errorf("%d calls got the single-use grant and %d were refused, want 1 and 31", ok, used)
	}
}

func TestBreakGlass(t *testing.T) {
	f := newFixture(t, nil)
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	ursula := human("ursula", "oncall") // the on-behalf-of user, self-approving
	if _, err := f.m.Decide(ctx, a.ID, ursula, approval.Decision{Vote: approval.Approve, BreakGlass: true, Justification: "urgent"}); !errors.Is(err, approval.ErrBreakGlass) {
		t.Errorf("break-glass with a short justification = %v", err)
	}
	if _, err := f.m.Decide(ctx, a.ID, human("victor", "finance-approvers"), approval.Decision{Vote: approval.Approve, BreakGlass: true, Justification: strings.Repeat("x", 30)}); !errors.Is(err, approval.ErrBreakGlass) {
		t.Errorf("break-glass outside the group = %v", err)
	}
	bot := ursula
	bot.Human = false
	if _, err := f.m.Decide(ctx, a.ID, bot, approval.Decision{Vote: approval.Approve, BreakGlass: true, Justification: strings.Repeat("x", 30)}); !errors.Is(err, approval.ErrNotHuman) {
		t.Errorf("non-human break-glass = %v", err)
	}
	if items, _ := f.m.ReviewItems(ctx, ""); len(items) != 0 {
		t.Fatalf("refused break-glass opened review items: %v", items)
	}
	just := "payroll run blocked, finance approvers unreachable"
	got, err := f.m.Decide(ctx, a.ID, ursula, approval.Decision{Vote: approval.Approve, BreakGlass: true, Justification: just})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != approval.Approved || !got.BreakGlass || got.Grant.MaxUses != 1 || !got.Grant.BreakGlass ||
		got.Grant.Expires.After(f.clock.Now().Add(10*time.Minute)) || got.ReviewItem == "" {
		t.Fatalf("break-glass approval: %+v grant %+v", got, got.Grant)
	}
	// The alert goes out at once.
	r := f.hook.waitFor(t, approval.EventBreakGlass)
	if !strings.Contains(string(r.body), just) {
		t.Errorf("alert does not carry the justification: %s", r.body)
	}
	items, _ := f.m.ReviewItems(ctx, approval.ItemOpen)
	if len(items) != 1 || items[0].Approval != a.ID || items[0].By != "ursula" || items[0].Justification != just {
		t.Fatalf("review items %+v", items)
	}
	if _, err := f.m.CloseReviewItem(ctx, items[0].ID, ursula, "it was fine"); !errors.Is(err, approval.ErrSeparation) {
		t.Errorf("closing one's own break-glass review = %v", err)
	}
	closed, err := f.m.CloseReviewItem(ctx, items[0].ID, human("dora", "security"), "confirmed with finance")
	if err != nil || closed.Status != approval.ItemClosed || closed.ClosedBy.Subject != "dora" {
		t.Errorf("closing the review item = %+v, %v", closed, err)
	}
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Value: "1500"}); err != nil {
		t.Errorf("Consume of the break-glass grant: %v", err)
	}
}

func TestBreakGlassDisabled(t *testing.T) {
	f := newFixture(t, func(c *approval.Config) { c.BreakGlass = approval.BreakGlass{} })
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	if _, err := f.m.Decide(ctx, a.ID, human("ursula", "oncall"), approval.Decision{Vote: approval.Approve, BreakGlass: true, Justification: strings.Repeat("x", 40)}); !errors.Is(err, approval.ErrBreakGlass) {
		t.Errorf("break-glass without configuration = %v", err)
	}
}

func TestCancelHeldAndRevoke(t *testing.T) {
	f := newFixture(t, nil)
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	other := evidence(`{"amount":1}`)
	other.Agent = "other-agent"
	b, _ := f.m.Request(ctx, other)
	done := waitAsync(f, a.ID)
	n, err := f.m.CancelHeld(ctx, "agent", "payments-agent", "alice", "incident 7")
	if err != nil || n != 1 {
		t.Fatalf("CancelHeld = %d, %v", n, err)
	}
	select {
	case got := <-done:
		if got.Status != approval.Cancelled || got.Verdict().First().Code != approval.CodeCancelled {
			t.Errorf("held call got %s", got.Status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held call was not released")
	}
	if b, _ = f.m.Get(ctx, b.ID); b.Status != approval.Pending {
		t.Errorf("another agent's request was cancelled: %s", b.Status)
	}
	if n, err := f.m.CancelHeld(ctx, "tool", "bank/send_money", "alice", "tool locked"); err != nil || n != 1 {
		t.Errorf("CancelHeld(tool) = %d, %v", n, err)
	}
	if _, err := f.m.CancelHeld(ctx, "planet", "x", "a", "r"); !errors.Is(err, approval.ErrInvalid) {
		t.Errorf("unknown scope = %v", err)
	}

	// Revoke ends a grant.
	c, _ := f.m.Request(ctx, evidence(`{"amount":2}`))
	if _, err := f.m.Decide(ctx, c.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
		t.Fatal(err)
	}
	if r, err := f.m.Revoke(ctx, c.ID, "secops", "suspicious"); err != nil || r.Status != approval.Revoked || r.Grant.RevokedBy != "secops" {
		t.Fatalf("Revoke = %+v, %v", r, err)
	}
	if _, err := f.m.Consume(ctx, c.Evidence.CallHash, approval.Use{Value: "2"}); !errors.Is(err, approval.ErrGrantRevoked) {
		t.Errorf("Consume after revoke = %v", err)
	}
}

func TestRevokeAgent(t *testing.T) {
	f := newFixture(t, nil)
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	b, _ := f.m.Request(ctx, evidence(`{"amount":2}`))
	if _, err := f.m.Decide(ctx, b.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
		t.Fatal(err)
	}
	el, err := f.m.Elevate(ctx, approval.Elevation{Agent: "payments-agent", Server: "warehouse", Tools: []string{"export"}, Risk: "export", TTL: time.Hour, Justification: "quarterly audit"},
		human("dana", "data-protection"))
	if err != nil || el.Status != approval.Approved {
		t.Fatalf("Elevate = %s, %v", el.Status, err)
	}
	n, err := f.m.RevokeAgent(ctx, "payments-agent", "registry")
	if err != nil || n != 3 {
		t.Fatalf("RevokeAgent = %d, %v; want 3", n, err)
	}
	for id, want := range map[string]approval.Status{a.ID: approval.Cancelled, b.ID: approval.Revoked, el.ID: approval.Revoked} {
		if got, _ := f.m.Get(ctx, id); got.Status != want {
			t.Errorf("%s is %s, want %s", id, got.Status, want)
		}
	}
	if _, err := f.m.MatchElevation(ctx, approval.Call{Agent: "payments-agent", Server: "warehouse", Tool: "export"}, approval.Use{}); !errors.Is(err, approval.ErrNoGrant) {
		t.Errorf("MatchElevation after retirement = %v", err)
	}
}

func TestElevation(t *testing.T) {
	f := newFixture(t, nil)
	el := approval.Elevation{Agent: "analyst-agent", Server: "warehouse", Tools: []string{"export_dataset"}, Risk: "export", TTL: 30 * time.Minute, MaxUses: 2,
		Constraints: []approval.Constraint{
			{Argument: "dataset", Equals: []byte(`"sales_2025"`)},
			{Argument: "rows", Max: "10000"},
			{Argument: "dest", Prefix: "s3://exports/"},
		},
		Justification: "board pack"}
	dana := human("dana", "data-protection")
	for _, tc := range []struct {
		name string
		edit func(*approval.Elevation)
		who  approval.Approver
		want error
	}{
		{"owner", nil, human("olivia", "data-protection"), approval.ErrSeparation},
		{"outsider", nil, human("zed", "marketing"), approval.ErrNotEligible},
		{"too long", func(e *approval.Elevation) { e.TTL = 3 * time.Hour }, dana, approval.ErrWiden},
		{"pattern", func(e *approval.Elevation) { e.Tools = []string{"export_*"} }, dana, approval.ErrInvalid},
		{"no justification", func(e *approval.Elevation) { e.Justification = "" }, dana, approval.ErrInvalid},
		{"bad constraint", func(e *approval.Elevation) { e.Constraints = []approval.Constraint{{Argument: "x"}} }, dana, approval.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := el
			if tc.edit != nil {
				tc.edit(&e)
			}
			if _, err := f.m.Elevate(ctx, e, tc.who); !errors.Is(err, tc.want) {
				t.Errorf("Elevate = %v, want %v", err, tc.want)
			}
		})
	}
	a, err := f.m.Elevate(ctx, el, dana)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != approval.Approved || a.Kind != approval.KindElevation || a.Elevation.Owner != "olivia" || !a.Grant.Expires.Equal(f.clock.Now().Add(30*time.Minute)) {
		t.Fatalf("elevation %+v %+v", a, a.Grant)
	}
	call := func(tool, args string) approval.Call {
		return approval.Call{Agent: "analyst-agent", User: "ursula", Server: "warehouse", Tool: tool, Arguments: []byte(args)}
	}
	for _, tc := range []struct {
		name string
		c    approval.Call
	}{
		{"other dataset", call("export_dataset", `{"dataset":"hr_salaries","rows":10,"dest":"s3://exports/a"}`)},
		{"too many rows", call("export_dataset", `{"dataset":"sales_2025","rows":10001,"dest":"s3://exports/a"}`)},
		{"other destination", call("export_dataset", `{"dataset":"sales_2025","rows":10,"dest":"s3://public/a"}`)},
		{"traversal", call("export_dataset", `{"dataset":"sales_2025","rows":10,"dest":"s3://exports/../public"}`)},
		{"missing argument", call("export_dataset", `{"dataset":"sales_2025","dest":"s3://exports/a"}`)},
		{"other tool", call("drop_dataset", `{"dataset":"sales_2025","rows":10,"dest":"s3://exports/a"}`)},
		{"other agent", approval.Call{Agent: "x", Server: "warehouse", Tool: "export_dataset", Arguments: []byte(`{"dataset":"sales_2025","rows":10,"dest":"s3://exports/a"}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.m.MatchElevation(ctx, tc.c, approval.Use{}); !errors.Is(err, approval.ErrNoGrant) {
				t.Errorf("MatchElevation = %v, want ErrNoGrant", err)
			}
		})
	}
	ok := call("export_dataset", `{"dest":"s3://exports/q1.csv","rows":"9000","dataset":"sales_2025"}`)
	for i := 1; i <= 2; i++ {
		g, err := f.m.MatchElevation(ctx, ok, approval.Use{Correlation: fmt.Sprint("ex", i)})
		if err != nil || g.Uses != i {
			t.Fatalf("use %d of the elevation: %+v, %v", i, g, err)
		}
	}
	if _, err := f.m.MatchElevation(ctx, ok, approval.Use{}); !errors.Is(err, approval.ErrNoGrant) {
		t.Errorf("third use of a two-use elevation = %v", err)
	}
	got, _ := f.m.Get(ctx, a.ID)
	if got.Status != approval.Used || got.Uses[0].Tool != "export_dataset" || got.Uses[0].ArgumentsHash == "" {
		t.Errorf("after uses: %s %+v", got.Status, got.Uses)
	}

	// An elevation ends by itself.
	el.MaxUses = 0
	b, err := f.m.Elevate(ctx, el, dana)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.MatchElevation(ctx, ok, approval.Use{}); err != nil {
		t.Fatalf("unlimited elevation: %v", err)
	}
	f.clock.Advance(31 * time.Minute)
	if _, err := f.m.MatchElevation(ctx, ok, approval.Use{}); !errors.Is(err, approval.ErrNoGrant) {
		t.Errorf("MatchElevation after the window = %v", err)
	}
	if _, err := f.m.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ = f.m.Get(ctx, b.ID); b.Status != approval.Lapsed {
		t.Errorf("elevation after its window is %s", b.Status)
	}
}

func TestElevationQuorum(t *testing.T) {
	f := newFixture(t, func(c *approval.Config) {
		c.Rules["export"] = approval.Rule{Approvers: []string{"data-protection"}, Quorum: 2}
	})
	a, err := f.m.Elevate(ctx, approval.Elevation{Agent: "analyst-agent", Server: "warehouse", Tools: []string{"export_dataset"}, Risk: "export", TTL: time.Hour, Justification: "audit"},
		human("dana", "data-protection"))
	if err != nil || a.Status != approval.Pending {
		t.Fatalf("Elevate with quorum 2 = %s, %v", a.Status, err)
	}
	f.hook.waitFor(t, approval.EventElevated)
	if _, err := f.m.MatchElevation(ctx, approval.Call{Agent: "analyst-agent", Server: "warehouse", Tool: "export_dataset"}, approval.Use{}); !errors.Is(err, approval.ErrNoGrant) {
		t.Errorf("pending elevation matched: %v", err)
	}
	got, err := f.m.Decide(ctx, a.ID, human("ed", "data-protection"), approval.Decision{Vote: approval.Approve})
	if err != nil || got.Status != approval.Approved {
		t.Fatalf("second approval = %s, %v", got.Status, err)
	}
	if _, err := f.m.MatchElevation(ctx, approval.Call{Agent: "analyst-agent", Server: "warehouse", Tool: "export_dataset"}, approval.Use{}); err != nil {
		t.Errorf("approved elevation: %v", err)
	}
}

func TestAuditFailureFailsClosed(t *testing.T) {
	f := newFixture(t, nil)
	f.failAudit.Store(true)
	if _, err := f.m.Request(ctx, evidence(sendArgs)); !errors.Is(err, approval.ErrAudit) {
		t.Fatalf("Request without audit = %v", err)
	}
	if l, _ := f.m.List(ctx, approval.Query{}); len(l) != 0 {
		t.Fatalf("an unrecorded request was stored: %d", len(l))
	}
	f.failAudit.Store(false)
	a, err := f.m.Request(ctx, evidence(sendArgs))
	if err != nil {
		t.Fatal(err)
	}
	f.failAudit.Store(true)
	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); !errors.Is(err, approval.ErrAudit) {
		t.Fatalf("Decide without audit = %v", err)
	}
	if got, _ := f.m.Get(ctx, a.ID); got.Status != approval.Pending {
		t.Fatalf("an unrecorded decision was applied: %s", got.Status)
	}
	f.failAudit.Store(false)
	if _, err := f.m.Decide(ctx, a.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
		t.Fatal(err)
	}
	f.failAudit.Store(true)
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Value: "1500"}); !errors.Is(err, approval.ErrAudit) {
		t.Fatalf("Consume without audit = %v", err)
	}
	if v := approval.Refusal(fmt.Errorf("x: %w", approval.ErrAudit)); v.Outcome != verdict.Block {
		t.Errorf("Refusal(ErrAudit) = %v", v)
	}
	f.failAudit.Store(false)
	// The unrecorded use was given back.
	if g, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Value: "1500"}); err != nil || g.Uses != 1 {
		t.Errorf("Consume after the audit log recovered = %+v, %v", g, err)
	}
}

func TestRequestValidation(t *testing.T) {
	f := newFixture(t, nil)
	for name, ev := range map[string]approval.Evidence{
		"duplicate keys": evidence(`{"amount":1,"amount":1000000}`),
		"not json":       evidence(`{"amount":`),
		"no tool":        func() approval.Evidence { e := evidence(sendArgs); e.Tool = ""; return e }(),
		"bad value":      func() approval.Evidence { e := evidence(sendArgs); e.Value = "lots"; return e }(),
	} {
		if _, err := f.m.Request(ctx, ev); err == nil || approval.Refusal(err).Outcome != verdict.Block {
			t.Errorf("%s: Request = %v", name, err)
		}
	}
	// A challenge without a group uses the default rule's approvers; with
	// none configured it is refused.
	ev := evidence(sendArgs)
	ev.Obligations = []verdict.Obligation{{Kind: verdict.ObligationApproval, Detail: "exfiltration"}}
	a, err := f.m.Request(ctx, ev)
	if err != nil || a.Requirements[0].Group != "security-reviewers" {
		t.Errorf("groupless challenge: %+v, %v", a.Requirements, err)
	}
	g := newFixture(t, func(c *approval.Config) { delete(c.Rules, "default") })
	if _, err := g.m.Request(ctx, ev); !errors.Is(err, approval.ErrNoApprovers) {
		t.Errorf("groupless challenge without default approvers = %v", err)
	}
}

func TestGate(t *testing.T) {
	f := newFixture(t, nil)
	ev := evidence(sendArgs)
	// No decision within the wait: pending, with the approval id and URL.
	res, err := f.m.Gate(ctx, ev, approval.Use{Correlation: "call-1", Value: "1500"}, 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict.Outcome != verdict.Challenge || res.Approval == nil || res.URL != f.m.StatusURL(res.Approval.ID) || res.Grant != nil {
		t.Fatalf("Gate while pending: %+v", res)
	}
	// Approved while the call waits: the call proceeds and uses the grant.
	go func() {
		time.Sleep(50 * time.Millisecond)
		if _, err := f.m.Decide(ctx, res.Approval.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Approve}); err != nil {
			t.Error(err)
		}
	}()
	ev.Correlation = "call-2"
	res2, err := f.m.Gate(ctx, ev, approval.Use{Correlation: "call-2", Value: "1500"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Verdict.Outcome != verdict.Allow || res2.Grant == nil || res2.Grant.Uses != 1 {
		t.Fatalf("Gate after approval: %+v", res2)
	}
	// The replay finds no grant and asks anew.
	res3, _ := f.m.Gate(ctx, ev, approval.Use{Correlation: "call-3", Value: "1500"}, 0)
	if res3.Verdict.Outcome != verdict.Challenge || res3.Approval.ID == res.Approval.ID {
		t.Errorf("Gate on replay: %+v", res3)
	}
	// Denied: blocked with the reason.
	if _, err := f.m.Decide(ctx, res3.Approval.ID, human("alice", "finance-approvers"), approval.Decision{Vote: approval.Deny}); err != nil {
		t.Fatal(err)
	}
	res4, _ := f.m.Gate(ctx, ev, approval.Use{Correlation: "call-4", Value: "1500"}, 0)
	if res4.Verdict.Outcome != verdict.Block || res4.Verdict.First().Code != approval.CodeDenied || res4.Approval.ID != res3.Approval.ID {
		t.Errorf("Gate after denial: %+v", res4.Verdict)
	}
	// After the pending TTL the identical call may ask again.
	f.clock.Advance(16 * time.Minute)
	res5, _ := f.m.Gate(ctx, ev, approval.Use{Correlation: "call-5", Value: "1500"}, 0)
	if res5.Verdict.Outcome != verdict.Challenge || res5.Approval.ID == res3.Approval.ID {
		t.Errorf("Gate long after the denial: %+v", res5.Verdict)
	}
	// A cancelled wait (kill switch) blocks.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	ev.Arguments = []byte(`{"amount":77}`)
	res6, err := f.m.Gate(cctx, ev, approval.Use{Value: "77"}, time.Minute)
	if err == nil || res6.Verdict.Outcome != verdict.Block {
		t.Errorf("Gate with a cancelled context: %+v, %v", res6.Verdict, err)
	}
}

func TestMetricsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(c *approval.Config) { c.Registerer = reg })
	g := newFixture(t, func(c *approval.Config) { c.Registerer = reg })
	if _, err := f.m.Request(ctx, evidence(sendArgs)); err != nil {
		t.Fatal(err)
	}
	if _, err := g.m.Request(ctx, evidence(sendArgs)); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "gatehouse_approval_requests_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	if n != 2 {
		t.Errorf("requests counted %v, want 2 across both managers", n)
	}
}
