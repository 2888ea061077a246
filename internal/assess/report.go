package assess

import "slices"

// Schema identifies the JSON report format. It changes only when a field
// is removed or changes meaning; fields may be added within a version.
const Schema = "gatehouse.assess/v1"

// Verdict is the outcome of an assessment.
type Verdict string

const (
	// Ready: no finding is a condition or a blocker.
	Ready Verdict = "ready"
	// ReadyWithConditions: no blocker, at least one condition to meet.
	ReadyWithConditions Verdict = "ready_with_conditions"
	// NotReady: at least one blocker.
	NotReady Verdict = "not_ready"
)

// Severity grades a finding.
type Severity string

const (
	// Info is a note that changes nothing about readiness.
	Info Severity = "info"
	// Condition must be met for production, but does not block it.
	Condition Severity = "condition"
	// Blocker makes the deployment not ready.
	Blocker Severity = "blocker"
)

func (s Severity) rank() int {
	switch s {
	case Blocker:
		return 2
	case Condition:
		return 1
	}
	return 0
}

// Report is the result of an assessment. Its JSON encoding is the
// documented, stable schema "gatehouse.assess/v1" (docs/assess.md).
type Report struct {
	Schema     string `json:"schema"`
	Deployment string `json:"deployment"`
	Descriptor string `json:"descriptor"`
	// Config is the gateway configuration checked, "" when none was.
	Config string `json:"config,omitempty"`
	// Policies is the policy directory checked, "" when none was.
	Policies string  `json:"policies,omitempty"`
	Verdict  Verdict `json:"verdict"`
	// Pattern is the implementation pattern that fits the deployment.
	Pattern Pattern       `json:"pattern"`
	Agents  []AgentReport `json:"agents"`
	// Gaps are the gateway configuration's gaps against the
	// recommendations (only with a configuration).
	Gaps []Finding `json:"gaps"`
	// Summary counts findings by severity over agents and gaps.
	Summary Summary `json:"summary"`
	// Sources are the documentation pages the report's statements cite.
	Sources []Source `json:"sources"`
}

// Summary counts findings.
type Summary struct {
	Blockers   int `json:"blockers"`
	Conditions int `json:"conditions"`
	Infos      int `json:"infos"`
}

// AgentReport is the decision tree walked for one agent.
type AgentReport struct {
	ID       string         `json:"id"`
	Owner    string         `json:"owner"`
	Hosting  string         `json:"hosting"`
	Pattern  string         `json:"pattern"`
	Identity IdentityAdvice `json:"identity"`
	Answers  []Answer       `json:"questions"`
	Verdict  Verdict        `json:"verdict"`
}

// IdentityAdvice is the identity the hierarchy recommends for the agent's
// hosting pattern, compared with the identity it has.
type IdentityAdvice struct {
	// HostingPattern names the hosting pattern: azure_native, aws_native,
	// external_entra, external_aws, external, cross_cloud.
	HostingPattern string `json:"hosting_pattern"`
	// Recommended is the identity the hierarchy puts first.
	Recommended string `json:"recommended"`
	// Hierarchy lists the acceptable identities, best first.
	Hierarchy []string `json:"hierarchy"`
	// Current describes the agent's identity.
	Current string `json:"current"`
	// Rank is the 1-based position of Current in Hierarchy, 0 when it is
	// not in it.
	Rank int `json:"rank"`
	// Why explains the recommendation.
	Why     []string `json:"why"`
	Sources []string `json:"sources"`
}

// Answer is one question of the decision tree, answered for one agent.
type Answer struct {
	// Number is 1 to 6; ID is where, high_risk, cross_boundary,
	// autonomy, preview, observe_stop.
	Number   int    `json:"number"`
	ID       string `json:"id"`
	Question string `json:"question"`
	// Answer states the answer in one line.
	Answer string `json:"answer"`
	// Controls are the recommended controls.
	Controls []string `json:"controls"`
	// Why explains them.
	Why      string    `json:"why"`
	Findings []Finding `json:"findings"`
	Sources  []string  `json:"sources"`
}

// Finding is one thing to act on.
type Finding struct {
	// Check is a stable identifier of the rule that produced it.
	Check    string   `json:"check"`
	Severity Severity `json:"severity"`
	// Agent is the agent concerned, "" for the whole deployment.
	Agent string `json:"agent,omitempty"`
	// Message says what is wrong.
	Message string `json:"message"`
	// Location is where: "file:line key.path", or a policy file.
	Location string `json:"location,omitempty"`
	// Key is the gateway configuration key that satisfies the control;
	// for a control the configuration has no key for, the planned key or
	// where the control lives instead (see NotConfigured).
	Key string `json:"key,omitempty"`
	// NotConfigured is true when the gateway's configuration format has
	// no key for the control: a key planned but not there yet, or a
	// control outside the gateway (alerting rules in the monitoring
	// system). Such a control is never reported as satisfied.
	NotConfigured bool `json:"not_configured,omitempty"`
	// Fix says what to do.
	Fix     string   `json:"fix,omitempty"`
	Sources []string `json:"sources,omitempty"`
}

func verdictOf(fs []Finding) Verdict {
	worst := 0
	for _, f := range fs {
		worst = max(worst, f.Severity.rank())
	}
	switch worst {
	case 2:
		return NotReady
	case 1:
		return ReadyWithConditions
	}
	return Ready
}

// Findings returns every finding of the report: the agents' then the gaps.
func (r *Report) Findings() []Finding {
	var all []Finding
	for _, a := range r.Agents {
		for _, q := range a.Answers {
			all = append(all, q.Findings...)
		}
	}
	return append(all, r.Gaps...)
}

func (r *Report) finish() {
	for i := range r.Agents {
		var fs []Finding
		for _, q := range r.Agents[i].Answers {
			fs = append(fs, q.Findings...)
		}
		for _, g := range r.Gaps {
			if g.Agent == r.Agents[i].ID || g.Agent == "" {
				fs = append(fs, g)
			}
		}
		r.Agents[i].Verdict = verdictOf(fs)
	}
	all := r.Findings()
	r.Verdict = verdictOf(all)
	r.Summary = Summary{}
	cited := map[string]bool{}
	for _, f := range all {
		switch f.Severity {
		case Blocker:
			r.Summary.Blockers++
		case Condition:
			r.Summary.Conditions++
		default:
			r.Summary.Infos++
		}
		for _, s := range f.Sources {
			cited[s] = true
		}
	}
	for _, a := range r.Agents {
		for _, s := range a.Identity.Sources {
			cited[s] = true
		}
		for _, q := range a.Answers {
			for _, s := range q.Sources {
				cited[s] = true
			}
		}
	}
	for _, s := range r.Pattern.Sources {
		cited[s] = true
	}
	r.Sources = nil
	for _, s := range sources {
		if cited[s.ID] {
			r.Sources = append(r.Sources, s)
		}
	}
	if r.Gaps == nil {
		r.Gaps = []Finding{}
	}
	for i := range r.Agents {
		for j := range r.Agents[i].Answers {
			if r.Agents[i].Answers[j].Findings == nil {
				r.Agents[i].Answers[j].Findings = []Finding{}
			}
		}
	}
}

// Source is a documentation page a statement relies on.
type Source struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	URL   string `json:"url"`
}

// sources are the platform documentation pages the assessor's statements
// are checked against. Every platform statement cites one of them.
var sources = []Source{
	{"ms-managed-identities", "Microsoft Learn: What are managed identities for Azure resources?", "https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/overview"},
	{"ms-managed-identity-sign-in-logs", "Azure Monitor reference: AADManagedIdentitySignInLogs", "https://learn.microsoft.com/en-us/azure/azure-monitor/reference/tables/aadmanagedidentitysigninlogs"},
	{"ms-ca-workload-identities", "Microsoft Learn: Conditional Access for workload identities", "https://learn.microsoft.com/en-us/entra/identity/conditional-access/workload-identity"},
	{"ms-agent-identities", "Microsoft Learn: Agent identities in Microsoft Entra Agent ID", "https://learn.microsoft.com/en-us/entra/agent-id/agent-identities"},
	{"ms-ca-agent-id", "Microsoft Learn: Conditional Access for Agent ID (Preview)", "https://learn.microsoft.com/en-us/entra/identity/conditional-access/agent-id"},
	{"ms-workload-identity-federation", "Microsoft Learn: Workload identity federation", "https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation"},
	{"ms-federation-create-trust", "Microsoft Learn: Configure an app to trust an external identity provider", "https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-create-trust"},
	{"aws-temporary-credentials", "AWS IAM User Guide: Temporary security credentials in IAM", "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp.html"},
	{"aws-use-temporary-credentials", "AWS Well-Architected: SEC02-BP02 Use temporary credentials", "https://docs.aws.amazon.com/wellarchitected/latest/framework/sec_identities_unique.html"},
	{"aws-monitor-role-sessions", "AWS IAM User Guide: Monitor and control actions taken with assumed roles", "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_monitor.html"},
	{"aws-oidc-federation", "AWS IAM User Guide: Create a role for OpenID Connect federation", "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_create_for-idp_oidc.html"},
	{"aws-confused-deputy", "AWS IAM User Guide: The confused deputy problem", "https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html"},
	{"aws-condition-keys", "AWS IAM User Guide: AWS global condition context keys", "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html"},
	{"gcp-workload-identity-federation", "Google Cloud IAM: Workload Identity Federation", "https://cloud.google.com/iam/docs/workload-identity-federation"},
	{"ms-service-principal-sign-in-logs", "Azure Monitor reference: AADServicePrincipalSignInLogs", "https://learn.microsoft.com/en-us/azure/azure-monitor/reference/tables/aadserviceprincipalsigninlogs"},
	{"ms-app-service-principals", "Microsoft Learn: Application and service principal objects in Microsoft Entra ID", "https://learn.microsoft.com/en-us/entra/identity-platform/app-objects-and-service-principals"},
	{"aws-cloudtrail-user-identity", "AWS CloudTrail User Guide: CloudTrail userIdentity element", "https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html"},
	{"aws-assume-role-permissions", "AWS IAM User Guide: Permissions for AssumeRole, AssumeRoleWithSAML, and AssumeRoleWithWebIdentity", "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_assumerole.html"},
	{"gcp-wif-audit-logs", "Google Cloud IAM: Example logs for Workload Identity Federation", "https://cloud.google.com/iam/docs/audit-logging/examples-workload-identity"},
	{"gcp-wif-grant-access", "Google Cloud IAM: Download credential configuration and grant access", "https://cloud.google.com/iam/docs/workload-download-cred-and-grant-access"},
}

// Sources returns the documentation catalogue the assessor cites.
func Sources() []Source { return slices.Clone(sources) }
