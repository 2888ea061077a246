package config

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"time"
)

// Governance configures human approval of challenged calls (policy
// challenges, semantic challenges), grants, elevations, break-glass and
// notifications. See docs/governance.md.
type Governance struct {
	// HoldTimeout is how long a challenged call waits for a decision before
	// the agent is answered "approval pending" (0: at once). The agent's
	// retry of the identical call is matched by its canonical hash.
	HoldTimeout Duration `yaml:"hold_timeout"`
	// SweepInterval is how often pending requests and grants are expired.
	// Default 5s.
	SweepInterval Duration `yaml:"sweep_interval"`
	// Approvers are the people who may decide with the admin credential
	// (the CLI's --as NAME, the approval page), with their groups.
	Approvers map[string]Approver `yaml:"approvers"`
	// Rules per risk class (the policy's @risk, the obligation's detail);
	// "default" applies to classes without a rule.
	Rules map[string]ApprovalRule `yaml:"rules"`
	// BreakGlass lets a named group self-approve in an emergency.
	BreakGlass *BreakGlass `yaml:"break_glass"`
	// Notifications tell approvers about requests.
	Notifications Notifications `yaml:"notifications"`
	// Page configures the approval page (PUBLIC_URL/approvals/ID).
	Page ApprovalPage `yaml:"page"`
}

// Approver is one person (or, marked non_human, one automation) who holds
// the admin credential.
type Approver struct {
	Groups   []string `yaml:"groups"`
	NonHuman bool     `yaml:"non_human"`
}

// ApprovalRule is the approval rule of one risk class.
type ApprovalRule struct {
	// Quorum is how many distinct approvers must approve. Default 1.
	Quorum int `yaml:"quorum"`
	// Approvers are the groups asked when the challenge names none.
	Approvers []string `yaml:"approvers"`
	// OwnerMayApprove lets the agent's owner approve (default false).
	OwnerMayApprove bool `yaml:"owner_may_approve"`
	// UserMayApprove lets the on-behalf-of user approve (default false).
	UserMayApprove bool `yaml:"user_may_approve"`
	// FreshAuth demands interactive authentication at most this long ago;
	// ACR demands one of these authentication context classes. Approvals
	// with the admin credential never satisfy either.
	FreshAuth Duration `yaml:"fresh_auth"`
	ACR       []string `yaml:"acr"`
	// PendingTTL (default 15m), GrantTTL (default 5m), MaxUses (default
	// 1) and ElevationTTL (default 1h) bound requests and grants.
	PendingTTL   Duration `yaml:"pending_ttl"`
	GrantTTL     Duration `yaml:"grant_ttl"`
	MaxUses      int      `yaml:"max_uses"`
	ElevationTTL Duration `yaml:"elevation_ttl"`
}

// BreakGlass configures emergency self-approval.
type BreakGlass struct {
	Group string `yaml:"group"`
	// TTL of a break-glass grant. Default 10m.
	TTL Duration `yaml:"ttl"`
	// MinJustification is the justification's minimum length. Default 20.
	MinJustification int `yaml:"min_justification"`
}

// Notifications configures approval notifications.
type Notifications struct {
	// Attempts per notification (default 5); Backoff doubles from backoff
	// (default 1s) up to max_backoff (default 1m).
	Attempts   int      `yaml:"attempts"`
	Backoff    Duration `yaml:"backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	// Webhooks receive signed JSON (X-Gatehouse-Signature-256).
	Webhooks []ApprovalWebhook `yaml:"webhooks"`
	// Slack receives Slack-compatible incoming-webhook messages.
	Slack []SlackWebhook `yaml:"slack"`
}

// ApprovalWebhook is one JSON webhook.
type ApprovalWebhook struct {
	ID  string `yaml:"id"`
	URL string `yaml:"url"`
	// SecretFile holds the HMAC-SHA256 key of the signature.
	SecretFile string `yaml:"secret_file"`
	// Events to send (default all).
	Events []string `yaml:"events"`
	// IncludeEvidence adds the evidence snapshot (arguments included).
	IncludeEvidence bool `yaml:"include_evidence"`
}

// SlackWebhook is one Slack-compatible incoming webhook; its URL is a
// secret and is read from URLFile.
type SlackWebhook struct {
	ID      string   `yaml:"id"`
	URLFile string   `yaml:"url_file"`
	Events  []string `yaml:"events"`
}

// ApprovalPage configures the approval page.
type ApprovalPage struct {
	// ShowArguments shows the call's arguments to anyone with the link
	// (default false: only after the admin credential is entered).
	ShowArguments bool `yaml:"show_arguments"`
}

// ApprovalEvents are the notification events.
var ApprovalEvents = []string{"approval.requested", "approval.approved", "approval.denied", "approval.expired",
	"approval.cancelled", "approval.revoked", "approval.break_glass", "elevation.requested"}

var (
	groupRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
	notifierRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)
	// approverRe admits user names and e-mail addresses.
	approverRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$`)
)

func (g *Governance) setDefaults() {
	if g.SweepInterval == 0 {
		g.SweepInterval = Duration(5 * time.Second)
	}
	if g.BreakGlass != nil {
		if g.BreakGlass.TTL == 0 {
			g.BreakGlass.TTL = Duration(10 * time.Minute)
		}
		if g.BreakGlass.MinJustification == 0 {
			g.BreakGlass.MinJustification = 20
		}
	}
	n := &g.Notifications
	if n.Attempts == 0 {
		n.Attempts = 5
	}
	if n.Backoff == 0 {
		n.Backoff = Duration(time.Second)
	}
	if n.MaxBackoff == 0 {
		n.MaxBackoff = Duration(time.Minute)
	}
	for i := range n.Webhooks {
		if n.Webhooks[i].ID == "" {
			n.Webhooks[i].ID = fmt.Sprintf("webhook-%d", i)
		}
	}
	for i := range n.Slack {
		if n.Slack[i].ID == "" {
			n.Slack[i].ID = fmt.Sprintf("slack-%d", i)
		}
	}
}

func (f *File) validateGovernance(add func(string, ...any), p *[]string) {
	g := &f.Governance
	if d := g.HoldTimeout.Std(); d < 0 || d > 10*time.Minute {
		add("governance.hold_timeout: %v is outside 0..10m", d)
	}
	if d := g.SweepInterval.Std(); d < 100*time.Millisecond || d > time.Hour {
		add("governance.sweep_interval: %v is outside 100ms..1h", d)
	}
	checkGroups := func(key string, groups []string) {
		for _, gr := range groups {
			if !groupRe.MatchString(gr) {
				add("%s: group %q must match %s", key, gr, groupRe)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(g.Approvers)) {
		a := g.Approvers[name]
		key := "governance.approvers[" + name + "]"
		if !approverRe.MatchString(name) {
			add("%s: name must match %s", key, approverRe)
		}
		if len(a.Groups) == 0 {
			add("%s.groups: at least one group is required", key)
		}
		checkGroups(key+".groups", a.Groups)
	}
	for _, class := range slices.Sorted(maps.Keys(g.Rules)) {
		r := g.Rules[class]
		key := "governance.rules[" + class + "]"
		if class != "default" && !toolLabels[class] && !groupRe.MatchString(class) {
			add("%s: risk class must match %s", key, groupRe)
		}
		if r.Quorum < 0 || r.Quorum > 10 {
			add("%s.quorum: %d is outside 0..10", key, r.Quorum)
		}
		if r.MaxUses < 0 || r.MaxUses > 1000 {
			add("%s.max_uses: %d is outside 0..1000", key, r.MaxUses)
		}
		checkGroups(key+".approvers", r.Approvers)
		for _, d := range []struct {
			name string
			v    Duration
			max  time.Duration
		}{{"fresh_auth", r.FreshAuth, 24 * time.Hour}, {"pending_ttl", r.PendingTTL, 7 * 24 * time.Hour},
			{"grant_ttl", r.GrantTTL, 24 * time.Hour}, {"elevation_ttl", r.ElevationTTL, 24 * time.Hour}} {
			if d.v.Std() < 0 || d.v.Std() > d.max {
				add("%s.%s: %v is outside 0..%v", key, d.name, d.v.Std(), d.max)
			}
		}
	}
	if bg := g.BreakGlass; bg != nil {
		if !groupRe.MatchString(bg.Group) {
			add("governance.break_glass.group: %q must match %s", bg.Group, groupRe)
		}
		if d := bg.TTL.Std(); d < time.Minute || d > time.Hour {
			add("governance.break_glass.ttl: %v is outside 1m..1h", d)
		}
		if bg.MinJustification < 1 || bg.MinJustification > 1000 {
			add("governance.break_glass.min_justification: %d is outside 1..1000", bg.MinJustification)
		}
	}
	n := g.Notifications
	if n.Attempts < 1 || n.Attempts > 20 {
		add("governance.notifications.attempts: %d is outside 1..20", n.Attempts)
	}
	if n.Backoff.Std() <= 0 || n.MaxBackoff.Std() < n.Backoff.Std() {
		add("governance.notifications: backoff must be positive and max_backoff at least backoff")
	}
	ids := map[string]bool{}
	checkID := func(key, id string) {
		if !notifierRe.MatchString(id) {
			add("%s.id: %q must match %s", key, id, notifierRe)
		}
		if ids[id] {
			add("%s.id: duplicate notifier id %q", key, id)
		}
		ids[id] = true
	}
	checkEvents := func(key string, events []string) {
		for _, e := range events {
			if !slices.Contains(ApprovalEvents, e) {
				add("%s.events: unknown event %q (one of %v)", key, e, ApprovalEvents)
			}
		}
	}
	for i, w := range n.Webhooks {
		key := fmt.Sprintf("governance.notifications.webhooks[%d]", i)
		checkID(key, w.ID)
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("%s.url: %q is not an http(s) URL", key, w.URL)
		} else if u.User != nil {
			add("%s.url: credentials in the URL are not allowed; use secret_file", key)
		}
		if w.SecretFile == "" {
			add("%s.secret_file: required (the signature key)", key)
		} else {
			f.checkFile(p, key+".secret_file", w.SecretFile)
		}
		checkEvents(key, w.Events)
	}
	for i, s := range n.Slack {
		key := fmt.Sprintf("governance.notifications.slack[%d]", i)
		checkID(key, s.ID)
		if s.URLFile == "" {
			add("%s.url_file: required (the incoming-webhook URL is a secret)", key)
		} else {
			f.checkFile(p, key+".url_file", s.URLFile)
		}
		checkEvents(key, s.Events)
	}
}
