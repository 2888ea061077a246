package gateway_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// contextPolicies are test rules on what the gateway tells policy about
// the caller, installed beside the demo's policies.
const contextPolicies = `
// Agents of the operators group may use the bank.
@id("operators-bank")
permit (principal in Gatehouse::Group::"operators", action, resource in Gatehouse::Server::"bank");

// Agents hosted on AWS may not read balances.
@id("no-aws-balances")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__get_balance")
when { principal.hosting == "aws-native" };
`

func writePolicy(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyContext: what the gateway tells policy about the agent comes
// from the registry, so agents managed through the admin API get their
// groups and hosting pattern.
func TestPolicyContext(t *testing.T) {
	dir, extra := execConfig(t)
	writePolicy(t, dir, "context.cedar", contextPolicies)
	h := start(t, extra)
	balance := map[string]any{"account": "acc-checking"}

	t.Run("agent groups and hosting from the registry", func(t *testing.T) {
		if code := adminDo(t, h, "POST", "/v1/agents", map[string]any{"id": "ops-bot", "owner": "leon@harlowpike.example", "servers": []string{"bank"},
			"groups": []string{"operators"}, "by": "ops", "reason": "test"}, nil); code != http.StatusCreated {
			t.Fatalf("adding ops-bot: HTTP %d", code)
		}
		cs := h.connect("ops-bot", nil, "")
		if _, e := callErr(t, cs, "bank__get_balance", balance); e != nil {
			t.Errorf("member of operators: %v", e)
		}
		update := func(change func(a map[string]any)) {
			t.Helper()
			var a map[string]any
			adminDo(t, h, "GET", "/v1/agents/ops-bot", nil, &a)
			change(a)
			a["by"], a["reason"] = "ops", "test"
			if code := adminDo(t, h, "PUT", "/v1/agents/ops-bot", a, nil); code != http.StatusOK {
				t.Fatalf("updating ops-bot: HTTP %d", code)
			}
		}
		update(func(a map[string]any) { a["hosting"] = "aws-native" })
		if _, e := callErr(t, cs, "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "no-aws-balances") {
			t.Errorf("hosted on AWS: %v", e)
		}
		update(func(a map[string]any) { a["hosting"], a["groups"] = "kubernetes", nil })
		if _, e := callErr(t, cs, "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "policy.no_permit") {
			t.Errorf("no longer in operators: %v", e)
		}
	})
}
