package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/approval"
)

// notifySink receives approval notifications: signed JSON webhooks and
// Slack-compatible messages.
type notifySink struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	events []string // webhook events, signature verified
	slack  []string // Slack message texts
	srv    *httptest.Server
}

func newNotifySink(t *testing.T) *notifySink {
	s := &notifySink{t: t, secret: []byte("webhook-secret-for-tests-0123456789")}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		defer s.mu.Unlock()
		switch r.URL.Path {
		case "/hook":
			if !approval.VerifySignature(s.secret, body, r.Header.Get(approval.SignatureHeader)) {
				t.Errorf("webhook signature does not verify: %q", r.Header.Get(approval.SignatureHeader))
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			var m struct {
				Event    string `json:"event"`
				Approval struct {
					ID string `json:"id"`
				} `json:"approval"`
			}
			_ = json.Unmarshal(body, &m)
			s.events = append(s.events, m.Event+" "+m.Approval.ID)
		case "/slack":
			s.slack = append(s.slack, string(body))
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// has waits up to 5s for a webhook event about approval id.
func (s *notifySink) has(event, id string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, e := range s.events {
			if e == event+" "+id {
				s.mu.Unlock()
				return true
			}
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (s *notifySink) slackMentions(text string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, m := range s.slack {
			if strings.Contains(m, text) {
				s.mu.Unlock()
				return true
			}
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// governanceConfig is the demo's execution layer plus a governance section
// with the given hold timeout and financial rule.
func governanceConfig(t *testing.T, sink *notifySink, hold, financial string) string {
	t.Helper()
	_, extra := execConfig(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "hook.secret")
	slackURL := filepath.Join(dir, "slack.url")
	if err := os.WriteFile(secret, sink.secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(slackURL, []byte(sink.srv.URL+"/slack"), 0o600); err != nil {
		t.Fatal(err)
	}
	return extra + fmt.Sprintf(`audit: {checkpoint_interval: 1s}
endpoints:
  - {path: /mcp, servers: [bank, workspace]}
  - {path: /stateless, servers: [bank, workspace], stateless: true}
governance:
  hold_timeout: %s
  sweep_interval: 200ms
  approvers:
    alice: {groups: [finance-approvers, identity-admins]}
    bob: {groups: [finance-approvers, identity-admins]}
    dana@harlowpike.example: {groups: [finance-approvers, identity-admins]}
    ci-bot: {groups: [finance-approvers, identity-admins], non_human: true}
    ursula: {groups: [oncall]}
  rules:
    financial: %s
    privilege: {quorum: 2}
  break_glass: {group: oncall, ttl: 2m}
  notifications:
    attempts: 3
    backoff: 50ms
    webhooks:
      - {id: soc, url: %q, secret_file: %s}
    slack:
      - {id: finance, url_file: %s}
`, hold, financial, sink.srv.URL+"/hook", secret, slackURL)
}

// pendingFor waits for the pending approval of agent's call of tool whose
// id is not in skip, and returns it.
func pendingFor(t *testing.T, h *harness, tool string, skip ...string) approval.View {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var list []approval.View
		adminDo(t, h, "GET", "/v1/approvals?status=pending", nil, &list)
	next:
		for _, a := range list {
			if a.Evidence == nil || a.Evidence.Tool != tool {
				continue
			}
			for _, s := range skip {
				if a.ID == s {
					continue next
				}
			}
			return a
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pending approval for %s", tool)
	return approval.View{}
}

// decide posts a decision and returns the HTTP status and the approval.
func decide(t *testing.T, h *harness, id, verb string, body map[string]any) (int, approval.View) {
	t.Helper()
	var v approval.View
	code := adminDo(t, h, "POST", "/v1/approvals/"+id+"/"+verb, body, &v)
	return code, v
}

type callResult struct {
	res *sdk.CallToolResult
	err *jsonrpcErr
}

// callAsync calls a tool in the background.
func callAsync(t *testing.T, cs *sdk.ClientSession, name string, args any) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		res, e := callErr(t, cs, name, args)
		ch <- callResult{res, e}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan callResult, within time.Duration) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("the call did not return within %v", within)
	}
	return callResult{}
}

func payment(amount float64) map[string]any {
	return map[string]any{"from_account": "acc-checking", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": amount}
}

// TestGovernance walks the acceptance list against the demo with
// calls held for up to 15s.
func TestGovernance(t *testing.T) {
	sink := newNotifySink(t)
	h := start(t, governanceConfig(t, sink, "15s", "{quorum: 1}"))
	cs := h.connect("assistant", nil, "")
	var approvedID string

	t.Run("send_money above the threshold waits and proceeds after approval", func(t *testing.T) {
		before := h.demo.Bank.Balance("acc-checking")
		ch := callAsync(t, cs, "bank__send_money", payment(2500))
		a := pendingFor(t, h, "send_money")
		ev := a.Evidence
		if ev.Agent != "assistant" || ev.Owner != "dana@harlowpike.example" || ev.Server != "bank" || ev.CallHash == "" ||
			ev.ArgumentsHash == "" || ev.Value != "2500.00" || ev.PolicyVersion == "" {
			t.Errorf("evidence snapshot: %+v", ev)
		}
		if !strings.Contains(fmt.Sprint(ev.Reasons), "payments-over-1000") || len(a.Requirements) != 1 ||
			a.Requirements[0].Group != "finance-approvers" || a.Requirements[0].Risk != "financial" {
			t.Errorf("triggers: reasons %v, requirements %+v", ev.Reasons, a.Requirements)
		}
		if h.demo.Bank.Balance("acc-checking") != before {
			t.Fatal("money moved before approval")
		}
		if code, v := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice", "comment": "invoice 2026-114"}); code != http.StatusOK || v.Status != approval.Approved {
			t.Fatalf("approve: %d %s", code, v.Status)
		}
		r := wait(t, ch, 10*time.Second)
		if r.err != nil || r.res.IsError {
			t.Fatalf("approved call: %+v %v", r.res, r.err)
		}
		if got := h.demo.Bank.Balance("acc-checking"); got != before-2500 {
			t.Errorf("balance %v, want %v", got, before-2500)
		}
		if !sink.has("approval.requested", a.ID) || !sink.has("approval.approved", a.ID) {
			t.Errorf("webhook events: %v", sink.events)
		}
		if !sink.slackMentions(a.ID) {
			t.Errorf("no Slack message links approval %s: %v", a.ID, sink.slack)
		}
		approvedID = a.ID
	})

	t.Run("a used single-use grant is refused; changed arguments need their own approval; denial tells why", func(t *testing.T) {
		before := h.demo.Bank.Balance("acc-checking")
		// The identical call again: the grant is used up.
		ch := callAsync(t, cs, "bank__send_money", payment(2500))
		a := pendingFor(t, h, "send_money", approvedID)
		// Changed arguments: another approval, never the first grant.
		ch2 := callAsync(t, cs, "bank__send_money", payment(2600))
		b := pendingFor(t, h, "send_money", approvedID, a.ID)
		if b.Evidence.CallHash == a.Evidence.CallHash {
			t.Error("different arguments share a call hash")
		}
		if code, _ := decide(t, h, a.ID, "deny", map[string]any{"approver": "bob", "comment": "looks like invoice fraud"}); code != http.StatusOK {
			t.Fatalf("deny: %d", code)
		}
		r := wait(t, ch, 10*time.Second)
		if r.err == nil || !strings.Contains(r.err.Message, "approval.denied") || strings.Contains(r.err.Message, "fraud") {
			t.Errorf("denied call: %v", r.err)
		}
		if code, _ := decide(t, h, b.ID, "deny", map[string]any{"approver": "bob"}); code != http.StatusOK {
			t.Fatalf("deny: %d", code)
		}
		if r := wait(t, ch2, 10*time.Second); r.err == nil || !strings.Contains(r.err.Message, "approval.denied") {
			t.Errorf("denied call: %v", r.err)
		}
		// The denial stands for the identical call: the retry is told at once.
		start := time.Now()
		if _, e := callErr(t, cs, "bank__send_money", payment(2500)); e == nil || !strings.Contains(e.Message, "approval.denied") || time.Since(start) > 5*time.Second {
			t.Errorf("retry of a denied call: %v after %v", e, time.Since(start))
		}
		if got := h.demo.Bank.Balance("acc-checking"); got != before {
			t.Errorf("balance changed to %v, want %v", got, before)
		}
		if !sink.has("approval.denied", a.ID) {
			t.Error("no denial notification")
		}
	})

	t.Run("quorum of two with separation of duties", func(t *testing.T) {
		args := map[string]any{"account": "acc-checking", "new_password": "correct-horse-battery-staple"}
		ch := callAsync(t, cs, "bank__update_password", args)
		a := pendingFor(t, h, "update_password")
		if len(a.Requirements) != 1 || a.Requirements[0].Quorum != 2 || a.Requirements[0].Group != "identity-admins" {
			t.Fatalf("requirements: %+v", a.Requirements)
		}
		for _, who := range []string{"dana@harlowpike.example", "ci-bot"} { // the owner; a non-human
			if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": who}); code != http.StatusForbidden {
				t.Errorf("%s approving: %d, want 403", who, code)
			}
		}
		if code, v := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice"}); code != http.StatusOK || v.Status != approval.Pending {
			t.Fatalf("first approval: %d %s", code, v.Status)
		}
		if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice"}); code == http.StatusOK {
			t.Error("alice counted twice")
		}
		// An approver cannot widen the request.
		if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": "bob", "max_uses": 5}); code != http.StatusForbidden {
			t.Errorf("widening: %d, want 403", code)
		}
		select {
		case r := <-ch:
			t.Fatalf("the call returned before the quorum: %+v", r)
		default:
		}
		if code, v := decide(t, h, a.ID, "approve", map[string]any{"approver": "bob"}); code != http.StatusOK || v.Status != approval.Approved {
			t.Fatalf("second approval: %d %s", code, v.Status)
		}
		if r := wait(t, ch, 10*time.Second); r.err != nil || r.res.IsError {
			t.Fatalf("approved call: %+v %v", r.res, r.err)
		}
	})

	t.Run("break-glass creates a review item and alerts", func(t *testing.T) {
		ch := callAsync(t, cs, "bank__send_money", payment(1800))
		a := pendingFor(t, h, "send_money")
		// ursula is in no approver group: only break-glass lets her decide,
		// and only with a justification.
		if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": "ursula"}); code != http.StatusForbidden {
			t.Errorf("plain approval by ursula: %d", code)
		}
		if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": "ursula", "break_glass": true, "justification": "short"}); code == http.StatusOK {
			t.Error("break-glass without a real justification")
		}
		code, v := decide(t, h, a.ID, "approve", map[string]any{"approver": "ursula", "break_glass": true,
			"justification": "payroll run blocked, finance approvers unreachable (INC-4471)"})
		if code != http.StatusOK || v.Status != approval.Approved || !v.BreakGlass {
			t.Fatalf("break-glass: %d %+v", code, v.Approval)
		}
		if r := wait(t, ch, 10*time.Second); r.err != nil {
			t.Fatalf("break-glass call: %v", r.err)
		}
		if !sink.has("approval.break_glass", a.ID) {
			t.Error("no break-glass alert")
		}
		var items []approval.ReviewItem
		adminDo(t, h, "GET", "/v1/reviews", nil, &items)
		found := false
		for _, it := range items {
			found = found || (it.Approval == a.ID && it.Status == "open" && it.Reason == "break_glass")
		}
		if !found {
			t.Errorf("no open review item for %s: %+v", a.ID, items)
		}
	})

	t.Run("the kill switch cancels held calls", func(t *testing.T) {
		ch := callAsync(t, cs, "bank__send_money", payment(4000))
		a := pendingFor(t, h, "send_money")
		start := time.Now()
		if code := adminDo(t, h, "POST", "/v1/locks", map[string]string{"scope": "agent", "target": "assistant", "reason": "runaway", "by": "ops"}, nil); code != http.StatusCreated {
			t.Fatalf("lock: %d", code)
		}
		r := wait(t, ch, 5*time.Second)
		if r.err == nil || time.Since(start) > 3*time.Second {
			t.Errorf("held call after the lock: %v after %v", r.err, time.Since(start))
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			var v approval.View
			adminDo(t, h, "GET", "/v1/approvals/"+a.ID, nil, &v)
			if v.Status == approval.Cancelled {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("approval %s is %s, want cancelled", a.ID, v.Status)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Approving it now changes nothing.
		if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice"}); code != http.StatusConflict {
			t.Errorf("approving a cancelled request: %d", code)
		}
		adminDo(t, h, "DELETE", "/v1/locks/agent/assistant?by=ops", nil, nil)
	})

	t.Run("the evidence bundle verifies and fails after any change", func(t *testing.T) {
		req, _ := http.NewRequest("GET", h.g.AdminURL()+"/v1/approvals/"+approvedID+"/bundle", nil)
		req.Header.Set("Authorization", "Bearer "+h.g.AdminToken())
		var data []byte
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bundle: %d %s", resp.StatusCode, data)
			}
			time.Sleep(200 * time.Millisecond)
		}
		verifier := auditVerifier(t, h.dataDir)
		rep, err := approval.VerifyBundle(data, verifier)
		if err != nil || !rep.OK() || rep.KeyFromBundle {
			t.Fatalf("bundle does not verify: %v %+v", err, rep)
		}
		if rep.Status != approval.Used || len(rep.Reviews) != 1 || !strings.Contains(rep.Reviews[0], "alice (admin-token)") {
			t.Errorf("report: %+v", rep)
		}
		for _, want := range []string{`"outcome"`, "alice", "admin-token", approvedID} {
			if !strings.Contains(string(data), want) {
				t.Errorf("bundle lacks %s", want)
			}
		}
		// Flip one bit at 97 positions spread over the file.
		for i := 0; i < 97; i++ {
			pos := i * (len(data) - 1) / 96
			bad := append([]byte(nil), data...)
			bad[pos] ^= 0x01
			if rep, err := approval.VerifyBundle(bad, verifier); err == nil && rep.OK() {
				t.Errorf("flipping byte %d (%q) still verifies", pos, data[pos])
			}
		}
	})

	t.Run("agents review and retirement", func(t *testing.T) {
		var rep approval.LifecycleReport
		if code := adminDo(t, h, "GET", "/v1/agents/review?days=30", nil, &rep); code != http.StatusOK {
			t.Fatalf("review: %d", code)
		}
		byID := map[string]approval.AgentReview{}
		for _, a := range rep.Agents {
			byID[a.Agent] = a
		}
		as := byID["assistant"]
		if strings.Join(as.Used, ",") != "bank/*" || strings.Join(as.Unused, ",") != "workspace/*" || as.Calls < 3 || as.LastActivity.IsZero() {
			t.Errorf("assistant: %+v", as)
		}
		if ib := byID["intern-bot"]; len(ib.Unused) == 0 {
			t.Errorf("intern-bot has no unused privileges: %+v", ib)
		}
		// An approved, unused grant is revoked when its agent retires. The
		// agent gives up waiting; the request stays pending and is approved.
		cctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := cs.CallTool(cctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: payment(1200)})
		cancel()
		if err == nil {
			t.Fatal("the call was not held")
		}
		a := pendingFor(t, h, "send_money")
		if code, v := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice"}); code != http.StatusOK || v.Status != approval.Approved {
			t.Fatalf("approve: %d %s", code, v.Status)
		}
		if code := adminDo(t, h, "POST", "/v1/agents/assistant/retire", map[string]string{"by": "ops", "reason": "project ended"}, nil); code != http.StatusOK {
			t.Fatalf("retire: %d", code)
		}
		var v approval.View
		adminDo(t, h, "GET", "/v1/approvals/"+a.ID, nil, &v)
		if v.Status != approval.Revoked {
			t.Errorf("after retirement the grant is %s, want revoked", v.Status)
		}
	})
}

// TestGovernanceAtOnce: with no hold, a challenged call is answered at once
// with "approval pending" in the shape the client's protocol calls for, and
// pending requests and grants expire.
func TestGovernanceAtOnce(t *testing.T) {
	sink := newNotifySink(t)
	h := start(t, governanceConfig(t, sink, "0s", "{pending_ttl: 1s, grant_ttl: 1s}"))
	ctx := context.Background()
	cs := h.connect("assistant", nil, "")

	t.Run("approval pending carries the id and a status URL", func(t *testing.T) {
		_, e := callErr(t, cs, "bank__send_money", payment(1500))
		if e == nil || e.Code != -32052 {
			t.Fatalf("pending: %v", e)
		}
		var data struct {
			ApprovalID string `json:"approvalId"`
			StatusURL  string `json:"statusUrl"`
		}
		if err := json.Unmarshal(e.Data, &data); err != nil || data.ApprovalID == "" || !strings.HasSuffix(data.StatusURL, "/approvals/"+data.ApprovalID) {
			t.Fatalf("data: %s", e.Data)
		}
		req, _ := http.NewRequest("GET", data.StatusURL, nil)
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"pending"`) || strings.Contains(string(body), "DE89") {
			t.Errorf("status page: %d %s", resp.StatusCode, body)
		}

		// Expiry: the retry after the deadline is told the request expired.
		time.Sleep(1500 * time.Millisecond)
		_, e = callErr(t, cs, "bank__send_money", payment(1500))
		if e == nil || !strings.Contains(string(e.Data), `"previous":{"id":"`+data.ApprovalID+`","status":"expired"}`) {
			t.Errorf("retry after expiry: %v %s", e, e.Data)
		}
		var v approval.View
		adminDo(t, h, "GET", "/v1/approvals/"+data.ApprovalID, nil, &v)
		if v.Status != approval.Expired {
			t.Errorf("status %s, want expired", v.Status)
		}
		if !sink.has("approval.expired", data.ApprovalID) {
			t.Error("no expiry notification")
		}
	})

	t.Run("an expired grant is refused", func(t *testing.T) {
		before := h.demo.Bank.Balance("acc-checking")
		_, e := callErr(t, cs, "bank__send_money", payment(1700))
		if e == nil {
			t.Fatal("not held")
		}
		a := pendingFor(t, h, "send_money")
		if code, _ := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice"}); code != http.StatusOK {
			t.Fatalf("approve: %d", code)
		}
		time.Sleep(1500 * time.Millisecond)
		if _, e := callErr(t, cs, "bank__send_money", payment(1700)); e == nil {
			t.Error("an expired grant was used")
		}
		if h.demo.Bank.Balance("acc-checking") != before {
			t.Error("money moved")
		}
	})

	t.Run("URL elicitation (2025-11-25 session)", func(t *testing.T) {
		completed := make(chan string, 4)
		opts := &sdk.ClientOptions{
			Capabilities: &sdk.ClientCapabilities{Elicitation: &sdk.ElicitationCapabilities{URL: &sdk.URLElicitationCapabilities{}}},
			ElicitationHandler: func(context.Context, *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
				return &sdk.ElicitResult{Action: "accept"}, nil
			},
			ElicitationCompleteHandler: func(_ context.Context, r *sdk.ElicitationCompleteNotificationRequest) {
				completed <- r.Params.ElicitationID
			},
		}
		ecs := h.connect("assistant", opts, "")
		before := h.demo.Bank.Balance("acc-checking")
		_, e := callErr(t, ecs, "bank__send_money", payment(1300))
		if e == nil || e.Code != -32042 {
			t.Fatalf("want URLElicitationRequired: %v", e)
		}
		var data struct {
			Elicitations []sdk.ElicitParams `json:"elicitations"`
		}
		if err := json.Unmarshal(e.Data, &data); err != nil || len(data.Elicitations) != 1 || data.Elicitations[0].Mode != "url" {
			t.Fatalf("data: %s", e.Data)
		}
		el := data.Elicitations[0]
		if !strings.HasSuffix(el.URL, "/approvals/"+el.ElicitationID) {
			t.Errorf("elicitation URL %s", el.URL)
		}
		if code, _ := decide(t, h, el.ElicitationID, "approve", map[string]any{"approver": "bob"}); code != http.StatusOK {
			t.Fatalf("approve: %d", code)
		}
		select {
		case id := <-completed:
			if id != el.ElicitationID {
				t.Errorf("completed %s, want %s", id, el.ElicitationID)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no notifications/elicitation/complete")
		}
		if _, e := callErr(t, ecs, "bank__send_money", payment(1300)); e != nil {
			t.Fatalf("retry after approval: %v", e)
		}
		if h.demo.Bank.Balance("acc-checking") != before-1300 {
			t.Error("the approved payment was not made")
		}
	})

	t.Run("an elevation covers narrow calls for a short window", func(t *testing.T) {
		before := h.demo.Bank.Balance("acc-savings")
		body := map[string]any{"approver": "alice", "agent": "assistant", "server": "bank", "tools": []string{"send_money"},
			"constraints": []map[string]any{{"argument": "from_account", "equals": "acc-savings"}, {"argument": "to_iban", "equals": "DE89 3704 0044 0532 0130 00"},
				{"argument": "amount", "max": "2000"}},
			"risk": "financial", "group": "finance-approvers", "ttl": "1m", "justification": "quarter-end supplier run, ticket FIN-2231"}
		var v approval.View
		if code := adminDo(t, h, "POST", "/v1/elevations", body, &v); code != http.StatusCreated || v.Status != approval.Approved {
			t.Fatalf("elevate: %d %+v", code, v.Approval)
		}
		pay := func(amount float64, iban string) *jsonrpcErr {
			_, e := callErr(t, cs, "bank__send_money", map[string]any{"from_account": "acc-savings", "to_iban": iban, "amount": amount})
			return e
		}
		if e := pay(1900, "DE89 3704 0044 0532 0130 00"); e != nil {
			t.Fatalf("elevated call: %v", e)
		}
		if e := pay(2100, "DE89 3704 0044 0532 0130 00"); e == nil || e.Code != -32052 {
			t.Errorf("above the elevation's maximum: %v", e)
		}
		if e := pay(1500, "GB94 BARC 1020 1530 0934 59"); e == nil || e.Code != -32052 {
			t.Errorf("another recipient: %v", e)
		}
		if got := h.demo.Bank.Balance("acc-savings"); got != before-1900 {
			t.Errorf("balance %v, want %v", got, before-1900)
		}
		// The agent's owner cannot elevate the agent.
		body["approver"] = "dana@harlowpike.example"
		if code := adminDo(t, h, "POST", "/v1/elevations", body, nil); code != http.StatusForbidden {
			t.Errorf("owner elevating: %d", code)
		}
	})

	t.Run("input_required (2026-07-28)", func(t *testing.T) {
		var elicited []string
		opts := &sdk.ClientOptions{
			Capabilities: &sdk.ClientCapabilities{Elicitation: &sdk.ElicitationCapabilities{URL: &sdk.URLElicitationCapabilities{}}},
			ElicitationHandler: func(_ context.Context, r *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
				// The user opens the page; an approver decides there. The
				// client's "accept" itself is no evidence.
				elicited = append(elicited, r.Params.URL)
				id := r.Params.URL[strings.LastIndex(r.Params.URL, "/")+1:]
				if code, _ := decide(t, h, id, "approve", map[string]any{"approver": "alice"}); code != http.StatusOK {
					t.Errorf("approve: %d", code)
				}
				return &sdk.ElicitResult{Action: "accept"}, nil
			},
		}
		c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, opts)
		mcs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.g.MCPURL("/stateless"),
			HTTPClient: &http.Client{Transport: bearer{h.token("assistant")}}}, &sdk.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
		if err != nil {
			t.Fatal(err)
		}
		defer mcs.Close()
		before := h.demo.Bank.Balance("acc-checking")
		res, err := mcs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: payment(1400)})
		if err != nil || res.IsError || res.NeedsInput() {
			t.Fatalf("call: %+v %v", res, err)
		}
		if len(elicited) != 1 || h.demo.Bank.Balance("acc-checking") != before-1400 {
			t.Errorf("elicited %v; balance %v, want %v", elicited, h.demo.Bank.Balance("acc-checking"), before-1400)
		}

		// The client's own "accept" is no approval: nothing moves.
		acceptOnly := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, &sdk.ClientOptions{
			Capabilities: &sdk.ClientCapabilities{Elicitation: &sdk.ElicitationCapabilities{URL: &sdk.URLElicitationCapabilities{}}},
			ElicitationHandler: func(context.Context, *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
				return &sdk.ElicitResult{Action: "accept"}, nil
			},
		})
		m1, err := acceptOnly.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.g.MCPURL("/stateless"),
			HTTPClient: &http.Client{Transport: bearer{h.token("assistant")}}}, &sdk.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
		if err != nil {
			t.Fatal(err)
		}
		defer m1.Close()
		before = h.demo.Bank.Balance("acc-checking")
		res, err = m1.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: payment(1425)})
		if err != nil || !res.NeedsInput() || h.demo.Bank.Balance("acc-checking") != before {
			t.Fatalf("accept without approval: %+v %v", res, err)
		}

		// A client that cannot show a URL gets the state-only form, and
		// its retry (requestState echoed) is matched to the same approval.
		c2 := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
		m2, err := c2.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.g.MCPURL("/stateless"),
			HTTPClient: &http.Client{Transport: bearer{h.token("assistant")}}}, &sdk.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		res, err = m2.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: payment(1450)})
		if err != nil || !res.NeedsInput() || !strings.HasPrefix(res.RequestState, "gatehouse-approval:") || len(res.InputRequests) != 0 {
			t.Fatalf("pending: %+v %v", res, err)
		}
		id := strings.TrimPrefix(res.RequestState, "gatehouse-approval:")
		if code, _ := decide(t, h, id, "approve", map[string]any{"approver": "alice"}); code != http.StatusOK {
			t.Fatalf("approve: %d", code)
		}
		res, err = m2.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: payment(1450), RequestState: res.RequestState})
		if err != nil || res.IsError || res.NeedsInput() {
			t.Fatalf("retry: %+v %v", res, err)
		}
	})
}
