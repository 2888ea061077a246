package approval_test

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/approval"
)

var directory = approval.Directory{
	"alice":  {Groups: []string{"finance-approvers", "identity-admins"}},
	"bob":    {Groups: []string{"finance-approvers", "identity-admins"}},
	"olivia": {Groups: []string{"finance-approvers", "data-protection"}},
	"dana":   {Groups: []string{"data-protection"}},
	"ursula": {Groups: []string{"oncall"}},
	"dora":   {Groups: []string{"security"}},
	"robot":  {Groups: []string{"finance-approvers"}, NonHuman: true},
}

func call(t *testing.T, h http.Handler, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func TestAdminAPI(t *testing.T) {
	f := newFixture(t, nil)
	h := f.m.Handler(approval.HandlerConfig{Approver: directory.AdminToken("admin")})
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	b, _ := f.m.Request(ctx, evidence(`{"amount":2}`))

	code, body := call(t, h, "GET", "/v1/approvals?status=pending", nil)
	var list []approval.View
	if code != 200 || json.Unmarshal(body, &list) != nil || len(list) != 2 || list[0].URL == "" {
		t.Fatalf("list: %d %s", code, body)
	}
	code, body = call(t, h, "GET", "/v1/approvals/"+a.ID, nil)
	var v approval.View
	if code != 200 || json.Unmarshal(body, &v) != nil || v.ID != a.ID || v.Evidence.CallHash != a.Evidence.CallHash {
		t.Fatalf("show: %d %s", code, body)
	}
	if code, _ := call(t, h, "GET", "/v1/approvals/apr_nope", nil); code != 404 {
		t.Errorf("show unknown: %d", code)
	}
	for _, tc := range []struct {
		name string
		path string
		body any
		code int
		want string
	}{
		{"owner", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{Approver: "olivia"}, 403, "separation of duties"},
		{"non-human", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{Approver: "robot"}, 403, "only authenticated humans"},
		{"unknown approver", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{Approver: "mallory"}, 403, "unknown approver"},
		{"no approver", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{}, 400, "name the approver"},
		{"widen", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{Approver: "alice", TTL: "24h"}, 403, "cannot widen"},
		{"bad ttl", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{Approver: "alice", TTL: "soon"}, 400, "ttl"},
		{"unknown field", "/v1/approvals/" + a.ID + "/approve", map[string]any{"approver": "alice", "grant_everything": true}, 400, "malformed"},
		{"approve", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{Approver: "alice", Comment: "ok"}, 200, `"status":"approved"`},
		{"again", "/v1/approvals/" + a.ID + "/approve", approval.DecisionRequest{Approver: "bob"}, 409, "not pending"},
		{"deny", "/v1/approvals/" + b.ID + "/deny", approval.DecisionRequest{Approver: "bob", Comment: "no"}, 200, `"status":"denied"`},
		{"revoke", "/v1/approvals/" + a.ID + "/revoke", approval.RevokeRequest{Approver: "dora", Comment: "incident"}, 200, `"status":"revoked"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, h, "POST", tc.path, tc.body)
			if code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s: %d %s; want %d with %q", tc.path, code, body, tc.code, tc.want)
			}
		})
	}
	// Every recorded decision says how the approver authenticated.
	got, _ := f.m.Get(ctx, a.ID)
	if r := got.Reviews[0]; r.Approver.Method != approval.MethodAdminToken || r.Approver.Operator != "admin" || r.Approver.Subject != "alice" {
		t.Errorf("review %+v", r.Approver)
	}

	// Elevations.
	code, body = call(t, h, "POST", "/v1/elevations", approval.ElevationRequest{Approver: "dana", Agent: "analyst-agent", Server: "warehouse",
		Tools: []string{"export_dataset"}, Constraints: []approval.Constraint{{Argument: "dataset", Equals: json.RawMessage(`"sales"`)}},
		Risk: "export", TTL: "30m", Justification: "board pack"})
	if code != 201 || !strings.Contains(string(body), `"kind":"elevation"`) || !strings.Contains(string(body), `"status":"approved"`) {
		t.Errorf("elevate: %d %s", code, body)
	}
	if code, body := call(t, h, "POST", "/v1/elevations", approval.ElevationRequest{Approver: "olivia", Agent: "analyst-agent", Server: "warehouse",
		Tools: []string{"export_dataset"}, Risk: "export", TTL: "30m", Justification: "x"}); code != 403 {
		t.Errorf("elevation by the owner: %d %s", code, body)
	}

	// Break-glass and its review item.
	c, _ := f.m.Request(ctx, evidence(`{"amount":3}`))
	code, body = call(t, h, "POST", "/v1/approvals/"+c.ID+"/approve", approval.DecisionRequest{Approver: "ursula", BreakGlass: true, Justification: "payroll blocked, nobody reachable"})
	if code != 200 || !strings.Contains(string(body), `"break_glass":true`) {
		t.Fatalf("break-glass: %d %s", code, body)
	}
	code, body = call(t, h, "GET", "/v1/reviews?status=open", nil)
	var items []approval.ReviewItem
	if code != 200 || json.Unmarshal(body, &items) != nil || len(items) != 1 {
		t.Fatalf("reviews: %d %s", code, body)
	}
	if code, _ := call(t, h, "POST", "/v1/reviews/"+items[0].ID+"/close", approval.CloseRequest{Approver: "ursula", Comment: "fine"}); code != 403 {
		t.Errorf("self-review: %d", code)
	}
	if code, body := call(t, h, "POST", "/v1/reviews/"+items[0].ID+"/close", approval.CloseRequest{Approver: "dora", Comment: "checked"}); code != 200 {
		t.Errorf("close review: %d %s", code, body)
	}

	// The bundle route serves a verifiable bundle.
	f.waitDeliveries(t, a.ID, 1)
	code, body = call(t, h, "GET", "/v1/approvals/"+a.ID+"/bundle", nil)
	if code != 200 {
		t.Fatalf("bundle: %d %s", code, body)
	}
	if rep, err := approval.VerifyBundle(body, f.verifier); err != nil || !rep.OK() {
		t.Errorf("served bundle: %+v %v", rep, err)
	}

	// An audit outage refuses changes with 503.
	d, _ := f.m.Request(ctx, evidence(`{"amount":4}`))
	f.failAudit.Store(true)
	if code, body := call(t, h, "POST", "/v1/approvals/"+d.ID+"/approve", approval.DecisionRequest{Approver: "alice"}); code != 503 || !strings.Contains(string(body), "nothing was changed") {
		t.Errorf("approve during an audit outage: %d %s", code, body)
	}
	f.failAudit.Store(false)
}

func TestApprovalPage(t *testing.T) {
	f := newFixture(t, nil)
	page := f.m.Page(approval.PageConfig{
		Directory: directory,
		CheckAdmin: func(c string) (string, bool) {
			return "admin", subtle.ConstantTimeCompare([]byte(c), []byte("s3cret")) == 1
		},
	})
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	get := func(path, accept string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		rec := httptest.NewRecorder()
		page.ServeHTTP(rec, req)
		return rec
	}
	post := func(form url.Values) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/approvals/"+a.ID, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		page.ServeHTTP(rec, req)
		return rec
	}
	rec := get("/approvals/"+a.ID, "")
	html := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(html, a.ID) || !strings.Contains(html, "payments-agent") || !strings.Contains(html, "pending") ||
		!strings.Contains(html, a.Evidence.CallHash) || !strings.Contains(html, "gatehouse approvals approve "+a.ID) {
		t.Fatalf("page: %d\n%s", rec.Code, html)
	}
	if strings.Contains(html, "DE89") {
		t.Error("the page shows arguments without the credential")
	}
	if !strings.Contains(rec.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") || strings.Contains(html, "<script") {
		t.Errorf("page security headers: %v", rec.Header())
	}
	// Escaping: the memo's markup is text.
	rec = post(url.Values{"credential": {"s3cret"}, "action": {"view"}})
	if !strings.Contains(rec.Body.String(), "DE89") || !strings.Contains(rec.Body.String(), "invoice &lt;42&gt; &amp; co") {
		t.Errorf("view with the credential: %d\n%s", rec.Code, rec.Body.String())
	}
	// JSON status for agents.
	rec = get("/approvals/"+a.ID, "application/json")
	var sv approval.StatusView
	if json.Unmarshal(rec.Body.Bytes(), &sv) != nil || sv.Status != approval.Pending || sv.URL != "https://gw.example/approvals/"+a.ID {
		t.Errorf("status JSON: %s", rec.Body.String())
	}
	if rec := post(url.Values{"credential": {"wrong"}, "action": {"approve"}, "approver": {"alice"}}); rec.Code != 401 {
		t.Errorf("wrong credential: %d", rec.Code)
	}
	if rec := post(url.Values{"credential": {"s3cret"}, "action": {"approve"}, "approver": {"olivia"}}); rec.Code != 403 || !strings.Contains(rec.Body.String(), "separation of duties") {
		t.Errorf("owner on the page: %d", rec.Code)
	}
	rec = post(url.Values{"credential": {"s3cret"}, "action": {"approve"}, "approver": {"alice"}, "comment": {"ok"}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("approve on the page: %d %s", rec.Code, rec.Body.String())
	}
	if got, _ := f.m.Get(ctx, a.ID); got.Status != approval.Approved || got.Reviews[0].Approver.Method != approval.MethodAdminToken {
		t.Errorf("after the page's approval: %s", got.Status)
	}
	if rec := get("/approvals/"+a.ID+"?done=1", ""); !strings.Contains(rec.Body.String(), "approved") || !strings.Contains(rec.Body.String(), "alice") {
		t.Errorf("page after approval:\n%s", rec.Body.String())
	}
	if rec := get("/approvals/apr_unknown", ""); rec.Code != 404 {
		t.Errorf("unknown approval page: %d", rec.Code)
	}
	// Read-only page without a credential check.
	ro := f.m.Page(approval.PageConfig{})
	req := httptest.NewRequest("POST", "/approvals/"+a.ID, strings.NewReader("credential=s3cret&action=approve&approver=bob"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rr := httptest.NewRecorder()
	ro.ServeHTTP(rr, req)
	if rr.Code != 403 {
		t.Errorf("read-only page accepted a decision: %d", rr.Code)
	}
}
