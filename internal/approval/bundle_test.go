package approval_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// approvedAndUsed runs a request through two approvers and one use, with
// the pipeline's records of the held call and of the call that used the
// grant, and returns the approval's bundle.
func approvedAndUsed(t testing.TB, f *fixture) (approval.Approval, []byte) {
	t.Helper()
	ev := evidence(sendArgs)
	subj := audit.Subject{Agent: ev.Agent, User: ev.User, Task: ev.Task, Correlation: "call-1"}
	held := audit.APIActivity(subj, audit.Call{Phase: audit.PhaseDecide, Server: "bank", Tool: "send_money", Arguments: ev.Arguments},
		verdict.Challenged(verdict.Execution, "policy.challenge", "approval required by policy", "finance-approvers"))
	if _, err := f.log.Append(ctx, held); err != nil {
		t.Fatal(err)
	}
	a, err := f.m.Request(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	oidc := approval.Approver{Subject: "alice", Groups: []string{"finance-approvers"}, Method: approval.MethodOIDC, Issuer: "https://login.example",
		AuthTime: f.clock.Now().Add(-2 * time.Minute), ACR: "mfa", Human: true}
	if _, err := f.m.Decide(ctx, a.ID, oidc, approval.Decision{Vote: approval.Approve, Comment: "checked invoice 42 <ok>"}); err != nil {
		t.Fatal(err)
	}
	subj.Correlation = "call-2"
	intent, err := f.log.Append(ctx, audit.APIActivity(subj, audit.Call{Phase: audit.PhaseIntent, Server: "bank", Tool: "send_money", Arguments: ev.Arguments}, verdict.Verdict{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Consume(ctx, a.Evidence.CallHash, approval.Use{Correlation: "call-2", Value: "1500"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.log.Append(ctx, audit.APIActivity(subj, audit.Call{Phase: audit.PhaseOutcome, Server: "bank", Tool: "send_money", Intent: &intent, Result: []byte(`{"ok":true}`)}, verdict.Verdict{})); err != nil {
		t.Fatal(err)
	}
	f.hook.waitFor(t, approval.EventApproved)
	f.waitDeliveries(t, a.ID, 2)
	// Records unrelated to the approval must stay out of the bundle.
	if _, err := f.log.Append(ctx, audittest.Event("other-agent", "x", "call-9", verdict.Allow)); err != nil {
		t.Fatal(err)
	}
	b, err := f.m.Bundle(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	data, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.m.Get(ctx, a.ID)
	return got, data
}

func TestBundleVerifies(t *testing.T) {
	f := newFixture(t, nil)
	a, data := approvedAndUsed(t, f)
	rep, err := approval.VerifyBundle(data, f.verifier)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("the bundle does not verify: %v", rep.Problems)
	}
	if rep.Approval != a.ID || rep.Status != approval.Used || rep.KeyFromBundle || rep.TreeSize == 0 || len(rep.Reviews) != 1 ||
		!strings.Contains(rep.Reviews[0], "alice (oidc, authenticated") {
		t.Errorf("report %+v", rep)
	}
	var b approval.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	phases := []string{}
	for _, c := range b.Calls {
		phases = append(phases, c.Correlation+":"+c.Phase+":"+c.Outcome)
	}
	if strings.Join(phases, " ") != "call-1:decision:challenge call-2:intent:allow call-2:outcome:allow" {
		t.Errorf("call records %v", phases)
	}
	if len(b.Deliveries) == 0 || len(b.Approval.Uses) != 1 || b.Approval.Reviews[0].Approver.ACR != "mfa" {
		t.Errorf("bundle content: %d deliveries, uses %v", len(b.Deliveries), b.Approval.Uses)
	}
	for _, r := range b.Records {
		if strings.Contains(r.Leaf, "call-9") {
			t.Error("an unrelated record is in the bundle")
		}
	}
	// With the bundle's own key it verifies, flagged.
	rep, err = approval.VerifyBundle(data, nil)
	if err != nil || !rep.OK() || !rep.KeyFromBundle {
		t.Errorf("verification with the bundle's key: %+v, %v", rep, err)
	}
	// Another trusted key refuses it.
	_, other, _ := audittest.Keys(t)
	if rep, err := approval.VerifyBundle(data, other); err == nil && rep.OK() {
		t.Error("the bundle verified with another log's key")
	}
}

func TestBundleBreakGlass(t *testing.T) {
	f := newFixture(t, nil)
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	if _, err := f.m.Decide(ctx, a.ID, human("ursula", "oncall"), approval.Decision{Vote: approval.Approve, BreakGlass: true, Justification: "payroll blocked, approvers unreachable"}); err != nil {
		t.Fatal(err)
	}
	items, _ := f.m.ReviewItems(ctx, "")
	if _, err := f.m.CloseReviewItem(ctx, items[0].ID, human("dora", "security"), "reviewed with finance"); err != nil {
		t.Fatal(err)
	}
	f.hook.waitFor(t, approval.EventBreakGlass)
	f.waitDeliveries(t, a.ID, 2)
	b, err := f.m.Bundle(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := b.Encode()
	rep, err := approval.VerifyBundle(data, f.verifier)
	if err != nil || !rep.OK() {
		t.Fatalf("break-glass bundle: %+v, %v", rep, err)
	}
	if len(b.ReviewItems) != 1 || b.ReviewItems[0].Status != approval.ItemClosed || !strings.Contains(rep.Reviews[0], "BREAK-GLASS") {
		t.Errorf("review items %+v, reviews %v", b.ReviewItems, rep.Reviews)
	}
}

// TestBundleTamper flips every byte of a bundle: each change must be
// detected.
func TestBundleTamper(t *testing.T) {
	f := newFixture(t, nil)
	_, data := approvedAndUsed(t, f)
	// Every byte with its low bit flipped (the proof), and the case bit of
	// every 25th byte; a sample under -short.
	step := 1
	if testing.Short() {
		step = 13
	}
	for i := 0; i < len(data); i += step {
		for _, mask := range []byte{0x01, 0x20} {
			if mask == 0x20 && i%25 != 0 {
				continue
			}
			d := bytes.Clone(data)
			d[i] ^= mask
			if rep, err := approval.VerifyBundle(d, f.verifier); err == nil && rep.OK() {
				t.Fatalf("changing byte %d (%q → %q) went undetected: %q", i, data[i], d[i], data[max(0, i-60):min(len(data), i+20)])
			}
		}
	}
}

// TestBundleSemanticTamper re-encodes edited bundles, as a careful forger
// would, so that only the cross-checks can find the change.
func TestBundleSemanticTamper(t *testing.T) {
	f := newFixture(t, nil)
	_, data := approvedAndUsed(t, f)
	for name, edit := range map[string]func(b *approval.Bundle){
		"approver renamed":  func(b *approval.Bundle) { b.Approval.Reviews[0].Approver.Subject = "mallory" },
		"auth method":       func(b *approval.Bundle) { b.Approval.Reviews[0].Approver.Method = approval.MethodOIDC + "x" },
		"grant window":      func(b *approval.Bundle) { b.Approval.Grant.Expires = b.Approval.Grant.Expires.Add(time.Hour) },
		"arguments":         func(b *approval.Bundle) { b.Approval.Evidence.Arguments = []byte(`{"amount":15000}`) },
		"status":            func(b *approval.Bundle) { b.Approval.Status = approval.Approved },
		"use removed":       func(b *approval.Bundle) { b.Approval.Uses = nil },
		"delivery dropped":  func(b *approval.Bundle) { b.Deliveries = b.Deliveries[1:] },
		"delivery changed":  func(b *approval.Bundle) { b.Deliveries[0].OK = !b.Deliveries[0].OK },
		"call summary":      func(b *approval.Bundle) { b.Calls[0].Outcome = "allow" },
		"call summary gone": func(b *approval.Bundle) { b.Calls = b.Calls[1:] },
		"record dropped":    func(b *approval.Bundle) { b.Records = b.Records[:len(b.Records)-1] },
		"leaf edited":       func(b *approval.Bundle) { b.Records[0].Leaf = strings.Replace(b.Records[0].Leaf, "bank", "bonk", 1) },
		"leaf edited rehash": func(b *approval.Bundle) {
			for i, r := range b.Records {
				if strings.Contains(r.Leaf, `"alice"`) {
					// A forger recomputes the leaf hash: the proof fails.
					b.Records[i].Leaf = strings.Replace(r.Leaf, `"alice"`, `"alica"`, 1)
					b.Records[i].Hash = tlog.RecordHash([]byte(b.Records[i].Leaf))
					return
				}
			}
			t.Fatal("no record names alice")
		},
		"key replaced": func(b *approval.Bundle) {
			_, _, k := audittest.Keys(t)
			b.Key = k
		},
	} {
		t.Run(name, func(t *testing.T) {
			var b approval.Bundle
			if err := json.Unmarshal(data, &b); err != nil {
				t.Fatal(err)
			}
			edit(&b)
			d, err := b.Encode()
			if err != nil {
				t.Fatal(err)
			}
			rep, err := approval.VerifyBundle(d, f.verifier)
			if err == nil && rep.OK() {
				t.Fatal("the edit went undetected")
			}
		})
	}
}

func TestVerifyBundleRejectsGarbage(t *testing.T) {
	v, err := note.NewVerifier("gatehouse.test/audit+00000000+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
	if err != nil {
		v = nil
	}
	for _, in := range []string{``, `{}`, `[]`, `{"format":"other"}`, `{"format":"gatehouse-approval-bundle/1","x":1}`} {
		if rep, err := approval.VerifyBundle([]byte(in), v); err == nil && rep.OK() {
			t.Errorf("VerifyBundle(%q) passed", in)
		}
	}
}

// FuzzVerifyBundle: a bundle is a file from outside (a trust boundary);
// verifying any bytes must not panic, and whatever is accepted must be a
// bundle that re-encodes to exactly those bytes.
func FuzzVerifyBundle(f *testing.F) {
	fx := newFixture(f, nil)
	_, data := approvedAndUsed(f, fx)
	f.Add(data)
	f.Add([]byte(`{"format":"gatehouse-approval-bundle/1"}`))
	f.Add([]byte(`{"format":"gatehouse-approval-bundle/1","records":[{"index":-1,"leaf":"","proof":["x"]}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		rep, err := approval.VerifyBundle(in, fx.verifier)
		if err != nil || !rep.OK() {
			return
		}
		var b approval.Bundle
		if err := json.Unmarshal(in, &b); err != nil {
			t.Fatalf("accepted bytes that do not decode: %v", err)
		}
		out, err := b.Encode()
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("accepted a bundle that is not its own encoding")
		}
	})
}
