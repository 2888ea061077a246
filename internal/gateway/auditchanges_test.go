package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/store"
)

// ocsfSchema compiles the OCSF 1.3.0 schema of the classes Gatehouse uses
// (internal/audit/testdata; see docs/audit.md, "Schema check").
func ocsfSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "audit", "testdata", "ocsf-1.3.0-gatehouse.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("ocsf.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("ocsf.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// TestAuditEventPerStateChange makes each kind of state change through the
// admin API — an approval granted and then used, a lock set and lifted, an
// agent suspended and resumed, a policy reload accepted and one refused —
// and checks that each is on record with its OCSF class, activity, entity
// and operator; then validates every event the gateway recorded against
// the OCSF schema of the classes used.
func TestAuditEventPerStateChange(t *testing.T) {
	cfg := governanceConfig(t, newNotifySink(t), "15s", "{quorum: 1}")
	m := regexp.MustCompile(`policy: \{dir: (\S+)\}`).FindStringSubmatch(cfg)
	if m == nil {
		t.Fatalf("no policy directory in the configuration:\n%s", cfg)
	}
	policyDir := m[1]
	h := start(t, cfg)
	cs := h.connect("assistant", nil, "")

	// An approval: requested, granted by alice, used by the held call.
	ch := callAsync(t, cs, "bank__send_money", payment(2500))
	a := pendingFor(t, h, "send_money")
	if code, v := decide(t, h, a.ID, "approve", map[string]any{"approver": "alice", "comment": "invoice 7"}); code != http.StatusOK || v.Status != approval.Approved {
		t.Fatalf("approve: HTTP %d, %s", code, v.Status)
	}
	if r := wait(t, ch, 10*time.Second); r.err != nil || r.res.IsError {
		t.Fatalf("approved call: %+v %v", r.res, r.err)
	}

	// A lock on an agent, lifted.
	if code := adminDo(t, h, "POST", "/v1/locks", map[string]string{"scope": "agent", "target": "intern-bot", "reason": "incident 42", "by": "ops"}, nil); code != http.StatusCreated {
		t.Fatalf("lock: HTTP %d", code)
	}
	if n := metricValue(t, scrapeMetrics(t, h), "gatehouse_locks_active"); n != "1" {
		t.Errorf("gatehouse_locks_active = %s with one lock", n)
	}
	if code := adminDo(t, h, "DELETE", "/v1/locks/agent/intern-bot?by=ops", nil, nil); code != http.StatusNoContent {
		t.Fatalf("unlock: HTTP %d", code)
	}
	if n := metricValue(t, scrapeMetrics(t, h), "gatehouse_locks_active"); n != "0" {
		t.Errorf("gatehouse_locks_active = %s after the unlock", n)
	}

	// A registry change.
	for _, verb := range []string{"suspend", "resume"} {
		if code := adminDo(t, h, "POST", "/v1/agents/intern-bot/"+verb, map[string]string{"by": "ops", "reason": "review"}, nil); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", verb, code)
		}
	}

	// A policy reload that takes effect, and one that is refused.
	var reload struct {
		Version string `json:"version"`
	}
	if code := adminDo(t, h, "POST", "/v1/policy/reload?by=ops", nil, &reload); code != http.StatusOK || reload.Version == "" {
		t.Fatalf("reload: HTTP %d, version %q", code, reload.Version)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "broken.cedar"), []byte("not cedar\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := adminDo(t, h, "POST", "/v1/policy/reload?by=ops", nil, nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("broken reload: HTTP %d", code)
	}

	// Changes recorded but not applied: the store refuses the writes
	// (SQLite triggers) after their records were made.
	db, err := store.Open(context.Background(), filepath.Join(h.dataDir, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"agents", "locks"} {
		if _, err := db.Exec(`CREATE TRIGGER refuse_` + table + ` BEFORE UPDATE ON ` + table + ` BEGIN SELECT RAISE(ABORT, 'disk full'); END;
			CREATE TRIGGER refuse_insert_` + table + ` BEFORE INSERT ON ` + table + ` BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if code := adminDo(t, h, "POST", "/v1/agents/intern-bot/suspend", map[string]string{"by": "ops", "reason": "doomed"}, nil); code == http.StatusOK {
		t.Fatal("a suspension the store refused succeeded")
	}
	if code := adminDo(t, h, "POST", "/v1/locks", map[string]string{"scope": "agent", "target": "assistant", "reason": "incident 43", "by": "ops"}, nil); code == http.StatusCreated {
		t.Fatal("a lock the store refused succeeded")
	}

	all := h.events(audit.Filter{}, 1)
	// matching returns the events of class with the given activity and
	// status whose entity (or, for approvals, resource) has the given type
	// and uid, and whose comment contains comment.
	matching := func(class, activity, status int, typ, uid, comment string) []map[string]any {
		var out []map[string]any
		for _, ev := range all {
			if ev["class_uid"] != float64(class) || ev["activity_id"] != float64(activity) || ev["status_id"] != float64(status) ||
				!strings.Contains(fmt.Sprint(ev["comment"]), comment) {
				continue
			}
			obj, _ := ev["entity"].(map[string]any)
			if class == audit.ClassUserAccessManagement {
				rs, _ := ev["resources"].([]any)
				if len(rs) == 0 {
					continue
				}
				obj, _ = rs[0].(map[string]any)
			}
			if obj != nil && obj["type"] == typ && obj["uid"] == uid {
				out = append(out, ev)
			}
		}
		return out
	}
	operator := func(ev map[string]any) string {
		actor, _ := ev["actor"].(map[string]any)
		user, _ := actor["user"].(map[string]any)
		return fmt.Sprint(user["name"], user["uid"])
	}
	for _, tc := range []struct {
		name               string
		class, activity    int
		typ, uid           string
		by, verdictCode    string
		correlatedApproval bool
		comment            string
		failed             bool
	}{
		{name: "approval requested", class: audit.ClassEntityManagement, activity: audit.EntityCreate, typ: "approval", uid: a.ID, correlatedApproval: true},
		{name: "approval granted", class: audit.ClassUserAccessManagement, activity: audit.AccessAssignPrivileges, typ: "approval", uid: a.ID, by: "alice", verdictCode: approval.CodeGranted, correlatedApproval: true},
		{name: "grant used", class: audit.ClassUserAccessManagement, activity: audit.AccessRevokePrivileges, typ: "approval", uid: a.ID, verdictCode: approval.CodeUsed, correlatedApproval: true},
		{name: "lock", class: audit.ClassEntityManagement, activity: audit.EntityCreate, typ: "lock", uid: "agent:intern-bot", by: "ops", comment: "incident 42"},
		{name: "unlock", class: audit.ClassEntityManagement, activity: audit.EntityDelete, typ: "lock", uid: "agent:intern-bot", by: "ops"},
		{name: "agent suspended", class: audit.ClassEntityManagement, activity: audit.EntitySuspend, typ: "agent", uid: "intern-bot", by: "ops", comment: "review"},
		{name: "agent resumed", class: audit.ClassEntityManagement, activity: audit.EntityResume, typ: "agent", uid: "intern-bot", by: "ops", comment: "review"},
		{name: "policy reloaded", class: audit.ClassEntityManagement, activity: audit.EntityUpdate, typ: "policy", uid: "policy-set", by: "ops", comment: "policy set reloaded"},
		{name: "policy reload refused", class: audit.ClassEntityManagement, activity: audit.EntityUpdate, typ: "policy", uid: "policy-set", by: "ops", comment: "policy reload refused: ", failed: true},
		{name: "suspension attempted", class: audit.ClassEntityManagement, activity: audit.EntitySuspend, typ: "agent", uid: "intern-bot", by: "ops", comment: "doomed"},
		{name: "suspension not applied", class: audit.ClassEntityManagement, activity: audit.EntitySuspend, typ: "agent", uid: "intern-bot", by: "ops", comment: "not applied: ", failed: true},
		{name: "lock attempted", class: audit.ClassEntityManagement, activity: audit.EntityCreate, typ: "lock", uid: "agent:assistant", by: "ops", comment: "incident 43"},
		{name: "lock not applied", class: audit.ClassEntityManagement, activity: audit.EntityCreate, typ: "lock", uid: "agent:assistant", by: "ops", comment: "incident 43", failed: true},
	} {
		status := map[bool]int{false: audit.StatusSuccess, true: audit.StatusFailure}[tc.failed]
		evs := matching(tc.class, tc.activity, status, tc.typ, tc.uid, tc.comment)
		if len(evs) != 1 {
			t.Errorf("%s: %d events of class %d, activity %d, status %d, %s %s; want 1", tc.name, len(evs), tc.class, tc.activity, status, tc.typ, tc.uid)
			continue
		}
		ev := evs[0]
		if tc.by != "" && !strings.Contains(operator(ev), tc.by) {
			t.Errorf("%s: actor user %q, want %s", tc.name, operator(ev), tc.by)
		}
		if tc.verdictCode != "" && !strings.Contains(fmt.Sprint(unmapped(ev, "verdict")), tc.verdictCode) {
			t.Errorf("%s: verdict %v, want reason %s", tc.name, unmapped(ev, "verdict"), tc.verdictCode)
		}
		if md, _ := ev["metadata"].(map[string]any); tc.correlatedApproval && md["correlation_uid"] != a.ID {
			t.Errorf("%s: correlation_uid %v, want the approval id %s", tc.name, md["correlation_uid"], a.ID)
		}
		if detail, _ := ev["status_detail"].(string); tc.failed && !strings.HasPrefix(detail, tc.typ+".") {
			t.Errorf("%s: status_detail %q, want a %s.* code", tc.name, detail, tc.typ)
		}
		if e, _ := ev["entity"].(map[string]any); tc.typ == "policy" && e["version"] != reload.Version {
			t.Errorf("%s: entity version %v, want %s", tc.name, e["version"], reload.Version)
		}
	}

	// Every event the gateway recorded is a valid OCSF event of its class.
	sch := ocsfSchema(t)
	classes := map[float64]int{}
	for _, ev := range all {
		classes[ev["class_uid"].(float64)]++
		if err := sch.Validate(ev); err != nil {
			t.Errorf("event does not validate against OCSF 1.3.0: %v\n%v", err, ev)
		}
	}
	for _, c := range []int{audit.ClassAPIActivity, audit.ClassEntityManagement, audit.ClassUserAccessManagement} {
		if classes[float64(c)] == 0 {
			t.Errorf("no event of class %d among %d events: %v", c, len(all), classes)
		}
	}
}

// TestAuditTokenExchange checks the identity events of token exchange: an
// issued token is an Authorize Session event naming the agent, its
// workload, the user it acts for, the privileges granted and the token id;
// a refused exchange is a failed Authentication event with the reason.
func TestAuditTokenExchange(t *testing.T) {
	h, workload, users := identityGateway(t, "")
	base := strings.TrimSuffix(h.url, "/mcp")
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/assistant", nil, &a)
	a["credentials"] = []map[string]string{{"source": "ci", "subject": "repo:acme/agents:environment:prod"}}
	a["by"], a["reason"] = "ops", "federate the CI workload"
	if code := adminDo(t, h, "PUT", "/v1/agents/assistant", a, nil); code != http.StatusOK {
		t.Fatalf("adding the credential: HTTP %d", code)
	}
	jwtType := "urn:ietf:params:oauth:token-type:jwt"
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {users.token(t, "carol", "gatehouse", nil)}, "subject_token_type": {jwtType},
		"actor_token": {workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil)}, "actor_token_type": {jwtType},
		"resource": {h.url}}
	if _, code, msg := exchange(t, base, form); code != http.StatusOK {
		t.Fatalf("exchange: %d %s", code, msg)
	}
	form.Set("actor_token", workload.token(t, "repo:evil/agents", "gatehouse", nil))
	if _, code, _ := exchange(t, base, form); code == http.StatusOK {
		t.Fatal("an exchange with an unknown workload succeeded")
	}

	sessions := h.events(audit.Filter{Class: audit.ClassAuthorizeSession}, 1)
	if len(sessions) != 1 {
		t.Fatalf("%d Authorize Session events, want 1: %v", len(sessions), sessions)
	}
	ev := sessions[0]
	md, _ := ev["metadata"].(map[string]any)
	for name, ok := range map[string]bool{
		"agent":            ev["actor"].(map[string]any)["app_name"] == "assistant" && unmapped(ev, "agent") == "assistant",
		"workload":         strings.Contains(fmt.Sprint(field(ev, "actor.app_uid")), "repo:acme/agents:environment:prod"),
		"user":             strings.Contains(fmt.Sprint(unmapped(ev, "on_behalf_of")), "carol"),
		"privileges":       strings.Contains(fmt.Sprint(ev["privileges"]), "server:bank"),
		"token id":         unmapped(ev, "token_id") != nil,
		"success":          ev["status_id"] == float64(audit.StatusSuccess),
		"correlation id":   md["correlation_uid"] != nil && md["correlation_uid"] != "",
		"activity":         ev["activity_id"] == float64(audit.AuthorizeAssignPrivileges),
		"identity verdict": unmapped(ev, "verdict") == nil || !strings.Contains(fmt.Sprint(unmapped(ev, "verdict")), "block"),
	} {
		if !ok {
			t.Errorf("Authorize Session event: wrong %s: %v", name, ev)
		}
	}

	var refused []map[string]any
	for _, ev := range h.events(audit.Filter{Class: audit.ClassAuthentication}, 1) {
		if ev["status_id"] == float64(audit.StatusFailure) {
			refused = append(refused, ev)
		}
	}
	if len(refused) != 1 {
		t.Fatalf("%d failed Authentication events, want 1: %v", len(refused), refused)
	}
	if v := fmt.Sprint(unmapped(refused[0], "verdict")); !strings.Contains(v, "identity") || !strings.Contains(v, "block") {
		t.Errorf("refused exchange: verdict %s, want an identity-layer block", v)
	}
	sch := ocsfSchema(t)
	for _, ev := range append(sessions, refused...) {
		if err := sch.Validate(ev); err != nil {
			t.Errorf("event does not validate against OCSF 1.3.0: %v\n%v", err, ev)
		}
	}
}
