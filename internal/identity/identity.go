// Package identity answers "who is acting?". It holds the agent model and
// registry interface, verifies the workload credentials agents already have
// (OIDC issuers, Microsoft Entra, AWS IAM through a signed
// sts:GetCallerIdentity request, Kubernetes service-account tokens, SPIFFE
// JWT- and X.509-SVIDs), exchanges them for short-lived task-scoped gateway
// tokens (RFC 8693), optionally sender-constrained with DPoP (RFC 9449), and
// publishes the gateway's rotating signing keys as a JWKS.
//
// # Model
//
// A trust source is one external issuer with an explicit trust policy:
// exact issuer, one required audience (the gateway), a subject rule, the
// allowed signature algorithms and a maximum token age. A verified
// credential becomes an Identity: the trust source's name, a canonical
// subject (OIDC sub, Entra object id, IAM role ARN, Kubernetes service
// account, SPIFFE ID) and, where the source has one, a tenant (Entra tenant
// id, AWS account). An Identity authenticates as an agent only through a
// FederatedCredential registered on that agent that names the same source,
// tenant and subject: nothing is matched by pattern.
//
// # Invariants
//
//   - Every failure is an *Error with a stable, public Code; the caller maps
//     it to HTTP 401/400/403. Nothing on a verification path turns an error
//     into success; an unreachable JWKS, STS or registry means deny.
//   - Gateway tokens are accepted only with the gateway's issuer and an
//     audience the gateway owns; a token minted for one resource is refused
//     at another. The gateway never forwards an agent's token upstream.
//   - An agent's status is read from the registry on every request (not from
//     any cache), so suspending an agent makes its tokens useless as soon as
//     the registry sees the change.
//   - No identifier format is invented: Azure identities are tenant id +
//     object id, AWS identities are the ARNs STS returns, mapped to the
//     role's IAM ARN.
package identity

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// MaxTokenBytes bounds the size of a presented token.
const MaxTokenBytes = 8 << 10

// Error codes. They are public: agents see them, and the audit log records
// them.
const (
	CodeMissing       = "token_missing"
	CodeMalformed     = "token_malformed"
	CodeTooLarge      = "token_too_large"
	CodeAlgorithm     = "token_algorithm"
	CodeUnknownKey    = "token_unknown_key"
	CodeSignature     = "token_signature"
	CodeExpired       = "token_expired"
	CodeNotYetValid   = "token_not_yet_valid"
	CodeIssuer        = "token_issuer"
	CodeAudience      = "token_audience"
	CodeLifetime      = "token_lifetime"
	CodeTooOld        = "token_too_old"
	CodeSubject       = "token_subject"
	CodeClaims        = "token_claims"
	CodeReplayed      = "token_replayed"
	CodeRevoked       = "token_revoked"
	CodeKeysUnavail   = "jwks_unavailable"
	CodeTenant        = "tenant_not_allowed"
	CodeNoCredential  = "credential_not_registered"
	CodeAgentUnknown  = "agent_unknown"
	CodeAgentDisabled = "agent_disabled"
	CodeAgentExpired  = "agent_expired"
	CodeAgentRetired  = "agent_retired"
	CodeServer        = "server_not_allowed"

	CodeSTSRequest     = "sts_request_invalid"
	CodeSTSHost        = "sts_host_not_allowed"
	CodeSTSUnsigned    = "sts_audience_unsigned"
	CodeSTSRedirect    = "sts_redirect"
	CodeSTSRejected    = "sts_rejected"
	CodeSTSUnavailable = "sts_unavailable"
	CodeSTSPrincipal   = "sts_principal_not_allowed"

	CodeSVID = "svid_invalid"

	CodeDPoPMissing  = "dpop_proof_missing"
	CodeDPoPInvalid  = "dpop_proof_invalid"
	CodeDPoPMismatch = "dpop_key_mismatch"
	CodeDPoPReplayed = "dpop_proof_replayed"

	// Token endpoint codes (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 8707).
	CodeInvalidRequest   = "invalid_request"
	CodeUnsupportedGrant = "unsupported_grant_type"
	CodeInvalidTarget    = "invalid_target"
	CodeInvalidScope     = "invalid_scope"
	CodePolicy           = "policy_denied"
	CodeSourceUnknown    = "trust_source_unknown"
	CodeAuditFailed      = "audit_unavailable"
)

// Error is a verification failure. Code is stable and public; Message is a
// deliberately public explanation; Err is internal detail, for logs only.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// PublicCode returns the code shown to the agent.
func (e *Error) PublicCode() string { return e.Code }

// PublicMessage returns the message shown to the agent.
func (e *Error) PublicMessage() string { return e.Message }

func fail(code, msg string, err error) *Error { return &Error{Code: code, Message: msg, Err: err} }

// ErrorCode returns err's public code, or "" when err is not an *Error.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Principal is an authenticated agent, possibly acting for a user under a
// task-scoped token.
type Principal struct {
	Agent   *Agent
	Subject string
	Issuer  string
	TokenID string
	Expiry  time.Time
	// Method names how the agent authenticated: "gatehouse-jwt",
	// "anonymous", or a trust source kind for direct authentication
	// ("oidc", "entra", "kubernetes", "spiffe-jwt", "spiffe-x509").
	Method string

	// User is the human the agent acts for ("" when autonomous), as
	// "<issuer>#<subject>" of the verified user token; UserGroups are the
	// user's groups from that token's groups claim.
	User       string
	UserGroups []string
	// UserTags are facts about the user from its token (tag name → set),
	// as its trust source's user_tags maps them.
	UserTags map[string][]string
	// Task is the task (transaction) id the token was minted for;
	// TaskPurpose and the window [TaskNotBefore, TaskNotAfter) describe it
	// when the token carries them (tctx; zero: not given).
	Task                        string
	TaskPurpose                 string
	TaskNotBefore, TaskNotAfter time.Time
	// Audience is the token's audience.
	Audience []string
	// Servers, when not nil, narrows the agent's servers for this token.
	Servers []string
	// Tools, when not nil, lists the permitted tools as "server/tool" or
	// "server/*".
	Tools []string
	// Act is the delegation chain, the current actor first (RFC 8693 §4.1).
	Act []Actor
	// Source is the verified workload identity the token was obtained with
	// (the analogue of aws:SourceArn / aws:SourceAccount), when known.
	Source *Source
	// Confirmation is the RFC 7638 thumbprint of the key the token is bound
	// to with DPoP ("" for bearer tokens).
	Confirmation string
}

// Actor is one link of a delegation chain.
type Actor struct {
	Subject string `json:"sub"`
	Issuer  string `json:"iss,omitempty"`
}

// Source is the workload identity behind a token, carried in minted tokens
// so that cross-boundary policy can bind to it.
type Source struct {
	TrustSource string `json:"src"`
	Kind        string `json:"kind"`
	Tenant      string `json:"tenant,omitempty"`
	Subject     string `json:"sub"`
}

// MayUseServer reports whether the principal may use server: the agent must
// list it, and a task-scoped token must include it.
func (p *Principal) MayUseServer(server string) bool {
	if p.Agent == nil || !p.Agent.MayUse(server) {
		return false
	}
	return p.Servers == nil || slices.Contains(p.Servers, server)
}

// MayCallTool reports whether the principal may call tool on server: the
// server check above, then the agent's baseline tools, then the token's
// tool list.
func (p *Principal) MayCallTool(server, tool string) bool {
	if !p.MayUseServer(server) || !p.Agent.MayCall(server, tool) {
		return false
	}
	return p.Tools == nil || toolAllowed(p.Tools, server, tool)
}

func toolAllowed(list []string, server, tool string) bool {
	return slices.Contains(list, server+"/"+tool) || slices.Contains(list, server+"/*")
}

// Status is an agent's lifecycle status.
type Status string

// Agent statuses.
const (
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
	StatusRetired   Status = "retired"
)

// Hosting patterns.
const (
	HostingAzure      = "azure-native"
	HostingAWS        = "aws-native"
	HostingKubernetes = "kubernetes"
	HostingSPIFFE     = "spiffe"
	HostingExternal   = "external"
)

// Agent is a registered agent.
type Agent struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`
	Owner   string   `json:"owner,omitempty"`
	Servers []string `json:"servers,omitempty"`
	// Enabled is false for an agent that must be refused. Registries set it
	// from Status; the static registry from configuration.
	Enabled bool `json:"enabled"`

	// Status is the lifecycle status ("" counts as active when Enabled).
	Status Status `json:"status,omitempty"`
	// Hosting is one of the Hosting* patterns (policy: principal.hosting).
	Hosting string `json:"hosting,omitempty"`
	// Groups are the agent's groups (policy: principal in
	// Gatehouse::Group::"G", and principal.groups).
	Groups []string `json:"groups,omitempty"`
	// Credentials are the federated credentials allowed to authenticate as
	// this agent.
	Credentials []FederatedCredential `json:"credentials,omitempty"`
	// Tools is the baseline tool list as "server/tool" or "server/*"; nil
	// means every tool of Servers.
	Tools []string `json:"tools,omitempty"`
	// Tenants, when not empty, lists the Entra tenants and AWS accounts
	// whose identities (workload or user) may act as or through this agent.
	Tenants []string `json:"tenants,omitempty"`
	// Expires, when not zero, is when the registration lapses.
	Expires time.Time `json:"expires,omitzero"`
	// Version increases with every change (durable registries).
	Version int64 `json:"version,omitempty"`
	// Updated is the time of the last change (durable registries).
	Updated time.Time `json:"updated,omitzero"`
}

// FederatedCredential names one external identity allowed to authenticate
// as an agent, modelled on Entra federated identity credentials: the trust
// source (which fixes the issuer and audience), the tenant where the source
// has tenants, and the exact subject.
type FederatedCredential struct {
	// Source is the trust source's name from the configuration.
	Source string `json:"source"`
	// Tenant is the Entra tenant id or AWS account id ("" for other
	// sources).
	Tenant string `json:"tenant,omitempty"`
	// Subject is the canonical subject: OIDC sub, Entra object id, IAM role
	// ARN (arn:aws:iam::<account>:role/<name>), Kubernetes
	// system:serviceaccount:<ns>:<name>, SPIFFE ID.
	Subject string `json:"subject"`
	// Description is free text.
	Description string `json:"description,omitempty"`
}

// Key returns the lookup key of the credential.
func (c FederatedCredential) Key() string { return credentialKey(c.Source, c.Tenant, c.Subject) }

func credentialKey(source, tenant, subject string) string {
	return source + "\x00" + tenant + "\x00" + subject
}

// MayUse reports whether the agent is allowed to use server.
func (a *Agent) MayUse(server string) bool { return slices.Contains(a.Servers, server) }

// MayCall reports whether tool on server is among the agent's baseline
// tools.
func (a *Agent) MayCall(server, tool string) bool {
	if !a.MayUse(server) {
		return false
	}
	return a.Tools == nil || toolAllowed(a.Tools, server, tool)
}

// Usable returns nil when the agent may act at now, or an *Error saying why
// not.
func (a *Agent) Usable(now time.Time) error {
	switch {
	case a.Status == StatusRetired:
		return fail(CodeAgentRetired, "the agent is retired", nil)
	case !a.Enabled || a.Status == StatusSuspended:
		return fail(CodeAgentDisabled, "the agent is disabled", nil)
	case !a.Expires.IsZero() && !now.Before(a.Expires):
		return fail(CodeAgentExpired, "the agent's registration has expired", nil)
	}
	return nil
}

// TenantAllowed reports whether an identity in tenant may act as or through
// the agent.
func (a *Agent) TenantAllowed(tenant string) bool {
	return len(a.Tenants) == 0 || tenant == "" || slices.Contains(a.Tenants, tenant)
}

// Registry looks agents up. Implementations must be safe for concurrent
// use, must return ErrNoAgent for an unknown agent or credential, must
// return copies the caller may keep, and must reflect a status change
// within one second of its commit (across replicas for shared stores). An
// error other than ErrNoAgent means the registry cannot answer; callers
// deny.
type Registry interface {
	Agent(ctx context.Context, id string) (*Agent, error)
	// AgentByCredential returns the agent with a federated credential whose
	// Key equals credentialKey(source, tenant, subject).
	AgentByCredential(ctx context.Context, source, tenant, subject string) (*Agent, error)
}

// ErrNoAgent is returned by a Registry for an unknown agent.
var ErrNoAgent = errors.New("no such agent")

// StaticRegistry is a Registry over a fixed set of agents (the
// configuration file's agents).
type StaticRegistry struct {
	mu     sync.RWMutex
	agents map[string]*Agent
	creds  map[string]string
}

// NewStaticRegistry returns a registry holding agents.
func NewStaticRegistry(agents []*Agent) *StaticRegistry {
	r := &StaticRegistry{agents: make(map[string]*Agent, len(agents)), creds: map[string]string{}}
	for _, a := range agents {
		r.agents[a.ID] = a
		for _, c := range a.Credentials {
			r.creds[c.Key()] = a.ID
		}
	}
	return r
}

// Agent implements Registry.
func (r *StaticRegistry) Agent(_ context.Context, id string) (*Agent, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.agents[id]
	if !ok {
		return nil, ErrNoAgent
	}
	c := *a
	return &c, nil
}

// AgentByCredential implements Registry.
func (r *StaticRegistry) AgentByCredential(ctx context.Context, source, tenant, subject string) (*Agent, error) {
	r.mu.RLock()
	id, ok := r.creds[credentialKey(source, tenant, subject)]
	r.mu.RUnlock()
	if !ok {
		return nil, ErrNoAgent
	}
	return r.Agent(ctx, id)
}

// SetEnabled enables or disables an agent.
func (r *StaticRegistry) SetEnabled(id string, enabled bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[id]
	if !ok {
		return ErrNoAgent
	}
	c := *a
	c.Enabled = enabled
	if enabled && c.Status == StatusSuspended {
		c.Status = StatusActive
	}
	r.agents[id] = &c
	return nil
}
