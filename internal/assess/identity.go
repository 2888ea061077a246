package assess

import (
	"fmt"
	"slices"
)

// rung is one acceptable identity in a hosting pattern's hierarchy.
type rung struct {
	label string
	match func(Identity) bool
}

func idIs(typ string, creds ...string) func(Identity) bool {
	return func(id Identity) bool {
		return id.Type == typ && (len(creds) == 0 || slices.Contains(creds, id.Credential))
	}
}

// hostingPattern classifies where an agent runs against what it reaches:
// azure_native, aws_native, external_entra, external_aws, external_gcp,
// external (reaches no cloud) or cross_cloud.
func hostingPattern(a *Agent) string {
	reach := a.reaches()
	switch p := a.Hosting.Platform; p {
	case "azure", "aws":
		for _, c := range reach {
			if c != p {
				return "cross_cloud"
			}
		}
		return p + "_native"
	default:
		switch len(reach) {
		case 0:
			return "external"
		case 1:
			if reach[0] == "azure" {
				return "external_entra"
			}
			return "external_" + reach[0]
		}
		return "cross_cloud"
	}
}

var patternNames = map[string]string{
	"azure_native":   "Azure-native",
	"aws_native":     "AWS-native",
	"external_entra": "external or SaaS-hosted, needing Microsoft Entra",
	"external_aws":   "external or SaaS-hosted, needing AWS",
	"external_gcp":   "external or SaaS-hosted, needing Google Cloud",
	"external":       "external or SaaS-hosted, reaching no cloud API",
	"cross_cloud":    "cross-cloud / hybrid",
}

// hierarchy returns the identity hierarchy for a platform's own identity,
// best first, with the reasons and sources for the first rung.
func hierarchy(pattern, platform string, previewOK bool) (rungs []rung, why, srcs []string) {
	entra := func() ([]rung, []string, []string) {
		r := []rung{
			{"service principal with workload identity federation (federated identity credential, no stored secret)", idIs("service_principal", "federated")},
			{"service principal with a certificate credential", idIs("service_principal", "certificate")},
		}
		if previewOK {
			r = append(r, rung{"Microsoft Entra Agent ID agent identity (preview)", idIs("entra_agent_id")})
		}
		return r, []string{
			"Secretless: workload identity federation exchanges a token from the workload's own trusted issuer for a Microsoft Entra token, so no client secret or certificate is stored or rotated.",
			"Auditable: the service principal's sign-ins are recorded in the Microsoft Entra sign-in logs (the AADServicePrincipalSignInLogs table in Azure Monitor), which identify the federated identity credential used to sign in.",
			"Least privilege at the runtime boundary: the service principal defines what the application can do in the tenant and which resources it can access, so the workload holds only the roles and permissions granted to it, and only a token that matches the federated credential obtains them.",
			"Clear trust anchor: the federated identity credential names the one issuer, subject and audience that Microsoft Entra accepts for this application.",
			"A single-tenant service principal can be targeted by Conditional Access for workload identities (Workload Identities Premium licence).",
		}, []string{"ms-workload-identity-federation", "ms-service-principal-sign-in-logs", "ms-app-service-principals", "ms-federation-create-trust", "ms-ca-workload-identities"}
	}
	switch pattern {
	case "azure_native":
		rungs = []rung{
			{"managed identity (user-assigned, or system-assigned when the identity should live and die with one resource)", idIs("managed_identity")},
			{"service principal with workload identity federation", idIs("service_principal", "federated")},
			{"service principal with a certificate credential", idIs("service_principal", "certificate")},
		}
		if previewOK {
			rungs = append(rungs, rung{"Microsoft Entra Agent ID agent identity (preview)", idIs("entra_agent_id")})
		}
		return rungs, []string{
			"Secretless: Azure manages the managed identity's credential; nothing is stored in code, configuration or the image.",
			"Auditable: managed identity sign-ins are recorded in the Microsoft Entra sign-in logs (the AADManagedIdentitySignInLogs table in Azure Monitor), and permissions are Azure RBAC role assignments.",
			"Least privilege at the runtime boundary: a system-assigned identity exists only for its resource; a user-assigned one can be scoped and reused deliberately; either gets only the Azure role assignments it is given.",
			"Clear trust anchor: only the Azure resources the identity is assigned to can request its tokens.",
			"Managed identities are not covered by Conditional Access for workload identities; include them in access reviews and keep their role assignments narrow instead.",
		}, []string{"ms-managed-identities", "ms-managed-identity-sign-in-logs", "ms-ca-workload-identities"}
	case "aws_native":
		return []rung{
				{"IAM role with temporary credentials from AWS STS (instance profile, task or function role, pod identity)", idIs("iam_role", "temporary", "federated")},
			}, []string{
				"Secretless: the runtime obtains temporary credentials for the role from AWS STS; they expire and are not stored.",
				"Auditable: actions taken with a role session can be logged to AWS CloudTrail, and a source identity can name who or what performed them.",
				"Least privilege at the runtime boundary: the role's permissions policy is the agent's ceiling.",
				"Clear trust anchor: the role's trust policy says exactly which principal (the runtime's service, an OIDC provider) may assume it.",
			}, []string{"aws-temporary-credentials", "aws-use-temporary-credentials", "aws-monitor-role-sessions"}
	case "external_entra":
		return entra()
	case "external_aws":
		return []rung{
				{"IAM role assumed through OIDC federation (AssumeRoleWithWebIdentity), temporary credentials", idIs("iam_role", "federated", "temporary")},
			}, []string{
				"Secretless: the workload presents a token from its own OIDC issuer and receives temporary AWS credentials; no access key is stored.",
				"Auditable: AWS CloudTrail records each AssumeRoleWithWebIdentity call with the external identity provider and the web identity's user ID, and actions taken with the role session can carry a source identity naming who or what performed them.",
				"Least privilege at the runtime boundary: the role's permissions policy determines what the temporary credentials may do; a session policy passed with AssumeRoleWithWebIdentity can only narrow it, never grant more.",
				"Clear trust anchor: the role's trust policy names the IAM OIDC identity provider and conditions on the token's audience and subject.",
			}, []string{"aws-oidc-federation", "aws-temporary-credentials", "aws-cloudtrail-user-identity", "aws-monitor-role-sessions", "aws-assume-role-permissions"}
	case "external_gcp":
		return []rung{
				{"Workload Identity Federation from the workload's own issuer", idIs("workload", "federated")},
			}, []string{
				"Secretless: external credentials (AWS, Azure, OIDC, SAML or X.509) are exchanged for short-lived Google Cloud tokens instead of service account keys.",
				"Auditable: with Data Access audit logs (Admin Read) enabled for the IAM and Security Token Service APIs, each token exchange is logged with the subject of the external token and the principal:// identifier it maps to.",
				"Least privilege at the runtime boundary: Google recommends granting IAM roles to the federated principal directly on the resources the workload needs; where an API requires it, the workload impersonates one service account that has access to the resource instead.",
				"Clear trust anchor: the workload identity pool provider names the issuer and an attribute condition restricts which identities it accepts.",
			}, []string{"gcp-workload-identity-federation", "gcp-wif-audit-logs", "gcp-wif-grant-access"}
	case "external":
		return []rung{
				{"workload identity from the platform's own issuer (Kubernetes service account, SPIFFE ID or OIDC), verified by the gateway", idIs("workload", "federated")},
				{"workload identity with a certificate credential", idIs("workload", "certificate")},
			}, []string{
				"Secretless: the workload proves itself with the short-lived token its platform already issues; the gateway exchanges it for a short-lived, task-scoped gateway token.",
				"Auditable: the gateway's tamper-evident audit log records, with every call, the verified workload identity behind the token (trust source and subject).",
				"Least privilege at the runtime boundary: the gateway's policy, not a shared key, decides what the agent may call.",
				"Clear trust anchor: the gateway trusts the platform's issuer for this workload's subject only.",
			}, nil
	case "cross_cloud":
		// The agent's own identity is the native one of where it runs;
		// every other cloud is reached by federation (checked under
		// question 3).
		home := map[string]string{"azure": "azure_native", "aws": "aws_native", "external": "external"}[platform]
		rungs, why, srcs = hierarchy(home, platform, previewOK)
		if platform == "external" {
			rungs, why, srcs = entra()
			rungs = append([]rung{{"workload identity from the platform's own issuer, federated into each cloud", idIs("workload", "federated")}}, rungs...)
		}
		why = append(why, "Cross-cloud: keep the native identity where the agent runs and federate it into each other cloud (Microsoft Entra workload identity federation, AWS IAM OIDC federation, Google Cloud Workload Identity Federation); no cloud's long-lived secret is stored in another.")
		srcs = append(srcs, "ms-workload-identity-federation", "aws-oidc-federation", "gcp-workload-identity-federation")
		return rungs, why, srcs
	}
	return nil, nil, nil
}

func describeIdentity(id Identity) string {
	s := id.Type
	if id.Assignment != "" {
		s += " (" + id.Assignment + ")"
	}
	s += ", credential " + id.Credential
	if id.SecretStorage != "" {
		s += " stored in " + id.SecretStorage
	}
	return s
}

func adviseIdentity(d *Descriptor, a *Agent) IdentityAdvice {
	pattern := hostingPattern(a)
	rungs, why, srcs := hierarchy(pattern, a.Hosting.Platform, *d.PreviewAcceptable)
	adv := IdentityAdvice{
		HostingPattern: pattern,
		Current:        describeIdentity(a.Identity),
		Why:            why,
		Sources:        dedup(srcs),
	}
	for i, r := range rungs {
		adv.Hierarchy = append(adv.Hierarchy, r.label)
		if adv.Rank == 0 && r.match(a.Identity) {
			adv.Rank = i + 1
		}
	}
	if len(rungs) > 0 {
		adv.Recommended = rungs[0].label
	}
	return adv
}

// whereFindings judges the agent's identity against the hierarchy.
func whereFindings(d *Descriptor, a *Agent, i int, adv IdentityAdvice) []Finding {
	k := fmt.Sprintf("agents[%d].identity", i)
	var fs []Finding
	id := a.Identity
	switch {
	case slices.Contains([]string{"env", "code", "image"}, id.SecretStorage):
		fs = append(fs, Finding{Check: "identity.embedded_secret", Severity: Blocker,
			Message:  fmt.Sprintf("the agent's %s is embedded in %s", id.Credential, map[string]string{"env": "an environment variable", "code": "its code", "image": "its container image"}[id.SecretStorage]),
			Location: d.Location(k+".secret_storage") + " " + k + ".secret_storage",
			Fix:      "replace it with " + adv.Recommended + "; until then keep it in a secret store, never in code, images or environment variables",
			Sources:  secretSources(a)})
	case slices.Contains([]string{"client_secret", "access_key", "api_key"}, id.Credential):
		fs = append(fs, Finding{Check: "identity.long_lived_secret", Severity: Condition,
			Message:  fmt.Sprintf("the agent authenticates with a long-lived %s", id.Credential),
			Location: d.Location(k+".credential") + " " + k + ".credential",
			Fix:      "move to " + adv.Recommended,
			Sources:  secretSources(a)})
	}
	if adv.Rank == 0 {
		fs = append(fs, Finding{Check: "identity.hierarchy", Severity: Condition,
			Message:  fmt.Sprintf("identity %q is not in the hierarchy for %s agents", adv.Current, patternNames[adv.HostingPattern]),
			Location: d.Location(k+".type") + " " + k,
			Fix:      "use " + adv.Recommended, Sources: adv.Sources})
	} else if adv.Rank > 1 {
		fs = append(fs, Finding{Check: "identity.hierarchy", Severity: Info,
			Message:  fmt.Sprintf("identity is acceptable (rank %d of %d); the hierarchy prefers %s", adv.Rank, len(adv.Hierarchy), adv.Recommended),
			Location: d.Location(k+".type") + " " + k, Sources: adv.Sources})
	}
	switch {
	case id.ConditionalAccess == "workload_identities" && id.Type == "managed_identity":
		fs = append(fs, Finding{Check: "identity.conditional_access_scope", Severity: Condition,
			Message:  "the deployment counts on Conditional Access for workload identities, which does not cover managed identities",
			Location: d.Location(k+".conditional_access") + " " + k + ".conditional_access",
			Fix:      "do not count it as a control for this identity; include the managed identity in access reviews and keep its role assignments narrow; the gateway's policy applies at the tool boundary either way",
			Sources:  []string{"ms-ca-workload-identities"}})
	case id.ConditionalAccess == "workload_identities" && id.Type != "service_principal":
		fs = append(fs, Finding{Check: "identity.conditional_access_scope", Severity: Condition,
			Message:  fmt.Sprintf("Conditional Access for workload identities applies to single-tenant service principals registered in the tenant, not to a %s", id.Type),
			Location: d.Location(k+".conditional_access") + " " + k + ".conditional_access",
			Sources:  []string{"ms-ca-workload-identities"}})
	case id.ConditionalAccess == "workload_identities":
		fs = append(fs, Finding{Check: "identity.conditional_access_scope", Severity: Info,
			Message: "Conditional Access for workload identities applies to single-tenant service principals registered in the tenant and needs Workload Identities Premium licences to create or modify policies",
			Sources: []string{"ms-ca-workload-identities"}})
	}
	return fs
}

func secretSources(a *Agent) []string {
	switch a.Hosting.Platform {
	case "aws":
		return []string{"aws-use-temporary-credentials"}
	case "azure":
		return []string{"ms-managed-identities"}
	}
	return []string{"ms-workload-identity-federation", "aws-use-temporary-credentials"}
}

func dedup(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
