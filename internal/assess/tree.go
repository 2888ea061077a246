package assess

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Assess walks the decision tree for every agent of d and, when gw is not
// nil, checks the gateway's configuration against the recommendations.
func Assess(d *Descriptor, gw *Gateway) *Report {
	r := &Report{
		Schema:     Schema,
		Deployment: d.Deployment,
		Descriptor: d.name,
	}
	for i := range d.Agents {
		r.Agents = append(r.Agents, walk(d, i))
	}
	r.Pattern = choosePattern(d)
	if gw != nil {
		r.Config = gw.ConfigName
		r.Policies = gw.PolicyDir
		r.Gaps = gw.check(d)
	}
	r.finish()
	return r
}

func walk(d *Descriptor, i int) AgentReport {
	a := &d.Agents[i]
	adv := adviseIdentity(d, a)
	ar := AgentReport{
		ID:       a.ID,
		Owner:    a.Owner,
		Hosting:  a.Hosting.Platform,
		Pattern:  patternNames[adv.HostingPattern],
		Identity: adv,
	}
	qs := []func(*Descriptor, *Agent, int, IdentityAdvice) Answer{qWhere, qHighRisk, qCrossBoundary, qAutonomy, qPreview, qObserveStop}
	for n, q := range qs {
		ans := q(d, a, i, adv)
		ans.Number = n + 1
		for j := range ans.Findings {
			ans.Findings[j].Agent = a.ID
		}
		ar.Answers = append(ar.Answers, ans)
	}
	return ar
}

func qWhere(d *Descriptor, a *Agent, i int, adv IdentityAdvice) Answer {
	ans := Answer{
		ID:       "where",
		Question: "Where does the agent run?",
		Answer:   fmt.Sprintf("%s (%s)", patternNames[adv.HostingPattern], runtimeOf(a)),
		Controls: []string{"identity: " + adv.Recommended},
		Sources:  adv.Sources,
	}
	switch adv.HostingPattern {
	case "azure_native":
		ans.Why = "Azure-native agents start from a managed identity: no secret to store, sign-ins and role assignments in one place."
	case "aws_native":
		ans.Why = "AWS-native agents start from an IAM role with temporary STS credentials: nothing long-lived to leak, and the role's trust policy is the trust anchor."
	case "external_entra", "external_aws", "external_gcp":
		ans.Why = "An agent hosted outside the cloud it calls should use a service principal or role reached by federation from its own issuer, not a stored secret."
	case "external":
		ans.Why = "The agent calls no cloud API directly; it proves itself to the gateway with the workload identity its platform already issues."
	default:
		ans.Why = "A cross-cloud agent keeps the native identity of where it runs and is federated into each other cloud; each trust relationship is a separate, narrow anchor."
		ans.Controls = append(ans.Controls, "federation into each other cloud it reaches: "+strings.Join(otherClouds(a), ", "))
	}
	ans.Findings = whereFindings(d, a, i, adv)
	return ans
}

func runtimeOf(a *Agent) string {
	if a.Hosting.Runtime != "" {
		return a.Hosting.Runtime
	}
	return a.Hosting.Platform
}

// otherClouds are the clouds an agent reaches beyond its own platform.
func otherClouds(a *Agent) []string {
	var out []string
	for _, c := range a.reaches() {
		if c != a.Hosting.Platform {
			out = append(out, c)
		}
	}
	return out
}

var riskNames = map[string]string{
	"financial":     "financial transfer",
	"privilege":     "privilege grant",
	"destructive":   "destructive change",
	"bulk_export":   "bulk export",
	"policy_change": "security policy change",
}

func qHighRisk(d *Descriptor, a *Agent, i int, _ IdentityAdvice) Answer {
	ans := Answer{ID: "high_risk", Question: "Does it perform high-risk actions?"}
	var hr []string
	for j, act := range a.Actions {
		risk := a.risk(j)
		if risk == "none" {
			continue
		}
		hr = append(hr, fmt.Sprintf("%s (%s)", act.Tool, riskNames[risk]))
		k := fmt.Sprintf("agents[%d].actions[%d]", i, j)
		if act.Approval == "" {
			ans.Findings = append(ans.Findings, Finding{Check: "high_risk.approval", Severity: Blocker,
				Message:  fmt.Sprintf("high-risk tool %s (%s) has no approval workflow", act.Tool, riskNames[risk]),
				Location: d.Location(k) + " " + k,
				Fix:      fmt.Sprintf("name an approver group (approval:) and add a challenge policy for the tool, e.g. @challenge(\"group\") @risk(%q) forbid (principal, action == Gatehouse::Action::\"call_tool\", resource == Gatehouse::Tool::%q);", risk, act.Tool)})
		}
	}
	if len(hr) == 0 {
		ans.Answer = "no: none of its tools is a financial, privilege, destructive, bulk-export or policy-change action"
		ans.Controls = []string{"keep tool risk labels current so a new high-risk tool is caught"}
		ans.Why = "Without high-risk actions, policy and limits at the gateway suffice; approvals would only add friction."
		return ans
	}
	ans.Answer = "yes: " + strings.Join(hr, ", ")
	ans.Controls = []string{
		"an explicit approval workflow for each high-risk tool: a human approver group approves each call (a Cedar challenge policy, @challenge)",
		"approvals bound to the exact call (tool, arguments, agent, user), single-use and time-bound",
		"evidence: who approved what, seeing what, for how long, in the tamper-evident audit log",
	}
	if slices.ContainsFunc(a.Actions, func(x Action) bool { return x.Risk == "financial" }) {
		ans.Controls = append(ans.Controls, "value limits and running totals for financial actions")
	}
	ans.Why = "A high-risk action is one that cannot be undone cheaply; the agent's judgement alone must not be enough, and the approval must be provable afterwards."
	return ans
}

func qCrossBoundary(d *Descriptor, a *Agent, i int, _ IdentityAdvice) Answer {
	ans := Answer{ID: "cross_boundary", Question: "Does it access cross-boundary data?"}
	k := fmt.Sprintf("agents[%d]", i)
	var what []string
	srcs := []string{}
	for j, ds := range a.Data {
		dk := fmt.Sprintf("%s.data[%d]", k, j)
		sens := ds.Sensitivity
		if sens == "" {
			sens = "internal"
		}
		sensitive := sens == "confidential" || sens == "restricted"
		switch ds.Kind {
		case "rag":
			if !sensitive {
				continue
			}
			what = append(what, fmt.Sprintf("RAG over %s data (%s)", sens, ds.Name))
			if !ds.RetrievalAuthorization {
				ans.Findings = append(ans.Findings, Finding{Check: "cross_boundary.retrieval_authorization", Severity: Blocker,
					Message:  fmt.Sprintf("retrieval from %s (%s) is not authorized per user or task", ds.Name, sens),
					Location: d.Location(dk) + " " + dk,
					Fix:      "authorize each retrieval for the user or task the agent acts for (document-level permissions filtered at query time), not only for the agent"})
			}
			if !ds.Segmented {
				ans.Findings = append(ans.Findings, Finding{Check: "cross_boundary.segmentation", Severity: Condition,
					Message:  fmt.Sprintf("%s is not segmented", ds.Name),
					Location: d.Location(dk) + " " + dk,
					Fix:      "partition the index by tenant, team or classification so one agent's reach is one segment"})
			}
		case "partner":
			what = append(what, fmt.Sprintf("partner data (%s)", ds.Name))
			if !ds.Segmented {
				ans.Findings = append(ans.Findings, Finding{Check: "cross_boundary.segmentation", Severity: Blocker,
					Message:  fmt.Sprintf("partner data %s is not segmented from the organisation's own data", ds.Name),
					Location: d.Location(dk) + " " + dk,
					Fix:      "keep partner data in its own segment with its own access policy"})
			}
			if !ds.RetrievalAuthorization {
				ans.Findings = append(ans.Findings, Finding{Check: "cross_boundary.retrieval_authorization", Severity: Condition,
					Message:  fmt.Sprintf("access to partner data %s is not authorized per request", ds.Name),
					Location: d.Location(dk) + " " + dk,
					Fix:      "authorize each access against the partner agreement's scope"})
			}
		case "cross_cloud_api":
			what = append(what, fmt.Sprintf("cross-cloud API (%s)", ds.Name))
			if ds.Cloud != "" && !slices.Contains(a.reaches(), ds.Cloud) {
				ans.Findings = append(ans.Findings, Finding{Check: "cross_boundary.undeclared_cloud", Severity: Condition,
					Message:  fmt.Sprintf("%s is in %s, which hosting.clouds does not list", ds.Name, ds.Cloud),
					Location: d.Location(dk+".cloud") + " " + dk + ".cloud",
					Fix:      "list every cloud the agent reaches in hosting.clouds so its federation is assessed"})
			}
		}
	}
	// Federation hygiene: every other cloud needs a trust relationship
	// that is federated and bound; every declared trust is checked.
	for _, c := range otherClouds(a) {
		if !slices.ContainsFunc(a.Trust, func(t Trust) bool { return t.Cloud == c }) {
			ans.Findings = append(ans.Findings, Finding{Check: "cross_boundary.no_federation", Severity: Blocker,
				Message:  fmt.Sprintf("the agent reaches %s but no trust relationship says how", c),
				Location: d.Location(k+".hosting.clouds") + " " + k + ".hosting.clouds",
				Fix:      "federate the agent's identity into " + c + " (" + federationFor(c) + ")",
				Sources:  []string{federationSource(c)}})
		}
	}
	for j, t := range a.Trust {
		tk := fmt.Sprintf("%s.trust[%d]", k, j)
		what = append(what, fmt.Sprintf("trust into %s by %s", t.Cloud, t.Method))
		fs, s := trustFindings(d, tk, t)
		ans.Findings = append(ans.Findings, fs...)
		srcs = append(srcs, s...)
	}
	ans.Sources = dedup(srcs)
	if len(what) == 0 {
		ans.Answer = "no: only internal data, inside its own identity's boundary"
		ans.Controls = []string{"keep data sources declared so that a new cross-boundary source is assessed"}
		ans.Why = "Data inside the agent's own boundary is governed by its identity's permissions and the gateway's policy."
		return ans
	}
	ans.Answer = "yes: " + strings.Join(what, "; ")
	var hasData, hasTrust, hasService, hasCrossAccount bool
	for _, ds := range a.Data {
		hasData = hasData || ds.Kind == "rag" || ds.Kind == "partner"
	}
	for _, t := range a.Trust {
		hasTrust = hasTrust || t.Method == "federation" || t.Method == "secret"
		hasService = hasService || t.Method == "service"
		hasCrossAccount = hasCrossAccount || t.Method == "cross_account"
	}
	if hasData {
		ans.Controls = append(ans.Controls,
			"retrieval-time authorization: each retrieval authorized for the user or task, not only the agent",
			"segmentation of sensitive and partner data")
	}
	if hasTrust || len(otherClouds(a)) > 0 {
		ans.Controls = append(ans.Controls, "federation hygiene: one narrow trust per cloud, bound to issuer, subject and audience; no stored cross-cloud secrets")
	}
	// Each binding only for the kind of trust AWS documents it for.
	if hasService {
		ans.Controls = append(ans.Controls, "confused-deputy protection where an AWS service acts for the agent (cross-service): aws:SourceArn and aws:SourceAccount in the role's trust policy")
	}
	if hasCrossAccount {
		ans.Controls = append(ans.Controls, "confused-deputy protection where another party's AWS account assumes a role for the agent (cross-account): the sts:ExternalId that party issued, in the role's trust policy")
	}
	if len(ans.Controls) == 0 {
		ans.Controls = []string{"federation hygiene for the cross-cloud API: one narrow trust per cloud, bound to issuer, subject and audience"}
	}
	ans.Why = "Data that crosses a boundary carries the other side's rules; the agent's own permission is too coarse a check, and every trust relationship is a door that must open for one caller only."
	return ans
}

func federationFor(cloud string) string {
	switch cloud {
	case "azure":
		return "a federated identity credential on a Microsoft Entra application or user-assigned managed identity"
	case "aws":
		return "an IAM OIDC identity provider and a role assumed with AssumeRoleWithWebIdentity"
	case "gcp":
		return "a Workload Identity Federation pool and provider"
	}
	return "federation"
}

func federationSource(cloud string) string {
	switch cloud {
	case "azure":
		return "ms-workload-identity-federation"
	case "aws":
		return "aws-oidc-federation"
	}
	return "gcp-workload-identity-federation"
}

// trustFindings checks one trust relationship's binding. It recommends
// only the bindings each cloud documents for that kind of trust.
func trustFindings(d *Descriptor, tk string, t Trust) ([]Finding, []string) {
	var fs []Finding
	loc := func(key string) string { return d.Location(tk+key) + " " + tk + key }
	switch t.Method {
	case "secret":
		fs = append(fs, Finding{Check: "cross_boundary.no_federation", Severity: Blocker,
			Message:  fmt.Sprintf("the trust into %s is a stored long-lived secret, not federation", t.Cloud),
			Location: loc(".method"),
			Fix:      "replace it with " + federationFor(t.Cloud),
			Sources:  []string{federationSource(t.Cloud)}})
		return fs, []string{federationSource(t.Cloud)}
	case "federation":
		src := federationSource(t.Cloud)
		if t.Cloud == "azure" {
			src = "ms-federation-create-trust"
		}
		if t.Issuer == "" {
			fs = append(fs, Finding{Check: "cross_boundary.trust_binding", Severity: Blocker,
				Message: fmt.Sprintf("the federation into %s names no issuer", t.Cloud), Location: loc(""),
				Fix: "name the one issuer the cloud trusts for this agent", Sources: []string{src}})
		}
		if t.Audience == "" {
			fs = append(fs, Finding{Check: "cross_boundary.audience_binding", Severity: Blocker,
				Message:  fmt.Sprintf("the federation into %s has no audience binding: a token minted for another relying party could be accepted (confused deputy)", t.Cloud),
				Location: loc(""), Fix: audienceFix(t.Cloud), Sources: []string{src}})
		}
		switch {
		case t.Subject == "":
			fs = append(fs, Finding{Check: "cross_boundary.trust_breadth", Severity: Blocker,
				Message:  fmt.Sprintf("the federation into %s is not bound to a subject: any identity of the issuer is trusted", t.Cloud),
				Location: loc(""), Fix: subjectFix(t.Cloud), Sources: []string{src}})
		case strings.Contains(t.Subject, "*"):
			fs = append(fs, Finding{Check: "cross_boundary.trust_breadth", Severity: Condition,
				Message:  fmt.Sprintf("the federation into %s trusts a wildcard subject %q, broader than this one agent", t.Cloud, t.Subject),
				Location: loc(".subject"), Fix: subjectFix(t.Cloud), Sources: []string{src}})
		}
		return fs, []string{src}
	case "service":
		srcs := []string{"aws-confused-deputy", "aws-condition-keys"}
		switch {
		case t.SourceArn == "" && t.SourceAccount == "":
			fs = append(fs, Finding{Check: "cross_boundary.source_binding", Severity: Blocker,
				Message:  "a service assumes a role for the agent with no source binding (cross-service confused deputy)",
				Location: loc(""),
				Fix:      "condition the role's trust policy on aws:SourceArn (the resource the service acts for) and aws:SourceAccount",
				Sources:  srcs})
		case t.SourceArn == "" || strings.Contains(t.SourceArn, "*"):
			fs = append(fs, Finding{Check: "cross_boundary.trust_breadth", Severity: Condition,
				Message:  "the service trust is bound to an account but not to one resource",
				Location: loc(""),
				Fix:      "add aws:SourceArn with the exact resource ARN, alongside aws:SourceAccount",
				Sources:  srcs})
		}
		return fs, srcs
	case "cross_account":
		srcs := []string{"aws-confused-deputy"}
		if t.ExternalID == "" {
			fs = append(fs, Finding{Check: "cross_boundary.external_id", Severity: Blocker,
				Message:  "another party's AWS account assumes a role for the agent without an external ID (confused deputy)",
				Location: loc(""),
				Fix:      "require the sts:ExternalId the third party issued for you in the role's trust policy",
				Sources:  srcs})
		}
		return fs, srcs
	}
	return fs, nil
}

func audienceFix(cloud string) string {
	switch cloud {
	case "azure":
		return "set the federated identity credential's audience (api://AzureADTokenExchange for Microsoft Entra ID) and have the issuer mint tokens for it"
	case "aws":
		return "condition the role's trust policy on the provider's :aud key with the audience registered for the IAM OIDC provider"
	}
	return "restrict the provider's allowed audiences"
}

func subjectFix(cloud string) string {
	switch cloud {
	case "azure":
		return "set the federated identity credential's subject to the agent workload's exact sub claim"
	case "aws":
		return "condition the role's trust policy on the provider's :sub key with the agent workload's exact subject"
	}
	return "map google.subject from the token and add an attribute condition that admits only this workload"
}

var autonomyNames = map[string]string{
	"assistive":       "assistive: a human confirms each action",
	"semi_autonomous": "semi-autonomous: it acts alone inside a task, humans approve the risky steps",
	"autonomous":      "broad autonomy: it plans and acts without a human in the loop",
}

const taskScoped = "Task-scoped authorization is a design pattern, not a single cloud feature: it is built from orchestration (a task with a purpose and a time window), a policy engine deciding each call, ephemeral credentials scoped to the task, and approvals for the risky steps."

func qAutonomy(_ *Descriptor, a *Agent, _ int, _ IdentityAdvice) Answer {
	ans := Answer{ID: "autonomy", Question: "How autonomous is it?", Answer: autonomyNames[a.Autonomy]}
	switch a.Autonomy {
	case "assistive":
		ans.Controls = []string{"mediation of every tool call through the gateway", "the human confirmation recorded with the call"}
		ans.Why = "With a human confirming each action, the gateway's job is to make sure the action confirmed is the action executed."
	case "semi_autonomous":
		ans.Controls = []string{
			"scoped approvals: the task defines what the agent may do; high-risk steps wait for approval",
			"short-lived, task-scoped gateway tokens",
			"rate and value limits per task",
		}
		ans.Why = taskScoped
	default:
		ans.Controls = []string{
			"strong runtime containment: egress restricted to declared destinations, stdio servers sandboxed",
			"mediation: every tool and model call through the gateway, decided by policy",
			"kill switches at agent, tool and deployment level, effective without a deploy",
			"rate and value limits, circuit breakers",
			"short-lived, task-scoped credentials",
		}
		ans.Why = "Broad autonomy removes the human check on each step, so the runtime must contain what a wrong step can do and be able to stop it at once. " + taskScoped
	}
	return ans
}

// knownPreview describes preview capabilities the assessor knows.
var knownPreview = map[string]struct {
	name   string
	source string
}{
	"entra_agent_id":                    {"Microsoft Entra Agent ID", "ms-agent-identities"},
	"entra_agent_id_conditional_access": {"Conditional Access for Agent ID", "ms-ca-agent-id"},
}

func qPreview(d *Descriptor, a *Agent, i int, _ IdentityAdvice) Answer {
	ok := *d.PreviewAcceptable
	ans := Answer{ID: "preview", Question: "Are preview capabilities acceptable?"}
	type dep struct{ feature, use, path string }
	var deps []dep
	k := fmt.Sprintf("agents[%d]", i)
	if a.Identity.Type == "entra_agent_id" {
		deps = append(deps, dep{"entra_agent_id", "core", k + ".identity.type"})
	}
	if a.Identity.ConditionalAccess == "agent_id" {
		deps = append(deps, dep{"entra_agent_id_conditional_access", "core", k + ".identity.conditional_access"})
	}
	for j, p := range a.Preview {
		if slices.ContainsFunc(deps, func(x dep) bool { return x.feature == p.Feature }) {
			continue
		}
		deps = append(deps, dep{p.Feature, p.Use, fmt.Sprintf("%s.preview[%d]", k, j)})
	}
	var names []string
	for _, x := range deps {
		name, src := x.feature, []string(nil)
		if kp, found := knownPreview[x.feature]; found {
			name, src = kp.name, []string{kp.source}
			ans.Sources = append(ans.Sources, kp.source)
		}
		names = append(names, fmt.Sprintf("%s (%s)", name, x.use))
		switch {
		case x.use == "core" && !ok:
			ans.Findings = append(ans.Findings, Finding{Check: "preview.core_dependency", Severity: Blocker,
				Message:  fmt.Sprintf("a core control depends on %s, which is in preview, and preview is not acceptable", name),
				Location: d.Location(x.path) + " " + x.path,
				Fix:      "build the core control on the GA IAM baseline (see question 1) and keep the preview capability additive only",
				Sources:  src})
		case x.use == "core":
			ans.Findings = append(ans.Findings, Finding{Check: "preview.core_dependency", Severity: Condition,
				Message:  fmt.Sprintf("a core control depends on %s, which is in preview and may change before general availability", name),
				Location: d.Location(x.path) + " " + x.path,
				Fix:      "keep a GA fallback for the control and track the capability's release",
				Sources:  src})
		default:
			ans.Findings = append(ans.Findings, Finding{Check: "preview.additive", Severity: Info,
				Message: fmt.Sprintf("%s (preview) is used additively, on top of GA controls", name), Sources: src})
		}
	}
	acc := "not acceptable"
	if ok {
		acc = "acceptable"
	}
	if len(names) == 0 {
		ans.Answer = fmt.Sprintf("preview is %s; the agent relies on no preview capability", acc)
	} else {
		ans.Answer = fmt.Sprintf("preview is %s; the agent uses %s", acc, strings.Join(names, ", "))
	}
	if ok {
		ans.Controls = []string{"GA IAM baseline still in place beneath any preview control", "a tracked exit plan for each preview dependency"}
		ans.Why = "Preview capabilities can change or be withdrawn before general availability; a core control built on one needs a fallback."
	} else {
		ans.Controls = []string{"no core dependency on preview-only features: GA IAM baselines (managed identities, IAM roles, federation) for every core control", "preview controls only additive"}
		ans.Why = "When preview is not acceptable, every control the deployment depends on must be generally available; Microsoft Entra Agent ID is an emerging control plane and its Conditional Access is in preview."
		ans.Sources = append(ans.Sources, "ms-agent-identities", "ms-ca-agent-id")
	}
	ans.Sources = dedup(ans.Sources)
	return ans
}

func qObserveStop(d *Descriptor, a *Agent, i int, _ IdentityAdvice) Answer {
	ops := d.Operations
	ans := Answer{ID: "observe_stop", Question: "Can you observe and stop it quickly?"}
	broad := a.Autonomy == "autonomous"
	sev := Condition
	if broad {
		sev = Blocker
	}
	type need struct {
		ok        bool
		path, msg string
	}
	needs := []need{
		{ops.Logs, "operations.logs", "no queryable activity logs"},
		{ops.Alerts, "operations.alerts", "no alerts"},
		{ops.KillSwitch, "operations.kill_switch", "no kill switch"},
		{ops.Rollback, "operations.rollback", "no rollback"},
		{len(ops.Playbooks) > 0, "operations.playbooks", "no incident playbooks"},
		{strings.TrimSpace(ops.IncidentOwner) != "", "operations.incident_owner", "no incident owner"},
	}
	var missing []string
	for _, n := range needs {
		if n.ok {
			continue
		}
		missing = append(missing, strings.TrimPrefix(n.msg, "no "))
		f := Finding{Check: "observe_stop." + strings.TrimPrefix(n.path, "operations."), Severity: sev,
			Message: n.msg, Location: d.Location(n.path) + " " + n.path}
		if broad {
			f.Message += ": not ready for broad production autonomy"
		}
		ans.Findings = append(ans.Findings, f)
	}
	k := fmt.Sprintf("agents[%d]", i)
	if strings.TrimSpace(a.Owner) == "" {
		missing = append(missing, "agent owner")
		ans.Findings = append(ans.Findings, Finding{Check: "lifecycle.owner", Severity: Blocker,
			Message: "the agent has no accountable owner", Location: d.Location(k) + " " + k + ".owner",
			Fix: "name the accountable human (owner:); the gateway's guardrails refuse ownerless agents"})
	}
	switch exp, err := time.Parse(time.DateOnly, a.Expires); {
	case a.Expires == "":
		ans.Findings = append(ans.Findings, Finding{Check: "lifecycle.expiry", Severity: Condition,
			Message: "the agent has no expiry or review date", Location: d.Location(k) + " " + k + ".expires",
			Fix: "set expires: to the date the agent is reviewed or retired"})
	case err == nil && !d.now.IsZero() && exp.Before(d.now):
		ans.Findings = append(ans.Findings, Finding{Check: "lifecycle.expiry", Severity: Blocker,
			Message: fmt.Sprintf("the agent expired on %s", a.Expires), Location: d.Location(k+".expires") + " " + k + ".expires",
			Fix: "review and renew the agent, or retire it"})
	}
	if len(missing) == 0 {
		ans.Answer = "yes: logs, alerts, kill switch, rollback, playbooks and owners are in place"
	} else {
		ans.Answer = "no: missing " + strings.Join(missing, ", ")
		if broad {
			ans.Answer += "; not ready for broad production autonomy"
		}
	}
	ans.Controls = []string{"activity logs and tamper-evident audit export", "alerts on blocks, challenges and anomalies", "kill switch effective without a deploy", "rollback of the agent and of its changes", "clear ownership: an owner per agent and an incident owner", "incident playbooks"}
	ans.Why = "An agent that cannot be seen or stopped quickly turns a small mistake into an incident; broad autonomy is only acceptable when both are immediate."
	return ans
}

// Pattern is an implementation pattern: how the deployment's controls are
// anchored across clouds.
type Pattern struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Why         string   `json:"why"`
	Strengths   []string `json:"strengths"`
	Constraints []string `json:"constraints"`
	Sources     []string `json:"sources"`
}

func choosePattern(d *Descriptor) Pattern {
	var azure, aws, multi bool
	for i := range d.Agents {
		switch hostingPattern(&d.Agents[i]) {
		case "azure_native", "external_entra":
			azure = true
		case "aws_native", "external_aws":
			aws = true
		default:
			multi = true
		}
	}
	switch {
	case azure && !aws && !multi:
		return Pattern{ID: "azure_first", Name: "Azure-first",
			Why: "Every agent runs in Azure or needs Microsoft Entra only",
			Strengths: []string{
				"managed identities remove stored secrets for agents that run in Azure",
				"Microsoft Entra is one control plane for workload identities, federation and sign-in logs",
				"workload identity federation admits external workloads without secrets",
			},
			Constraints: []string{
				"managed identities are not covered by Conditional Access for workload identities; access reviews and narrow role assignments stand in",
				"Conditional Access for workload identities covers single-tenant service principals and needs Workload Identities Premium licences",
				"Microsoft Entra Agent ID and Conditional Access for Agent ID are in preview",
				"reaching another cloud later needs federation there",
			},
			Sources: []string{"ms-managed-identities", "ms-ca-workload-identities", "ms-agent-identities", "ms-ca-agent-id"}}
	case aws && !azure && !multi:
		return Pattern{ID: "aws_first", Name: "AWS-first",
			Why: "Every agent runs in AWS or needs AWS only",
			Strengths: []string{
				"IAM roles with temporary STS credentials: nothing long-lived on the runtime",
				"trust policies state who may assume each role; aws:SourceArn and aws:SourceAccount close cross-service confused-deputy paths",
				"OIDC federation admits external workloads without access keys",
			},
			Constraints: []string{
				"Microsoft Entra–protected resources need a separate federation into Entra",
				"every trust policy must be kept narrow (audience, subject, source) by review",
			},
			Sources: []string{"aws-temporary-credentials", "aws-confused-deputy", "aws-oidc-federation"}}
	}
	return Pattern{ID: "hybrid", Name: "Hybrid / multi-cloud",
		Why: "Agents run in or reach more than one cloud, or run outside any cloud",
		Strengths: []string{
			"each agent keeps the native identity of where it runs",
			"federation in each cloud replaces cross-cloud secrets",
			"one gateway applies the same policy, approvals, audit and kill switch whatever the cloud",
		},
		Constraints: []string{
			"one trust relationship per cloud and per agent to keep narrow and review",
			"identity, logs and Conditional Access features differ between clouds; the gateway's audit log is the one place all actions meet",
			"preview capabilities in one cloud must not become the only control for agents there",
		},
		Sources: []string{"ms-workload-identity-federation", "aws-oidc-federation", "gcp-workload-identity-federation"}}
}
