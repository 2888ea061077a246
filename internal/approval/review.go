package approval

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// AgentRecord is an agent as the registry knows it, for the lifecycle
// review (`gatehouse agents review`).
type AgentRecord struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	// Expires is when the agent's registration ends; zero means never,
	// which is itself a finding.
	Expires  time.Time `json:"expires,omitzero"`
	Disabled bool      `json:"disabled,omitempty"`
	// Permitted lists what the agent may call, as "server/tool", or
	// "server/*" for every tool of a server.
	Permitted []string `json:"permitted"`
}

// ToolUse is one call of a tool by an agent (from the audit log).
type ToolUse struct {
	Agent  string    `json:"agent"`
	Server string    `json:"server"`
	Tool   string    `json:"tool"`
	Time   time.Time `json:"time"`
}

// UsesFromAudit extracts the tool uses from audit records: API Activity
// outcome records of tools/call that were allowed (the call was made).
func UsesFromAudit(recs []audit.Record) []ToolUse {
	var out []ToolUse
	for _, r := range recs {
		e := r.Event
		if e == nil || e.ClassUID != audit.ClassAPIActivity || e.Unmapped == nil || e.API == nil {
			continue
		}
		u := e.Unmapped
		if u.Phase != string(audit.PhaseOutcome) || e.API.Operation != "tools/call" || u.Tool == "" {
			continue
		}
		out = append(out, ToolUse{Agent: u.Agent, Server: u.Server, Tool: u.Tool, Time: time.UnixMilli(e.Time).UTC()})
	}
	return out
}

// ReviewInput is what the lifecycle review looks at.
type ReviewInput struct {
	Agents []AgentRecord
	// Uses are the agents' tool calls; those older than Window do not
	// count as use of a privilege but still set the last activity.
	Uses []ToolUse
	// ActiveOwner reports whether an owner is a current, active person
	// (directory lookup). Nil: only a missing owner makes an agent
	// orphaned.
	ActiveOwner func(owner string) bool
	Now         time.Time
	// Window is the review period (the N days). Default 30 days.
	Window time.Duration
	// ExpiringWithin flags agents that expire soon. Default 14 days.
	ExpiringWithin time.Duration
}

// Agent statuses in a review, from the most urgent.
const (
	AgentDisabled = "disabled"
	AgentExpired  = "expired"
	AgentOrphaned = "orphaned"
	AgentExpiring = "expiring"
	AgentActive   = "active"
)

// AgentReview is the review of one agent.
type AgentReview struct {
	Agent     string    `json:"agent"`
	Owner     string    `json:"owner"`
	Expires   time.Time `json:"expires,omitzero"`
	Status    string    `json:"status"`
	Permitted []string  `json:"permitted"`
	// Used lists the permitted entries used within the window; Unused the
	// others (privileges to remove); Unpermitted tools used without a
	// matching entry (evidence of a gap elsewhere).
	Used         []string  `json:"used"`
	Unused       []string  `json:"unused"`
	Unpermitted  []string  `json:"unpermitted,omitempty"`
	Calls        int       `json:"calls"`
	LastActivity time.Time `json:"last_activity,omitzero"`
	Findings     []string  `json:"findings"`
}

// LifecycleReport is the result of ReviewAgents.
type LifecycleReport struct {
	Generated time.Time     `json:"generated"`
	Window    time.Duration `json:"window"`
	Agents    []AgentReview `json:"agents"`
	Summary   ReviewSummary `json:"summary"`
}

// ReviewSummary counts the findings.
type ReviewSummary struct {
	Agents           int `json:"agents"`
	Expired          int `json:"expired"`
	Expiring         int `json:"expiring"`
	Orphaned         int `json:"orphaned"`
	Disabled         int `json:"disabled"`
	NoExpiry         int `json:"no_expiry"`
	Inactive         int `json:"inactive"`
	UnusedPrivileges int `json:"unused_privileges"`
}

func permits(entry, server, tool string) bool {
	s, t, _ := strings.Cut(entry, "/")
	return s == server && (t == "*" || t == tool)
}

// ReviewAgents reports, for each agent: owner, expiry, tools permitted
// versus used in the window, unused privileges, last activity, and whether
// it is expired, orphaned (no owner, or an owner who is no longer active)
// or expiring. Agents are sorted by status urgency, then id.
func ReviewAgents(in ReviewInput) LifecycleReport {
	if in.Window <= 0 {
		in.Window = 30 * 24 * time.Hour
	}
	if in.ExpiringWithin <= 0 {
		in.ExpiringWithin = 14 * 24 * time.Hour
	}
	since := in.Now.Add(-in.Window)
	byAgent := map[string][]ToolUse{}
	for _, u := range in.Uses {
		byAgent[u.Agent] = append(byAgent[u.Agent], u)
	}
	rep := LifecycleReport{Generated: in.Now.UTC(), Window: in.Window, Agents: []AgentReview{}}
	days := func(d time.Duration) string { return fmt.Sprintf("%d days", int(d.Hours()/24)) }
	for _, ag := range in.Agents {
		r := AgentReview{Agent: ag.ID, Owner: ag.Owner, Expires: ag.Expires, Permitted: append([]string{}, ag.Permitted...),
			Used: []string{}, Unused: []string{}, Findings: []string{}}
		used := map[string]bool{}
		unpermitted := map[string]bool{}
		for _, u := range byAgent[ag.ID] {
			if u.Time.After(r.LastActivity) {
				r.LastActivity = u.Time
			}
			if u.Time.Before(since) {
				continue
			}
			r.Calls++
			matched := false
			for _, p := range ag.Permitted {
				if permits(p, u.Server, u.Tool) {
					used[p], matched = true, true
				}
			}
			if !matched {
				unpermitted[u.Server+"/"+u.Tool] = true
			}
		}
		for _, p := range ag.Permitted {
			if used[p] {
				r.Used = append(r.Used, p)
			} else {
				r.Unused = append(r.Unused, p)
			}
		}
		for t := range unpermitted {
			r.Unpermitted = append(r.Unpermitted, t)
		}
		slices.Sort(r.Unpermitted)
		r.Status = AgentActive
		switch {
		case ag.Disabled:
			r.Status = AgentDisabled
			r.Findings = append(r.Findings, "disabled: retire it (revokes its grants and tokens) or re-enable it")
		case !ag.Expires.IsZero() && !in.Now.Before(ag.Expires):
			r.Status = AgentExpired
			r.Findings = append(r.Findings, "expired on "+ag.Expires.UTC().Format("2006-01-02")+": retire or renew it")
		}
		if ag.Owner == "" {
			r.Findings = append(r.Findings, "no owner")
		} else if in.ActiveOwner != nil && !in.ActiveOwner(ag.Owner) {
			r.Findings = append(r.Findings, "owner "+ag.Owner+" is no longer active")
		}
		orphaned := ag.Owner == "" || (in.ActiveOwner != nil && !in.ActiveOwner(ag.Owner))
		if orphaned && r.Status == AgentActive {
			r.Status = AgentOrphaned
		}
		if ag.Expires.IsZero() {
			r.Findings = append(r.Findings, "no expiry date")
			rep.Summary.NoExpiry++
		} else if r.Status == AgentActive && ag.Expires.Sub(in.Now) < in.ExpiringWithin {
			r.Status = AgentExpiring
			r.Findings = append(r.Findings, "expires on "+ag.Expires.UTC().Format("2006-01-02"))
		}
		if len(r.Unused) > 0 {
			r.Findings = append(r.Findings, fmt.Sprintf("%d of %d permitted tools unused in the last %s: %s", len(r.Unused), len(ag.Permitted), days(in.Window), strings.Join(r.Unused, ", ")))
			rep.Summary.UnusedPrivileges += len(r.Unused)
		}
		if r.Calls == 0 {
			r.Findings = append(r.Findings, "no activity in the last "+days(in.Window))
			rep.Summary.Inactive++
		}
		if len(r.Unpermitted) > 0 {
			r.Findings = append(r.Findings, "used tools no permission names: "+strings.Join(r.Unpermitted, ", "))
		}
		switch r.Status {
		case AgentExpired:
			rep.Summary.Expired++
		case AgentExpiring:
			rep.Summary.Expiring++
		case AgentDisabled:
			rep.Summary.Disabled++
		}
		if orphaned {
			rep.Summary.Orphaned++
		}
		rep.Agents = append(rep.Agents, r)
	}
	rank := map[string]int{AgentDisabled: 1, AgentExpired: 0, AgentOrphaned: 2, AgentExpiring: 3, AgentActive: 4}
	slices.SortStableFunc(rep.Agents, func(a, b AgentReview) int {
		if c := rank[a.Status] - rank[b.Status]; c != 0 {
			return c
		}
		return strings.Compare(a.Agent, b.Agent)
	})
	rep.Summary.Agents = len(rep.Agents)
	return rep
}

// mdCell escapes what would break out of a Markdown table cell.
var mdCell = strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")

// mdEscape keeps a cell on one line and out of table syntax.
func mdEscape(s string) string {
	return mdCell.Replace(strings.Join(strings.Fields(s), " "))
}

// Markdown writes the report as a Markdown document.
func (r LifecycleReport) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Agent lifecycle review\n\nGenerated %s; activity window %d days.\n\n", r.Generated.Format("2006-01-02 15:04 UTC"), int(r.Window.Hours()/24))
	s := r.Summary
	fmt.Fprintf(&b, "%d agents: %d expired, %d expiring, %d orphaned, %d disabled, %d without expiry, %d inactive; %d unused privileges.\n\n",
		s.Agents, s.Expired, s.Expiring, s.Orphaned, s.Disabled, s.NoExpiry, s.Inactive, s.UnusedPrivileges)
	b.WriteString("| agent | status | owner | expires | last activity | calls | used / permitted | findings |\n|---|---|---|---|---|---|---|---|\n")
	for _, a := range r.Agents {
		exp, last := "never", "never"
		if !a.Expires.IsZero() {
			exp = a.Expires.UTC().Format("2006-01-02")
		}
		if !a.LastActivity.IsZero() {
			last = a.LastActivity.UTC().Format("2006-01-02")
		}
		owner := a.Owner
		if owner == "" {
			owner = "—"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %d / %d | %s |\n", mdEscape(a.Agent), a.Status, mdEscape(owner), exp, last, a.Calls,
			len(a.Used), len(a.Permitted), mdEscape(strings.Join(a.Findings, "; ")))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
