package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/identity"
)

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func TestAgentsReviewCLI(t *testing.T) {
	f, run := agentsCLI(t)
	out, _, err := run("review", "--days", "7")
	if err != nil || !strings.Contains(out, "billing-bot") || !strings.Contains(out, "workspace/read_file") || !strings.Contains(out, "#") {
		t.Fatalf("review: %q %v", out, err)
	}
	if p := f.paths[len(f.paths)-1]; p != "GET /v1/agents/review" {
		t.Errorf("review asked %s", p)
	}
	out, _, err = run("review", "--format", "json")
	var rep approval.LifecycleReport
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Agents) != 1 || rep.Window != 30*24*time.Hour ||
		strings.Join(rep.Agents[0].Used, ",") != "bank/*" || strings.Join(rep.Agents[0].Unused, ",") != "workspace/read_file" {
		t.Fatalf("review json: %q %v", out, err)
	}
	for _, args := range [][]string{{"review", "--format", "pdf"}, {"review", "--days", "0"}} {
		if _, _, err := run(args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// fakeAgentsAPI fakes the admin API's agent routes and records requests.
type fakeAgentsAPI struct {
	mu     sync.Mutex
	agents map[string]*identity.Agent
	bodies []map[string]any
	paths  []string
	// race makes every read of an agent followed by another change of it.
	race bool
}

func (f *fakeAgentsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer admin-secret-0123456789" {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "admin credential required"})
		return
	}
	f.paths = append(f.paths, r.Method+" "+r.URL.Path)
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(b, &body)
	f.bodies = append(f.bodies, body)
	id := strings.TrimPrefix(r.URL.Path, "/v1/agents/")
	verb := ""
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		id, verb = id[:i], id[i+1:]
	}
	a := f.agents[id]
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/agents/review":
		now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
		var recs []approval.AgentRecord
		for _, a := range f.agents {
			recs = append(recs, approval.AgentRecord{ID: a.ID, Owner: a.Owner, Expires: a.Expires, Permitted: []string{"bank/*", "workspace/read_file"}})
		}
		rep := approval.ReviewAgents(approval.ReviewInput{Agents: recs, Now: now, Window: 24 * time.Hour * time.Duration(atoi(r.URL.Query().Get("days"))),
			Uses: []approval.ToolUse{{Agent: "billing-bot", Server: "bank", Tool: "get_balance", Time: now.Add(-time.Hour)}}})
		_ = json.NewEncoder(w).Encode(rep)
	case r.Method == "GET" && r.URL.Path == "/v1/agents":
		list := []*identity.Agent{}
		for _, a := range f.agents {
			list = append(list, a)
		}
		_ = json.NewEncoder(w).Encode(list)
	case r.Method == "POST" && r.URL.Path == "/v1/agents":
		var n identity.Agent
		_ = json.Unmarshal(b, &n)
		if f.agents[n.ID] != nil {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": identity.ErrAgentExists.Error()})
			return
		}
		n.Status = identity.StatusActive
		f.agents[n.ID] = &n
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(n)
	case a == nil:
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "no such agent"})
	case r.Method == "GET" && verb == "":
		_ = json.NewEncoder(w).Encode(a)
		if f.race {
			a.Version++
		}
	case r.Method == "PUT" && verb == "":
		var n identity.Agent
		_ = json.Unmarshal(b, &n)
		if n.Version != a.Version {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": identity.ErrVersionConflict.Error()})
			return
		}
		n.Version, n.Status = a.Version+1, a.Status
		f.agents[id] = &n
		_ = json.NewEncoder(w).Encode(n)
	case r.Method == "POST":
		a.Status = map[string]identity.Status{"suspend": identity.StatusSuspended, "resume": identity.StatusActive, "retire": identity.StatusRetired}[verb]
		_ = json.NewEncoder(w).Encode(a)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func agentsCLI(t *testing.T, args ...string) (*fakeAgentsAPI, func(args ...string) (string, string, error)) {
	t.Helper()
	f := &fakeAgentsAPI{agents: map[string]*identity.Agent{
		"billing-bot": {ID: "billing-bot", Owner: "alice@example.com", Hosting: identity.HostingAzure, Servers: []string{"bank"}, Status: identity.StatusActive,
			Credentials: []identity.FederatedCredential{{Source: "contoso", Tenant: "t", Subject: "oid"}}},
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	tokFile := filepath.Join(t.TempDir(), "admin.token")
	_ = os.WriteFile(tokFile, []byte("admin-secret-0123456789\n"), 0o600)
	return f, func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		full := append([]string{args[0], "--admin", srv.URL, "--admin-token-file", tokFile, "--by", "ops@example.com"}, args[1:]...)
		err := runAgents(context.Background(), full, &out, &errb)
		return out.String(), errb.String(), err
	}
}

func TestAgentsCLI(t *testing.T) {
	f, run := agentsCLI(t)
	out, _, err := run("list")
	if err != nil || !strings.Contains(out, "billing-bot") || !strings.Contains(out, "azure-native") || !strings.HasPrefix(out, "ID") {
		t.Fatalf("list: %q %v", out, err)
	}
	out, _, err = run("show", "billing-bot")
	var shown identity.Agent
	if err != nil || json.Unmarshal([]byte(out), &shown) != nil || shown.Credentials[0].Subject != "oid" {
		t.Fatalf("show: %q %v", out, err)
	}
	out, _, err = run("add", "--id", "ops-bot", "--owner", "bob@example.com", "--hosting", "aws-native", "--server", "bank",
		"--tool", "bank/balance", "--tenant", "123456789012", "--credential", "source=aws-prod,tenant=123456789012,subject=arn:aws:iam::123456789012:role/ops-bot",
		"--group", "finance", "--group", "on-call", "--expires", "2160h", "--reason", "ticket 12")
	if err != nil || out != "added ops-bot (active)\n" {
		t.Fatalf("add: %q %v", out, err)
	}
	body := f.bodies[len(f.bodies)-1]
	creds, _ := body["credentials"].([]any)
	groups, _ := body["groups"].([]any)
	if body["by"] != "ops@example.com" || body["reason"] != "ticket 12" || len(creds) != 1 || body["expires"] == nil || body["hosting"] != "aws-native" ||
		len(groups) != 2 || groups[0] != "finance" || groups[1] != "on-call" {
		t.Errorf("add sent %v", body)
	}
	// Flags after the ID work too.
	out, _, err = run("suspend", "billing-bot", "--reason", "incident 7")
	if err != nil || out != "billing-bot is suspended\n" {
		t.Fatalf("suspend: %q %v", out, err)
	}
	if p := f.paths[len(f.paths)-1]; p != "POST /v1/agents/billing-bot/suspend" || f.bodies[len(f.bodies)-1]["reason"] != "incident 7" {
		t.Errorf("suspend sent %s %v", p, f.bodies[len(f.bodies)-1])
	}
	for _, verb := range []string{"resume", "retire"} {
		if out, _, err := run(verb, "billing-bot"); err != nil || !strings.HasPrefix(out, "billing-bot is ") {
			t.Errorf("%s: %q %v", verb, out, err)
		}
	}
	// Errors: the API's message, usage errors before any request.
	if _, _, err := run("show", "ghost"); err == nil || !strings.Contains(err.Error(), "no such agent") {
		t.Errorf("show unknown: %v", err)
	}
	if _, _, err := run("add", "--id", "ops-bot"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("add duplicate: %v", err)
	}
	n := len(f.paths)
	for _, args := range [][]string{
		{"suspend", "billing-bot"}, // no reason
		{"suspend"},                // no id
		{"add", "--id", "Bad ID"},  // invalid id
		{"add", "--id", "x", "--credential", "subject=s"}, // no source
		{"add", "--id", "x", "--expires", "soon"},
		{"add", "--id", "x", "--group", "a", "--group", "a"}, // group twice
		{"frobnicate"},
	} {
		if _, _, err := run(args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if len(f.paths) != n {
		t.Errorf("usage errors sent %d requests", len(f.paths)-n)
	}
}

func TestAgentsUpdateCLI(t *testing.T) {
	f, run := agentsCLI(t)
	f.agents["billing-bot"].Version = 3
	f.agents["billing-bot"].Tools = []string{"bank/balance"}
	// Federate another workload: the credential list is replaced, the
	// other fields are kept.
	out, _, err := run("update", "billing-bot", "--credential", "source=contoso,tenant=t,subject=oid",
		"--credential", "source=aws-prod,tenant=123456789012,subject=arn:aws:iam::123456789012:role/billing", "--tenant", "t", "--tenant", "123456789012",
		"--reason", "ticket 14")
	if err != nil || out != "updated billing-bot (version 4)\n" {
		t.Fatalf("update: %q %v", out, err)
	}
	if p := f.paths[len(f.paths)-1]; p != "PUT /v1/agents/billing-bot" || f.paths[len(f.paths)-2] != "GET /v1/agents/billing-bot" {
		t.Errorf("update sent %v", f.paths)
	}
	body := f.bodies[len(f.bodies)-1]
	if body["by"] != "ops@example.com" || body["reason"] != "ticket 14" || body["version"] != 3.0 {
		t.Errorf("update sent %v", body)
	}
	got := f.agents["billing-bot"]
	if len(got.Credentials) != 2 || got.Credentials[1].Subject != "arn:aws:iam::123456789012:role/billing" || strings.Join(got.Tenants, ",") != "t,123456789012" ||
		got.Owner != "alice@example.com" || got.Hosting != identity.HostingAzure || strings.Join(got.Tools, ",") != "bank/balance" {
		t.Errorf("agent after update: %+v", got)
	}
	// --file replaces the definition, keeping id, version and status.
	def := filepath.Join(t.TempDir(), "agent.json")
	_ = os.WriteFile(def, []byte(`{"id":"ignored","owner":"bob@example.com","servers":["bank","crm"]}`), 0o600)
	if out, _, err := run("update", "billing-bot", "--file", def, "--name", "Billing"); err != nil || out != "updated billing-bot (version 5)\n" {
		t.Fatalf("update --file: %q %v", out, err)
	}
	if got := f.agents["billing-bot"]; got.ID != "billing-bot" || got.Owner != "bob@example.com" || got.Name != "Billing" || len(got.Credentials) != 0 ||
		strings.Join(got.Servers, ",") != "bank,crm" || got.Status != identity.StatusActive {
		t.Errorf("agent after update --file: %+v", got)
	}
	// Someone else changes it between read and write: refused.
	f.mu.Lock()
	f.race = true
	f.mu.Unlock()
	if _, _, err := run("update", "billing-bot", "--owner", "carol@example.com"); err == nil || !strings.Contains(err.Error(), identity.ErrVersionConflict.Error()) {
		t.Errorf("update racing another change: %v", err)
	}
	f.mu.Lock()
	f.race = false
	f.mu.Unlock()
	if got := f.agents["billing-bot"]; got.Owner != "bob@example.com" {
		t.Errorf("a refused update changed the agent: %+v", got)
	}
	// Errors: unknown agent; usage errors before any request.
	if _, _, err := run("update", "ghost", "--owner", "x@example.com"); err == nil || !strings.Contains(err.Error(), "no such agent") {
		t.Errorf("update unknown: %v", err)
	}
	n := len(f.paths)
	for _, args := range [][]string{
		{"update", "billing-bot"},                              // nothing to change
		{"update", "--owner", "x@example.com"},                 // no id
		{"update", "billing-bot", "--credential", "subject=s"}, // no source
		{"update", "billing-bot", "--expires", "soon"},         // bad expiry
	} {
		if _, _, err := run(args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if len(f.paths) != n {
		t.Errorf("usage errors sent %d requests", len(f.paths)-n)
	}
	// An invalid result is refused before the PUT.
	if _, _, err := run("update", "billing-bot", "--tool", "crm/x", "--server", "bank"); !errors.Is(err, errUsage) {
		t.Errorf("tool outside the servers: %v", err)
	}
	if p := f.paths[len(f.paths)-1]; p != "GET /v1/agents/billing-bot" {
		t.Errorf("an invalid update was sent: %s", p)
	}
}
