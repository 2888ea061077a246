package policy_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/policy"
)

const fixturePolicies = `
@id("mail") permit (principal, action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource == Gatehouse::Tool::"mail__send");
@id("outside") @challenge("security") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"mail__send")
when { !(context.arguments.to like "*@example.com") };
`

const fixtureCases = `
tools:
  - server: mail
    name: send
    labels: [external_sink]
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
defaults:
  action: call_tool
  agent: {id: bot, owner: alice}
  server: mail
  tool: send
cases:
  - name: inside
    request: {arguments: {to: a@example.com}}
    expect: allow
    policies: [mail]
  - name: outside, expected wrongly
    request: {arguments: {to: eve@evil.example}}
    expect: allow
  - name: outside, wrong group
    request: {arguments: {to: eve@evil.example}}
    expect: challenge
    group: finance
  - name: wrong policies
    request: {arguments: {to: a@example.com}}
    expect: allow
    policies: [other]
  - name: bad request
    request: {agent: {idd: x}}
    expect: allow
  - name: bad expectation
    request: {}
    expect: maybe
`

func TestRunFixtures(t *testing.T) {
	dir := writeDir(t, map[string]string{"p.cedar": fixturePolicies, "mail.test.yaml": fixtureCases})
	rep, err := policy.RunFixtures(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed != 1 || rep.Failed != 5 {
		t.Errorf("passed %d, failed %d; want 1, 5", rep.Passed, rep.Failed)
	}
	var buf bytes.Buffer
	rep.Print(&buf, true)
	out := buf.String()
	for _, want := range []string{
		"ok    mail.test.yaml: inside",
		"FAIL  mail.test.yaml: outside, expected wrongly\n      outcome: want allow, got challenge\n",
		"      want: allow\n      got:  challenge (policy.challenge) by outside; approvers security\n",
		"approver group: want finance, got [security]",
		"policies: want [other], got [mail]",
		"FAIL  mail.test.yaml: bad request\n      decoding request:",
		`expect must be allow, challenge or block, not "maybe"`,
		"1 passed, 5 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestRunFixturesErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no fixtures", map[string]string{"p.cedar": fixturePolicies}, "no fixture files"},
		{"no policies", map[string]string{"x.test.yaml": fixtureCases}, "no .cedar files"},
		{"bad policy", map[string]string{"p.cedar": "permit (", "x.test.yaml": fixtureCases}, "p.cedar:1:"},
		{"unknown fixture field", map[string]string{"p.cedar": fixturePolicies, "x.test.yaml": "casez: []"}, "casez"},
		{"unknown label", map[string]string{"p.cedar": fixturePolicies, "x.test.yaml": "tools: [{server: a, name: b, labels: [spicy]}]"}, "spicy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.RunFixtures(writeDir(t, tt.files))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunFixtures error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// Arguments are decoded only for policies that read them: a malformed
// argument of a tool no candidate policy inspects does not block.
func TestArgumentsDecodedOnlyWhenRead(t *testing.T) {
	set := load(t, testSchema(t), `
@id("mail") permit (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"mail__send");
@id("files") permit (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"fs__read_file") when { context.paths.path like "/srv/*" };
`)
	if d := set.Decide(call("mail__send", `{"to": "x", "path": "../../etc"}`)); d.Code() != policy.CodePermit {
		t.Errorf("mail with an unread bad path: %s %v", d.Code(), d.Diagnostics)
	}
	if d := set.Decide(call("fs__read_file", `{"path": "../../etc"}`)); d.Code() != policy.CodeInvalidArgument {
		t.Errorf("file with a bad path read by policy: %s %v", d.Code(), d.Diagnostics)
	}
}
