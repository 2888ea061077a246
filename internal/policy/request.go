package policy

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Action is a Cedar action id: what the agent (or, for Sample and Elicit,
// the server through the agent's session) is doing.
type Action string

// The actions. The list actions are the list phase; the others the call
// phase.
const (
	ListTools     Action = "list_tools"
	ListResources Action = "list_resources"
	ListPrompts   Action = "list_prompts"
	CallTool      Action = "call_tool"
	ReadResource  Action = "read_resource"
	GetPrompt     Action = "get_prompt"
	Complete      Action = "complete"
	Sample        Action = "sample"
	Elicit        Action = "elicit"
	// RequestToken is the token phase: may the agent obtain a task-scoped
	// token that reaches a server (the resource)?
	RequestToken Action = "request_token"
)

// Actions lists every action.
var Actions = []Action{ListTools, ListResources, ListPrompts, CallTool, ReadResource, GetPrompt, Complete, Sample, Elicit, RequestToken}

// Phase is when a decision is taken: when the agent lists what exists, or
// when it uses one thing. Arguments and findings exist only at call time.
type Phase uint8

const (
	// List is the list phase: tools/list, resources/list, prompts/list.
	List Phase = iota + 1
	// Call is the call phase: the actions on one target.
	Call
	// Token is the token phase: issuing a task-scoped token
	// (RequestToken). Its context has no arguments or findings, and adds
	// the token's tools and lifetime.
	Token
)

func (p Phase) String() string {
	switch p {
	case List:
		return "list"
	case Call:
		return "call"
	case Token:
		return "token"
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// Phase returns the action's phase, or 0 for an unknown action.
func (a Action) Phase() Phase {
	switch a {
	case ListTools, ListResources, ListPrompts:
		return List
	case CallTool, ReadResource, GetPrompt, Complete, Sample, Elicit:
		return Call
	case RequestToken:
		return Token
	}
	return 0
}

// Request is one decision's input. It is a plain value that marshals to
// JSON, so that the audit store can keep it and replay can decide it again.
type Request struct {
	Action Action `json:"action"`
	Agent  Agent  `json:"agent"`
	// User is the person on whose behalf the agent acts, when known.
	User *User `json:"user,omitempty"`
	// Task is the task the agent's token is scoped to, when known.
	Task *Task `json:"task,omitempty"`
	// Source is the verified workload identity the agent's credential was
	// obtained with (context.source), when known: a fact of the token, the
	// same in every phase.
	Source *Source `json:"source,omitempty"`

	// Server names the upstream server. With Tool, Resource or Prompt it
	// forms the target's entity id (Server + "__" + name); for Sample,
	// Elicit and RequestToken the target is the Server itself.
	Server string `json:"server,omitempty"`
	// Tool is the tool's name as its server publishes it (tool actions).
	Tool string `json:"tool,omitempty"`
	// Resource is the resource URI (resource actions, or Complete on a
	// resource template).
	Resource string `json:"resource,omitempty"`
	// Prompt is the prompt's name (prompt actions, or Complete on a prompt).
	Prompt string `json:"prompt,omitempty"`
	// Labels are the target's risk labels (config, or DefaultLabels of its
	// annotations). The schema's labels for a tool are added to them.
	Labels []verdict.Label `json:"labels,omitempty"`

	// Arguments are the tool call's arguments, a JSON object (CallTool
	// only; ignored in the list phase).
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// SessionLabels are the information-flow labels the session or task has
	// accumulated (verdict.SessionPrivateData, ...).
	SessionLabels []verdict.Label `json:"session_labels,omitempty"`
	// Findings summarise the semantic layer's findings on this call (call
	// phase only).
	Findings *Findings `json:"findings,omitempty"`
	// Totals are running totals from the limits layer, by name. Only names
	// the schema declares are visible to policy; missing ones are zero.
	Totals map[string]float64 `json:"totals,omitempty"`
	// TokenTools are the tools a requested token grants on Server
	// ("server/tool" or "server/*"; empty: the agent's baseline), and
	// TokenLifetime its lifetime (RequestToken only: context.tools,
	// context.lifetime in seconds).
	TokenTools    []string      `json:"token_tools,omitempty"`
	TokenLifetime time.Duration `json:"token_lifetime,omitempty"`
	// Now is the time of the request; the zero time is an error.
	Now time.Time `json:"now"`
}

// Agent is the acting non-human identity (the Cedar principal).
type Agent struct {
	ID      string   `json:"id"`
	Owner   string   `json:"owner,omitempty"`
	Hosting string   `json:"hosting,omitempty"`
	Groups  []string `json:"groups,omitempty"`
}

// User is the person an agent acts for.
type User struct {
	ID     string   `json:"id"`
	Groups []string `json:"groups,omitempty"`
	// Tags are facts about the user from the identity layer, as sets of
	// strings by name (for object scoping: "accounts", "projects", ...).
	// Policy reads them with context.user.hasTag("accounts") and
	// context.user.getTag("accounts").
	Tags map[string][]string `json:"tags,omitempty"`
}

// Task is a unit of delegated work with a purpose and a time window. Zero
// NotBefore or NotAfter leave that side of the window open.
type Task struct {
	ID        string    `json:"id"`
	Purpose   string    `json:"purpose,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// Source is the workload identity behind an agent's token, as its trust
// source verified it: the analogue of aws:SourceAccount (Tenant) and
// aws:SourceArn (Subject) for binding cross-boundary calls to where they
// come from. A Source with neither TrustSource nor Subject is absent.
type Source struct {
	// TrustSource is the configured trust source's name ("prod-k8s").
	TrustSource string `json:"trust_source"`
	// Kind is its kind: "oidc", "entra", "aws", "kubernetes", "spiffe".
	Kind string `json:"kind,omitempty"`
	// Tenant is the Entra tenant id or AWS account id, for sources that
	// have tenants ("" otherwise: context.source has no tenant).
	Tenant string `json:"tenant,omitempty"`
	// Subject is the canonical subject: Entra object id, IAM role ARN,
	// system:serviceaccount:<ns>:<name>, SPIFFE ID, OIDC sub.
	Subject string `json:"subject"`
}

// Findings summarise the semantic layer's view of a call.
type Findings struct {
	// Scores are detector scores in [0, 1], by detector name. Policy sees
	// the highest (context.findings.max_score) and the detectors that fired,
	// those scoring at least FiredScore (context.findings.detectors).
	Scores map[string]float64 `json:"scores,omitempty"`
	// Kinds are the kinds of finding (e.g. "prompt_injection", "secret").
	Kinds []string `json:"kinds,omitempty"`
}

// FiredScore is the score from which a detector counts as having fired.
const FiredScore = 0.5

// Reason codes of the execution layer.
const (
	CodePermit          = "policy.permit"
	CodeForbid          = "policy.forbid"
	CodeNoPermit        = "policy.no_permit"
	CodeChallenge       = "policy.challenge"
	CodeError           = "policy.error"
	CodeInvalidArgument = "policy.invalid_argument"
	CodeUnavailable     = "policy.unavailable"
)

// Public messages. Agents see them; they never say "not found".
const (
	msgDenied    = "denied by policy"
	msgChallenge = "approval required by policy"
)

// Decision is the execution layer's answer to a Request.
type Decision struct {
	Outcome verdict.Outcome `json:"outcome"`
	// Reasons has one reason, with Layer "execution" and one of the Code*
	// constants; its Policies name the deciding policies.
	Reasons []verdict.Reason `json:"reasons"`
	// Obligations has one approval obligation per approver group when
	// Outcome is Challenge (Detail is the policy's @risk, if any).
	Obligations []verdict.Obligation `json:"obligations,omitempty"`
	// Policies are the ids of the deciding policies: the forbids for a
	// block, the challenges for a challenge, the permits for an allow, the
	// failing policies for an error.
	Policies []string `json:"policies,omitempty"`
	// Version is the policy set's version ("" when no set was loaded).
	Version string `json:"version"`
	// Diagnostics are internal details (evaluation errors, bad arguments).
	// They belong in logs and audit, never in what the agent sees.
	Diagnostics []string `json:"diagnostics,omitempty"`
	// Shadow is the shadow set's decision, when a shadow set is installed.
	Shadow *Decision `json:"shadow,omitempty"`
}

// Code returns the code of the decision's reason.
func (d Decision) Code() string {
	if len(d.Reasons) == 0 {
		return ""
	}
	return d.Reasons[0].Code
}

// Group returns the first approver group, or "".
func (d Decision) Group() string {
	for _, o := range d.Obligations {
		if o.Kind == verdict.ObligationApproval {
			return o.Group
		}
	}
	return ""
}

// Verdict returns the decision as a pipeline verdict.
func (d Decision) Verdict() verdict.Verdict {
	return verdict.Verdict{Outcome: d.Outcome, Reasons: d.Reasons, Obligations: d.Obligations}
}

// Differs reports whether two decisions differ in outcome, deciding
// policies or approver groups: what shadow mode and replay report.
func Differs(a, b Decision) bool {
	if a.Outcome != b.Outcome || a.Code() != b.Code() || len(a.Policies) != len(b.Policies) || len(a.Obligations) != len(b.Obligations) {
		return true
	}
	for i := range a.Policies {
		if a.Policies[i] != b.Policies[i] {
			return true
		}
	}
	for i := range a.Obligations {
		if a.Obligations[i] != b.Obligations[i] {
			return true
		}
	}
	return false
}

func blocked(code, version string, policies []string, diags ...string) Decision {
	return Decision{
		Outcome:     verdict.Block,
		Reasons:     []verdict.Reason{{Layer: verdict.Execution, Code: code, Message: msgDenied, Policies: policies, Outcome: verdict.Block}},
		Policies:    policies,
		Version:     version,
		Diagnostics: diags,
	}
}
