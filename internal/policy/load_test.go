package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/policy"
)

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []string // substrings of the error, in one problem
	}{
		{
			name:  "syntax error names file, line and column",
			src:   "permit (principal, action, resource);\n\n@id(\"bad\")\nforbid (principal, action resource);\n",
			wants: []string{"test.cedar:4:", "syntax error"},
		},
		{
			name:  "arguments at list time",
			src:   `@id("list-args") permit (principal, action == Gatehouse::Action::"list_tools", resource) when { context.arguments.amount > 3 };`,
			wants: []string{"test.cedar:1:", "policy list-args", "context.arguments", "list phase", "list_tools"},
		},
		{
			name:  "arguments with an unconstrained action",
			src:   `@id("any-args") forbid (principal, action, resource == Gatehouse::Tool::"bank__send_money") when { context.arguments.count > 3 };`,
			wants: []string{"policy any-args", "context.arguments", "list phase"},
		},
		{
			name:  "paths at list time",
			src:   `@id("list-paths") forbid (principal, action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource) when { context.paths has path };`,
			wants: []string{"policy list-paths", "context.paths", "list phase"},
		},
		{
			name:  "findings at list time",
			src:   `@id("list-findings") forbid (principal, action == Gatehouse::Action::"list_prompts", resource) when { context.findings.kinds.contains("secret") };`,
			wants: []string{"policy list-findings", "context.findings", "list phase", "list_prompts"},
		},
		{
			name:  "a token's lifetime outside token issuance",
			src:   `@id("call-lifetime") forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { context.lifetime > 600 };`,
			wants: []string{"policy call-lifetime", "context.lifetime", "only token issuance", "request_token"},
		},
		{
			name:  "findings at token issuance",
			src:   `@id("token-findings") forbid (principal, action == Gatehouse::Action::"request_token", resource) when { context.findings.kinds.contains("secret") };`,
			wants: []string{"policy token-findings", "context.findings", "token issuance", "request_token"},
		},
		{
			name:  "arguments on an action that has none",
			src:   `@id("prompt-args") forbid (principal, action == Gatehouse::Action::"get_prompt", resource) when { context.arguments has x };`,
			wants: []string{"policy prompt-args", "context.arguments", "get_prompt", "only call_tool"},
		},
		{
			name:  "an argument the tool does not declare",
			src:   `@id("no-such-arg") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments.currency == "EUR" };`,
			wants: []string{"policy no-such-arg", "context.arguments.currency", "bank__send_money"},
		},
		{
			name:  "an argument only some tools declare, unguarded",
			src:   `@id("some-tools") forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { context.arguments.to == "x" };`,
			wants: []string{"policy some-tools", "context.arguments.to", "fs__read_file", "has"},
		},
		{
			name:  "an argument used at the wrong type",
			src:   `@id("wrong-type") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments.amount > 1000 };`,
			wants: []string{"policy wrong-type", "decimal"},
		},
		{
			name:  "an optional argument used without has",
			src:   `@id("optional") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments.count > 3 };`,
			wants: []string{"policy optional", "arguments.count"},
		},
		{
			name:  "source used without has",
			src:   `@id("bare-source") forbid (principal, action, resource) when { context.source.kind != "aws" };`,
			wants: []string{"policy bare-source", "context.source", "has source"},
		},
		{
			name:  "source tenant used without has",
			src:   `@id("bare-tenant") forbid (principal, action, resource) when { context has source && context.source.tenant != "123456789012" };`,
			wants: []string{"policy bare-tenant", "context.source.tenant", "context.source has tenant"},
		},
		{
			name:  "an undeclared source attribute",
			src:   `@id("source-arn") forbid (principal, action, resource) when { context has source && context.source.arn == "x" };`,
			wants: []string{"policy source-arn", "source.arn"},
		},
		{
			name:  "an undeclared total",
			src:   `@id("total") forbid (principal, action, resource) when { context.totals.spend_week.greaterThan(decimal("1.0")) };`,
			wants: []string{"policy total", "context.totals.spend_week"},
		},
		{
			name:  "an unknown entity type",
			src:   `@id("typo") permit (principal == Gatehouse::Agnt::"x", action, resource);`,
			wants: []string{"policy typo", "Gatehouse::Agnt"},
		},
		{
			name:  "challenge on a permit",
			src:   `@id("p") @challenge("ops") permit (principal, action, resource);`,
			wants: []string{"policy p", "@challenge applies to forbid"},
		},
		{
			name:  "challenge without a group",
			src:   `@id("f") @challenge("") forbid (principal, action, resource);`,
			wants: []string{"policy f", "approver group"},
		},
		{
			name:  "duplicate ids",
			src:   "@id(\"dup\") permit (principal, action, resource);\n@id(\"dup\") forbid (principal, action, resource);",
			wants: []string{"test.cedar:2:", "policy dup", "duplicate id", "test.cedar:1"},
		},
	}
	schema := testSchema(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.LoadFiles([]policy.File{{Name: "test.cedar", Data: []byte(tt.src)}}, schema)
			var le *policy.LoadError
			if !errors.As(err, &le) {
				t.Fatalf("LoadFiles error = %v, want a *LoadError", err)
			}
			for _, p := range le.Problems {
				line := p.String()
				ok := true
				for _, w := range tt.wants {
					ok = ok && strings.Contains(line, w)
				}
				if ok {
					return
				}
			}
			t.Errorf("no problem mentions all of %q; got:\n%v", tt.wants, err)
		})
	}
}

func TestLoadAccepts(t *testing.T) {
	tests := []struct{ name, src string }{
		{"call-time arguments", `forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments.amount.greaterThan(decimal("1000.0")) };`},
		{"guarded optional argument", `forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments has count && context.arguments.count > 3 };`},
		{"argument on every tool, guarded", `forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { context.arguments has to && context.arguments.to == "x" };`},
		{"argument of every tool of a server", `forbid (principal, action == Gatehouse::Action::"call_tool", resource in Gatehouse::Server::"mail") when { context.arguments.to like "*@evil.example" };`},
		{"arguments behind context has, any action", `forbid (principal, action, resource) when { context has arguments && context.arguments has to && context.arguments.to == "x" };`},
		{"permissive argument is a string", `forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments has meta && context.arguments.meta like "*secret*" };`},
		{"nested record", `forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments has beneficiary && context.arguments.beneficiary.iban like "XX*" };`},
		{"set of strings", `forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments has tags && context.arguments.tags.contains("x") };`},
		{"declared path argument", `forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"fs__read_file") unless { context.paths.path like "/srv/*" && context.paths has mode && context.paths.mode == "r" };`},
		{"list-time session labels and totals", `forbid (principal, action == Gatehouse::Action::"list_tools", resource) when { context.session_labels.contains("private_data") && context.totals.spend_today.greaterThan(decimal("1.0")) };`},
		{"findings at call time", `forbid (principal, action in [Gatehouse::Action::"call_tool", Gatehouse::Action::"read_resource"], resource) when { context.findings.kinds.contains("secret") };`},
		{"user and task", `permit (principal in Gatehouse::Group::"finance", action, resource) when { context has user && context.user in Gatehouse::Group::"staff" && context.user.hasTag("accounts") && context has task && context.task.purpose == "billing" };`},
		{"source in every phase", `forbid (principal, action, resource) when { context has source && (context.source.trust_source != "prod-k8s" || context.source.kind != "kubernetes" || !(context.source.subject like "system:serviceaccount:payments:*") || (context.source has tenant && context.source.tenant != "t")) };`},
		{"token issuance on servers", `forbid (principal, action == Gatehouse::Action::"request_token", resource == Gatehouse::Server::"bank") when { context.lifetime > 600 || context.tools.contains("bank/*") || !(context has user) || context.session_labels.contains("x") };`},
		{"sample and elicit on servers", `permit (principal, action in [Gatehouse::Action::"sample", Gatehouse::Action::"elicit"], resource == Gatehouse::Server::"bank");`},
		{"complete on prompts and resources", `permit (principal, action == Gatehouse::Action::"complete", resource) when { resource.server == "bank" };`},
		{"other annotations are allowed", `@id("x") @description("anything") @risk("financial") @challenge("finance") forbid (principal, action, resource);`},
	}
	schema := testSchema(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := policy.LoadFiles([]policy.File{{Name: "ok.cedar", Data: []byte(tt.src)}}, schema); err != nil {
				t.Errorf("LoadFiles: %v", err)
			}
		})
	}
}

func TestLoadUnknownToolWarns(t *testing.T) {
	src := `@id("later") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"crm__export") when { context.arguments.rows > 1000 };`
	set, err := policy.LoadFiles([]policy.File{{Name: "a.cedar", Data: []byte(src)}}, testSchema(t))
	if err != nil {
		t.Fatalf("LoadFiles: %v", err)
	}
	w := set.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "later") {
		t.Errorf("Warnings = %q, want one naming policy later", w)
	}
	// Its type is checked once the tool is known.
	s, err := policy.SchemaFor([]policy.ToolSchema{{Server: "crm", Name: "export", InputSchema: []byte(`{"type":"object","properties":{"rows":{"type":"string"}}}`)}}, policy.SchemaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.LoadFiles([]policy.File{{Name: "a.cedar", Data: []byte(src)}}, s); err == nil {
		t.Error("LoadFiles accepted a Long comparison on an optional string argument")
	}
}

func TestLoadDir(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"a.cedar":     "permit (principal, action, resource);",
		"b.cedar":     "@id(\"b\")\nforbid (principal, action, resource)\nwhen { principal.owner == \"\" };",
		"notes.txt":   "not a policy",
		"x.test.yaml": "cases: []",
	})
	set, err := policy.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := set.Policies()
	if len(got) != 2 || got[0].ID != "a.cedar:1" || got[0].Effect != "permit" || got[1].ID != "b" || got[1].Effect != "forbid" {
		t.Errorf("Policies = %+v", got)
	}
	again, err := policy.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set.Version() == "" || again.Version() != set.Version() {
		t.Errorf("versions %q and %q, want equal and non-empty", set.Version(), again.Version())
	}
	changed, err := policy.Load(writeDir(t, map[string]string{"a.cedar": "permit (principal, action, resource);\n"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if changed.Version() == set.Version() {
		t.Error("different contents gave the same version")
	}

	if _, err := policy.Load(writeDir(t, map[string]string{"readme.md": "x"}), nil); err == nil || !strings.Contains(err.Error(), "no .cedar files") {
		t.Errorf("Load of a directory without policies: %v", err)
	}
}
