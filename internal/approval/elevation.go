package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Elevation is a PIM-style grant: an approver gives an agent a narrow
// capability — named tools of one server, with argument constraints — for
// a short window. It ends by itself; the same rules of separation of
// duties, quorum, fresh authentication and evidence apply as to call
// approvals.
type Elevation struct {
	Agent string `json:"agent"`
	// Owner is set by Elevate from the agent registry.
	Owner string `json:"owner,omitempty"`
	// User and Task, when set, restrict the elevation to calls made on
	// behalf of that user, within that task.
	User   string `json:"user,omitempty"`
	Task   string `json:"task,omitempty"`
	Server string `json:"server"`
	// Tools are exact tool names (as the upstream knows them); no patterns.
	Tools []string `json:"tools"`
	// Constraints must all hold for a call's arguments.
	Constraints []Constraint `json:"constraints,omitempty"`
	// Risk selects the rule (quorum, approvers, TTL bounds).
	Risk string `json:"risk,omitempty"`
	// Group is the approver group (default: the rule's first Approvers
	// group).
	Group string `json:"group,omitempty"`
	// TTL is the window, at most the rule's ElevationTTL.
	TTL time.Duration `json:"ttl"`
	// MaxUses caps the calls (0: unlimited within the window).
	MaxUses       int    `json:"max_uses,omitempty"`
	ValueCeiling  string `json:"value_ceiling,omitempty"`
	Justification string `json:"justification"`
}

// Constraint restricts one argument of an elevated call. Exactly one of
// Equals, OneOf, Prefix and Max is set.
type Constraint struct {
	// Argument is the argument's path, with dots between object keys
	// ("dataset", "filter.region"). A missing argument fails the
	// constraint.
	Argument string `json:"argument"`
	// Equals: the argument's canonical JSON equals this value's.
	Equals json.RawMessage `json:"equals,omitempty"`
	// OneOf: the argument equals one of these values.
	OneOf []json.RawMessage `json:"one_of,omitempty"`
	// Prefix: the argument is a string that starts with Prefix and has no
	// ".." in it (no path traversal out of the prefix).
	Prefix string `json:"prefix,omitempty"`
	// Max: the argument is a number, or a string holding a decimal, at
	// most Max.
	Max string `json:"max,omitempty"`
}

const (
	maxTools       = 32
	maxConstraints = 32
	maxText        = 4096
)

func (c Constraint) validate() error {
	n := 0
	for _, set := range []bool{len(c.Equals) > 0, len(c.OneOf) > 0, c.Prefix != "", c.Max != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%w: constraint on %q needs exactly one of equals, one_of, prefix, max", ErrInvalid, c.Argument)
	}
	if c.Argument == "" || strings.Contains(c.Argument, "..") || strings.HasPrefix(c.Argument, ".") || strings.HasSuffix(c.Argument, ".") {
		return fmt.Errorf("%w: constraint argument path %q", ErrInvalid, c.Argument)
	}
	if len(c.Equals) > 0 {
		if _, err := Canonicalize(c.Equals); err != nil {
			return fmt.Errorf("%w: constraint on %q: %w", ErrInvalid, c.Argument, err)
		}
	}
	for _, v := range c.OneOf {
		if _, err := Canonicalize(v); err != nil {
			return fmt.Errorf("%w: constraint on %q: %w", ErrInvalid, c.Argument, err)
		}
	}
	if c.Max != "" {
		if _, ok := parseDecimal(c.Max); !ok {
			return fmt.Errorf("%w: constraint on %q: max %q is not a number", ErrInvalid, c.Argument, c.Max)
		}
	}
	return nil
}

// holds reports whether the constraint holds for args.
func (c Constraint) holds(args json.RawMessage) bool {
	v, ok := argument(args, strings.Split(c.Argument, "."))
	if !ok {
		return false
	}
	cv, err := Canonicalize(v)
	if err != nil {
		return false
	}
	equal := func(w json.RawMessage) bool {
		cw, err := Canonicalize(w)
		return err == nil && bytes.Equal(cv, cw)
	}
	switch {
	case len(c.Equals) > 0:
		return equal(c.Equals)
	case len(c.OneOf) > 0:
		for _, w := range c.OneOf {
			if equal(w) {
				return true
			}
		}
		return false
	case c.Prefix != "":
		var s string
		if json.Unmarshal(v, &s) != nil {
			return false
		}
		return strings.HasPrefix(s, c.Prefix) && !strings.Contains(s, "..")
	case c.Max != "":
		text := string(cv)
		var s string
		if json.Unmarshal(v, &s) == nil {
			text = strings.TrimSpace(s)
		}
		cmp, ok := compareDecimal(text, c.Max)
		return ok && cmp <= 0
	}
	return false
}

// argument returns the JSON value at path in an arguments object.
func argument(args json.RawMessage, path []string) (json.RawMessage, bool) {
	cur := args
	for _, key := range path {
		cur = bytes.TrimSpace(cur)
		if len(cur) == 0 || cur[0] != '{' {
			return nil, false
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(cur, &obj); err != nil {
			return nil, false
		}
		v, ok := obj[key]
		if !ok {
			return nil, false
		}
		cur = v
	}
	cur = bytes.TrimSpace(cur)
	if len(cur) == 0 || string(cur) == "null" {
		return nil, false
	}
	return cur, true
}

// validate checks an elevation against its rule.
func (e *Elevation) validate(r Rule) error {
	switch {
	case e.Agent == "" || e.Server == "":
		return fmt.Errorf("%w: an elevation needs an agent and a server", ErrInvalid)
	case len(e.Tools) == 0 || len(e.Tools) > maxTools:
		return fmt.Errorf("%w: an elevation names 1 to %d tools", ErrInvalid, maxTools)
	case len(e.Constraints) > maxConstraints:
		return fmt.Errorf("%w: at most %d constraints", ErrInvalid, maxConstraints)
	case strings.TrimSpace(e.Justification) == "":
		return fmt.Errorf("%w: an elevation needs a justification", ErrInvalid)
	case len(e.Justification) > maxText:
		return fmt.Errorf("%w: the justification is limited to %d bytes", ErrInvalid, maxText)
	case e.TTL <= 0:
		return fmt.Errorf("%w: an elevation needs a positive ttl", ErrInvalid)
	case e.TTL > r.ElevationTTL:
		return fmt.Errorf("%w: ttl %s exceeds the %s allowed for risk class %q", ErrWiden, e.TTL, r.ElevationTTL, e.Risk)
	case e.MaxUses < 0:
		return fmt.Errorf("%w: max_uses must not be negative", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, t := range e.Tools {
		if t == "" || strings.ContainsAny(t, "*?") {
			return fmt.Errorf("%w: tool names are exact (no patterns): %q", ErrInvalid, t)
		}
		if seen[t] {
			return fmt.Errorf("%w: tool %q named twice", ErrInvalid, t)
		}
		seen[t] = true
	}
	for _, c := range e.Constraints {
		if err := c.validate(); err != nil {
			return err
		}
	}
	if e.ValueCeiling != "" {
		if err := validDecimal(e.ValueCeiling); err != nil {
			return err
		}
	}
	return nil
}

// Call describes one call for matching against grants.
type Call struct {
	Server        string          `json:"server"`
	Tool          string          `json:"tool"`
	Arguments     json.RawMessage `json:"arguments,omitempty"`
	Agent         string          `json:"agent"`
	User          string          `json:"user,omitempty"`
	Task          string          `json:"task,omitempty"`
	PolicyVersion string          `json:"policy_version,omitempty"`
}

// Hash returns the call's CallHash.
func (c Call) Hash() (string, error) {
	return CallHash(c.Server, c.Tool, c.Arguments, c.Agent, c.User, c.Task, c.PolicyVersion)
}

// Matches reports whether the elevation covers call c.
func (e *Elevation) Matches(c Call) bool {
	if e.Agent != c.Agent || e.Server != c.Server || !slices.Contains(e.Tools, c.Tool) {
		return false
	}
	if (e.User != "" && e.User != c.User) || (e.Task != "" && e.Task != c.Task) {
		return false
	}
	for _, k := range e.Constraints {
		if !k.holds(c.Arguments) {
			return false
		}
	}
	return true
}

// Elevate grants agent e.Agent the capability e describes, on the
// authority of approver by, who counts as its first approval: with a
// quorum of one the elevation is in force at once; otherwise it waits, like
// a call approval, for more approvers (Decide). The same rules apply as to
// call approvals — separation of duties (by is not the agent nor, unless
// the rule allows, its owner), group membership, fresh authentication —
// and the window may not exceed the rule's ElevationTTL.
func (m *Manager) Elevate(ctx context.Context, e Elevation, by Approver) (Approval, error) {
	if m.cfg.AgentOwner == nil {
		return Approval{}, fmt.Errorf("%w: elevations need the agent registry", ErrInvalid)
	}
	r := m.rule(e.Risk)
	if err := e.validate(r); err != nil {
		return Approval{}, err
	}
	owner, err := m.cfg.AgentOwner(ctx, e.Agent)
	if err != nil {
		return Approval{}, fmt.Errorf("looking up the owner of agent %s: %w", e.Agent, err)
	}
	e.Owner = owner
	if e.Group == "" {
		if len(r.Approvers) == 0 {
			return Approval{}, fmt.Errorf("%w (risk class %q)", ErrNoApprovers, e.Risk)
		}
		e.Group = r.Approvers[0]
	} else if len(r.Approvers) > 0 && !slices.Contains(r.Approvers, e.Group) {
		return Approval{}, fmt.Errorf("%w: group %s may not approve risk class %q", ErrNotEligible, e.Group, e.Risk)
	}
	now := m.now()
	a := Approval{ID: newID("apr_"), Kind: KindElevation, Status: Pending, Elevation: &e,
		Requirements: []Requirement{{Group: e.Group, Risk: e.Risk, Quorum: r.Quorum}},
		Created:      now, Expires: now.Add(r.PendingTTL), Updated: now, Version: 1}
	// Check the approver before anything is recorded.
	if err := basicChecks(&a, by); err != nil {
		return Approval{}, err
	}
	if _, err := m.check(&a, by, now); err != nil {
		return Approval{}, err
	}
	if err := m.record(ctx, &a, &change{kind: changeCreated, actor: &by, comment: e.Justification}); err != nil {
		return Approval{}, err
	}
	if _, _, err := m.cfg.Store.Create(ctx, a); err != nil {
		m.recordQuietly(ctx, &a, &change{kind: changeSuperseded, err: err})
		return Approval{}, fmt.Errorf("storing elevation: %w", err)
	}
	m.met.requests.WithLabelValues("elevation").Inc()
	m.pendingChanged()
	out, err := m.Decide(ctx, a.ID, by, Decision{Vote: Approve, Comment: e.Justification})
	if err != nil {
		return out, err
	}
	if out.Status == Pending {
		m.notify(EventElevated, &out)
	}
	return out, nil
}

// MatchElevation looks for an elevation in force that covers call c and,
// if there is one, consumes one use of it (atomically, recorded in the
// audit log, like Consume). The gateway calls it for a challenged call
// before asking for a call approval. ErrNoGrant means none covers the call.
func (m *Manager) MatchElevation(ctx context.Context, c Call, use Use) (Grant, error) {
	args, err := Canonicalize(c.Arguments)
	if err != nil {
		return Grant{}, err
	}
	c.Arguments = args
	as, err := m.cfg.Store.List(ctx, Query{Kind: KindElevation, Status: Approved, Agent: c.Agent, Limit: 1000})
	if err != nil {
		return Grant{}, err
	}
	now := m.now()
	use.Server, use.Tool, use.ArgumentsHash = c.Server, c.Tool, sha256Hex(args)
	for _, a := range as {
		if a.Elevation == nil || !a.Elevation.Matches(c) || due(&a, now) {
			continue
		}
		g, err := m.use(ctx, a, use)
		if err == nil {
			return g, nil
		}
		if errors.Is(err, ErrAudit) || errors.Is(err, ErrValueCeiling) {
			return Grant{}, err
		}
		// Used up or ended meanwhile: try the next one.
	}
	return Grant{}, ErrNoGrant
}
