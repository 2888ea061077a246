package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// approvalsAPI runs the real governance handler over a memory store and a
// memory audit log, behind the admin credential "s3cret".
type approvalsAPI struct {
	m    *approval.Manager
	srv  *httptest.Server
	vkey string
	args []string
}

func newApprovalsAPI(t *testing.T) *approvalsAPI {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	signer, _, vkey := audittest.Keys(t)
	l, err := audit.Open(ctx, audit.Config{Backend: audit.NewMemory(), Signer: signer, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := approval.New(approval.Config{
		Store:       approval.NewMemory(),
		Audit:       l.Append,
		Rules:       map[string]approval.Rule{"export": {Approvers: []string{"data-protection"}}},
		BreakGlass:  approval.BreakGlass{Group: "oncall"},
		AgentOwner:  func(context.Context, string) (string, error) { return "olivia", nil },
		AuditReader: approval.LogReader(l),
		VerifierKey: vkey,
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := approval.Directory{
		"alice":  {Groups: []string{"finance-approvers"}},
		"olivia": {Groups: []string{"finance-approvers"}},
		"dana":   {Groups: []string{"data-protection"}},
		"ursula": {Groups: []string{"oncall"}},
		"dora":   {Groups: []string{"security"}},
	}
	h := m.Handler(approval.HandlerConfig{Approver: dir.AdminToken("admin")})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return &approvalsAPI{m: m, srv: srv, vkey: vkey, args: lockAdminArgs(t, srv.URL)}
}

func (a *approvalsAPI) request(t *testing.T, args string) approval.Approval {
	t.Helper()
	ap, err := a.m.Request(context.Background(), approval.Evidence{Correlation: "call-1", Agent: "payments-agent", Owner: "olivia", User: "ursula",
		Server: "bank", Tool: "send_money", Arguments: json.RawMessage(args), Value: "1500",
		Obligations: []verdict.Obligation{{Kind: verdict.ObligationApproval, Group: "finance-approvers", Detail: "financial"}}})
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func (a *approvalsAPI) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	all := append([]string{}, args...)
	if len(args) > 0 && args[0] != "verify" {
		all = append(all, a.args...)
	}
	err := runApprovals(context.Background(), all, &out, &errb)
	return out.String(), errb.String(), err
}

func TestApprovalsCLI(t *testing.T) {
	api := newApprovalsAPI(t)
	if out, _, err := api.run(t, "list"); err != nil || out != "no approvals\n" {
		t.Fatalf("empty list: %q, %v", out, err)
	}
	a := api.request(t, `{"amount":1500,"to":"DE89"}`)
	b := api.request(t, `{"amount":2,"to":"DE89"}`)
	out, _, err := api.run(t, "list")
	if err != nil || !strings.Contains(out, a.ID) || !strings.Contains(out, "pending") || !strings.Contains(out, "bank/send_money") || !strings.Contains(out, "0/1") {
		t.Fatalf("list: %q, %v", out, err)
	}
	out, _, err = api.run(t, "show", a.ID)
	if err != nil || !strings.Contains(out, `{"amount":1500,"to":"DE89"}`) || !strings.Contains(out, a.Evidence.CallHash) || !strings.Contains(out, "olivia") {
		t.Fatalf("show: %q, %v", out, err)
	}
	if out, _, err := api.run(t, "show", a.ID, "--json"); err != nil || !strings.Contains(out, `"call_hash"`) {
		t.Errorf("show --json: %q, %v", out, err)
	}
	// Separation of duties reaches the terminal.
	if _, _, err := api.run(t, "approve", a.ID, "--as", "olivia"); err == nil || !strings.Contains(err.Error(), "separation of duties") {
		t.Errorf("owner approval: %v", err)
	}
	if _, _, err := api.run(t, "approve", a.ID, "--as", "alice", "--ttl", "24h"); err == nil || !strings.Contains(err.Error(), "cannot widen") {
		t.Errorf("widening: %v", err)
	}
	out, _, err = api.run(t, "approve", a.ID, "--as", "alice", "--comment", "invoice 42 checked", "--ttl", "2m")
	if err != nil || !strings.HasPrefix(out, "approved "+a.ID+": the grant is in force until ") {
		t.Fatalf("approve: %q, %v", out, err)
	}
	if out, _, err := api.run(t, "deny", b.ID, "--as", "alice", "--comment", "duplicate"); err != nil || out != b.ID+" is denied\n" {
		t.Errorf("deny: %q, %v", out, err)
	}
	if out, _, err := api.run(t, "revoke", a.ID, "--as", "dora", "--comment", "incident 9"); err != nil || out != a.ID+" is revoked\n" {
		t.Errorf("revoke: %q, %v", out, err)
	}
	if out, _, err := api.run(t, "list", "--all", "--json"); err != nil || strings.Count(out, `"id": "apr_`) != 2 {
		t.Errorf("list --all --json: %q, %v", out, err)
	}

	// Elevation with constraints.
	out, _, err = api.run(t, "elevate", "--as", "dana", "--agent", "analyst", "--server", "warehouse", "--tool", "export_dataset",
		"--where", "dataset=sales_2025", "--where", `limit={"rows":10}`, "--prefix", "dest=s3://exports/", "--max", "rows=10000",
		"--risk", "export", "--ttl", "30m", "--justification", "board pack")
	if err != nil || !strings.HasPrefix(out, "elevated analyst on warehouse/export_dataset until ") {
		t.Fatalf("elevate: %q, %v", out, err)
	}
	els, _ := api.m.List(context.Background(), approval.Query{Kind: approval.KindElevation})
	if len(els) != 1 || len(els[0].Elevation.Constraints) != 4 || string(els[0].Elevation.Constraints[0].Equals) != `"sales_2025"` {
		t.Errorf("elevation %+v", els)
	}
	if _, _, err := api.run(t, "elevate", "--as", "dana", "--agent", "analyst"); !errors.Is(err, errUsage) {
		t.Errorf("incomplete elevate: %v", err)
	}

	// Break-glass and its review item.
	c := api.request(t, `{"amount":3}`)
	if _, _, err := api.run(t, "approve", c.ID, "--as", "ursula", "--break-glass"); !errors.Is(err, errUsage) {
		t.Errorf("break-glass without justification: %v", err)
	}
	out, _, err = api.run(t, "approve", c.ID, "--as", "ursula", "--break-glass", "--justification", "payroll blocked and nobody reachable")
	if err != nil || !strings.HasPrefix(out, "approved "+c.ID) {
		t.Fatalf("break-glass: %q, %v", out, err)
	}
	out, _, err = api.run(t, "reviews")
	if err != nil || !strings.Contains(out, c.ID) || !strings.Contains(out, "ursula") || !strings.Contains(out, "open") {
		t.Fatalf("reviews: %q, %v", out, err)
	}
	itemID := strings.Fields(strings.Split(out, "\n")[1])[0]
	if _, _, err := api.run(t, "close-review", itemID, "--as", "ursula", "--comment", "fine"); err == nil || !strings.Contains(err.Error(), "separation of duties") {
		t.Errorf("closing one's own review: %v", err)
	}
	if out, _, err := api.run(t, "close-review", itemID, "--as", "dora", "--comment", "checked with finance"); err != nil || !strings.HasPrefix(out, "closed review item "+itemID) {
		t.Errorf("close-review: %q, %v", out, err)
	}
	if out, _, _ := api.run(t, "reviews"); out != "no review items\n" {
		t.Errorf("reviews after closing: %q", out)
	}

	if _, _, err := api.run(t, "frobnicate"); !errors.Is(err, errUsage) {
		t.Errorf("unknown command: %v", err)
	}
	if _, _, err := api.run(t, "show"); !errors.Is(err, errUsage) {
		t.Errorf("show without ID: %v", err)
	}
	if _, _, err := api.run(t, "show", "apr_nope"); err == nil || !strings.Contains(err.Error(), "no such approval") {
		t.Errorf("show unknown: %v", err)
	}
}

func TestApprovalsExportVerify(t *testing.T) {
	api := newApprovalsAPI(t)
	a := api.request(t, `{"amount":1500,"to":"DE89"}`)
	if _, _, err := api.run(t, "approve", a.ID, "--as", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := api.m.Consume(context.Background(), a.Evidence.CallHash, approval.Use{Correlation: "call-2", Value: "1500"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "b.json")
	out, _, err := api.run(t, "export", a.ID, "--out", file)
	if err != nil || !strings.Contains(out, "wrote the evidence bundle of "+a.ID) {
		t.Fatalf("export: %q, %v", out, err)
	}
	keyFile := filepath.Join(dir, "audit.key.pub")
	if err := os.WriteFile(keyFile, []byte(api.vkey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := api.run(t, "verify", file, "--key", "@"+keyFile)
	if err != nil || !strings.Contains(out, "OK: the bundle verifies") || !strings.Contains(out, "approve by alice (admin-token)") || stderr != "" {
		t.Fatalf("verify: %q %q, %v", out, stderr, err)
	}
	if _, stderr, err := api.run(t, "verify", file); err != nil || !strings.Contains(stderr, "warning: verified with the key recorded in the bundle") {
		t.Errorf("verify without --key: %q, %v", stderr, err)
	}
	// One changed byte fails verification with exit status 1.
	data, _ := os.ReadFile(file)
	i := bytes.Index(data, []byte(`"alice"`))
	data[i+1] = 'm'
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err = api.run(t, "verify", bad, "--key", api.vkey)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, "FAIL: ") {
		t.Errorf("verify of a changed bundle: %q, %v", out, err)
	}
	// Another log's key refuses it.
	_, _, other := audittest.Keys(t)
	if _, _, err := api.run(t, "verify", file, "--key", other); err == nil {
		t.Error("a bundle verified with another log's key")
	}
}
