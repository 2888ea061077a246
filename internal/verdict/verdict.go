// Package verdict holds the value types that every layer of the gateway uses
// to say what it decided: an Outcome (allow, challenge, block), the Reasons
// behind it, and the Obligations that come with it.
//
// Invariants:
//   - Outcomes are ordered Allow < Challenge < Block; combining verdicts keeps
//     the most severe outcome and every reason (block > challenge > allow).
//   - The zero Verdict is Allow with no reasons. Callers on the decision path
//     must never turn an error into the zero Verdict: use Deny (Block) instead.
package verdict

import (
	"fmt"
	"strings"
	"time"
)

// Outcome is the three-way result of a decision.
type Outcome uint8

const (
	// Allow lets the request proceed.
	Allow Outcome = iota
	// Challenge holds the request for human approval.
	Challenge
	// Block refuses the request.
	Block
)

// String returns "allow", "challenge" or "block".
func (o Outcome) String() string {
	switch o {
	case Allow:
		return "allow"
	case Challenge:
		return "challenge"
	case Block:
		return "block"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// ParseOutcome is the inverse of Outcome.String.
func ParseOutcome(s string) (Outcome, error) {
	switch strings.ToLower(s) {
	case "allow":
		return Allow, nil
	case "challenge":
		return Challenge, nil
	case "block", "deny":
		return Block, nil
	}
	return Block, fmt.Errorf("unknown outcome %q", s)
}

// MarshalText implements encoding.TextMarshaler.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (o *Outcome) UnmarshalText(b []byte) error {
	v, err := ParseOutcome(string(b))
	if err != nil {
		return err
	}
	*o = v
	return nil
}

// Layer names the layer of the gateway that produced a reason.
type Layer string

// The layers. Core covers protocol handling and mediation that belong to no
// single control layer (malformed requests, pinning, upstream failures).
const (
	Core       Layer = "core"
	Identity   Layer = "identity"
	Semantic   Layer = "semantic"
	Execution  Layer = "execution"
	Governance Layer = "governance"
	Audit      Layer = "audit"
)

// Reason explains one contribution to a verdict.
type Reason struct {
	Layer Layer `json:"layer"`
	// Code is a stable, machine-readable identifier such as
	// "policy.forbid" or "identity.token_expired". Agents see it.
	Code string `json:"code"`
	// Message is a short human-readable explanation. Agents see it, so it
	// must not carry internal detail.
	Message string `json:"message,omitempty"`
	// Policies names the policies (or rules, or detectors) that decided.
	Policies []string `json:"policies,omitempty"`
	// Outcome is what this reason alone asks for.
	Outcome Outcome `json:"outcome"`
	// RetryAfter, when positive, is how many seconds the agent should wait
	// before retrying (rate and concurrency limits, open breakers).
	RetryAfter int64 `json:"retry_after,omitempty"`
}

// Obligation is a duty that comes with a verdict: something the gateway must
// do for the request to proceed as decided.
type Obligation struct {
	// Kind is one of the Obligation* constants.
	Kind string `json:"kind"`
	// Group names an approver group (for ObligationApproval).
	Group string `json:"group,omitempty"`
	// Detail carries kind-specific data (a risk class, a label, ...).
	Detail string `json:"detail,omitempty"`
}

// Obligation kinds.
const (
	ObligationApproval = "approval" // require approval from Group
	ObligationRedact   = "redact"   // redact findings in the payload
	ObligationDatamark = "datamark" // datamark untrusted output
	ObligationLabel    = "label"    // raise the session label named in Detail
)

// Verdict is the combined decision of one or more stages.
type Verdict struct {
	Outcome     Outcome      `json:"outcome"`
	Reasons     []Reason     `json:"reasons,omitempty"`
	Obligations []Obligation `json:"obligations,omitempty"`
	// Pending is set when the call is held for human approval: the
	// agent is told the approval's id and where its status is shown.
	Pending *Pending `json:"pending,omitempty"`
}

// Pending identifies the approval a held call waits for.
type Pending struct {
	// ID is the approval's id; URL its status page.
	ID  string `json:"id"`
	URL string `json:"url,omitempty"`
	// Expires is when the pending request lapses.
	Expires time.Time `json:"expires,omitzero"`
	// Previous and PreviousStatus name the earlier request for the same
	// call that ended undecided (expired, cancelled).
	Previous       string `json:"previous,omitempty"`
	PreviousStatus string `json:"previous_status,omitempty"`
}

// Deny returns a Block verdict with one reason.
func Deny(layer Layer, code, msg string) Verdict {
	return Verdict{Outcome: Block, Reasons: []Reason{{Layer: layer, Code: code, Message: msg, Outcome: Block}}}
}

// Challenged returns a Challenge verdict with one reason and an approval
// obligation for group.
func Challenged(layer Layer, code, msg, group string) Verdict {
	return Verdict{
		Outcome:     Challenge,
		Reasons:     []Reason{{Layer: layer, Code: code, Message: msg, Outcome: Challenge}},
		Obligations: []Obligation{{Kind: ObligationApproval, Group: group}},
	}
}

// Combine merges two verdicts: the more severe outcome wins and all reasons
// and obligations are kept, in order.
func (v Verdict) Combine(w Verdict) Verdict {
	out := Verdict{Outcome: max(v.Outcome, w.Outcome), Pending: v.Pending}
	if w.Pending != nil {
		out.Pending = w.Pending
	}
	if len(v.Reasons)+len(w.Reasons) > 0 {
		out.Reasons = append(append(make([]Reason, 0, len(v.Reasons)+len(w.Reasons)), v.Reasons...), w.Reasons...)
	}
	if len(v.Obligations)+len(w.Obligations) > 0 {
		out.Obligations = append(append(make([]Obligation, 0, len(v.Obligations)+len(w.Obligations)), v.Obligations...), w.Obligations...)
	}
	return out
}

// First returns the first reason whose outcome equals the verdict's, which is
// the one to show an agent. It returns the zero Reason when there is none.
func (v Verdict) First() Reason {
	for _, r := range v.Reasons {
		if r.Outcome == v.Outcome {
			return r
		}
	}
	if len(v.Reasons) > 0 {
		return v.Reasons[0]
	}
	return Reason{}
}

// Label is a tool risk label or a session information-flow label.
type Label string

// Tool risk labels.
const (
	ReadsPrivate     Label = "reads_private"
	UntrustedContent Label = "untrusted_content"
	ExternalSink     Label = "external_sink"
	Destructive      Label = "destructive"
	Financial        Label = "financial"
	Privilege        Label = "privilege"
	PolicyChange     Label = "policy_change"
	BulkExport       Label = "bulk_export"
)

// Session labels (information flow).
const (
	SessionPrivateData      Label = "private_data"
	SessionUntrustedContent Label = "untrusted_content"
)

// ToolLabels lists every tool risk label, for validation.
var ToolLabels = []Label{ReadsPrivate, UntrustedContent, ExternalSink, Destructive, Financial, Privilege, PolicyChange, BulkExport}
