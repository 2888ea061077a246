package assess

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Descriptor is a deployment descriptor, version 1: the facts about a
// deployment of agents that the decision tree needs. It states what is,
// not what should be; the assessment says what should be.
type Descriptor struct {
	// Version must be 1.
	Version int `yaml:"version"`
	// Deployment names the deployment. Required.
	Deployment string `yaml:"deployment"`
	// Description is free text.
	Description string `yaml:"description"`
	// PreviewAcceptable says whether the organisation accepts a core
	// dependency on preview (pre-GA) capabilities. Required: the answer
	// to question 5 must be a decision, not a default.
	PreviewAcceptable *bool `yaml:"preview_acceptable"`
	// Operations describes how the deployment is observed and stopped.
	Operations Operations `yaml:"operations"`
	// Agents lists the deployment's agents. At least one.
	Agents []Agent `yaml:"agents"`

	name string    // file name, for locations
	loc  locator   // line lookup
	now  time.Time // reference date for expiry checks
}

// Operations is what exists to observe and stop the deployment.
type Operations struct {
	// Logs: agent activity is logged where responders can query it.
	Logs bool `yaml:"logs"`
	// Alerts: anomalies and blocked actions raise alerts to a human.
	Alerts bool `yaml:"alerts"`
	// KillSwitch: an agent can be stopped at once, without a deploy.
	KillSwitch bool `yaml:"kill_switch"`
	// Rollback: the agent's changes (and the agent version) can be rolled back.
	Rollback bool `yaml:"rollback"`
	// Playbooks names the incident playbooks (paths or URLs).
	Playbooks []string `yaml:"playbooks"`
	// IncidentOwner is the team or person who responds to incidents.
	IncidentOwner string `yaml:"incident_owner"`
}

// Agent is one agent of the deployment.
type Agent struct {
	// ID is the agent's id, as registered in the gateway:
	// [a-z0-9][a-z0-9._-]{0,62}. Required, unique.
	ID string `yaml:"id"`
	// Description is free text.
	Description string `yaml:"description"`
	// Owner is the accountable human (email or directory name).
	Owner string `yaml:"owner"`
	// Expires is the date (YYYY-MM-DD) by which the agent is reviewed or
	// retired.
	Expires string `yaml:"expires"`
	// Hosting says where the agent runs and which clouds it reaches.
	Hosting Hosting `yaml:"hosting"`
	// Identity is the agent's own workload identity on its platform.
	Identity Identity `yaml:"identity"`
	// Trust lists the trust relationships that let the agent reach
	// resources outside its own identity's boundary (other clouds, or
	// services acting on its behalf).
	Trust []Trust `yaml:"trust"`
	// Actions lists the tools the agent calls.
	Actions []Action `yaml:"actions"`
	// Data lists the data sources the agent reads.
	Data []Data `yaml:"data"`
	// Autonomy is assistive, semi_autonomous or autonomous. Required.
	Autonomy string `yaml:"autonomy"`
	// Preview lists preview capabilities the agent relies on.
	Preview []Preview `yaml:"preview"`
}

// Hosting says where an agent runs.
type Hosting struct {
	// Platform is azure, aws or external (SaaS-hosted, on premises or
	// another cloud). Required.
	Platform string `yaml:"platform"`
	// Runtime is free text: "AKS", "Lambda", "vendor SaaS".
	Runtime string `yaml:"runtime"`
	// Clouds lists the clouds whose resources the agent calls: azure,
	// aws, gcp. Default: the platform's own cloud.
	Clouds []string `yaml:"clouds"`
}

// Identity is an agent's workload identity.
type Identity struct {
	// Type is managed_identity, service_principal, entra_agent_id,
	// iam_role, iam_user, workload (a Kubernetes service account, a
	// SPIFFE ID or another OIDC issuer's identity) or api_key. Required.
	Type string `yaml:"type"`
	// Assignment is user_assigned or system_assigned (managed identities).
	Assignment string `yaml:"assignment"`
	// Credential is how the identity proves itself: managed (the
	// platform holds it), federated (a token from a trusted issuer),
	// temporary (STS credentials), certificate, client_secret, access_key
	// or api_key. Required.
	Credential string `yaml:"credential"`
	// SecretStorage, for certificate, client_secret, access_key and
	// api_key credentials, is where the secret lives: vault, file, env,
	// code or image.
	SecretStorage string `yaml:"secret_storage"`
	// ConditionalAccess names the Conditional Access the deployment
	// relies on for this identity: none (default), workload_identities or
	// agent_id.
	ConditionalAccess string `yaml:"conditional_access"`
}

// Trust is one trust relationship.
type Trust struct {
	// Cloud is the cloud that trusts the agent: azure, aws or gcp.
	Cloud string `yaml:"cloud"`
	// Method is federation (an OIDC token exchanged for the cloud's
	// credentials), service (a cloud service assumes a role on the
	// agent's behalf), cross_account (another party's AWS account
	// assumes a role) or secret (a stored long-lived secret).
	Method string `yaml:"method"`
	// Issuer, Subject and Audience are the federated credential's
	// binding (method federation).
	Issuer   string `yaml:"issuer"`
	Subject  string `yaml:"subject"`
	Audience string `yaml:"audience"`
	// SourceArn and SourceAccount bind a service trust to the resource
	// and account it acts for (AWS aws:SourceArn, aws:SourceAccount).
	SourceArn     string `yaml:"source_arn"`
	SourceAccount string `yaml:"source_account"`
	// ExternalID binds a cross-account trust (AWS sts:ExternalId).
	ExternalID string `yaml:"external_id"`
}

// Action is one tool the agent calls.
type Action struct {
	// Tool is the tool's gateway name, <server>__<tool>. Required.
	Tool string `yaml:"tool"`
	// Risk is none (default), financial, privilege, destructive,
	// bulk_export or policy_change (the gateway's risk labels).
	Risk string `yaml:"risk"`
	// Approval names the approver group that must approve each call of a
	// high-risk tool; empty means no approval workflow.
	Approval string `yaml:"approval"`
	// Description is free text.
	Description string `yaml:"description"`
}

// Data is one data source the agent reads.
type Data struct {
	// Name names the source. Required.
	Name string `yaml:"name"`
	// Kind is internal (default), rag, partner or cross_cloud_api.
	Kind string `yaml:"kind"`
	// Sensitivity is public, internal (default), confidential or restricted.
	Sensitivity string `yaml:"sensitivity"`
	// Cloud is where the data lives (azure, aws, gcp), if in a cloud.
	Cloud string `yaml:"cloud"`
	// RetrievalAuthorization: each retrieval is authorized for the user
	// or task the agent acts for, not only for the agent.
	RetrievalAuthorization bool `yaml:"retrieval_authorization"`
	// Segmented: the source is partitioned so the agent reaches only its
	// tenant's or task's slice.
	Segmented bool `yaml:"segmented"`
}

// Preview is a preview capability an agent relies on.
type Preview struct {
	// Feature names it: entra_agent_id, entra_agent_id_conditional_access,
	// or any other name the operator knows to be in preview.
	Feature string `yaml:"feature"`
	// Use is core (a control the deployment depends on) or additive
	// (defence in depth on top of GA controls). Required.
	Use string `yaml:"use"`
}

// Problem is one thing wrong with a descriptor.
type Problem struct {
	Line int    `json:"line,omitempty"`
	Path string `json:"path,omitempty"`
	Msg  string `json:"message"`
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// DescriptorError lists every problem found in a descriptor.
type DescriptorError struct {
	Name     string
	Problems []Problem
}

func (e *DescriptorError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	if len(lines) == 1 {
		return fmt.Sprintf("invalid deployment descriptor %s: %s", e.Name, lines[0])
	}
	return fmt.Sprintf("invalid deployment descriptor %s (%d problems):\n  - %s", e.Name, len(lines), strings.Join(lines, "\n  - "))
}

// Enumerations of the descriptor's closed vocabularies.
var (
	platforms     = []string{"azure", "aws", "external"}
	clouds        = []string{"azure", "aws", "gcp"}
	identityTypes = []string{"managed_identity", "service_principal", "entra_agent_id", "iam_role", "iam_user", "workload", "api_key"}
	assignments   = []string{"user_assigned", "system_assigned"}
	credentials   = []string{"managed", "federated", "temporary", "certificate", "client_secret", "access_key", "api_key"}
	storages      = []string{"vault", "file", "env", "code", "image"}
	caKinds       = []string{"none", "workload_identities", "agent_id"}
	trustMethods  = []string{"federation", "service", "cross_account", "secret"}
	risks         = []string{"none", "financial", "privilege", "destructive", "bulk_export", "policy_change"}
	dataKinds     = []string{"internal", "rag", "partner", "cross_cloud_api"}
	sensitivities = []string{"public", "internal", "confidential", "restricted"}
	autonomies    = []string{"assistive", "semi_autonomous", "autonomous"}
	previewUses   = []string{"core", "additive"}

	agentIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	toolRe    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}__\S+$`)
)

// secretCredentials are credentials that are a stored, long-lived secret.
var secretCredentials = []string{"certificate", "client_secret", "access_key", "api_key"}

// ParseDescriptor strictly decodes and validates a descriptor: unknown
// keys, wrong types, missing required values and values outside the
// vocabularies are all reported at once, with line numbers. name is used
// in locations ("deployment.yaml:12"). Expiry dates are judged against now.
func ParseDescriptor(data []byte, name string, now time.Time) (*Descriptor, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &DescriptorError{Name: name, Problems: []Problem{{Msg: "empty document"}}}
		}
		return nil, &DescriptorError{Name: name, Problems: []Problem{yamlProblem(err.Error())}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &DescriptorError{Name: name, Problems: []Problem{{Line: extra.Line, Msg: "more than one YAML document"}}}
	}
	d := &Descriptor{name: name, loc: locator{root: &root}, now: now}
	var probs []Problem
	// Decode again from the bytes: the strict decoder reports every
	// unknown key and type error, not only the first.
	sdec := yaml.NewDecoder(bytes.NewReader(data))
	sdec.KnownFields(true)
	if err := sdec.Decode(d); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &DescriptorError{Name: name, Problems: []Problem{yamlProblem(err.Error())}}
		}
		for _, e := range te.Errors {
			probs = append(probs, yamlProblem(e))
		}
	}
	probs = append(probs, d.validate()...)
	if len(probs) > 0 {
		slices.SortStableFunc(probs, func(a, b Problem) int { return a.Line - b.Line })
		return nil, &DescriptorError{Name: name, Problems: probs}
	}
	return d, nil
}

var yamlLineRe = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func yamlProblem(s string) Problem {
	if m := yamlLineRe.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1]) // the pattern admits digits only
		return Problem{Line: n, Msg: m[2]}
	}
	return Problem{Msg: strings.TrimPrefix(s, "yaml: ")}
}

// Location returns "name:line" for a key path of the descriptor.
func (d *Descriptor) Location(path string) string {
	if l := d.loc.line(path); l > 0 {
		return fmt.Sprintf("%s:%d", d.name, l)
	}
	return d.name
}

func (d *Descriptor) validate() []Problem {
	var p []Problem
	add := func(path, format string, args ...any) {
		p = append(p, Problem{Line: d.loc.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	enum := func(path, v string, allowed []string, required bool) {
		if v == "" {
			if required {
				add(path, "required; one of %s", strings.Join(allowed, ", "))
			}
			return
		}
		if !slices.Contains(allowed, v) {
			add(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
		}
	}
	if d.Version != 1 {
		add("version", "must be 1")
	}
	if strings.TrimSpace(d.Deployment) == "" {
		add("deployment", "required")
	}
	if d.PreviewAcceptable == nil {
		add("preview_acceptable", "required: say whether a core dependency on preview capabilities is acceptable (true or false)")
	}
	if len(d.Agents) == 0 {
		add("agents", "at least one agent is required")
	}
	ids := map[string]bool{}
	for i, a := range d.Agents {
		k := fmt.Sprintf("agents[%d]", i)
		switch {
		case !agentIDRe.MatchString(a.ID):
			add(k+".id", "%q must match %s", a.ID, agentIDRe)
		case ids[a.ID]:
			add(k+".id", "duplicate agent id %q", a.ID)
		}
		ids[a.ID] = true
		if a.Expires != "" {
			if _, err := time.Parse(time.DateOnly, a.Expires); err != nil {
				add(k+".expires", "%q is not a date (YYYY-MM-DD)", a.Expires)
			}
		}
		enum(k+".hosting.platform", a.Hosting.Platform, platforms, true)
		seen := map[string]bool{}
		for j, c := range a.Hosting.Clouds {
			enum(fmt.Sprintf("%s.hosting.clouds[%d]", k, j), c, clouds, true)
			if seen[c] {
				add(fmt.Sprintf("%s.hosting.clouds[%d]", k, j), "%q listed twice", c)
			}
			seen[c] = true
		}
		id := a.Identity
		enum(k+".identity.type", id.Type, identityTypes, true)
		enum(k+".identity.credential", id.Credential, credentials, true)
		enum(k+".identity.assignment", id.Assignment, assignments, false)
		enum(k+".identity.secret_storage", id.SecretStorage, storages, false)
		enum(k+".identity.conditional_access", id.ConditionalAccess, caKinds, false)
		if id.Type == "managed_identity" && id.Assignment == "" {
			add(k+".identity.assignment", "required for a managed identity: user_assigned or system_assigned")
		}
		if id.Type != "managed_identity" && id.Assignment != "" {
			add(k+".identity.assignment", "applies to managed identities only")
		}
		if slices.Contains(secretCredentials, id.Credential) && id.SecretStorage == "" {
			add(k+".identity.secret_storage", "required for a %s credential: vault, file, env, code or image", id.Credential)
		}
		if !slices.Contains(secretCredentials, id.Credential) && id.SecretStorage != "" {
			add(k+".identity.secret_storage", "applies to stored secrets only (certificate, client_secret, access_key, api_key)")
		}
		if id.Type == "managed_identity" && id.Credential != "" && id.Credential != "managed" {
			add(k+".identity.credential", "a managed identity's credential is managed by the platform")
		}
		for j, t := range a.Trust {
			tk := fmt.Sprintf("%s.trust[%d]", k, j)
			enum(tk+".cloud", t.Cloud, clouds, true)
			enum(tk+".method", t.Method, trustMethods, true)
			if t.Method != "federation" && (t.Issuer != "" || t.Subject != "" || t.Audience != "") {
				add(tk, "issuer, subject and audience apply to method federation only")
			}
			if t.Method != "service" && (t.SourceArn != "" || t.SourceAccount != "") {
				add(tk, "source_arn and source_account apply to method service only")
			}
			if t.Method != "cross_account" && t.ExternalID != "" {
				add(tk+".external_id", "applies to method cross_account only")
			}
			if (t.Method == "service" || t.Method == "cross_account") && t.Cloud != "" && t.Cloud != "aws" {
				add(tk+".method", "%s trust is an AWS pattern; use federation for %s", t.Method, t.Cloud)
			}
		}
		tools := map[string]bool{}
		for j, act := range a.Actions {
			ak := fmt.Sprintf("%s.actions[%d]", k, j)
			if !toolRe.MatchString(act.Tool) {
				add(ak+".tool", "%q is not a gateway tool name <server>__<tool>", act.Tool)
			} else if tools[act.Tool] {
				add(ak+".tool", "duplicate tool %q", act.Tool)
			}
			tools[act.Tool] = true
			enum(ak+".risk", act.Risk, risks, false)
		}
		for j, ds := range a.Data {
			dk := fmt.Sprintf("%s.data[%d]", k, j)
			if strings.TrimSpace(ds.Name) == "" {
				add(dk+".name", "required")
			}
			enum(dk+".kind", ds.Kind, dataKinds, false)
			enum(dk+".sensitivity", ds.Sensitivity, sensitivities, false)
			enum(dk+".cloud", ds.Cloud, clouds, false)
			if ds.Kind == "cross_cloud_api" && ds.Cloud == "" {
				add(dk+".cloud", "required for a cross_cloud_api source: azure, aws or gcp")
			}
		}
		enum(k+".autonomy", a.Autonomy, autonomies, true)
		for j, pv := range a.Preview {
			pk := fmt.Sprintf("%s.preview[%d]", k, j)
			if strings.TrimSpace(pv.Feature) == "" {
				add(pk+".feature", "required")
			}
			enum(pk+".use", pv.Use, previewUses, true)
		}
	}
	return p
}

// reaches returns the clouds an agent calls: Hosting.Clouds, or the
// platform's own cloud when none is listed.
func (a *Agent) reaches() []string {
	if len(a.Hosting.Clouds) > 0 {
		return a.Hosting.Clouds
	}
	if a.Hosting.Platform == "azure" || a.Hosting.Platform == "aws" {
		return []string{a.Hosting.Platform}
	}
	return nil
}

func (a *Agent) risk(i int) string {
	if a.Actions[i].Risk == "" {
		return "none"
	}
	return a.Actions[i].Risk
}
