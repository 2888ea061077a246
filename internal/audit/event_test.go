package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

func events() map[string]*audit.Event {
	s := audit.Subject{Agent: "billing-bot", Instance: "pod-7", User: "alice@example.com", Task: "task-1", Correlation: "corr-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SrcIP: "10.0.0.7"}
	block := verdict.Deny(verdict.Execution, "policy.forbid", "not allowed")
	intent := audit.Receipt{Index: 41}
	return map[string]*audit.Event{
		"intent": audit.APIActivity(s, audit.Call{Phase: audit.PhaseIntent, Activity: audit.APIUpdate, Server: "crm", Tool: "update_invoice",
			Labels: []verdict.Label{verdict.Financial}, Policies: []audit.Policy{{ID: "finance", Version: "v3"}}, Arguments: []byte(`{"id": 7, "amount": 10}`)}, verdict.Verdict{}),
		"outcome": audit.APIActivity(audit.Subject{Agent: "billing-bot"}, audit.Call{Phase: audit.PhaseOutcome, Server: "crm", Tool: "update_invoice", Intent: &intent,
			Failed: true, Error: "upstream timeout", Result: []byte(`{"ok":false}`)}, verdict.Verdict{}),
		"blocked": audit.APIActivity(s, audit.Call{Phase: audit.PhaseIntent, Server: "crm", Tool: "delete_all"}, block),
		"list":    audit.APIActivity(s, audit.Call{Phase: audit.PhaseList, Server: "crm"}, verdict.Verdict{}),
		"llm": audit.APIActivity(s, audit.Call{Phase: audit.PhaseIntent, Operation: "chat/completions", Server: "openai", Tool: "gpt-5",
			HTTP: &audit.HTTPRequest{HTTPMethod: "POST", URL: &audit.URL{Hostname: "api.openai.com", Path: "/v1/chat/completions", Scheme: "https"}}}, verdict.Verdict{}),
		"logon":        audit.Authentication(s, audit.Auth{Issuer: "https://login.example.com", Method: "oidc"}, verdict.Verdict{}),
		"logon failed": audit.Authentication(audit.Subject{Agent: "x"}, audit.Auth{Method: "spiffe", Failed: true, Detail: "identity.token_expired"}, block),
		// A workload credential that names no registered agent, and a
		// request without a readable credential.
		"logon unregistered": audit.Authentication(audit.Subject{Instance: "ci:repo:evil/agents", Correlation: "c2"}, audit.Auth{Method: "oidc", Failed: true, Detail: "credential_not_registered"}, block),
		"logon anonymous":    audit.Authentication(audit.Subject{Correlation: "c3"}, audit.Auth{Failed: true, Detail: "missing_token"}, block),
		"session":            audit.AuthorizeSession(s, []string{"tools:crm/*"}, verdict.Verdict{}),
		"lock": audit.EntityManagement(audit.Subject{User: "ops@example.com"}, audit.EntitySuspend,
			audit.Entity{Type: "lock", UID: "agent/billing-bot", Data: []byte(`{"scope":"agent","api_key":"sk-abcdefghijklmnopqrstuv"}`)}, "incident 12"),
		"policy":   audit.EntityManagement(audit.Subject{User: "ops"}, audit.EntityUpdate, audit.Entity{Type: "policy", UID: "finance", Version: "v4"}, ""),
		"approval": audit.UserAccessManagement(s, audit.AccessAssignPrivileges, audit.Grant{Approval: "ap-1", Privileges: []string{"call:crm/update_invoice#abc"}, Resource: "crm/update_invoice", ExpiresAt: time.Unix(1e9, 0)}, verdict.Verdict{}),
		"revoke":   audit.UserAccessManagement(s, audit.AccessRevokePrivileges, audit.Grant{Approval: "ap-1"}, verdict.Verdict{}),
	}
}

func ocsfSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("testdata/ocsf-1.3.0-gatehouse.schema.json")
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

// TestEventsValidateOCSF appends one event of every constructor to a log
// and validates the recorded events against the OCSF 1.3.0 class schema.
func TestEventsValidateOCSF(t *testing.T) {
	ctx := context.Background()
	sch := ocsfSchema(t)
	signer, _, _ := audittest.Keys(t)
	for _, mode := range []audit.Mode{audit.MetadataOnly, audit.FullPayload} {
		m := audit.NewMemory()
		l, err := audit.Open(ctx, audit.Config{Backend: m, Signer: signer, CheckpointInterval: -1, Privacy: mode, Salt: []byte("salt")})
		if err != nil {
			t.Fatal(err)
		}
		for name, e := range events() {
			r, err := l.Append(ctx, e)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			es, _ := m.Entries(ctx, r.Index, r.Index+1)
			lf, err := audit.ParseLeaf(es[0].Data)
			if err != nil {
				t.Fatal(err)
			}
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(lf.Event))
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.Validate(v); err != nil {
				t.Errorf("%s (mode %d) does not validate: %v\n%s", name, mode, err, lf.Event)
			}
			// Canonical: re-encoding with sorted keys changes nothing.
			var anyv any
			d := json.NewDecoder(bytes.NewReader(lf.Event))
			d.UseNumber()
			d.Decode(&anyv)
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			enc.Encode(anyv)
			if got := strings.TrimSpace(b.String()); got != string(lf.Event) {
				t.Errorf("%s: event JSON is not canonical:\n got %s\nwant %s", name, lf.Event, got)
			}
			if strings.Contains(string(lf.Event), "sk-abcdefghijklmnopqrstuv") {
				t.Errorf("%s: a secret is stored in clear", name)
			}
		}
		l.Close()
	}
}

func TestSchemaRejectsInvalidEvents(t *testing.T) {
	sch := ocsfSchema(t)
	for name, mutate := range map[string]func(map[string]any){
		"no class_uid":   func(m map[string]any) { delete(m, "class_uid") },
		"unknown class":  func(m map[string]any) { m["class_uid"] = 9999 },
		"wrong category": func(m map[string]any) { m["category_uid"] = 3 },
		"bad activity":   func(m map[string]any) { m["activity_id"] = 42 },
		"bad type_uid":   func(m map[string]any) { m["type_uid"] = 600342 },
		"bad severity":   func(m map[string]any) { m["severity_id"] = 7 },
		"bad status":     func(m map[string]any) { m["status_id"] = 3 },
		"no api":         func(m map[string]any) { delete(m, "api") },
		"no operation":   func(m map[string]any) { delete(m["api"].(map[string]any), "operation") },
		"no vendor": func(m map[string]any) {
			delete(m["metadata"].(map[string]any)["product"].(map[string]any), "vendor_name")
		},
		"string time":        func(m map[string]any) { m["time"] = "now" },
		"empty src_endpoint": func(m map[string]any) { m["src_endpoint"] = map[string]any{} },
		"bad ip":             func(m map[string]any) { m["src_endpoint"] = map[string]any{"ip": "not an ip"} },
		"other OCSF version": func(m map[string]any) { m["metadata"].(map[string]any)["version"] = "1.0.0" },
	} {
		e := events()["intent"]
		e.Time, e.Metadata.UID = 1, "u"
		b, _ := json.Marshal(e)
		var m map[string]any
		json.Unmarshal(b, &m)
		mutate(m)
		if err := sch.Validate(m); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
}

func TestPrivacy(t *testing.T) {
	ctx := context.Background()
	signer, _, _ := audittest.Keys(t)
	args := []byte(`{"query":"select 1","password":"hunter2","headers":{"Authorization":"Bearer abc.def"},"note":"key AKIAABCDEFGHIJKLMNOP"}`)
	for _, tc := range []struct {
		mode audit.Mode
		want []string
		not  []string
	}{
		{audit.MetadataOnly, []string{`"arguments_hash":"hmac-sha256:`}, []string{"select 1", "hunter2", `"arguments":`}},
		{audit.FullPayload, []string{`"query":"select 1"`, `"password":"[REDACTED hmac-sha256:`, `"arguments_hash"`}, []string{"hunter2", "Bearer abc", "AKIAABCDEFGHIJKLMNOP"}},
	} {
		m := audit.NewMemory()
		l, err := audit.Open(ctx, audit.Config{Backend: m, Signer: signer, CheckpointInterval: -1, Privacy: tc.mode, Salt: []byte("s")})
		if err != nil {
			t.Fatal(err)
		}
		e := audit.APIActivity(audit.Subject{Agent: "a"}, audit.Call{Phase: audit.PhaseIntent, Server: "db", Tool: "q", Arguments: args}, verdict.Verdict{})
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		es, _ := m.Entries(ctx, 0, 1)
		for _, w := range tc.want {
			if !strings.Contains(string(es[0].Data), w) {
				t.Errorf("mode %d: %q missing from %s", tc.mode, w, es[0].Data)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(string(es[0].Data), w) {
				t.Errorf("mode %d: %q stored: %s", tc.mode, w, es[0].Data)
			}
		}
		l.Close()
	}
}
