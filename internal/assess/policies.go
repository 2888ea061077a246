package assess

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// Annotation keys of an approval policy, as internal/policy defines them:
// a forbid annotated @challenge("group") is lifted by that approver
// group's approval; @risk names the risk class; @id names the policy.
const (
	annotationID        = "id"
	annotationChallenge = "challenge"
	annotationRisk      = "risk"
)

// ApprovalPolicy is a challenge policy found in a policy directory.
type ApprovalPolicy struct {
	ID    string
	Group string // approver group (@challenge)
	Risk  string // @risk, may be empty
	File  string
	Line  int
	// Tools are the tools the resource scope names (resource == Tool).
	// Empty with AllTools means the scope is every tool.
	Tools    []string
	AllTools bool
	// Labels are the tool risk labels the condition tests with
	// resource.labels.contains("label").
	Labels []string
	// Agent is set when the principal scope names one agent.
	Agent string
	// Conditional is true when a policy naming its tool also has a when
	// or unless clause: approval is then required only when it holds
	// (a threshold, for instance).
	Conditional bool
}

// covers reports whether p requires approval for tool (with risk label
// risk) called by agent, and how.
func (p ApprovalPolicy) covers(agent, tool, risk string) (bool, string) {
	if p.Agent != "" && p.Agent != agent {
		return false, ""
	}
	for _, t := range p.Tools {
		if t == tool {
			if p.Conditional {
				return true, "names the tool, with conditions: approval is required only when they hold"
			}
			return true, "names the tool"
		}
	}
	if p.AllTools {
		for _, l := range p.Labels {
			if l == risk {
				return true, byLabel
			}
		}
	}
	return false, ""
}

// byLabel is how covers says a policy applies through a risk label, which
// the tool must carry.
const byLabel = "by label"

// readApprovalPolicies parses every *.cedar file directly in dir (as the
// gateway's policy loader reads it) and returns its challenge policies.
// Syntax errors are returned as problems, one per file.
func readApprovalPolicies(dir string) ([]ApprovalPolicy, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading policy directory: %w", err)
	}
	var out []ApprovalPolicy
	var problems []string
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".cedar") {
			continue
		}
		name := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, nil, fmt.Errorf("reading policy file: %w", err)
		}
		list, err := cedar.NewPolicyListFromBytes(name, b)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for _, pol := range list {
			ann := pol.Annotations()
			group, ok := ann[annotationChallenge]
			if !ok || pol.Effect() != cedar.Forbid || group == "" {
				continue
			}
			pos := pol.Position()
			ap := ApprovalPolicy{
				ID:    string(ann[annotationID]),
				Group: string(group),
				Risk:  string(ann[annotationRisk]),
				File:  name,
				Line:  pos.Line,
			}
			if ap.ID == "" {
				ap.ID = fmt.Sprintf("%s:%d", e.Name(), pos.Line)
			}
			scope((*xast.Policy)(pol.AST()), &ap)
			out = append(out, ap)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, problems, nil
}

const toolType = types.EntityType("Gatehouse::Tool")
const agentType = types.EntityType("Gatehouse::Agent")

// scope fills the tools, labels and agent a policy applies to.
func scope(p *xast.Policy, ap *ApprovalPolicy) {
	switch r := p.Resource.(type) {
	case xast.ScopeTypeAll:
		ap.AllTools = true
	case xast.ScopeTypeEq:
		if r.Entity.Type == toolType {
			ap.Tools = append(ap.Tools, string(r.Entity.ID))
		}
	case xast.ScopeTypeIs:
		ap.AllTools = r.Type == toolType
	}
	ap.Conditional = len(ap.Tools) > 0 && len(p.Conditions) > 0
	if pr, ok := p.Principal.(xast.ScopeTypeEq); ok && pr.Entity.Type == agentType {
		ap.Agent = string(pr.Entity.ID)
	}
	for _, c := range p.Conditions {
		if c.Condition != xast.ConditionWhen {
			continue
		}
		xast.Inspect(xast.NewNode(c.Body), func(n xast.IsNode) bool {
			if ct, ok := n.(xast.NodeTypeContains); ok && isResourceLabels(ct.Left) {
				if v, ok := ct.Right.(xast.NodeValue); ok {
					if s, ok := v.Value.(types.String); ok {
						ap.Labels = append(ap.Labels, string(s))
					}
				}
			}
			// A disjunction may hold the label tests we want; a
			// negation would invert them, so do not look inside it.
			_, not := n.(xast.NodeTypeNot)
			return !not
		})
	}
}

func isResourceLabels(n xast.IsNode) bool {
	acc, ok := n.(xast.NodeTypeAccess)
	if !ok || acc.Value != "labels" {
		return false
	}
	v, ok := acc.Arg.(xast.NodeTypeVariable)
	return ok && v.Name == "resource"
}
