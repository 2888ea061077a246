package approval

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Rule governs approvals of one risk class. The zero value of each field
// means its default.
type Rule struct {
	// Quorum is how many distinct approvers of the group must approve.
	// Default 1.
	Quorum int
	// Approvers are the approver groups used when the challenge names none
	// (semantic-layer challenges, elevations). Default: none, and such a
	// request is refused (ErrNoApprovers).
	Approvers []string
	// OwnerMayApprove lets the agent's owner approve (default false: the
	// owner may deny but not approve).
	OwnerMayApprove bool
	// UserMayApprove lets the human on whose behalf the agent acts approve
	// (default false).
	UserMayApprove bool
	// FreshAuth, when positive, requires the approver to have
	// authenticated interactively at most this long ago (OIDC max_age /
	// auth_time). Approvals without it do not count; admin-token approvals
	// never satisfy it.
	FreshAuth time.Duration
	// ACR, when set, requires the approver's authentication context class
	// to be one of these (OIDC acr_values; Entra authentication contexts).
	ACR []string
	// PendingTTL is how long a request waits for a decision. Default 15m.
	PendingTTL time.Duration
	// GrantTTL is how long an approved call may be made. Default 5m.
	GrantTTL time.Duration
	// MaxUses is how many identical calls one approval allows. Default 1.
	MaxUses int
	// ElevationTTL caps the window of an elevation. Default 1h.
	ElevationTTL time.Duration
}

func (r Rule) withDefaults() Rule {
	if r.Quorum <= 0 {
		r.Quorum = 1
	}
	if r.PendingTTL <= 0 {
		r.PendingTTL = 15 * time.Minute
	}
	if r.GrantTTL <= 0 {
		r.GrantTTL = 5 * time.Minute
	}
	if r.MaxUses <= 0 {
		r.MaxUses = 1
	}
	if r.ElevationTTL <= 0 {
		r.ElevationTTL = time.Hour
	}
	return r
}

// BreakGlass lets members of one group self-approve in an emergency.
type BreakGlass struct {
	// Group may break the glass; empty disables break-glass.
	Group string
	// TTL is the grant window of a break-glass approval. Default 10m.
	TTL time.Duration
	// MinJustification is the minimum length of the mandatory
	// justification. Default 20 characters.
	MinJustification int
}

// Config configures a Manager. The zero value of each optional field means
// its default.
type Config struct {
	// Store keeps approvals. Required.
	Store Store
	// Audit appends an event to the audit log and returns when it is
	// durable. Every state change is recorded first; when Audit fails the
	// change is not made (ErrAudit). Required.
	Audit func(ctx context.Context, e *audit.Event) (audit.Receipt, error)
	// Notifiers receive notifications (Run delivers them).
	Notifiers []Notifier
	// Rules per risk class (the obligation's Detail, the policy's @risk).
	// Rules["default"] applies to classes without a rule of their own;
	// without it, the zero Rule (with defaults) applies.
	Rules map[string]Rule
	// BreakGlass configures emergency self-approval.
	BreakGlass BreakGlass
	// AgentOwner returns an agent's owner from the registry; Elevate needs
	// it (separation of duties). Nil disables elevations.
	AgentOwner func(ctx context.Context, agent string) (string, error)
	// PublicURL is the gateway's external base URL ("https://gw.example");
	// approval pages are PublicURL + "/approvals/" + id.
	PublicURL string
	// AuditReader reads records and proofs for evidence bundles. Nil
	// disables bundles.
	AuditReader AuditReader
	// VerifierKey is the audit log's checkpoint verifier key, written into
	// bundles (informational: verify with a key obtained out of band).
	VerifierKey string
	// SweepInterval is how often Run expires pending requests and lapsed
	// grants. Default 5s.
	SweepInterval time.Duration
	// PollInterval is how often Wait re-reads an approval that another
	// replica may decide. Default 1s.
	PollInterval time.Duration
	// NotifyAttempts is how many times a notification is tried. Default 5.
	NotifyAttempts int
	// NotifyBackoff is the first delay between attempts, doubled each time
	// up to NotifyMaxBackoff. Defaults 1s and 1m.
	NotifyBackoff, NotifyMaxBackoff time.Duration
	// NotifyQueue bounds the notifications waiting for delivery. Default
	// 1024; when full, the delivery is recorded as failed.
	NotifyQueue int
	// Pending, when set, receives the number of pending requests in the
	// Store, all replicas' together (the gateway's
	// gatehouse_approvals_pending): when Run starts, after every sweep —
	// so on every replica it is right within SweepInterval, whichever
	// replica made the change — and soon after this Manager creates or
	// settles a request. Run makes the calls, from one goroutine.
	Pending    func(n int)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Manager runs the approval workflow. It is safe for concurrent use; Run
// must be running for notifications to be delivered and for expiry to be
// swept (Wait, Consume and Request also enforce deadlines themselves).
type Manager struct {
	cfg       Config
	log       *slog.Logger
	idLocks   [64]sync.Mutex
	hashLocks [64]sync.Mutex
	waitMu    sync.Mutex
	waiters   map[string]*waiter
	queue     chan job
	met       *metrics
	// recount asks Run to count the pending requests (Config.Pending).
	recount chan struct{}
}

type waiter struct {
	ch chan struct{}
	n  int
}

type job struct {
	n  Notification
	to Notifier
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("approval: a store is required")
	}
	if cfg.Audit == nil {
		return nil, errors.New("approval: an audit function is required")
	}
	for class, r := range cfg.Rules {
		if r.Quorum < 0 || r.MaxUses < 0 || r.FreshAuth < 0 || r.PendingTTL < 0 || r.GrantTTL < 0 || r.ElevationTTL < 0 {
			return nil, fmt.Errorf("approval: rule %q: negative quorum, uses or duration", class)
		}
	}
	if cfg.BreakGlass.TTL < 0 || cfg.BreakGlass.MinJustification < 0 {
		return nil, errors.New("approval: break-glass: negative ttl or justification length")
	}
	if cfg.BreakGlass.TTL == 0 {
		cfg.BreakGlass.TTL = 10 * time.Minute
	}
	if cfg.BreakGlass.MinJustification == 0 {
		cfg.BreakGlass.MinJustification = 20
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.NotifyAttempts <= 0 {
		cfg.NotifyAttempts = 5
	}
	if cfg.NotifyBackoff <= 0 {
		cfg.NotifyBackoff = time.Second
	}
	if cfg.NotifyMaxBackoff <= 0 {
		cfg.NotifyMaxBackoff = time.Minute
	}
	if cfg.NotifyQueue <= 0 {
		cfg.NotifyQueue = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	m := &Manager{cfg: cfg, log: cfg.Logger, waiters: map[string]*waiter{}, queue: make(chan job, cfg.NotifyQueue), recount: make(chan struct{}, 1)}
	m.met = newMetrics(cfg.Registerer)
	return m, nil
}

func (m *Manager) now() time.Time { return m.cfg.Now().UTC() }

// rule returns the rule of a risk class, with defaults.
func (m *Manager) rule(risk string) Rule {
	if r, ok := m.cfg.Rules[risk]; ok {
		return r.withDefaults()
	}
	return m.cfg.Rules["default"].withDefaults()
}

// StatusURL returns the approval page of id: PublicURL + "/approvals/" + id
// (a path alone when PublicURL is empty).
func (m *Manager) StatusURL(id string) string { return m.cfg.PublicURL + "/approvals/" + id }

func newID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

func stripe(locks *[64]sync.Mutex, key string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &locks[h.Sum32()%64]
}

// record appends the audit event of ch on a; an error is ErrAudit.
func (m *Manager) record(ctx context.Context, a *Approval, ch *change) error {
	if _, err := m.cfg.Audit(ctx, event(a, ch)); err != nil {
		m.met.auditFailures.Inc()
		m.log.Error("recording an approval change failed; not applying it", "approval", a.ID, "change", ch.kind, "err", err)
		return fmt.Errorf("%w: %w", ErrAudit, err)
	}
	return nil
}

// recordQuietly appends a record whose failure cannot be undone (refused
// attempts, superseded changes, deliveries): a failure is logged.
func (m *Manager) recordQuietly(ctx context.Context, a *Approval, ch *change) {
	if _, err := m.cfg.Audit(ctx, event(a, ch)); err != nil {
		m.met.auditFailures.Inc()
		m.log.Error("recording an approval event failed", "approval", a.ID, "change", ch.kind, "err", err)
	}
}

// apply runs one audited state change of approval id: f edits a copy of
// the stored approval and describes the change (nil: nothing to do); the
// change is recorded in the audit log, then stored with a compare-and-swap
// on the version. When the swap loses a race, a "superseded" record with
// the actual state follows and f runs again on the new state.
func (m *Manager) apply(ctx context.Context, id string, f func(a *Approval, now time.Time) (*change, error)) (Approval, error) {
	mu := stripe(&m.idLocks, id)
	mu.Lock()
	defer mu.Unlock()
	for attempt := 0; ; attempt++ {
		cur, err := m.cfg.Store.Get(ctx, id)
		if err != nil {
			return Approval{}, err
		}
		now := m.now()
		next := clone(cur)
		ch, err := f(&next, now)
		if err != nil || ch == nil {
			return cur, err
		}
		next.Version = cur.Version + 1
		next.Updated = now
		if err := m.record(ctx, &next, ch); err != nil {
			return cur, err
		}
		err = m.cfg.Store.Update(ctx, next, cur.Version)
		if err == nil {
			m.changed(&next, ch)
			return next, nil
		}
		if actual, gerr := m.cfg.Store.Get(ctx, id); gerr == nil {
			m.recordQuietly(ctx, &actual, &change{kind: changeSuperseded, err: err})
		}
		if !errors.Is(err, ErrConflict) || attempt >= 3 {
			return cur, fmt.Errorf("storing approval %s: %w", id, err)
		}
	}
}

// changed wakes waiters and sends notifications after a stored change.
func (m *Manager) changed(a *Approval, ch *change) {
	m.wake(a.ID)
	m.pendingChanged()
	if ch.notify != "" {
		m.notify(ch.notify, a)
	}
	if ch.kind != changeUsed && ch.kind != changeReviewed {
		m.met.transitions.WithLabelValues(string(a.Status)).Inc()
	}
}

// requirements turns a verdict's approval obligations into requirements.
func (m *Manager) requirements(obls []verdict.Obligation) ([]Requirement, error) {
	var out []Requirement
	add := func(group, risk string) {
		for _, r := range out {
			if r.Group == group && r.Risk == risk {
				return
			}
		}
		out = append(out, Requirement{Group: group, Risk: risk, Quorum: m.rule(risk).Quorum})
	}
	for _, o := range obls {
		if o.Kind != verdict.ObligationApproval {
			continue
		}
		if o.Group != "" {
			add(o.Group, o.Detail)
			continue
		}
		groups := m.rule(o.Detail).Approvers
		if len(groups) == 0 {
			return nil, fmt.Errorf("%w (risk class %q)", ErrNoApprovers, o.Detail)
		}
		add(groups[0], o.Detail)
	}
	if len(out) == 0 {
		groups := m.rule("").Approvers
		if len(groups) == 0 {
			return nil, ErrNoApprovers
		}
		add(groups[0], "")
	}
	return out, nil
}

// Request returns the approval for the call in ev: the open one (pending,
// or approved with uses left) bound to the same call hash if there is one;
// a denial of the identical call made less than the pending TTL ago (so
// that the retry learns why); else a new pending approval, recorded in the audit log and announced to
// the notifiers. It canonicalizes ev.Arguments and sets ArgumentsHash and
// CallHash. Arguments that do not canonicalize are refused
// (ErrNotCanonicalizable), as is a challenge whose risk class names no
// approver group (ErrNoApprovers).
func (m *Manager) Request(ctx context.Context, ev Evidence) (Approval, error) {
	if ev.Agent == "" || ev.Server == "" || ev.Tool == "" {
		return Approval{}, fmt.Errorf("%w: evidence needs an agent, a server and a tool", ErrInvalid)
	}
	if ev.Value != "" {
		if err := validDecimal(ev.Value); err != nil {
			return Approval{}, err
		}
	}
	args, err := Canonicalize(ev.Arguments)
	if err != nil {
		return Approval{}, err
	}
	ev.Arguments = args
	ev.ArgumentsHash = sha256Hex(args)
	ev.CallHash = sha256Hex(callDocument(ev.Server, ev.Tool, args, ev.Agent, ev.User, ev.Task, ev.PolicyVersion))
	reqs, err := m.requirements(ev.Obligations)
	if err != nil {
		return Approval{}, err
	}
	mu := stripe(&m.hashLocks, ev.CallHash)
	mu.Lock()
	defer mu.Unlock()
	if open, ok, err := m.openFor(ctx, ev.CallHash); err != nil || ok {
		return open, err
	}
	now := m.now()
	last, err := m.cfg.Store.Latest(ctx, ev.CallHash)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return Approval{}, err
	case last.Status == Denied && now.Before(last.Updated.Add(m.denialHold(&last))):
		// A denial stands for the identical call for the pending TTL, so
		// that the agent's retry learns why and approvers are not asked
		// again and again.
		return last, nil
	case !now.After(last.Created):
		// Keep the approvals of one call in creation order (Latest).
		now = last.Created.Add(time.Nanosecond)
	}
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.Time = ev.Time.UTC()
	pending := time.Duration(0)
	for _, r := range reqs {
		if t := m.rule(r.Risk).PendingTTL; pending == 0 || t < pending {
			pending = t
		}
	}
	a := Approval{ID: newID("apr_"), Kind: KindCall, Status: Pending, Evidence: &ev, Requirements: reqs,
		Created: now, Expires: now.Add(pending), Updated: now, Version: 1}
	if err := m.record(ctx, &a, &change{kind: changeCreated, notify: EventRequested}); err != nil {
		return Approval{}, err
	}
	stored, created, err := m.cfg.Store.Create(ctx, a)
	if err != nil {
		m.recordQuietly(ctx, &a, &change{kind: changeSuperseded, err: err})
		return Approval{}, fmt.Errorf("storing approval request: %w", err)
	}
	if !created {
		// Another replica created one first.
		m.recordQuietly(ctx, &a, &change{kind: changeSuperseded, err: fmt.Errorf("approval %s holds the same call", stored.ID)})
		return stored, nil
	}
	m.met.requests.WithLabelValues(strings.Join(a.Risks(), ",")).Inc()
	m.pendingChanged()
	m.notify(EventRequested, &a)
	m.log.Info("approval requested", "approval", a.ID, "agent", ev.Agent, "server", ev.Server, "tool", ev.Tool, "correlation_id", ev.Correlation)
	return a, nil
}

// denialHold is how long a denial answers retries of the identical call:
// the shortest PendingTTL of its requirements.
func (m *Manager) denialHold(a *Approval) time.Duration {
	d := time.Duration(0)
	for _, r := range a.Requirements {
		if t := m.rule(r.Risk).PendingTTL; d == 0 || t < d {
			d = t
		}
	}
	return d
}

// openFor returns the live open approval of a call hash, closing a stale
// one (past its deadline) on the way.
func (m *Manager) openFor(ctx context.Context, hash string) (Approval, bool, error) {
	a, err := m.cfg.Store.Latest(ctx, hash)
	if errors.Is(err, ErrNotFound) {
		return Approval{}, false, nil
	}
	if err != nil {
		return Approval{}, false, err
	}
	if !a.Status.Open() {
		return Approval{}, false, nil
	}
	if !due(&a, m.now()) {
		return a, true, nil
	}
	a, err = m.expire(ctx, a.ID)
	if err != nil {
		return Approval{}, false, err
	}
	if a.Status.Open() {
		return a, true, nil
	}
	return Approval{}, false, nil
}

// expire closes approval id if its deadline passed: a pending request
// becomes Expired, an approved grant Lapsed.
func (m *Manager) expire(ctx context.Context, id string) (Approval, error) {
	return m.apply(ctx, id, func(a *Approval, now time.Time) (*change, error) {
		if !due(a, now) {
			return nil, nil
		}
		if a.Status == Pending {
			a.Status, a.Reason = Expired, CodeExpired
			return &change{kind: changeExpired, notify: EventExpired}, nil
		}
		a.Status, a.Reason = Lapsed, CodeLapsed
		return &change{kind: changeLapsed}, nil
	})
}

// Get returns approval id.
func (m *Manager) Get(ctx context.Context, id string) (Approval, error) {
	return m.cfg.Store.Get(ctx, id)
}

// List returns the approvals matching q, newest first.
func (m *Manager) List(ctx context.Context, q Query) ([]Approval, error) {
	return m.cfg.Store.List(ctx, q)
}

// Deliveries returns the notification attempts of approval id.
func (m *Manager) Deliveries(ctx context.Context, id string) ([]Delivery, error) {
	return m.cfg.Store.Deliveries(ctx, id)
}

// ReviewItems lists after-the-fact review items ("open", "closed", "" all).
func (m *Manager) ReviewItems(ctx context.Context, status string) ([]ReviewItem, error) {
	return m.cfg.Store.ReviewItems(ctx, status)
}

// check returns the groups an approving review of who counts for, or why it
// counts for none.
func (m *Manager) check(a *Approval, who Approver, now time.Time) ([]string, error) {
	var counted []string
	why := ErrNotEligible
	for _, r := range a.Requirements {
		if !who.inGroup(r.Group) || slices.Contains(r.Approvals, who.Subject) {
			continue
		}
		rule := m.rule(r.Risk)
		if (who.Subject == a.Owner() && !rule.OwnerMayApprove) || (a.User() != "" && who.Subject == a.User() && !rule.UserMayApprove) {
			why = ErrSeparation
			continue
		}
		if err := freshEnough(rule, who, now); err != nil {
			if !errors.Is(why, ErrSeparation) {
				why = err
			}
			continue
		}
		counted = append(counted, r.Group)
	}
	if len(counted) == 0 {
		return nil, why
	}
	return counted, nil
}

// freshEnough checks a rule's fresh, strong authentication demands.
func freshEnough(r Rule, who Approver, now time.Time) error {
	if r.FreshAuth > 0 {
		if who.AuthTime.IsZero() {
			return fmt.Errorf("%w (authentication within %s required; %s carries no authentication time)", ErrAuthTooWeak, r.FreshAuth, methodName(who.Method))
		}
		if age := now.Sub(who.AuthTime); age > r.FreshAuth || age < -time.Minute {
			return fmt.Errorf("%w (authenticated %s ago; within %s required)", ErrAuthTooWeak, age.Round(time.Second), r.FreshAuth)
		}
	}
	if len(r.ACR) > 0 && !slices.Contains(r.ACR, who.ACR) {
		return fmt.Errorf("%w (authentication context %q; one of %s required)", ErrAuthTooWeak, who.ACR, strings.Join(r.ACR, ", "))
	}
	return nil
}

func methodName(m string) string {
	if m == "" {
		return "this method"
	}
	return m
}

// basicChecks applies to every decision: a named human, not the agent, one
// review per approver.
func basicChecks(a *Approval, who Approver) error {
	switch {
	case strings.TrimSpace(who.Subject) == "":
		return fmt.Errorf("%w: the approver is not named", ErrInvalid)
	case !who.Human:
		return ErrNotHuman
	case who.Subject == a.Agent():
		return fmt.Errorf("%w (the requesting agent)", ErrSeparation)
	}
	for _, r := range a.Reviews {
		if r.Approver.Subject == who.Subject {
			return ErrAlreadyReviewed
		}
	}
	return nil
}

// Decide records an approver's decision on a pending approval and returns
// the approval after it. Rules, in order:
//
//   - only authenticated humans decide, never the requesting agent, one
//     review each (ErrNotHuman, ErrSeparation, ErrAlreadyReviewed);
//   - a deny from a member of a required group vetoes at once (the owner
//     and the user may deny);
//   - an approval counts for the requirements whose group the approver is
//     in, unless separation of duties excludes the approver (the agent's
//     owner unless OwnerMayApprove, the on-behalf-of user unless
//     UserMayApprove) or the rule demands fresher or stronger
//     authentication (ErrAuthTooWeak); an approval that counts for none is
//     refused;
//   - a decision may narrow the grant (TTL, MaxUses, ValueCeiling), never
//     widen it beyond the rule (ErrWiden);
//   - when every requirement has its quorum, the grant starts;
//   - break-glass: a member of the break-glass group may approve alone,
//     even as owner or user, with a justification; the grant lasts the
//     break-glass TTL for one use, an alert goes out at once, and an
//     after-the-fact review item is opened.
//
// A refused decision is recorded in the audit log too.
func (m *Manager) Decide(ctx context.Context, id string, who Approver, d Decision) (Approval, error) {
	who.AuthTime = who.AuthTime.UTC()
	if who.AuthTime.Equal(time.Unix(0, 0).UTC()) || who.AuthTime.Year() < 1970 {
		who.AuthTime = time.Time{}
	}
	if len(d.Comment) > maxText || len(d.Justification) > maxText {
		return Approval{}, fmt.Errorf("%w: comments are limited to %d bytes", ErrInvalid, maxText)
	}
	if d.BreakGlass {
		return m.breakGlass(ctx, id, who, d)
	}
	var refused error
	a, err := m.apply(ctx, id, func(a *Approval, now time.Time) (*change, error) {
		if a.Status == Pending && due(a, now) {
			a.Status, a.Reason = Expired, CodeExpired
			refused = ErrExpired
			return &change{kind: changeExpired, notify: EventExpired}, nil
		}
		if a.Status != Pending {
			return nil, fmt.Errorf("%w (it is %s)", ErrNotPending, a.Status)
		}
		if err := basicChecks(a, who); err != nil {
			return nil, refuse(err)
		}
		r := Review{Approver: who, Vote: d.Vote, Comment: d.Comment, Justification: d.Justification, Time: now}
		switch d.Vote {
		case Deny:
			if !slices.ContainsFunc(a.Requirements, func(q Requirement) bool { return who.inGroup(q.Group) }) {
				return nil, refuse(ErrNotEligible)
			}
			a.Reviews = append(a.Reviews, r)
			a.Status, a.Reason = Denied, CodeDenied
			return &change{kind: changeDenied, actor: &who, review: &r, notify: EventDenied}, nil
		case Approve:
		default:
			return nil, fmt.Errorf("%w: the vote is %q, want approve or deny", ErrInvalid, d.Vote)
		}
		if err := m.narrowing(a, d); err != nil {
			return nil, refuse(err)
		}
		counted, err := m.check(a, who, now)
		if err != nil {
			return nil, refuse(err)
		}
		r.Counted, r.TTL, r.MaxUses, r.ValueCeiling = counted, d.TTL, d.MaxUses, d.ValueCeiling
		a.Reviews = append(a.Reviews, r)
		met := true
		for i := range a.Requirements {
			q := &a.Requirements[i]
			if slices.Contains(counted, q.Group) {
				q.Approvals = append(q.Approvals, who.Subject)
			}
			met = met && q.Met()
		}
		if !met {
			return &change{kind: changeReviewed, actor: &who, review: &r}, nil
		}
		m.grant(a, now, false)
		return &change{kind: changeApproved, actor: &who, review: &r, notify: EventApproved}, nil
	})
	if err != nil {
		var rf *refusal
		if errors.As(err, &rf) {
			if cur, gerr := m.cfg.Store.Get(ctx, id); gerr == nil {
				m.recordQuietly(ctx, &cur, &change{kind: changeRefused, actor: &who, err: rf.err, comment: d.Comment})
			}
			m.met.decisions.WithLabelValues(string(d.Vote), "refused").Inc()
			return a, rf.err
		}
		return a, err
	}
	if refused != nil {
		return a, refused
	}
	m.met.decisions.WithLabelValues(string(d.Vote), string(a.Status)).Inc()
	m.log.Info("approval decision", "approval", id, "approver", who.Subject, "method", who.Method, "vote", d.Vote, "status", a.Status)
	return a, nil
}

// refusal marks a decision refused by the rules (recorded, then returned).
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(err error) error { return &refusal{err} }

// narrowing checks that a decision only narrows the grant.
func (m *Manager) narrowing(a *Approval, d Decision) error {
	if d.TTL < 0 || d.MaxUses < 0 {
		return fmt.Errorf("%w: negative ttl or uses", ErrInvalid)
	}
	ttl, uses := m.grantLimits(a)
	if d.TTL > ttl {
		return fmt.Errorf("%w: ttl %s exceeds the %s allowed", ErrWiden, d.TTL, ttl)
	}
	if d.MaxUses > 0 && uses > 0 && d.MaxUses > uses {
		return fmt.Errorf("%w: %d uses exceed the %d allowed", ErrWiden, d.MaxUses, uses)
	}
	if d.ValueCeiling != "" {
		if err := validDecimal(d.ValueCeiling); err != nil {
			return err
		}
		if e := a.Elevation; e != nil && e.ValueCeiling != "" {
			if c, _ := compareDecimal(d.ValueCeiling, e.ValueCeiling); c > 0 {
				return fmt.Errorf("%w: value ceiling %s exceeds the requested %s", ErrWiden, d.ValueCeiling, e.ValueCeiling)
			}
		}
	}
	return nil
}

// grantLimits returns the widest grant window and uses the rules allow
// (uses 0: unlimited).
func (m *Manager) grantLimits(a *Approval) (time.Duration, int) {
	if e := a.Elevation; e != nil {
		return e.TTL, e.MaxUses
	}
	ttl, uses := time.Duration(0), 0
	for _, q := range a.Requirements {
		r := m.rule(q.Risk)
		if ttl == 0 || r.GrantTTL < ttl {
			ttl = r.GrantTTL
		}
		if uses == 0 || r.MaxUses < uses {
			uses = r.MaxUses
		}
	}
	return ttl, uses
}

// grant starts a's grant at now, narrowed by every review.
func (m *Manager) grant(a *Approval, now time.Time, breakGlass bool) {
	ttl, uses := m.grantLimits(a)
	ceiling := ""
	if a.Elevation != nil {
		ceiling = a.Elevation.ValueCeiling
	}
	if breakGlass {
		ttl, uses = min(ttl, m.cfg.BreakGlass.TTL), 1
	}
	for _, r := range a.Reviews {
		if r.Vote != Approve {
			continue
		}
		if r.TTL > 0 && r.TTL < ttl {
			ttl = r.TTL
		}
		if r.MaxUses > 0 && (uses == 0 || r.MaxUses < uses) {
			uses = r.MaxUses
		}
		if r.ValueCeiling != "" {
			if c, ok := compareDecimal(r.ValueCeiling, ceiling); ceiling == "" || (ok && c < 0) {
				ceiling = r.ValueCeiling
			}
		}
	}
	g := &Grant{Approval: a.ID, Kind: a.Kind, Agent: a.Agent(), CallHash: a.CallHash(), Start: now, Expires: now.Add(ttl),
		MaxUses: uses, ValueCeiling: ceiling, BreakGlass: breakGlass}
	a.Grant = g
	a.Status, a.Reason = Approved, CodeGranted
	a.BreakGlass = breakGlass
}

// breakGlass handles a break-glass self-approval: the review item is
// opened (and recorded) first, so that no break-glass grant exists without
// one.
func (m *Manager) breakGlass(ctx context.Context, id string, who Approver, d Decision) (Approval, error) {
	bg := m.cfg.BreakGlass
	cur, err := m.cfg.Store.Get(ctx, id)
	if err != nil {
		return Approval{}, err
	}
	fail := func(err error) (Approval, error) {
		m.recordQuietly(ctx, &cur, &change{kind: changeRefused, actor: &who, err: err, comment: d.Comment})
		m.met.decisions.WithLabelValues("break_glass", "refused").Inc()
		return cur, err
	}
	now := m.now()
	switch {
	case bg.Group == "":
		return fail(fmt.Errorf("%w: break-glass is not configured", ErrBreakGlass))
	case d.Vote != Approve:
		return fail(fmt.Errorf("%w: break-glass only approves", ErrBreakGlass))
	case cur.Kind != KindCall:
		return fail(fmt.Errorf("%w: break-glass applies to call approvals only", ErrBreakGlass))
	case cur.Status != Pending:
		return cur, fmt.Errorf("%w (it is %s)", ErrNotPending, cur.Status)
	case due(&cur, now):
		a, err := m.expire(ctx, id)
		if err != nil {
			return a, err
		}
		return a, ErrExpired
	}
	if err := basicChecks(&cur, who); err != nil {
		return fail(err)
	}
	if !who.inGroup(bg.Group) {
		return fail(fmt.Errorf("%w: %s is not in the break-glass group", ErrBreakGlass, who.Subject))
	}
	if len(strings.TrimSpace(d.Justification)) < bg.MinJustification {
		return fail(fmt.Errorf("%w: a justification of at least %d characters is required", ErrBreakGlass, bg.MinJustification))
	}
	for _, q := range cur.Requirements {
		if err := freshEnough(m.rule(q.Risk), who, now); err != nil {
			return fail(err)
		}
	}
	if err := m.narrowing(&cur, d); err != nil {
		return fail(err)
	}
	item := ReviewItem{ID: newID("rvw_"), Approval: id, Status: ItemOpen, Reason: "break_glass", By: who.Subject,
		Justification: d.Justification, Created: now}
	if err := m.record(ctx, &cur, &change{kind: changeItemOpened, actor: &who, item: &item}); err != nil {
		return cur, err
	}
	if err := m.cfg.Store.PutReviewItem(ctx, item); err != nil {
		return cur, fmt.Errorf("storing the break-glass review item: %w", err)
	}
	a, err := m.apply(ctx, id, func(a *Approval, now time.Time) (*change, error) {
		if a.Status != Pending {
			return nil, fmt.Errorf("%w (it is %s)", ErrNotPending, a.Status)
		}
		if due(a, now) {
			return nil, ErrExpired
		}
		r := Review{Approver: who, Vote: Approve, Comment: d.Comment, Justification: d.Justification, BreakGlass: true,
			TTL: d.TTL, MaxUses: d.MaxUses, ValueCeiling: d.ValueCeiling, Time: now}
		for i := range a.Requirements {
			r.Counted = append(r.Counted, a.Requirements[i].Group)
		}
		a.Reviews = append(a.Reviews, r)
		a.ReviewItem = item.ID
		m.grant(a, now, true)
		return &change{kind: changeApproved, actor: &who, review: &r, notify: EventBreakGlass}, nil
	})
	if err != nil {
		// No grant: void the review item.
		item.Status, item.Closed, item.Comment = ItemClosed, m.now(), "break-glass approval not applied: "+err.Error()
		m.recordQuietly(ctx, &cur, &change{kind: changeItemClosed, item: &item, by: "gatehouse"})
		if perr := m.cfg.Store.PutReviewItem(ctx, item); perr != nil {
			m.log.Error("voiding a break-glass review item failed", "item", item.ID, "err", perr)
		}
		return a, err
	}
	m.met.decisions.WithLabelValues("break_glass", string(a.Status)).Inc()
	m.log.Warn("break-glass approval", "approval", id, "approver", who.Subject, "review_item", item.ID)
	return a, nil
}

// CloseReviewItem closes an after-the-fact review item. The reviewer must
// be a human other than the one who broke the glass.
func (m *Manager) CloseReviewItem(ctx context.Context, id string, who Approver, comment string) (ReviewItem, error) {
	it, err := m.cfg.Store.ReviewItem(ctx, id)
	if err != nil {
		return ReviewItem{}, err
	}
	switch {
	case !who.Human:
		return it, ErrNotHuman
	case strings.TrimSpace(who.Subject) == "":
		return it, fmt.Errorf("%w: the reviewer is not named", ErrInvalid)
	case who.Subject == it.By:
		return it, fmt.Errorf("%w (who broke the glass cannot review it)", ErrSeparation)
	case it.Status != ItemOpen:
		return it, fmt.Errorf("%w: the review item is %s", ErrInvalid, it.Status)
	case strings.TrimSpace(comment) == "":
		return it, fmt.Errorf("%w: closing a review item needs a comment", ErrInvalid)
	}
	a, err := m.cfg.Store.Get(ctx, it.Approval)
	if err != nil {
		return it, err
	}
	w := who
	it.Status, it.ClosedBy, it.Closed, it.Comment = ItemClosed, &w, m.now(), comment
	if err := m.record(ctx, &a, &change{kind: changeItemClosed, actor: &who, item: &it}); err != nil {
		return it, err
	}
	if err := m.cfg.Store.PutReviewItem(ctx, it); err != nil {
		return it, fmt.Errorf("storing the review item: %w", err)
	}
	return it, nil
}

// Wait blocks until approval id is no longer pending (approved, denied,
// expired, cancelled) or ctx ends, and returns it. A request whose
// deadline passes while waiting is expired by Wait itself. Decisions made
// on this replica wake it at once; others are seen within PollInterval.
func (m *Manager) Wait(ctx context.Context, id string) (Approval, error) {
	for {
		ch, done := m.subscribe(id)
		a, err := m.cfg.Store.Get(ctx, id)
		if err != nil {
			done()
			return a, err
		}
		if a.Status != Pending {
			done()
			return a, nil
		}
		now := m.now()
		if due(&a, now) {
			done()
			a, err = m.expire(ctx, id)
			if err != nil || a.Status != Pending {
				return a, err
			}
			continue
		}
		t := time.NewTimer(min(m.cfg.PollInterval, a.Expires.Sub(now)+time.Millisecond))
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			done()
			return a, ctx.Err()
		}
		t.Stop()
		done()
	}
}

func (m *Manager) subscribe(id string) (<-chan struct{}, func()) {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	w := m.waiters[id]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		m.waiters[id] = w
	}
	w.n++
	return w.ch, func() {
		m.waitMu.Lock()
		defer m.waitMu.Unlock()
		w.n--
		if w.n == 0 && m.waiters[id] == w {
			delete(m.waiters, id)
		}
	}
}

func (m *Manager) wake(id string) {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	if w := m.waiters[id]; w != nil {
		close(w.ch)
		delete(m.waiters, id)
	}
}

// Consume uses the grant of the approved call whose CallHash is hash, for
// the call described by use (Correlation: the call's correlation id;
// Value: its value, when a value ceiling may apply). It is atomic: of
// concurrent identical calls at most MaxUses get the grant, on any number
// of replicas. The use is recorded in the audit log before Consume
// returns; if that fails the use is given back and ErrAudit returned.
//
// Errors: ErrNoGrant (no approval for this call: other arguments, agent,
// user, task or policy version give another hash), ErrApprovalPending,
// ErrDenied, ErrExpired, ErrCancelled, ErrGrantUsed, ErrGrantExpired,
// ErrGrantRevoked, ErrValueCeiling. Every error means: do not forward.
func (m *Manager) Consume(ctx context.Context, hash string, use Use) (Grant, error) {
	g, _, err := m.consume(ctx, hash, use)
	return g, err
}

// consume is Consume that also returns the approval whose grant was used
// (as loaded before the use), so that Gate need not read it again.
func (m *Manager) consume(ctx context.Context, hash string, use Use) (Grant, Approval, error) {
	a, err := m.cfg.Store.Latest(ctx, hash)
	if errors.Is(err, ErrNotFound) {
		m.met.uses.WithLabelValues("none").Inc()
		return Grant{}, Approval{}, ErrNoGrant
	}
	if err != nil {
		return Grant{}, Approval{}, err
	}
	g, err := m.use(ctx, a, use)
	return g, a, err
}

// use consumes one use of approval a's grant.
func (m *Manager) use(ctx context.Context, a Approval, use Use) (Grant, error) {
	now := m.now()
	if a.Status != Approved {
		m.met.uses.WithLabelValues(string(a.Status)).Inc()
		return Grant{}, statusError(a.Status)
	}
	if due(&a, now) {
		if _, err := m.expire(ctx, a.ID); err != nil {
			m.log.Warn("lapsing a grant failed", "approval", a.ID, "err", err)
		}
		m.met.uses.WithLabelValues("lapsed").Inc()
		return Grant{}, ErrGrantExpired
	}
	if g := a.Grant; g.ValueCeiling != "" {
		c, ok := compareDecimal(use.Value, g.ValueCeiling)
		if use.Value == "" || !ok || c > 0 {
			m.met.uses.WithLabelValues("ceiling").Inc()
			return Grant{}, fmt.Errorf("%w (%s)", ErrValueCeiling, g.ValueCeiling)
		}
	}
	use.Time = now
	mu := stripe(&m.idLocks, a.ID)
	mu.Lock()
	defer mu.Unlock()
	after, err := m.cfg.Store.Use(ctx, a.ID, use, now)
	if errors.Is(err, ErrNoGrant) {
		// Lost a race: say why from the current state.
		cur, gerr := m.cfg.Store.Get(ctx, a.ID)
		if gerr != nil {
			return Grant{}, gerr
		}
		m.met.uses.WithLabelValues(string(cur.Status)).Inc()
		if cur.Status == Approved {
			return Grant{}, ErrGrantExpired
		}
		return Grant{}, statusError(cur.Status)
	}
	if err != nil {
		return Grant{}, err
	}
	u := after.Uses[len(after.Uses)-1]
	if err := m.record(ctx, &after, &change{kind: changeUsed, use: &u}); err != nil {
		if uerr := m.cfg.Store.Unuse(context.WithoutCancel(ctx), a.ID, u.Seq); uerr != nil {
			m.log.Error("giving back an unrecorded use failed; the use is lost (fail closed)", "approval", a.ID, "err", uerr)
		}
		return Grant{}, err
	}
	// A change stored meanwhile by another replica is recorded before
	// ours: restate the current state so the log's last word is right.
	if cur, gerr := m.cfg.Store.Get(ctx, a.ID); gerr == nil && cur.Version != after.Version {
		m.recordQuietly(ctx, &cur, &change{kind: changeSuperseded, err: errors.New("state changed while a use was recorded")})
	}
	m.wake(a.ID)
	m.met.uses.WithLabelValues("granted").Inc()
	m.log.Info("approval used", "approval", a.ID, "use", u.Seq, "correlation_id", u.Correlation)
	return *after.Grant, nil
}

// Revoke ends approval id: an approved grant becomes Revoked, a pending
// request Cancelled. by names who revoked (an operator; revocation is
// always allowed, as it only takes away).
func (m *Manager) Revoke(ctx context.Context, id, by, comment string) (Approval, error) {
	if strings.TrimSpace(by) == "" {
		return Approval{}, fmt.Errorf("%w: revocation needs an author", ErrInvalid)
	}
	return m.apply(ctx, id, func(a *Approval, now time.Time) (*change, error) {
		switch a.Status {
		case Approved:
			a.Status, a.Reason = Revoked, CodeRevoked
			a.Grant.Revoked, a.Grant.RevokedBy = now, by
			return &change{kind: changeRevoked, by: by, comment: comment, notify: EventRevoked}, nil
		case Pending:
			a.Status, a.Reason = Cancelled, CodeCancelled
			return &change{kind: changeCancelled, by: by, comment: comment, notify: EventCancelled}, nil
		}
		return nil, fmt.Errorf("%w: the approval is %s", ErrNotPending, a.Status)
	})
}

// Cancel withdraws a pending request (the held call is told it was
// cancelled). It is a no-op for an approval that is no longer pending.
func (m *Manager) Cancel(ctx context.Context, id, by, reason string) (Approval, error) {
	return m.apply(ctx, id, func(a *Approval, now time.Time) (*change, error) {
		if a.Status != Pending {
			return nil, nil
		}
		a.Status, a.Reason = Cancelled, CodeCancelled
		return &change{kind: changeCancelled, by: by, comment: reason, notify: EventCancelled}, nil
	})
}

// CancelHeld cancels the pending call approvals in the scope of a kill
// switch lock, so that held calls return at once: scope is "global",
// "agent", "user", "task", "server" or "tool" (target "SERVER/TOOL"), as in
// internal/lock. Grants are left alone (the lock blocks their calls while
// it holds; RevokeAgent revokes them). It returns how many it cancelled.
func (m *Manager) CancelHeld(ctx context.Context, scope, target, by, reason string) (int, error) {
	match := func(a *Approval) bool {
		e := a.Evidence
		switch scope {
		case "global":
			return true
		case "agent":
			return a.Agent() == target
		case "user":
			return a.User() == target
		case "task":
			return a.task() == target
		case "server":
			return a.Server() == target
		case "tool":
			return e != nil && e.Server+"/"+e.Tool == target
		}
		return false
	}
	switch scope {
	case "global", "agent", "user", "task", "server", "tool":
	default:
		return 0, fmt.Errorf("%w: unknown scope %q", ErrInvalid, scope)
	}
	return m.each(ctx, Query{Status: Pending}, match, func(a *Approval) error {
		_, err := m.Cancel(ctx, a.ID, by, reason)
		return err
	})
}

// RevokeAgent ends everything an agent holds, for its retirement: pending
// requests are cancelled, grants and elevations revoked. It returns how
// many approvals it closed.
func (m *Manager) RevokeAgent(ctx context.Context, agent, by string) (int, error) {
	if agent == "" {
		return 0, fmt.Errorf("%w: no agent", ErrInvalid)
	}
	return m.each(ctx, Query{Agent: agent, Open: true}, func(a *Approval) bool { return a.Status.Open() }, func(a *Approval) error {
		_, err := m.Revoke(ctx, a.ID, by, "agent retired")
		if errors.Is(err, ErrNotPending) {
			return nil
		}
		return err
	})
}

// each applies f to every approval matching q and match, in pages.
func (m *Manager) each(ctx context.Context, q Query, match func(*Approval) bool, f func(*Approval) error) (int, error) {
	q.Limit = 500
	n := 0
	seen := map[string]bool{}
	for {
		as, err := m.cfg.Store.List(ctx, q)
		if err != nil {
			return n, err
		}
		progress := false
		for i := range as {
			a := &as[i]
			if seen[a.ID] || !match(a) {
				continue
			}
			seen[a.ID] = true
			progress = true
			if err := f(a); err != nil {
				return n, err
			}
			n++
		}
		if len(as) < q.Limit || !progress {
			return n, nil
		}
	}
}

// Sweep closes the approvals whose deadline passed: pending requests
// expire, grants lapse. It returns how many it closed.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	n := 0
	for {
		as, err := m.cfg.Store.Due(ctx, m.now(), 100)
		if err != nil {
			return n, err
		}
		for _, a := range as {
			after, err := m.expire(ctx, a.ID)
			if err != nil {
				return n, err
			}
			if !after.Status.Open() {
				n++
			}
		}
		if len(as) < 100 {
			return n, nil
		}
	}
}

// Run delivers notifications and sweeps expiry until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-m.queue:
					m.deliver(ctx, j)
				}
			}
		}()
	}
	t := time.NewTicker(m.cfg.SweepInterval)
	defer func() {
		t.Stop()
		wg.Wait()
	}()
	m.countPending(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := m.Sweep(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("sweeping approvals failed", "err", err)
			}
			m.countPending(ctx)
		case <-m.recount:
			m.countPending(ctx)
		}
	}
}

// pendingChanged asks Run to count the pending requests again.
func (m *Manager) pendingChanged() {
	if m.cfg.Pending == nil {
		return
	}
	select {
	case m.recount <- struct{}{}:
	default: // a count is already due
	}
}

// countPending reports the pending requests in the Store to
// Config.Pending.
func (m *Manager) countPending(ctx context.Context) {
	if m.cfg.Pending == nil {
		return
	}
	n, err := m.cfg.Store.Count(ctx, Query{Status: Pending})
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("counting pending approvals failed", "err", err)
		}
		return
	}
	m.cfg.Pending(n)
}

// notify queues event about a for every notifier that wants it.
func (m *Manager) notify(event string, a *Approval) {
	for _, nt := range m.cfg.Notifiers {
		if !nt.Wants(event) {
			continue
		}
		j := job{n: Notification{Delivery: newID("dlv_"), Event: event, Time: m.now(), URL: m.StatusURL(a.ID), Approval: clone(*a)}, to: nt}
		select {
		case m.queue <- j:
		default:
			m.recordDelivery(context.Background(), &j, Delivery{ID: j.n.Delivery, Approval: a.ID, Notifier: nt.Name(), Event: event,
				Attempt: 0, Time: m.now(), Error: "notification queue full"})
		}
	}
}

// deliver tries a notification until it succeeds or the attempts run out,
// recording every attempt.
func (m *Manager) deliver(ctx context.Context, j job) {
	backoff := m.cfg.NotifyBackoff
	for attempt := 1; attempt <= m.cfg.NotifyAttempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		status, err := j.to.Notify(actx, &j.n)
		cancel()
		d := Delivery{ID: fmt.Sprintf("%s.%d", j.n.Delivery, attempt), Approval: j.n.Approval.ID, Notifier: j.to.Name(), Event: j.n.Event,
			Attempt: attempt, Time: m.now(), OK: err == nil, Status: status}
		if err != nil {
			d.Error = err.Error()
		}
		m.recordDelivery(ctx, &j, d)
		if err == nil {
			m.met.notifications.WithLabelValues(j.to.Name(), "ok").Inc()
			return
		}
		m.met.notifications.WithLabelValues(j.to.Name(), "error").Inc()
		m.log.Warn("notification attempt failed", "notifier", j.to.Name(), "approval", j.n.Approval.ID, "attempt", attempt, "err", err)
		if attempt == m.cfg.NotifyAttempts {
			return
		}
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, m.cfg.NotifyMaxBackoff)
	}
}

// recordDelivery audits a delivery attempt, then stores it: the store
// holds only audited attempts, so that evidence bundles account for each.
func (m *Manager) recordDelivery(ctx context.Context, j *job, d Delivery) {
	if _, err := m.cfg.Audit(ctx, event(&j.n.Approval, &change{kind: changeDelivery, delivery: &d})); err != nil {
		m.met.auditFailures.Inc()
		m.log.Error("recording a notification delivery failed", "approval", d.Approval, "notifier", d.Notifier, "err", err)
		return
	}
	if err := m.cfg.Store.AddDelivery(ctx, d); err != nil {
		m.log.Error("storing a notification delivery failed", "approval", d.Approval, "err", err)
	}
}
