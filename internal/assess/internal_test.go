package assess

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadApprovalPolicies(t *testing.T) {
	got, problems, err := readApprovalPolicies("testdata/policies")
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	want := []ApprovalPolicy{
		{ID: "payments-over-1000", Group: "finance-approvers", Risk: "financial", File: "testdata/policies/approvals.cedar", Line: 5, Tools: []string{"payments__transfer"}, Conditional: true},
		{ID: "destructive-change", Group: "data-owners", Risk: "destructive", File: "testdata/policies/approvals.cedar", Line: 15, AllTools: true, Labels: []string{"destructive"}},
		{ID: "reviewer-privilege", Group: "identity-admins", Risk: "privilege", File: "testdata/policies/approvals.cedar", Line: 21, AllTools: true, Labels: []string{"privilege"}, Agent: "some-other-agent"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("approval policies (-want +got):\n%s", diff)
	}
}

func TestApprovalCoverage(t *testing.T) {
	byTool := ApprovalPolicy{Tools: []string{"payments__transfer"}}
	byLabel := ApprovalPolicy{AllTools: true, Labels: []string{"destructive"}}
	forOne := ApprovalPolicy{AllTools: true, Labels: []string{"privilege"}, Agent: "alice"}
	negated := ApprovalPolicy{AllTools: true}
	tests := []struct {
		name              string
		p                 ApprovalPolicy
		agent, tool, risk string
		want              bool
	}{
		{"tool named", byTool, "a", "payments__transfer", "financial", true},
		{"other tool", byTool, "a", "payments__refund", "financial", false},
		{"label matches risk", byLabel, "a", "db__drop", "destructive", true},
		{"label does not match", byLabel, "a", "iam__grant", "privilege", false},
		{"principal is the agent", forOne, "alice", "iam__grant", "privilege", true},
		{"principal is another agent", forOne, "bob", "iam__grant", "privilege", false},
		{"no label test", negated, "a", "db__drop", "destructive", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := tt.p.covers(tt.agent, tt.tool, tt.risk); got != tt.want {
				t.Errorf("covers = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestScopeIgnoresNegatedLabels(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/p.cedar", `@challenge("g")
forbid (principal, action, resource) when { !resource.labels.contains("financial") };
@challenge("h")
forbid (principal, action, resource) unless { resource.labels.contains("privilege") };
@challenge("")
forbid (principal, action, resource) when { resource.labels.contains("destructive") };
@challenge("k")
permit (principal, action, resource) when { resource.labels.contains("destructive") };
`)
	got, _, err := readApprovalPolicies(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d approval policies, want 2 (an empty group or a permit is not one): %+v", len(got), got)
	}
	for _, p := range got {
		if len(p.Labels) > 0 {
			t.Errorf("policy %s: labels %v taken from a negation or an unless clause", p.ID, p.Labels)
		}
	}
}

func TestReadApprovalPoliciesSyntaxError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/bad.cedar", "forbid (principal, action, resource) when {")
	_, problems, err := readApprovalPolicies(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 {
		t.Fatalf("problems = %v, want one", problems)
	}
}

func TestLocator(t *testing.T) {
	d, err := ParseDescriptor([]byte(`version: 1
deployment: d
preview_acceptable: false
agents:
  - id: a
    hosting:
      platform: azure
      clouds: [azure, aws]
    identity: {type: managed_identity, assignment: user_assigned, credential: managed}
    autonomy: assistive
`), "d.yaml", today0)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"agents[0].hosting.clouds[1]": "d.yaml:8",
		"agents[0].identity.type":     "d.yaml:9",
		"agents[0].owner":             "d.yaml:5", // absent: where it belongs
		"agents[3]":                   "d.yaml:5", // out of range: the list
		"operations.logs":             "d.yaml:1", // absent section: the document
	} {
		if got := d.Location(path); got != want {
			t.Errorf("Location(%q) = %q, want %q", path, got, want)
		}
	}
}

var today0 = mustDate("2026-11-25")
