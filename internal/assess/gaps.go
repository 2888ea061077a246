package assess

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse/gatehouse/internal/config"
)

// Gateway is the live gateway configuration an assessment checks, and the
// policy directory it enforces.
type Gateway struct {
	// Config is the decoded, validated configuration.
	Config *config.File
	// ConfigName names the file in locations.
	ConfigName string
	// PolicyDir is the policy directory whose approval policies were
	// read: the one given to LoadGateway, else the configuration's
	// policy.dir as written; "" when there is none.
	PolicyDir string

	loc       locator
	approvals []ApprovalPolicy
	policyErr []string
}

// LoadGateway loads and validates the configuration at configPath (as the
// gateway does) and reads the approval policies of its policy directory:
// policyDir when not empty (a candidate directory), else the
// configuration's policy.dir. Locations name the files as given.
func LoadGateway(configPath, policyDir string) (*Gateway, error) {
	f, err := config.Load(configPath)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	gw := &Gateway{Config: f, ConfigName: configPath, PolicyDir: policyDir}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil {
		gw.loc = locator{root: &root}
	}
	if gw.PolicyDir == "" && f.Policy.Dir != "" {
		// Relative to the configuration file as it was named, so that
		// locations read the way the operator wrote them.
		gw.PolicyDir = f.Policy.Dir
		if !filepath.IsAbs(gw.PolicyDir) {
			gw.PolicyDir = filepath.Join(filepath.Dir(configPath), gw.PolicyDir)
		}
	}
	if gw.PolicyDir != "" {
		gw.approvals, gw.policyErr, err = readApprovalPolicies(gw.PolicyDir)
		if err != nil {
			return nil, err
		}
	}
	return gw, nil
}

// at returns "file:line key" for a configuration key path.
func (g *Gateway) at(path string) string {
	if l := g.loc.line(path); l > 0 {
		return fmt.Sprintf("%s:%d %s", g.ConfigName, l, path)
	}
	return fmt.Sprintf("%s %s", g.ConfigName, path)
}

// Check is one gap check of the gateway configuration against the
// recommendations. Each is a small function over the configuration (and
// the descriptor it is judged for); a later change extends it when the
// configuration format grows the key it needs.
type Check struct {
	// ID is the stable identifier findings carry.
	ID string
	// Title says what the check verifies.
	Title string
	// Key is the configuration key that satisfies the control. A part of
	// a control the configuration has no key for (a planned key, or rules
	// that live in the monitoring system) is reported in findings marked
	// NotConfigured, never as satisfied.
	Key string
	run func(g *Gateway, d *Descriptor) []Finding
}

// Checks lists the gap checks, in report order.
func Checks() []Check { return slices.Clone(checks) }

var checks = []Check{
	{ID: "gateway.agent_owner", Title: "every agent is registered with its accountable owner", Key: "agents[].owner", run: checkOwners},
	{ID: "gateway.agent_hosting", Title: "the agent's registered hosting pattern matches where it runs", Key: "agents[].hosting", run: checkHosting},
	{ID: "gateway.agent_expiry", Title: "every agent's registration lapses by its review date", Key: "agents[].expires", run: checkExpiry},
	{ID: "gateway.least_privilege", Title: "each agent may use only the servers its actions need", Key: "agents[].servers", run: checkServers},
	{ID: "gateway.tool_labels", Title: "every high-risk tool carries its risk label", Key: "servers[].tools.<tool>.labels", run: checkToolLabels},
	{ID: "gateway.approval_policy", Title: "every high-risk tool has an approval policy", Key: "policy.dir", run: checkApprovals},
	{ID: "gateway.approvers", Title: "every approval a high-risk tool needs can be granted, by enough eligible humans, once", Key: "governance.approvers, governance.rules", run: checkApprovers},
	{ID: "gateway.value_limits", Title: "financial tools have value limits", Key: "limits.values", run: checkValueLimits},
	{ID: "gateway.rate_limits", Title: "autonomous agents are rate limited", Key: "limits.rates", run: checkRateLimits},
	{ID: "gateway.embedded_secret", Title: "no secret is written inline in the configuration", Key: "servers[].env_files, servers[].header_files", run: checkEmbedded},
	{ID: "gateway.long_lived_secret", Title: "upstream credentials are not long-lived static secrets", Key: "servers[].token_exchange (planned)", run: checkStatic},
	{ID: "gateway.token_lifetime", Title: "gateway tokens are short-lived", Key: "identity.max_token_ttl", run: checkTokenTTL},
	{ID: "gateway.anonymous", Title: "no unauthenticated access", Key: "identity.anonymous_agent", run: checkAnonymous},
	{ID: "gateway.audience_binding", Title: "tokens are bound to this gateway's audience", Key: "identity.audience", run: checkAudience},
	{ID: "gateway.trust_sources", Title: "the gateway verifies each agent's workload identity itself", Key: "agents[].credentials", run: checkTrustSources},
	{ID: "gateway.trust_breadth", Title: "every trust source admits no more than the agents need, for this gateway's audience", Key: "identity.trust_sources", run: checkTrustBreadth},
	{ID: "gateway.preview_identity", Title: "no agent is admitted on a preview identity when preview is not acceptable", Key: "agents[].credentials", run: checkPreviewIdentity},
	{ID: "gateway.transport", Title: "agent traffic is encrypted", Key: "tls", run: checkTLS},
	{ID: "gateway.pinning", Title: "tool definitions are pinned", Key: "pinning.mode", run: checkPinning},
	{ID: "gateway.kill_switch", Title: "the kill switch stops an agent at once and fails closed", Key: "locks.fail_mode, locks.max_stale", run: checkKillSwitch},
	{ID: "gateway.audit_export", Title: "the audit log is exported continuously", Key: "audit.export", run: checkAuditExport},
	{ID: "gateway.traces", Title: "autonomous agents' requests are traced", Key: "telemetry.otlp_endpoint", run: checkTraces},
	{ID: "gateway.alerts", Title: "challenges and break-glass reach a human at once; blocks and anomalies raise alerts", Key: "governance.notifications", run: checkAlerts},
}

// check runs every check.
func (g *Gateway) check(d *Descriptor) []Finding {
	var out []Finding
	for _, c := range checks {
		for _, f := range c.run(g, d) {
			if f.Check == "" {
				f.Check = c.ID
			}
			if f.Key == "" {
				f.Key = c.Key
			}
			out = append(out, f)
		}
	}
	return out
}

func (g *Gateway) agentIndex(id string) int {
	return slices.IndexFunc(g.Config.Agents, func(a config.Agent) bool { return a.ID == id })
}

func checkOwners(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for ai, a := range d.Agents {
		i := g.agentIndex(a.ID)
		ownerless := strings.TrimSpace(a.Owner) == ""
		switch {
		case i < 0:
			msg := fmt.Sprintf("agent %s is not registered in the configuration file (an agent in the runtime registry is not checked here)", a.ID)
			if ownerless {
				msg += "; the descriptor names no owner either, so nothing here says who is accountable for it"
			}
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID, Message: msg, Location: g.at("agents"),
				Fix: "register it under agents: with its owner and servers"})
		// config.Load refuses an agent without an owner (exit 1), so a
		// registered agent always has one; the descriptor may not.
		case ownerless:
			k := fmt.Sprintf("agents[%d].owner", ai)
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  fmt.Sprintf("the descriptor names no owner for the agent; the configuration registers %q", g.Config.Agents[i].Owner),
				Location: d.Location(k) + " " + k,
				Fix:      "name the same accountable owner in the descriptor (owner:), so the assessment and the gateway agree"})
		case g.Config.Agents[i].Owner != a.Owner:
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  fmt.Sprintf("the configuration names owner %q, the descriptor %q", g.Config.Agents[i].Owner, a.Owner),
				Location: g.at(fmt.Sprintf("agents[%d].owner", i)),
				Fix:      "make the accountable owner the same in both"})
		}
		if i >= 0 && g.Config.Agents[i].Disabled {
			fs = append(fs, Finding{Severity: Info, Agent: a.ID,
				Message: "the agent is disabled in the configuration", Location: g.at(fmt.Sprintf("agents[%d].disabled", i))})
		}
	}
	for i, ca := range g.Config.Agents {
		if !slices.ContainsFunc(d.Agents, func(a Agent) bool { return a.ID == ca.ID }) {
			fs = append(fs, Finding{Severity: Info,
				Message:  fmt.Sprintf("registered agent %s is not described in the deployment descriptor, so it was not assessed", ca.ID),
				Location: g.at(fmt.Sprintf("agents[%d]", i))})
		}
	}
	return fs
}

// checkExpiry reads each described agent's agents[].expires. The gateway
// refuses an agent from the instant its registration lapses: a date
// (YYYY-MM-DD) is midnight UTC at its start. The descriptor's expires is
// a review date, valid through its end.
func checkExpiry(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for _, a := range d.Agents {
		i := g.agentIndex(a.ID)
		if i < 0 {
			continue // checkOwners reports the unregistered agent
		}
		key := fmt.Sprintf("agents[%d].expires", i)
		raw := g.Config.Agents[i].Expires
		if raw == "" {
			fix := fmt.Sprintf("set %s to the date the agent is reviewed or retired", key)
			if a.Expires != "" {
				fix = fmt.Sprintf("set %s: %s, the descriptor's review date (the registration then lapses at 00:00 UTC that day)", key, a.Expires)
			}
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  "the agent is registered without an expiry: its registration never lapses, whatever happens to its review",
				Location: g.at(key), Fix: fix})
			continue
		}
		exp, _ := config.ParseTime(raw) // config.Load refused any other form
		if !d.now.IsZero() && !d.now.Before(exp) {
			fs = append(fs, Finding{Severity: Blocker, Agent: a.ID,
				Message:  fmt.Sprintf("the registration lapsed at %s: the gateway refuses every request of the agent (agent_expired)", exp.Format(time.RFC3339)),
				Location: g.at(key),
				Fix:      fmt.Sprintf("review the agent and move %s forward, or retire it", key)})
			continue
		}
		if review, err := time.Parse(time.DateOnly, a.Expires); err == nil && exp.After(review.AddDate(0, 0, 1)) {
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  fmt.Sprintf("the registration lapses at %s, after the descriptor's review date %s: the agent keeps working if the review does not happen", exp.Format(time.RFC3339), a.Expires),
				Location: g.at(key),
				Fix:      fmt.Sprintf("set %s no later than %s", key, a.Expires)})
		}
	}
	return fs
}

// configHosting maps a descriptor platform to the hosting patterns the
// configuration may register for it.
var configHosting = map[string][]string{
	"azure":    {"azure-native"},
	"aws":      {"aws-native"},
	"external": {"external", "kubernetes", "spiffe"},
}

func checkHosting(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for _, a := range d.Agents {
		i := g.agentIndex(a.ID)
		if i < 0 {
			continue
		}
		h := orDefault(g.Config.Agents[i].Hosting, "external")
		if want := configHosting[a.Hosting.Platform]; !slices.Contains(want, h) {
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  fmt.Sprintf("the configuration registers hosting %q, but the agent runs on %s", h, a.Hosting.Platform),
				Location: g.at(fmt.Sprintf("agents[%d].hosting", i)),
				Fix:      fmt.Sprintf("set agents[%d].hosting to %s so policies that test principal.hosting see where it runs", i, strings.Join(want, " or "))})
		}
	}
	return fs
}

// toolConfig returns the configuration of a gateway tool <server>__<tool>
// and the index of its server, or -1.
func (g *Gateway) toolConfig(tool string) (config.Tool, int, bool) {
	server, name, _ := strings.Cut(tool, "__")
	i := slices.IndexFunc(g.Config.Servers, func(s config.Server) bool { return s.ID == server })
	if i < 0 {
		return config.Tool{}, -1, false
	}
	t, ok := g.Config.Servers[i].Tools[name]
	return t, i, ok
}

// labelled says whether the gateway gives tool the risk label: true or
// false when the configuration labels the tool; unknown when its labels
// come from the server's MCP annotations at run time.
func (g *Gateway) labelled(tool, risk string) (has, known bool) {
	t, _, ok := g.toolConfig(tool)
	if !ok || len(t.Labels) == 0 {
		return false, false
	}
	return slices.Contains(t.Labels, risk), true
}

func checkToolLabels(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for ai, a := range d.Agents {
		for j, act := range a.Actions {
			risk := a.risk(j)
			if risk == "none" {
				continue
			}
			_, si, _ := g.toolConfig(act.Tool)
			if si < 0 {
				continue // checkServers reports the undefined server
			}
			_, name, _ := strings.Cut(act.Tool, "__")
			key := fmt.Sprintf("servers[%d].tools.%s.labels", si, name)
			switch has, known := g.labelled(act.Tool, risk); {
			case known && !has:
				fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
					Message:  fmt.Sprintf("tool %s is labelled without %q: configured labels replace those from MCP annotations, so label-based policies and limits do not see it as %s", act.Tool, risk, riskNames[risk]),
					Location: g.at(key),
					Fix:      fmt.Sprintf("add %s to %s", risk, key)})
			case !known:
				why := fmt.Sprintf("MCP annotations cannot express %q", risk)
				if risk == "destructive" {
					why = "its destructive label then depends on the server's own annotations"
				}
				fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
					Message:  fmt.Sprintf("high-risk tool %s (%s) has no labels in the configuration: %s", act.Tool, riskNames[risk], why),
					Location: g.at(fmt.Sprintf("servers[%d]", si)) + " " + d.Location(fmt.Sprintf("agents[%d].actions[%d]", ai, j)),
					Fix:      fmt.Sprintf("label it: servers[%d].tools.%s.labels: [%s]", si, name, risk)})
			}
		}
	}
	return fs
}

func checkValueLimits(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for ai, a := range d.Agents {
		for j, act := range a.Actions {
			if a.risk(j) != "financial" {
				continue
			}
			server, name, _ := strings.Cut(act.Tool, "__")
			if slices.ContainsFunc(g.Config.Limits.Values, func(v config.ValueLimit) bool { return v.Server == server && v.Tool == name }) {
				continue
			}
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  fmt.Sprintf("financial tool %s has no value limit (per-call ceiling, running totals)", act.Tool),
				Location: g.at("limits") + " " + d.Location(fmt.Sprintf("agents[%d].actions[%d]", ai, j)),
				Fix:      fmt.Sprintf("add a limits.values rule for server %s, tool %s, with a ceiling and daily totals", server, name)})
		}
	}
	return fs
}

func checkRateLimits(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for _, a := range d.Agents {
		if a.Autonomy != "autonomous" {
			continue
		}
		applies := func(r config.RateLimit) bool {
			return (r.Agent == "" || r.Agent == a.ID) && r.Server == "" && r.Tool == ""
		}
		if slices.ContainsFunc(g.Config.Limits.Rates, applies) {
			continue
		}
		fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
			Message:  "the autonomous agent has no rate limit over all its calls",
			Location: g.at("limits"),
			Fix:      fmt.Sprintf("add a limits.rates rule with agent: %s (or per: [agent]) bounding its calls", a.ID)})
	}
	return fs
}

// maxStaleForBroadAutonomy is the longest a replica may go on enforcing
// stale locks before the assessor calls the kill switch slow.
const maxStaleForBroadAutonomy = 30 * time.Second

func checkKillSwitch(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	broad := slices.ContainsFunc(d.Agents, func(a Agent) bool { return a.Autonomy == "autonomous" })
	sev := Condition
	if broad {
		sev = Blocker
	}
	if g.Config.Locks.FailMode == "open" {
		fs = append(fs, Finding{Severity: sev,
			Message:  "the kill switch fails open: while the lock store is unreadable, new locks do not take effect",
			Location: g.at("locks.fail_mode"),
			Fix:      "set locks.fail_mode: closed (the default)"})
	}
	if ms := g.Config.Locks.MaxStale.Std(); ms > maxStaleForBroadAutonomy {
		fs = append(fs, Finding{Severity: Condition,
			Message:  fmt.Sprintf("locks may go unrefreshed for %v before the fail mode applies: a kill can take that long to reach a replica that lost the lock store", ms),
			Location: g.at("locks.max_stale"),
			Fix:      fmt.Sprintf("keep locks.max_stale at %v or less (default 5s)", maxStaleForBroadAutonomy)})
	}
	return fs
}

func checkAuditExport(g *Gateway, d *Descriptor) []Finding {
	if len(g.Config.Audit.Export) > 0 {
		return nil
	}
	var fs []Finding
	for _, a := range d.Agents {
		f := Finding{Severity: Condition, Agent: a.ID,
			Message:  "the audit log is not exported: responders see it only on the gateway",
			Location: g.at("audit"),
			Fix:      "add an audit.export stream (url, file or stdout) to the SIEM"}
		if a.Autonomy == "autonomous" {
			f.Severity = Blocker
			f.Message += "; not ready for broad production autonomy"
		}
		fs = append(fs, f)
	}
	return fs
}

func checkTraces(g *Gateway, d *Descriptor) []Finding {
	if g.Config.Telemetry.OTLPEndpoint != "" {
		return nil
	}
	var fs []Finding
	for _, a := range d.Agents {
		if a.Autonomy == "autonomous" {
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  "tracing is off: an autonomous agent's requests, stages and upstream calls cannot be followed end to end",
				Location: g.at("telemetry"),
				Fix:      "set telemetry.otlp_endpoint to the OpenTelemetry collector"})
		}
	}
	return fs
}

func serverOf(tool string) string {
	s, _, _ := strings.Cut(tool, "__")
	return s
}

func checkServers(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	known := map[string]bool{}
	for _, s := range g.Config.Servers {
		known[s.ID] = true
	}
	for _, a := range d.Agents {
		i := g.agentIndex(a.ID)
		if i < 0 {
			continue
		}
		ca := g.Config.Agents[i]
		need := map[string]bool{}
		for j, act := range a.Actions {
			s := serverOf(act.Tool)
			need[s] = true
			switch {
			case !known[s]:
				fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
					Message:  fmt.Sprintf("tool %s is on server %q, which the configuration does not define", act.Tool, s),
					Location: d.Location(fmt.Sprintf("agents[%d].actions[%d]", agentPos(d, a.ID), j)) + "; " + g.at("servers")})
			case !slices.Contains(ca.Servers, s):
				fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
					Message:  fmt.Sprintf("the agent declares tool %s but may not use server %q", act.Tool, s),
					Location: g.at(fmt.Sprintf("agents[%d].servers", i)),
					Fix:      "add the server, or remove the action from the descriptor"})
			}
		}
		for _, s := range ca.Servers {
			if !need[s] {
				fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
					Message:  fmt.Sprintf("the agent may use server %q but declares no action on it (broader than needed)", s),
					Location: g.at(fmt.Sprintf("agents[%d].servers", i)),
					Fix:      "remove the server from agents[].servers, or declare the actions the agent needs there"})
			}
		}
	}
	return fs
}

func agentPos(d *Descriptor, id string) int {
	return slices.IndexFunc(d.Agents, func(a Agent) bool { return a.ID == id })
}

func checkApprovals(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for _, p := range g.policyErr {
		fs = append(fs, Finding{Severity: Blocker, Message: "policy file does not parse: " + p, Location: g.PolicyDir})
	}
	for ai, a := range d.Agents {
		for j, act := range a.Actions {
			risk := a.risk(j)
			if risk == "none" {
				continue
			}
			k := fmt.Sprintf("agents[%d].actions[%d]", ai, j)
			if g.PolicyDir == "" {
				fs = append(fs, Finding{Severity: Blocker, Agent: a.ID,
					Message:  fmt.Sprintf("high-risk tool %s has no approval policy: policy.dir is not set, so no Cedar policy runs", act.Tool),
					Location: g.at("policy") + " " + d.Location(k),
					Fix:      "set policy.dir to a directory holding a @challenge policy for the tool"})
				continue
			}
			covering, how, unlabelled := g.covering(a.ID, act.Tool, risk)
			groups := map[string]bool{}
			for _, p := range covering {
				groups[p.Group] = true
			}
			switch {
			case len(how) == 0:
				msg := fmt.Sprintf("high-risk tool %s (%s) has no approval policy in %s", act.Tool, riskNames[risk], g.PolicyDir)
				if len(unlabelled) > 0 {
					msg += fmt.Sprintf(" that applies to it: %s challenge tools labelled %q, and the gateway does not give it that label", strings.Join(unlabelled, ", "), risk)
				}
				fs = append(fs, Finding{Severity: Blocker, Agent: a.ID, Message: msg,
					Location: d.Location(k) + " " + k,
					Fix: fmt.Sprintf("label the tool %s in servers[].tools, or add a challenge policy naming it: @challenge(%q) @risk(%q) forbid (principal, action == Gatehouse::Action::\"call_tool\", resource == Gatehouse::Tool::%q);",
						risk, orDefault(act.Approval, "approvers"), risk, act.Tool)})
			case act.Approval != "" && !groups[act.Approval]:
				fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
					Message:  fmt.Sprintf("high-risk tool %s is approved by %s, not by the descriptor's approver group %q", act.Tool, strings.Join(sortedMapKeys(groups), ", "), act.Approval),
					Location: d.Location(k+".approval") + " " + k + ".approval"})
			default:
				fs = append(fs, Finding{Severity: Info, Agent: a.ID,
					Message: fmt.Sprintf("high-risk tool %s is covered by %s", act.Tool, strings.Join(how, "; ")), Location: g.PolicyDir})
			}
		}
	}
	return fs
}

// orList joins "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// covering returns the approval policies of the policy directory that
// apply to agent's calls of tool (with risk label risk), how each applies,
// and the policies that would apply if the gateway gave the tool the
// label.
func (g *Gateway) covering(agent, tool, risk string) (ps []ApprovalPolicy, how, unlabelled []string) {
	for _, p := range g.approvals {
		ok, why := p.covers(agent, tool, risk)
		if !ok {
			continue
		}
		if why == byLabel {
			switch has, known := g.labelled(tool, risk); {
			case known && !has:
				unlabelled = append(unlabelled, p.ID)
				continue
			case known:
				why = fmt.Sprintf("challenges tools labelled %q, as the configuration labels this one", risk)
			default:
				why = fmt.Sprintf("challenges tools labelled %q; the tool's labels come from its MCP annotations", risk)
				if risk != "destructive" {
					// Annotations never yield this label.
					unlabelled = append(unlabelled, p.ID)
					continue
				}
			}
		}
		ps = append(ps, p)
		how = append(how, fmt.Sprintf("%s (%s:%d, approver group %s), which %s", p.ID, p.File, p.Line, p.Group, why))
	}
	return ps, how, unlabelled
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// secretName matches names that say they hold a credential; notSecret
// matches names that say they hold where one is, not the credential.
var (
	secretName = regexp.MustCompile(`(?i)(secret|token|passw(or)?d|api[_-]?key|access[_-]?key|private[_-]?key|credential|bearer)`)
	notSecret  = regexp.MustCompile(`(?i)[_-](url|uri|endpoint|path|file|dir|host|name|id)$`)
)

func isSecretName(name string) bool {
	return secretName.MatchString(name) && !notSecret.MatchString(name)
}

func checkEmbedded(g *Gateway, _ *Descriptor) []Finding {
	var fs []Finding
	urls := []struct{ key, url string }{{"audit.checkpoint_webhook", g.Config.Audit.CheckpointWebhook}, {"telemetry.otlp_endpoint", g.Config.Telemetry.OTLPEndpoint}}
	for i, e := range g.Config.Audit.Export {
		urls = append(urls, struct{ key, url string }{fmt.Sprintf("audit.export[%d].url", i), e.URL})
	}
	for _, x := range urls {
		if x.url == "" {
			continue
		}
		if u, err := url.Parse(x.url); err == nil {
			if u.User != nil {
				fs = append(fs, Finding{Severity: Blocker, Message: fmt.Sprintf("%s carries credentials in the URL", x.key),
					Location: g.at(x.key), Fix: "send them as a header from a header file"})
			}
			for _, q := range sortedMapKeys(u.Query()) {
				if isSecretName(q) {
					fs = append(fs, Finding{Severity: Blocker, Message: fmt.Sprintf("%s carries a credential in query parameter %s", x.key, q),
						Location: g.at(x.key), Fix: "send it as a header from a header file"})
				}
			}
		}
	}
	for i, s := range g.Config.Servers {
		for _, name := range sortedMapKeys(s.Env) {
			if isSecretName(name) && s.Env[name] != "" {
				fs = append(fs, Finding{Severity: Blocker,
					Message:  fmt.Sprintf("server %s: environment variable %s holds a secret inline", s.ID, name),
					Location: g.at(fmt.Sprintf("servers[%d].env.%s", i, name)),
					Fix:      "move it to a file and name the file under env_files"})
			}
		}
		if u, err := url.Parse(s.URL); err == nil && s.URL != "" {
			for _, q := range sortedMapKeys(u.Query()) {
				if isSecretName(q) {
					fs = append(fs, Finding{Severity: Blocker,
						Message:  fmt.Sprintf("server %s: the URL carries a credential in query parameter %s", s.ID, q),
						Location: g.at(fmt.Sprintf("servers[%d].url", i)),
						Fix:      "send it as a header from header_files instead"})
				}
			}
		}
		for j, arg := range s.Command {
			name, val, hasVal := strings.Cut(strings.TrimLeft(arg, "-"), "=")
			if strings.HasPrefix(arg, "-") && isSecretName(name) && (hasVal && val != "" || j+1 < len(s.Command) && !strings.HasPrefix(s.Command[j+1], "-")) {
				fs = append(fs, Finding{Severity: Blocker,
					Message:  fmt.Sprintf("server %s: command argument %s passes a secret on the command line", s.ID, strings.SplitN(arg, "=", 2)[0]),
					Location: g.at(fmt.Sprintf("servers[%d].command[%d]", i, j)),
					Fix:      "pass it through env_files"})
			}
		}
	}
	return fs
}

func sortedMapKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func checkStatic(g *Gateway, _ *Descriptor) []Finding {
	var fs []Finding
	for i, s := range g.Config.Servers {
		var names []string
		var key string
		for _, h := range sortedMapKeys(s.HeaderFiles) {
			names = append(names, "header "+h)
			key = fmt.Sprintf("servers[%d].header_files", i)
		}
		for _, e := range sortedMapKeys(s.EnvFiles) {
			if isSecretName(e) {
				names = append(names, "environment variable "+e)
				key = fmt.Sprintf("servers[%d].env_files", i)
			}
		}
		if len(names) == 0 {
			continue
		}
		fs = append(fs, Finding{Severity: Condition, NotConfigured: true,
			Message:  fmt.Sprintf("server %s receives a static credential (%s): long-lived, shared by every agent, bound to no audience", s.ID, strings.Join(names, ", ")),
			Location: g.at(key),
			Fix:      "prefer a short-lived credential per call (OAuth token exchange) once the gateway supports it; meanwhile rotate the file's secret and scope it to what the server needs"})
	}
	return fs
}

func checkTokenTTL(g *Gateway, _ *Descriptor) []Finding {
	if ttl := g.Config.Identity.MaxTokenTTL.Std(); ttl > time.Hour {
		return []Finding{{Severity: Condition,
			Message:  fmt.Sprintf("gateway tokens may live up to %v", ttl),
			Location: g.at("identity.max_token_ttl"),
			Fix:      "keep identity.max_token_ttl at 1h or less; agents renew from their workload identity"}}
	}
	return nil
}

func checkAnonymous(g *Gateway, _ *Descriptor) []Finding {
	if a := g.Config.Identity.AnonymousAgent; a != "" {
		return []Finding{{Severity: Blocker,
			Message:  fmt.Sprintf("unauthenticated requests act as agent %s (for local conformance runs only)", a),
			Location: g.at("identity.anonymous_agent"),
			Fix:      "remove identity.anonymous_agent"}}
	}
	return nil
}

func checkAudience(g *Gateway, _ *Descriptor) []Finding {
	if g.Config.Identity.Audience == "gatehouse" {
		return []Finding{{Severity: Info,
			Message:  "tokens carry the default audience \"gatehouse\", the same for every Gatehouse deployment",
			Location: g.at("identity"),
			Fix:      "set identity.audience to this gateway's public URL so a token minted for another gateway that shares keys is refused"}}
	}
	return nil
}

// sourceKinds are the trust-source kinds that verify each descriptor
// identity type (docs/identity.md, hosting patterns): Entra for Microsoft
// Entra identities; AWS for IAM principals, or the cluster's issuer for
// web-identity tokens of a role on EKS; the platform's issuer for other
// workloads.
var sourceKinds = map[string][]string{
	"managed_identity":  {"entra"},
	"service_principal": {"entra"},
	"entra_agent_id":    {"entra"},
	"iam_role":          {"aws", "kubernetes", "oidc"},
	"iam_user":          {"aws"},
	"workload":          {"kubernetes", "spiffe", "oidc"},
}

func (g *Gateway) trustSource(name string) (config.TrustSource, int) {
	i := slices.IndexFunc(g.Config.Identity.TrustSources, func(ts config.TrustSource) bool { return ts.Name == name })
	if i < 0 {
		return config.TrustSource{}, -1
	}
	return g.Config.Identity.TrustSources[i], i
}

// credentialFits says whether a federated credential can authenticate an
// identity of one of kinds: its source has such a kind and trusts the
// credential's tenant. config.Load has checked that the source exists.
func (g *Gateway) credentialFits(c config.Credential, kinds []string) (bool, string) {
	ts, _ := g.trustSource(c.Source)
	switch {
	case !slices.Contains(kinds, ts.Kind):
		return false, fmt.Sprintf("source %s is of kind %s", ts.Name, ts.Kind)
	case ts.Kind == "entra" && !slices.Contains(ts.Tenants, c.Tenant):
		return false, fmt.Sprintf("source %s does not trust tenant %s, so the credential can never match", ts.Name, c.Tenant)
	case ts.Kind == "aws" && len(ts.Accounts) > 0 && !slices.Contains(ts.Accounts, c.Tenant):
		return false, fmt.Sprintf("source %s does not trust account %s, so the credential can never match", ts.Name, c.Tenant)
	}
	return true, ""
}

// checkTrustSources: each described agent authenticates with its own
// workload identity, verified by a trust source of the matching kind,
// rather than with a gateway-minted token.
func checkTrustSources(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	for _, a := range d.Agents {
		i := g.agentIndex(a.ID)
		kinds, ok := sourceKinds[a.Identity.Type]
		if i < 0 || !ok {
			continue // unregistered (checkOwners), or an API key: no workload identity to verify (question 1)
		}
		key := fmt.Sprintf("agents[%d].credentials", i)
		creds := g.Config.Agents[i].Credentials
		if len(creds) == 0 {
			msg := fmt.Sprintf("the agent has no federated credential: the gateway cannot verify its %s itself, so it can only present a gateway-minted token", a.Identity.Type)
			if len(g.Config.Identity.TrustSources) == 0 {
				msg += " (identity.trust_sources is empty)"
			}
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID, Message: msg, Location: g.at(key),
				Fix: fmt.Sprintf("add a trust source of kind %s under identity.trust_sources and register the agent's identity under %s (source, tenant for entra and aws, exact subject)", orList(kinds), key)})
			continue
		}
		var why []string
		fits := false
		for _, c := range creds {
			ok, reason := g.credentialFits(c, kinds)
			fits = fits || ok
			if !ok {
				why = append(why, reason)
			}
		}
		if !fits {
			fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
				Message:  fmt.Sprintf("none of the agent's credentials verifies its %s: %s", a.Identity.Type, strings.Join(why, "; ")),
				Location: g.at(key),
				Fix:      fmt.Sprintf("register the agent's %s through a trust source of kind %s that trusts its tenant or account", a.Identity.Type, orList(kinds))})
		}
	}
	return fs
}

// checkPreviewIdentity: the gateway admitting an agent through an Entra
// source on a Microsoft Entra Agent ID identity makes authentication, a
// core control, rest on a preview capability.
func checkPreviewIdentity(g *Gateway, d *Descriptor) []Finding {
	if *d.PreviewAcceptable {
		return nil // question 5 asks for a GA fallback
	}
	var fs []Finding
	for ai, a := range d.Agents {
		i := g.agentIndex(a.ID)
		if i < 0 || a.Identity.Type != "entra_agent_id" {
			continue
		}
		what := knownPreview["entra_agent_id"].name + " identity, which is in preview"
		srcs := []string{knownPreview["entra_agent_id"].source}
		if a.Identity.ConditionalAccess == "agent_id" {
			what = knownPreview["entra_agent_id"].name + " identity under " + knownPreview["entra_agent_id_conditional_access"].name + ", both in preview"
			srcs = append(srcs, knownPreview["entra_agent_id_conditional_access"].source)
		}
		for j, c := range g.Config.Agents[i].Credentials {
			if ts, _ := g.trustSource(c.Source); ts.Kind != "entra" {
				continue
			}
			fs = append(fs, Finding{Severity: Blocker, Agent: a.ID,
				Message:  fmt.Sprintf("the gateway admits the agent through Entra trust source %s on its %s, and preview is not acceptable (%s)", c.Source, what, d.Location(fmt.Sprintf("agents[%d].identity.type", ai))),
				Location: g.at(fmt.Sprintf("agents[%d].credentials[%d]", i, j)),
				Fix:      "register a GA identity as the agent's credential (a service principal with workload identity federation, or a managed identity) and keep Agent ID additive",
				Sources:  srcs})
		}
	}
	return fs
}

// checkTrustBreadth judges each trust source on its own: who it admits
// and for which audience. config.Load already refuses an oidc, kubernetes
// or spiffe source without an issuer or trust domain, any non-AWS source
// without an audience, and an Entra source without tenants; the gateway
// refuses to start the sources reported as blockers here.
func checkTrustBreadth(g *Gateway, _ *Descriptor) []Finding {
	var fs []Finding
	for k, ts := range g.Config.Identity.TrustSources {
		key := fmt.Sprintf("identity.trust_sources[%d]", k)
		add := func(sev Severity, sub, msg, fix string) {
			fs = append(fs, Finding{Severity: sev, Message: fmt.Sprintf("trust source %s: %s", ts.Name, msg), Location: g.at(key + sub), Fix: fix})
		}
		switch ts.Kind {
		case "oidc", "kubernetes", "spiffe":
			exact, prefixes, field := ts.Subjects, ts.SubjectPrefixes, "subjects or subject_prefixes"
			if ts.Kind == "spiffe" {
				exact, prefixes, field = ts.IDs, ts.IDPrefixes, "ids or id_prefixes"
			}
			if len(exact) == 0 && len(prefixes) == 0 && !ts.Users {
				who := "issuer " + ts.Issuer
				if ts.Kind == "spiffe" {
					who = "trust domain " + ts.TrustDomain
				}
				add(Condition, "", fmt.Sprintf("no subject rule: it admits every identity of %s, and only the credentials registered on agents stop another workload there", who),
					"list the agents' exact subjects, or a prefix that ends at a namespace or path boundary, under "+field)
			}
			for j, p := range prefixes {
				if why := widePrefix(ts.Kind, ts.TrustDomain, p); why != "" {
					sub := fmt.Sprintf(".subject_prefixes[%d]", j)
					if ts.Kind == "spiffe" {
						sub = fmt.Sprintf(".id_prefixes[%d]", j)
					}
					add(Condition, sub, fmt.Sprintf("prefix %q %s", p, why), "narrow it to the agents' namespace or path, ending with its separator, or list exact subjects")
				}
			}
		case "entra":
			for j, t := range ts.Tenants {
				if t == "common" || t == "organizations" || t == "consumers" {
					add(Blocker, fmt.Sprintf(".tenants[%d]", j), fmt.Sprintf("%q is a multi-tenant authority, not a tenant id: it would admit tokens from any tenant, and the gateway refuses to start the source", t),
						"list the tenant ids (GUIDs) whose workloads may authenticate")
				}
			}
		case "aws":
			if ts.Audience == "" {
				add(Blocker, "", "no audience: the gateway refuses to start the source, and without a signed audience header a GetCallerIdentity request signed for another relying party could be replayed to it (confused deputy)",
					"set audience to a value that names this gateway; agents sign it in the X-Gatehouse-Audience header")
			}
			if len(ts.Accounts) == 0 {
				add(Condition, "", "no accounts: it admits IAM roles of every AWS account, and only the credentials registered on agents stop another account's roles",
					"list the agents' AWS accounts under accounts")
			}
			if ts.AllowUsers {
				add(Condition, ".allow_users", "IAM users may authenticate: their long-lived access keys become agent credentials",
					"remove allow_users and give each agent an IAM role")
			}
		}
	}
	return fs
}

// widePrefix says why a subject (or SPIFFE ID) prefix admits more than
// the namespace or path it names, or "" when it does not.
func widePrefix(kind, trustDomain, p string) string {
	const sa = "system:serviceaccount:"
	ns, _, closed := strings.Cut(strings.TrimPrefix(p, sa), ":")
	switch {
	case p == "":
		return "matches every subject"
	case kind == "kubernetes" && strings.HasPrefix(sa, p):
		return "admits the service accounts of every namespace"
	case kind == "kubernetes" && (!strings.HasPrefix(p, sa) || ns == ""):
		return "" // matches no service account
	case kind == "kubernetes" && !closed:
		return fmt.Sprintf("does not end at a namespace boundary: it also admits the service accounts of every namespace whose name starts with %q", ns)
	case kind == "kubernetes":
		return "" // within one namespace
	case kind == "spiffe" && p == "spiffe://"+trustDomain+"/":
		return "admits every workload of the trust domain"
	case kind == "spiffe" && !strings.HasSuffix(p, "/"):
		return "does not end at a path boundary (/): it also admits IDs that merely start with it"
	}
	return ""
}

func checkTLS(g *Gateway, _ *Descriptor) []Finding {
	if g.Config.TLS == nil && !config.IsLoopback(g.Config.Listen) {
		return []Finding{{Severity: Condition,
			Message:  fmt.Sprintf("the MCP listener %s is not loopback and serves plain HTTP: agent tokens cross the network in clear unless TLS terminates in front of it", g.Config.Listen),
			Location: g.at("listen"),
			Fix:      "set tls.cert_file and tls.key_file, or terminate TLS in a proxy on the same host"}}
	}
	return nil
}

func checkPinning(g *Gateway, d *Descriptor) []Finding {
	if g.Config.Pinning.Mode != "off" {
		return nil
	}
	sev := Condition
	for _, a := range d.Agents {
		if a.Autonomy == "autonomous" {
			sev = Blocker
		}
	}
	return []Finding{{Severity: sev,
		Message:  "tool-definition pinning is off: a changed tool description reaches agents unreviewed",
		Location: g.at("pinning.mode"),
		Fix:      "set pinning.mode: enforce"}}
}

// checkApprovers: the approval a challenge policy asks for can actually
// be granted. Today approvers decide with the admin credential as a name
// listed under governance.approvers (docs/governance.md); such approvals
// carry no authentication time or context, so a rule demanding
// fresh_auth or acr can never be met.
func checkApprovers(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	gov := g.Config.Governance
	type seen struct{ agent, group, class string }
	done := map[seen]bool{}
	for _, a := range d.Agents {
		owner := a.Owner
		if i := g.agentIndex(a.ID); i >= 0 {
			owner = g.Config.Agents[i].Owner
		}
		for j, act := range a.Actions {
			risk := a.risk(j)
			if risk == "none" {
				continue
			}
			ps, _, _ := g.covering(a.ID, act.Tool, risk)
			for _, p := range ps {
				class := orDefault(p.Risk, "default")
				if done[seen{a.ID, p.Group, class}] {
					continue
				}
				done[seen{a.ID, p.Group, class}] = true
				ruleKey := "governance.rules." + class
				rule, ok := gov.Rules[class]
				if !ok {
					rule, ruleKey = gov.Rules["default"], "governance.rules.default"
				}
				if rule.FreshAuth > 0 || len(rule.ACR) > 0 {
					fs = append(fs, Finding{Severity: Blocker, Agent: a.ID,
						Message:  fmt.Sprintf("approvals of risk class %s (policy %s, tool %s) require fresh or stronger authentication (fresh_auth, acr), which approvals with the admin credential never satisfy; the gateway offers no other way to approve yet, so no such call can be approved", class, p.ID, act.Tool),
						Location: g.at(ruleKey),
						Fix:      "remove fresh_auth and acr from the rule until approvers can sign in to the approval console with OIDC"})
				}
				quorum := max(rule.Quorum, 1)
				var eligible, excluded []string
				for _, name := range sortedMapKeys(gov.Approvers) {
					ap := gov.Approvers[name]
					switch {
					case !slices.Contains(ap.Groups, p.Group):
					case ap.NonHuman:
						excluded = append(excluded, name+" (not human)")
					case name == owner && !rule.OwnerMayApprove:
						excluded = append(excluded, name+" (the agent's owner)")
					case name == a.ID:
						excluded = append(excluded, name+" (the agent itself)")
					default:
						eligible = append(eligible, name)
					}
				}
				if len(eligible) < quorum {
					msg := fmt.Sprintf("approver group %s, which policy %s asks to approve %s, has %s", p.Group, p.ID, act.Tool, plural(len(eligible), "eligible human approver", "eligible human approvers"))
					if len(eligible) > 0 {
						msg += " (" + strings.Join(eligible, ", ") + ")"
					}
					msg += fmt.Sprintf(" and risk class %s needs %d: every such call waits until its request expires", class, quorum)
					if len(excluded) > 0 {
						msg += "; not counted: " + strings.Join(excluded, ", ")
					}
					fs = append(fs, Finding{Severity: Blocker, Agent: a.ID, Message: msg, Location: g.at("governance.approvers"),
						Fix: fmt.Sprintf("list at least %s in group %s under governance.approvers (neither the agent's owner nor non-human)", plural(quorum, "person", "people"), p.Group)})
				}
				if rule.MaxUses > 1 {
					fs = append(fs, Finding{Severity: Condition, Agent: a.ID,
						Message:  fmt.Sprintf("an approval of risk class %s allows %d identical calls of %s, not one", class, rule.MaxUses, act.Tool),
						Location: g.at(ruleKey + ".max_uses"),
						Fix:      "remove max_uses (default 1): each high-risk call is approved on its own"})
				}
			}
		}
	}
	return fs
}

// wants says whether a notifier configured with events sends event;
// unset events mean the notifier's default (webhooks: every event; Slack:
// requests, break-glass and elevations).
func wants(events []string, slack bool, event string) bool {
	if events == nil {
		return !slack || event == "approval.requested" || event == "approval.break_glass" || event == "elevation.requested"
	}
	return slices.Contains(events, event)
}

func (g *Gateway) notified(event string) bool {
	n := g.Config.Governance.Notifications
	return slices.ContainsFunc(n.Webhooks, func(w config.ApprovalWebhook) bool { return wants(w.Events, false, event) }) ||
		slices.ContainsFunc(n.Slack, func(s config.SlackWebhook) bool { return wants(s.Events, true, event) })
}

// checkAlerts reads what the configuration holds of alerting: approval
// notifications (challenges wait for a human, break-glass must be seen at
// once). Alerts on blocks and anomalies are rules in the monitoring
// system, over the gateway's metrics (always served) or the audit export;
// the configuration cannot hold them, so they are reported as not
// configured here and taken from the descriptor's operations.alerts.
func checkAlerts(g *Gateway, d *Descriptor) []Finding {
	var fs []Finding
	requested := g.notified("approval.requested")
	for _, a := range d.Agents {
		broad := a.Autonomy == "autonomous"
		if !requested && slices.ContainsFunc(a.Actions, func(x Action) bool { return x.Risk != "" && x.Risk != "none" }) {
			f := Finding{Severity: Condition, Agent: a.ID,
				Message:  "approvers are not told when the agent's high-risk calls wait for them: no governance.notifications webhook or Slack channel sends approval.requested, so a held call waits until someone opens the approvals page",
				Location: g.at("governance.notifications"),
				Fix:      "add a webhook or Slack channel under governance.notifications (Slack sends approval.requested by default)"}
			if broad {
				f.Severity = Blocker
			}
			fs = append(fs, f)
		}
		if !d.Operations.Alerts {
			f := Finding{Severity: Condition, Agent: a.ID, NotConfigured: true, Key: "operations.alerts (monitoring rules, outside the configuration)",
				Message:  "nothing alerts on the agent's blocked calls and anomalies: the descriptor says no alerts exist, and the gateway's configuration cannot hold them",
				Location: d.Location("operations.alerts") + " operations.alerts",
				Fix:      "alert on the gateway's metrics (GET /metrics on the admin listener; rules in docs/operations.md) or on the audit export in the SIEM"}
			if broad {
				f.Severity = Blocker
				f.Message += "; not ready for broad production autonomy"
			}
			fs = append(fs, f)
		}
	}
	if d.Operations.Alerts {
		fs = append(fs, Finding{Severity: Info, NotConfigured: true, Key: "operations.alerts (monitoring rules, outside the configuration)",
			Message:  "alerts on blocked calls and anomalies are rules in the monitoring system, which the configuration does not hold; the descriptor states they exist",
			Location: d.Location("operations.alerts") + " operations.alerts",
			Fix:      "keep them on the gateway's metrics (rules in docs/operations.md) or on the audit export in the SIEM"})
	}
	if bg := g.Config.Governance.BreakGlass; bg != nil && !g.notified("approval.break_glass") {
		fs = append(fs, Finding{Severity: Condition,
			Message:  fmt.Sprintf("break-glass self-approvals by group %s alert no one: no notifier sends approval.break_glass", bg.Group),
			Location: g.at("governance.break_glass"),
			Fix:      "add a notifier under governance.notifications that sends approval.break_glass (Slack does by default)"})
	}
	if g.Config.Telemetry.MetricsTokenFile == "" {
		fs = append(fs, Finding{Severity: Info, Key: "telemetry.metrics_token_file",
			Message:  "a monitoring system can scrape the gateway's metrics only with the admin credential, which also decides approvals and engages the kill switch",
			Location: g.at("telemetry"),
			Fix:      "set telemetry.metrics_token_file to a read-only scrape credential"})
	}
	return fs
}
