package approval

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Status is the state of an approval. Pending and Approved are open; every
// other status is final.
type Status string

// Statuses.
const (
	// Pending: waiting for approvers.
	Pending Status = "pending"
	// Approved: the grant is in force (within its window, uses left).
	Approved Status = "approved"
	// Denied: an approver vetoed the request.
	Denied Status = "denied"
	// Expired: no decision before the pending deadline.
	Expired Status = "expired"
	// Cancelled: withdrawn before a decision (kill switch, agent retired,
	// operator).
	Cancelled Status = "cancelled"
	// Revoked: the grant was revoked before it ended.
	Revoked Status = "revoked"
	// Used: every use of the grant was consumed.
	Used Status = "used"
	// Lapsed: the grant's window ended.
	Lapsed Status = "lapsed"
)

// Open reports whether s is Pending or Approved.
func (s Status) Open() bool { return s == Pending || s == Approved }

// Kind says what an approval is for.
type Kind string

// Kinds.
const (
	// KindCall approves one exact call, bound to its CallHash.
	KindCall Kind = "call"
	// KindElevation grants an agent a narrow capability (named tools with
	// argument constraints) for a short window, PIM-style.
	KindElevation Kind = "elevation"
)

// Vote is an approver's decision.
type Vote string

// Votes.
const (
	Approve Vote = "approve"
	Deny    Vote = "deny"
)

// Evidence is the snapshot an approver sees and the record keeps: who asks,
// for whom, to do exactly what, and why it was held. The gateway fills it
// from the held request; Request canonicalizes Arguments and sets
// ArgumentsHash and CallHash (values given for them are replaced).
type Evidence struct {
	// Correlation is the correlation id of the held call.
	Correlation string `json:"correlation,omitempty"`
	Agent       string `json:"agent"`
	// Owner is the agent's accountable human owner (from the registry).
	Owner string `json:"owner,omitempty"`
	// User is the human on whose behalf the agent acts, when known.
	User string `json:"user,omitempty"`
	Task string `json:"task,omitempty"`
	// AuthMethod is how the agent authenticated (verifier kind).
	AuthMethod string `json:"auth_method,omitempty"`
	Server     string `json:"server"`
	// Tool is the tool's name as the upstream server knows it; Exposed the
	// name the agent used.
	Tool    string `json:"tool"`
	Exposed string `json:"exposed,omitempty"`
	// Arguments are the call's arguments in canonical form.
	Arguments     json.RawMessage `json:"arguments"`
	ArgumentsHash string          `json:"arguments_hash"`
	CallHash      string          `json:"call_hash"`
	PolicyVersion string          `json:"policy_version,omitempty"`
	// Value is the call's value (an amount) as a decimal, when a value rule
	// names one; a grant's value ceiling is compared with it.
	Value string `json:"value,omitempty"`
	// Obligations are the verdict's approval obligations (group and risk
	// class); Reasons the policies and semantic findings behind them.
	Obligations []verdict.Obligation `json:"obligations,omitempty"`
	Reasons     []verdict.Reason     `json:"reasons,omitempty"`
	// Labels are the tool's risk labels; SessionLabels the session's
	// information-flow labels when the call was held.
	Labels        []verdict.Label `json:"labels,omitempty"`
	SessionLabels []verdict.Label `json:"session_labels,omitempty"`
	Time          time.Time       `json:"time"`
}

// Approver is an authenticated human who decides. The gateway builds it
// from how the person authenticated: the admin API with the admin
// credential (Method "admin-token", Subject the name the operator gave),
// later the web console with OIDC (Method "oidc", AuthTime and ACR from the
// ID token).
type Approver struct {
	Subject string   `json:"subject"`
	Groups  []string `json:"groups,omitempty"`
	// Method is how the approver authenticated: MethodAdminToken or
	// MethodOIDC.
	Method string `json:"method"`
	// Operator names the credential that vouched for Subject (the admin
	// credential's holder), when it is not Subject itself.
	Operator string `json:"operator,omitempty"`
	// Issuer is the identity provider (OIDC issuer).
	Issuer string `json:"issuer,omitempty"`
	// AuthTime is when the approver last authenticated interactively
	// (OIDC auth_time); zero when unknown. Rules with FreshAuth need it.
	AuthTime time.Time `json:"auth_time,omitzero"`
	// ACR is the authentication context class reached (OIDC acr).
	ACR string `json:"acr,omitempty"`
	// Human must be true: non-human principals never approve.
	Human bool `json:"human"`
}

// Approver methods.
const (
	MethodAdminToken = "admin-token"
	MethodOIDC       = "oidc"
)

func (a Approver) inGroup(g string) bool { return slices.Contains(a.Groups, g) }

// Decision is what an approver submits. An approver may narrow the grant
// (a shorter TTL, fewer uses, a value ceiling) but never widen it: a TTL or
// a number of uses above the risk class's rule is refused (ErrWiden).
type Decision struct {
	Vote    Vote   `json:"vote"`
	Comment string `json:"comment,omitempty"`
	// Justification is required for break-glass.
	Justification string `json:"justification,omitempty"`
	// BreakGlass self-approves as a member of the break-glass group.
	BreakGlass bool `json:"break_glass,omitempty"`
	// TTL narrows the grant window (0: the rule's GrantTTL).
	TTL time.Duration `json:"ttl,omitempty"`
	// MaxUses narrows the number of uses (0: the rule's MaxUses).
	MaxUses int `json:"max_uses,omitempty"`
	// ValueCeiling caps the value of the approved call(s), a decimal.
	ValueCeiling string `json:"value_ceiling,omitempty"`
}

// Review is one approver's recorded decision.
type Review struct {
	Approver      Approver `json:"approver"`
	Vote          Vote     `json:"vote"`
	Comment       string   `json:"comment,omitempty"`
	Justification string   `json:"justification,omitempty"`
	BreakGlass    bool     `json:"break_glass,omitempty"`
	// Counted lists the requirement groups the review counted for.
	Counted      []string      `json:"counted,omitempty"`
	TTL          time.Duration `json:"ttl,omitempty"`
	MaxUses      int           `json:"max_uses,omitempty"`
	ValueCeiling string        `json:"value_ceiling,omitempty"`
	Time         time.Time     `json:"time"`
}

// Requirement is one approval obligation: Quorum distinct approvers of
// Group, under the rule of risk class Risk.
type Requirement struct {
	Group  string `json:"group"`
	Risk   string `json:"risk,omitempty"`
	Quorum int    `json:"quorum"`
	// Approvals lists the subjects whose approvals counted.
	Approvals []string `json:"approvals,omitempty"`
}

// Met reports whether the requirement has its quorum.
func (r Requirement) Met() bool { return len(r.Approvals) >= r.Quorum }

// Grant is what an approval authorises once approved: one exact call
// (CallHash) or, for an elevation, the calls its Elevation matches; within
// [Start, Expires); at most MaxUses times (0: unlimited, elevations only);
// each with a value at most ValueCeiling when set.
type Grant struct {
	Approval     string    `json:"approval"`
	Kind         Kind      `json:"kind"`
	Agent        string    `json:"agent"`
	CallHash     string    `json:"call_hash,omitempty"`
	Start        time.Time `json:"start"`
	Expires      time.Time `json:"expires"`
	MaxUses      int       `json:"max_uses"`
	Uses         int       `json:"uses"`
	ValueCeiling string    `json:"value_ceiling,omitempty"`
	BreakGlass   bool      `json:"break_glass,omitempty"`
	// Revoked and RevokedBy are set when the grant was revoked.
	Revoked   time.Time `json:"revoked,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
}

// Use is one consumption of a grant.
type Use struct {
	// Seq numbers the uses of a grant from 1.
	Seq int `json:"seq"`
	// Correlation is the correlation id of the call that used the grant.
	Correlation string `json:"correlation,omitempty"`
	Value       string `json:"value,omitempty"`
	// Server, Tool and ArgumentsHash describe the call (for elevations,
	// whose calls differ).
	Server        string    `json:"server,omitempty"`
	Tool          string    `json:"tool,omitempty"`
	ArgumentsHash string    `json:"arguments_hash,omitempty"`
	Time          time.Time `json:"time"`
}

// Approval is an approval request and, once approved, its grant.
type Approval struct {
	ID     string `json:"id"`
	Kind   Kind   `json:"kind"`
	Status Status `json:"status"`
	// Reason is the public code of a final status ("approval.denied", ...).
	Reason string `json:"reason,omitempty"`
	// Evidence is set for KindCall, Elevation for KindElevation.
	Evidence     *Evidence     `json:"evidence,omitempty"`
	Elevation    *Elevation    `json:"elevation,omitempty"`
	Requirements []Requirement `json:"requirements"`
	Reviews      []Review      `json:"reviews,omitempty"`
	Grant        *Grant        `json:"grant,omitempty"`
	Uses         []Use         `json:"uses,omitempty"`
	BreakGlass   bool          `json:"break_glass,omitempty"`
	// ReviewItem is the after-the-fact review item of a break-glass
	// approval.
	ReviewItem string    `json:"review_item,omitempty"`
	Created    time.Time `json:"created"`
	// Expires is the pending deadline.
	Expires time.Time `json:"expires"`
	Updated time.Time `json:"updated"`
	// Version counts the stored changes (optimistic concurrency); it is
	// not part of the recorded state.
	Version int64 `json:"-"`
}

// Agent returns the agent the approval is for.
func (a *Approval) Agent() string {
	switch {
	case a.Evidence != nil:
		return a.Evidence.Agent
	case a.Elevation != nil:
		return a.Elevation.Agent
	}
	return ""
}

// Owner returns the agent's owner as recorded.
func (a *Approval) Owner() string {
	switch {
	case a.Evidence != nil:
		return a.Evidence.Owner
	case a.Elevation != nil:
		return a.Elevation.Owner
	}
	return ""
}

// User returns the on-behalf-of user as recorded.
func (a *Approval) User() string {
	switch {
	case a.Evidence != nil:
		return a.Evidence.User
	case a.Elevation != nil:
		return a.Elevation.User
	}
	return ""
}

func (a *Approval) task() string {
	switch {
	case a.Evidence != nil:
		return a.Evidence.Task
	case a.Elevation != nil:
		return a.Elevation.Task
	}
	return ""
}

// Server returns the upstream server.
func (a *Approval) Server() string {
	switch {
	case a.Evidence != nil:
		return a.Evidence.Server
	case a.Elevation != nil:
		return a.Elevation.Server
	}
	return ""
}

// Tools returns the tool (or the elevation's tools).
func (a *Approval) Tools() []string {
	switch {
	case a.Evidence != nil:
		return []string{a.Evidence.Tool}
	case a.Elevation != nil:
		return a.Elevation.Tools
	}
	return nil
}

// CallHash returns the bound call hash (empty for elevations).
func (a *Approval) CallHash() string {
	if a.Evidence != nil {
		return a.Evidence.CallHash
	}
	return ""
}

// Risks returns the risk classes of the requirements.
func (a *Approval) Risks() []string {
	var out []string
	for _, r := range a.Requirements {
		if r.Risk != "" && !slices.Contains(out, r.Risk) {
			out = append(out, r.Risk)
		}
	}
	return out
}

// Public reason codes of final statuses, as agents see them.
const (
	CodePending   = "approval.pending"
	CodeGranted   = "approval.granted"
	CodeDenied    = "approval.denied"
	CodeExpired   = "approval.expired"
	CodeCancelled = "approval.cancelled"
	CodeRevoked   = "approval.revoked"
	CodeUsed      = "approval.used"
	CodeLapsed    = "approval.lapsed"
)

var statusMessages = map[Status]struct{ code, msg string }{
	Pending:   {CodePending, "approval pending"},
	Approved:  {CodeGranted, "approved"},
	Denied:    {CodeDenied, "the approval request was denied"},
	Expired:   {CodeExpired, "the approval request expired without a decision"},
	Cancelled: {CodeCancelled, "the approval request was cancelled"},
	Revoked:   {CodeRevoked, "the approval was revoked"},
	Used:      {CodeUsed, "the approval was already used"},
	Lapsed:    {CodeLapsed, "the approval's time window ended"},
}

// Verdict tells the agent where its request stands: Allow when approved,
// Challenge (with the approval id in the message) while pending, Block
// with the reason otherwise. Messages are public.
func (a *Approval) Verdict() verdict.Verdict {
	sm, ok := statusMessages[a.Status]
	if !ok {
		return verdict.Deny(verdict.Governance, "approval.unknown", "the approval is in an unknown state")
	}
	switch a.Status {
	case Approved:
		return verdict.Verdict{Outcome: verdict.Allow, Reasons: []verdict.Reason{{Layer: verdict.Governance, Code: sm.code, Message: "approved by " + strings.Join(a.approvers(), ", "), Outcome: verdict.Allow}}}
	case Pending:
		v := verdict.Verdict{Outcome: verdict.Challenge, Reasons: []verdict.Reason{{Layer: verdict.Governance, Code: sm.code, Message: sm.msg + ": " + a.ID, Outcome: verdict.Challenge}}}
		for _, r := range a.Requirements {
			v.Obligations = append(v.Obligations, verdict.Obligation{Kind: verdict.ObligationApproval, Group: r.Group, Detail: r.Risk})
		}
		return v
	}
	return verdict.Deny(verdict.Governance, sm.code, sm.msg+": "+a.ID)
}

func (a *Approval) approvers() []string {
	var out []string
	for _, r := range a.Reviews {
		if r.Vote == Approve {
			out = append(out, r.Approver.Subject)
		}
	}
	return out
}

// Errors callers branch on. Their messages are public: the admin API and
// the CLI show them to approvers, and Refusal maps them for agents.
var (
	ErrNotFound = errors.New("no such approval")
	// ErrInvalid marks a malformed request, evidence or decision.
	ErrInvalid = errors.New("invalid approval request")
	// ErrNoApprovers: the risk class names no approver group.
	ErrNoApprovers = errors.New("no approver group is configured for this request")
	// ErrNotPending: the approval was already decided.
	ErrNotPending = errors.New("the approval is not pending")
	// ErrSeparation: separation of duties forbids this approver (the
	// requesting agent, its owner, the on-behalf-of user).
	ErrSeparation = errors.New("separation of duties: this approver may not decide this request")
	// ErrNotHuman: only humans approve.
	ErrNotHuman = errors.New("only authenticated humans may approve")
	// ErrNotEligible: the approver is in none of the required groups.
	ErrNotEligible = errors.New("the approver is not in a required approver group")
	// ErrAuthTooWeak: the risk class demands fresh or stronger
	// authentication than the approver's.
	ErrAuthTooWeak = errors.New("this risk class requires fresh strong authentication; this approval does not count")
	// ErrAlreadyReviewed: one review per approver.
	ErrAlreadyReviewed = errors.New("the approver has already reviewed this request")
	// ErrWiden: a decision may narrow the grant, never widen it.
	ErrWiden = errors.New("an approver cannot widen the request")
	// ErrBreakGlass: break-glass is not configured or not allowed for the
	// approver, or the justification is missing.
	ErrBreakGlass = errors.New("break-glass refused")
	// ErrAudit: the audit record of a change failed; nothing changed.
	ErrAudit = errors.New("recording the change in the audit log failed")
	// ErrConflict: a concurrent change won (stores return it; the Manager
	// retries).
	ErrConflict = errors.New("concurrent change of the approval")

	// Grant errors (Consume, MatchElevation).
	ErrNoGrant         = errors.New("no approval for this call")
	ErrApprovalPending = errors.New("the approval is still pending")
	ErrDenied          = errors.New("the approval was denied")
	ErrExpired         = errors.New("the approval request expired")
	ErrCancelled       = errors.New("the approval request was cancelled")
	ErrGrantUsed       = errors.New("the approval was already used")
	ErrGrantExpired    = errors.New("the approval's time window ended")
	ErrGrantRevoked    = errors.New("the approval was revoked")
	ErrValueCeiling    = errors.New("the call's value exceeds the approved ceiling")
)

// statusError returns the error a grant in status s gives Consume.
func statusError(s Status) error {
	switch s {
	case Pending:
		return ErrApprovalPending
	case Denied:
		return ErrDenied
	case Expired:
		return ErrExpired
	case Cancelled:
		return ErrCancelled
	case Used:
		return ErrGrantUsed
	case Lapsed:
		return ErrGrantExpired
	case Revoked:
		return ErrGrantRevoked
	}
	return ErrNoGrant
}

// Refusal maps an error of Consume, MatchElevation or Request to the
// verdict the agent gets: every error blocks (an unknown error with a
// generic message), with a stable code.
func Refusal(err error) verdict.Verdict {
	for _, c := range []struct {
		err  error
		code string
	}{
		{ErrNoGrant, "approval.none"},
		{ErrApprovalPending, CodePending},
		{ErrDenied, CodeDenied},
		{ErrExpired, CodeExpired},
		{ErrCancelled, CodeCancelled},
		{ErrGrantUsed, CodeUsed},
		{ErrGrantExpired, CodeLapsed},
		{ErrGrantRevoked, CodeRevoked},
		{ErrValueCeiling, "approval.value_ceiling"},
		{ErrNoApprovers, "approval.no_approvers"},
		{ErrInvalid, "approval.invalid"},
		{ErrNotCanonicalizable, "approval.arguments"},
		{ErrAudit, "audit.unavailable"},
	} {
		if errors.Is(err, c.err) {
			return verdict.Deny(verdict.Governance, c.code, c.err.Error())
		}
	}
	return verdict.Deny(verdict.Governance, "approval.unavailable", "the approval service could not decide; the request was refused")
}

// compareDecimal compares two non-negative decimals (JSON number syntax or
// plain). ok is false when either does not parse.
func compareDecimal(a, b string) (int, bool) {
	x, ok1 := parseDecimal(a)
	y, ok2 := parseDecimal(b)
	if !ok1 || !ok2 {
		return 0, false
	}
	return x.Cmp(y), true
}

// decimalSyntax is JSON number syntax with an exponent of at most three
// digits.
var decimalSyntax = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?$`)

func parseDecimal(s string) (*big.Rat, bool) {
	if len(s) > 64 || !decimalSyntax.MatchString(s) {
		return nil, false
	}
	return new(big.Rat).SetString(s)
}

func validDecimal(s string) error {
	r, ok := parseDecimal(s)
	if !ok {
		return fmt.Errorf("%w: %q is not a decimal number", ErrInvalid, s)
	}
	if r.Sign() < 0 {
		return fmt.Errorf("%w: %q is negative", ErrInvalid, s)
	}
	return nil
}
