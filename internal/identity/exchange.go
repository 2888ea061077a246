package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4/jwt"
)

// OAuth and RFC 8693 identifiers.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeIDToken       = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
)

// Event is an identity decision worth auditing: a token exchange (granted
// or refused) or a refused authentication. It never holds a token.
type Event struct {
	// Type is "token.exchange" or "authentication".
	Type    string
	Time    time.Time
	Success bool
	// Code is the public error code of a refusal.
	Code string
	// Detail is internal detail of a refusal (for the audit log only).
	Detail   string
	Agent    string
	Workload *Identity
	User     *Identity
	// Act is the delegation chain of the minted token, current actor first.
	Act      []Actor
	TokenID  string
	Task     string
	Resource string
	Servers  []string
	Tools    []string
	Expiry   time.Time
	// DPoP is the thumbprint the token is bound to.
	DPoP   string
	Method string
}

// AuditFunc records an Event durably. An error means the record was not
// written: the token service then refuses to issue the token.
type AuditFunc func(ctx context.Context, e Event) error

// ExchangeRequest is what the policy hook sees.
type ExchangeRequest struct {
	Agent    *Agent
	Workload *Identity
	User     *Identity // nil when the agent acts autonomously
	Resource string
	Servers  []string
	Tools    []string // nil: the agent's baseline
	TTL      time.Duration
	Task     string
	// TaskPurpose and the task's window [TaskNotBefore, TaskNotAfter),
	// when the request names them (zero: not given).
	TaskPurpose                 string
	TaskNotBefore, TaskNotAfter time.Time
}

// Grant is the policy hook's answer: it may narrow tools and lifetime.
type Grant struct {
	Tools []string // nil keeps the requested tools
	TTL   time.Duration
}

// TokenServiceConfig configures the token endpoint.
type TokenServiceConfig struct {
	Minter   *Minter
	Sources  *Sources
	Registry Registry
	// Resources maps each resource URI (RFC 8707: the MCP endpoint URL an
	// agent calls) to the server ids reachable there. Tokens are minted
	// with the resource as their only audience.
	Resources map[string][]string
	// DefaultTTL is the lifetime when the request names none. Default 5m.
	// Requests are capped at Minter.MaxTTL.
	DefaultTTL time.Duration
	// TokenURL is the token endpoint's public URL (the DPoP htu).
	TokenURL string
	// DPoP, when set, accepts DPoP proofs and binds tokens to their key.
	DPoP *DPoPVerifier
	// RequireDPoP refuses requests without a DPoP proof.
	RequireDPoP bool
	// Authorize, when set, is the policy check (e.g. Cedar) run before a
	// token is minted, after the registry, the agent's baseline and the
	// kill switch allowed it. An error refuses the exchange (403
	// policy_denied); a Grant may narrow the tools and the lifetime, never
	// widen them.
	Authorize func(ctx context.Context, r *ExchangeRequest) (*Grant, error)
	// Audit records every exchange, granted or refused. Required: tokens
	// are never issued without a record.
	Audit AuditFunc
	// Locked, when set, is the kill switch: an error refuses to mint for
	// the agent.
	Locked func(ctx context.Context, agentID string) error
	Logger *slog.Logger
	Now    func() time.Time
}

// TokenService is the OAuth 2.0 token endpoint: RFC 8693 token exchange of
// a workload credential (and optionally a user's token) for a short-lived,
// task-scoped gateway token.
type TokenService struct {
	cfg TokenServiceConfig
}

// NewTokenService checks cfg and returns the service.
func NewTokenService(cfg TokenServiceConfig) (*TokenService, error) {
	switch {
	case cfg.Minter == nil:
		return nil, errors.New("token service needs a minter")
	case cfg.Sources == nil:
		return nil, errors.New("token service needs trust sources")
	case cfg.Registry == nil:
		return nil, errors.New("token service needs a registry")
	case cfg.Audit == nil:
		return nil, errors.New("token service needs an audit function")
	case len(cfg.Resources) == 0:
		return nil, errors.New("token service needs at least one resource")
	case cfg.RequireDPoP && cfg.DPoP == nil:
		return nil, errors.New("token service requires DPoP but has no DPoP verifier")
	case cfg.DPoP != nil && cfg.TokenURL == "":
		return nil, errors.New("token service with DPoP needs its public token URL")
	}
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = 5 * time.Minute
	}
	if cfg.Minter.MaxTTL > 0 && cfg.DefaultTTL > cfg.Minter.MaxTTL {
		cfg.DefaultTTL = cfg.Minter.MaxTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &TokenService{cfg: cfg}, nil
}

// TokenResponse is the successful answer (RFC 8693 §2.2.1).
type TokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// TokenRequest is a parsed token-exchange request.
type TokenRequest struct {
	GrantType        string
	SubjectToken     string
	SubjectTokenType string
	ActorToken       string
	ActorTokenType   string
	Resource         string
	Scope            []string
	Lifetime         time.Duration // 0 = default
	Task             string
	// TaskPurpose, TaskNotBefore and TaskNotAfter describe the task
	// (extension parameters task_purpose, task_not_before and
	// task_not_after; RFC 3339 times). Zero values: not given.
	TaskPurpose                 string
	TaskNotBefore, TaskNotAfter time.Time
	Source                      string // trust source of the workload credential
	ActorSource                 string
	DPoPProof                   string
}

// maxFormBytes bounds a token request body.
const maxFormBytes = 64 << 10

// ParseTokenRequest reads and checks the form of a token request.
func ParseTokenRequest(r *http.Request) (*TokenRequest, error) {
	if r.Method != http.MethodPost {
		return nil, fail(CodeInvalidRequest, "the token endpoint accepts POST only", nil)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, fail(CodeInvalidRequest, "the request must be application/x-www-form-urlencoded", nil)
	}
	r.Body = http.MaxBytesReader(nil, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, fail(CodeInvalidRequest, "the request body is not a valid form", err)
	}
	if len(r.URL.Query()) > 0 {
		return nil, fail(CodeInvalidRequest, "parameters must be in the body, not the URL", nil)
	}
	f := r.PostForm
	for k, v := range f {
		if len(v) > 1 {
			return nil, fail(CodeInvalidRequest, "parameter "+k+" is repeated", nil)
		}
	}
	tr := &TokenRequest{
		GrantType: f.Get("grant_type"), SubjectToken: f.Get("subject_token"), SubjectTokenType: f.Get("subject_token_type"),
		ActorToken: f.Get("actor_token"), ActorTokenType: f.Get("actor_token_type"), Resource: f.Get("resource"),
		Task: f.Get("task"), Source: f.Get("source"), ActorSource: f.Get("actor_source"),
	}
	if vals := r.Header.Values("DPoP"); len(vals) > 1 {
		return nil, fail(CodeDPoPInvalid, "more than one DPoP proof", nil)
	} else if len(vals) == 1 {
		tr.DPoPProof = vals[0]
	}
	if tr.GrantType != GrantTypeTokenExchange {
		return nil, fail(CodeUnsupportedGrant, "only token exchange is supported", nil)
	}
	if tr.SubjectToken == "" || tr.SubjectTokenType == "" {
		return nil, fail(CodeInvalidRequest, "subject_token and subject_token_type are required", nil)
	}
	if (tr.ActorToken == "") != (tr.ActorTokenType == "") {
		return nil, fail(CodeInvalidRequest, "actor_token and actor_token_type go together", nil)
	}
	for _, tt := range []string{tr.SubjectTokenType, tr.ActorTokenType} {
		switch tt {
		case "", TokenTypeJWT, TokenTypeIDToken, TokenTypeAccessToken, TokenTypeAWSSigV4:
		default:
			return nil, fail(CodeInvalidRequest, "unsupported token type", nil)
		}
	}
	if rt := f.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken && rt != TokenTypeJWT {
		return nil, fail(CodeInvalidRequest, "only access tokens are issued", nil)
	}
	if a := f.Get("audience"); a != "" && a != tr.Resource {
		return nil, fail(CodeInvalidTarget, "use resource to name the target; audience must equal it", nil)
	}
	if s := f.Get("scope"); s != "" {
		tr.Scope = strings.Fields(s)
		if len(tr.Scope) > 256 {
			return nil, fail(CodeInvalidScope, "too many scopes", nil)
		}
	}
	if l := f.Get("lifetime"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 || n > 86400 {
			return nil, fail(CodeInvalidRequest, "lifetime must be a number of seconds in 1..86400", err)
		}
		tr.Lifetime = time.Duration(n) * time.Second
	}
	if len(tr.Task) > 128 {
		return nil, fail(CodeInvalidRequest, "task id longer than 128 characters", nil)
	}
	if err := parseTask(tr, f); err != nil {
		return nil, err
	}
	return tr, nil
}

// maxPurposeBytes bounds a task's purpose.
const maxPurposeBytes = 256

// parseTask reads the task's purpose and time window: extension
// parameters beside task (RFC 6749 §3.2: servers ignore parameters they do
// not know, so a client may send them to any token endpoint).
func parseTask(tr *TokenRequest, f url.Values) error {
	tr.TaskPurpose = f.Get("task_purpose")
	if len(tr.TaskPurpose) > maxPurposeBytes || !utf8.ValidString(tr.TaskPurpose) || strings.ContainsFunc(tr.TaskPurpose, unicode.IsControl) {
		return fail(CodeInvalidRequest, "task_purpose must be at most 256 bytes of text without control characters", nil)
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"task_not_before", &tr.TaskNotBefore}, {"task_not_after", &tr.TaskNotAfter}} {
		v := f.Get(p.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return fail(CodeInvalidRequest, p.name+" must be an RFC 3339 time such as 2026-05-01T09:00:00Z", err)
		}
		*p.dst = t.Truncate(time.Second)
	}
	if !tr.TaskNotBefore.IsZero() && !tr.TaskNotAfter.IsZero() && !tr.TaskNotBefore.Before(tr.TaskNotAfter) {
		return fail(CodeInvalidRequest, "task_not_before must be before task_not_after", nil)
	}
	return nil
}

// ServeHTTP serves POST /oauth/token.
func (s *TokenService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, err := s.handle(r)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code, msg := CodeInvalidRequest, "the request was refused"
		var ie *Error
		if errors.As(err, &ie) {
			code, msg = ie.Code, ie.Message
		}
		status, oauth := http.StatusBadRequest, oauthError(code)
		switch code {
		case CodeAuditFailed:
			status = http.StatusServiceUnavailable
		case CodePolicy:
			status = http.StatusForbidden
		}
		if strings.HasPrefix(code, "dpop_") {
			w.Header().Set("WWW-Authenticate", `DPoP error="invalid_dpop_proof"`)
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": oauth, "error_description": msg, "error_code": code})
		return
	}
	_ = json.NewEncoder(w).Encode(resp)
}

// oauthError maps a code to the RFC 6749/8693/8707/9449 error value.
func oauthError(code string) string {
	switch code {
	case CodeUnsupportedGrant, CodeInvalidTarget, CodeInvalidScope:
		return code
	case CodeAuditFailed:
		return "temporarily_unavailable"
	case CodePolicy:
		return "access_denied"
	case CodeDPoPMissing, CodeDPoPInvalid, CodeDPoPMismatch, CodeDPoPReplayed:
		return "invalid_dpop_proof"
	}
	return "invalid_request"
}

// handle runs one exchange and audits it.
func (s *TokenService) handle(r *http.Request) (*TokenResponse, error) {
	ctx := r.Context()
	now := nowOr(s.cfg.Now)
	ev := Event{Type: "token.exchange", Time: now}
	resp, err := s.exchange(ctx, r, now, &ev)
	if err != nil {
		ev.Code = ErrorCode(err)
		if ev.Code == "" {
			ev.Code = CodeInvalidRequest
		}
		ev.Detail = err.Error()
		if aerr := s.cfg.Audit(ctx, ev); aerr != nil {
			s.cfg.Logger.Error("auditing a refused token exchange", "err", aerr)
		}
		s.cfg.Logger.Info("token exchange refused", "code", ev.Code, "agent", ev.Agent, "err", err)
		return nil, err
	}
	ev.Success = true
	if err := s.cfg.Audit(ctx, ev); err != nil {
		s.cfg.Logger.Error("auditing a token exchange", "err", err)
		return nil, fail(CodeAuditFailed, "the token cannot be issued now", err)
	}
	return resp, nil
}

func (s *TokenService) exchange(ctx context.Context, r *http.Request, now time.Time, ev *Event) (*TokenResponse, error) {
	tr, err := ParseTokenRequest(r)
	if err != nil {
		return nil, err
	}
	// DPoP first: a proof is cheap to check and single-use.
	var jkt string
	if tr.DPoPProof != "" {
		if s.cfg.DPoP == nil {
			return nil, fail(CodeDPoPInvalid, "DPoP is not enabled on this gateway", nil)
		}
		if jkt, err = s.cfg.DPoP.Verify(ctx, tr.DPoPProof, http.MethodPost, s.cfg.TokenURL, ""); err != nil {
			return nil, err
		}
	} else if s.cfg.RequireDPoP {
		return nil, fail(CodeDPoPMissing, "this gateway issues DPoP-bound tokens only", nil)
	}
	ev.DPoP = jkt

	// RFC 8693 §1.1 delegation: the subject is the party acted for, the
	// actor the party acting. Without an actor token the agent's workload
	// credential is the subject.
	wlTok, wlType, wlSrc := tr.SubjectToken, tr.SubjectTokenType, tr.Source
	var userTok, userType, userSrc string
	if tr.ActorToken != "" {
		wlTok, wlType, wlSrc = tr.ActorToken, tr.ActorTokenType, tr.ActorSource
		userTok, userType, userSrc = tr.SubjectToken, tr.SubjectTokenType, tr.Source
	}
	wl, err := s.cfg.Sources.Verify(ctx, wlTok, wlType, wlSrc)
	if err != nil {
		return nil, err
	}
	ev.Workload = wl
	agent, err := agentFor(ctx, s.cfg.Registry, wl, now)
	if err != nil {
		return nil, err
	}
	ev.Agent = agent.ID
	if s.cfg.Locked != nil {
		if err := s.cfg.Locked(ctx, agent.ID); err != nil {
			return nil, fail(CodeAgentDisabled, "the agent is locked", err)
		}
	}
	var user *Identity
	if userTok != "" {
		if userType == TokenTypeAWSSigV4 {
			return nil, fail(CodeInvalidRequest, "an AWS credential cannot name a user", nil)
		}
		if user, err = s.cfg.Sources.Verify(ctx, userTok, userType, userSrc); err != nil {
			return nil, err
		}
		ev.User = user
		if !user.User {
			return nil, fail(CodeSubject, "the subject token of a delegation must name a user", nil)
		}
		if !agent.TenantAllowed(user.Tenant) {
			return nil, fail(CodeTenant, "the user's tenant is not allowed for this agent", nil)
		}
	}

	// Target and scope.
	resource := tr.Resource
	if resource == "" && len(s.cfg.Resources) == 1 {
		for res := range s.cfg.Resources {
			resource = res
		}
	}
	ev.Resource = resource
	at, ok := s.cfg.Resources[resource]
	if !ok {
		return nil, fail(CodeInvalidTarget, "the resource is not served by this gateway", nil)
	}
	var servers []string
	for _, srv := range at {
		if agent.MayUse(srv) {
			servers = append(servers, srv)
		}
	}
	if len(servers) == 0 {
		return nil, fail(CodeInvalidTarget, "the agent may use no server at this resource", nil)
	}
	var tools []string
	if tr.Scope != nil {
		tools = []string{}
		for _, sc := range tr.Scope {
			srv, tool, ok := strings.Cut(sc, "/")
			if !ok || srv == "" || tool == "" || !slices.Contains(servers, srv) {
				return nil, fail(CodeInvalidScope, "scope "+sc+" does not name a tool of this resource the agent may use", nil)
			}
			if tool == "*" {
				if agent.Tools != nil && !slices.Contains(agent.Tools, sc) {
					return nil, fail(CodeInvalidScope, "scope "+sc+" exceeds the agent's baseline tools", nil)
				}
			} else if !agent.MayCall(srv, tool) {
				return nil, fail(CodeInvalidScope, "scope "+sc+" exceeds the agent's baseline tools", nil)
			}
			tools = append(tools, sc)
		}
		// Servers the scope does not mention are not reachable with it.
		servers = slices.DeleteFunc(servers, func(srv string) bool {
			return !slices.ContainsFunc(tools, func(t string) bool { return strings.HasPrefix(t, srv+"/") })
		})
	}
	ttl := tr.Lifetime
	if ttl == 0 {
		ttl = s.cfg.DefaultTTL
	}
	if m := s.cfg.Minter.MaxTTL; m > 0 && ttl > m {
		ttl = m
	}
	// A token never outlives its task's window; a window that has ended
	// gets no token.
	if end := tr.TaskNotAfter; !end.IsZero() {
		left := end.Sub(now).Truncate(time.Second)
		if left < time.Second {
			return nil, fail(CodeInvalidRequest, "the task's window has ended", nil)
		}
		ttl = min(ttl, left)
	}
	task := tr.Task
	if task == "" {
		task = randomID()
	}
	ev.Task = task

	if s.cfg.Authorize != nil {
		g, err := s.cfg.Authorize(ctx, &ExchangeRequest{Agent: agent, Workload: wl, User: user, Resource: resource,
			Servers: slices.Clone(servers), Tools: slices.Clone(tools), TTL: ttl, Task: task,
			TaskPurpose: tr.TaskPurpose, TaskNotBefore: tr.TaskNotBefore, TaskNotAfter: tr.TaskNotAfter})
		if err != nil {
			return nil, fail(CodePolicy, "policy does not allow this token", err)
		}
		if g != nil {
			if g.Tools != nil {
				for _, t := range g.Tools {
					srv, tool, _ := strings.Cut(t, "/")
					if !slices.Contains(servers, srv) || (tools != nil && !toolAllowed(tools, srv, tool)) {
						return nil, fail(CodePolicy, "policy widened the grant", nil)
					}
				}
				tools = g.Tools
			}
			if g.TTL > 0 && g.TTL < ttl {
				ttl = g.TTL
			}
		}
	}

	c := Claims{Claims: jwt.Claims{Subject: agent.ID, Audience: jwt.Audience{resource}}, ClientID: agent.ID, Txn: task,
		Purpose: strings.Join(tools, " "),
		Context: &TxnContext{Servers: servers, Tools: tools, Purpose: tr.TaskPurpose,
			NotBefore: numericDate(tr.TaskNotBefore), NotAfter: numericDate(tr.TaskNotAfter)},
		Request: &ReqContext{Workload: wl.source()}}
	if user != nil {
		c.Subject = user.Subject
		c.Request.User = user.Issuer + "#" + user.Subject
		c.Groups, c.UserTags = user.Groups, user.Tags
		// The agent acts for the user; earlier actors of the user's token
		// follow it in the chain.
		c.Act = actClaim(append([]Actor{{Subject: agent.ID, Issuer: s.cfg.Minter.Issuer}}, user.Act...))
	}
	if jkt != "" {
		c.Cnf = &Confirmation{JKT: jkt}
	}
	tok, exp, err := s.cfg.Minter.mint(&c, ttl)
	if err != nil {
		return nil, fmt.Errorf("minting: %w", err)
	}
	ev.Act, ev.Servers, ev.Tools, ev.Expiry, ev.TokenID = actChain(c.Act), servers, tools, exp, c.ID
	tokenType := "Bearer"
	if jkt != "" {
		tokenType = "DPoP"
	}
	return &TokenResponse{AccessToken: tok, IssuedTokenType: TokenTypeAccessToken, TokenType: tokenType,
		ExpiresIn: int64(ttl / time.Second), Scope: strings.Join(tools, " ")}, nil
}
