package identity_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/identity"
)

const (
	gwURL    = "https://gw.test"
	resMain  = gwURL + "/mcp"
	resHR    = gwURL + "/mcp/hr"
	tokenURL = gwURL + "/oauth/token"
	wlSub    = "repo:acme/billing-bot:ref:refs/heads/main"
)

// exchangeEnv is a token service, authenticator and their peers.
type exchangeEnv struct {
	wl, idp *testIssuer
	reg     *identity.StaticRegistry
	ring    *identity.KeyRing
	svc     *identity.TokenService
	authn   *identity.Authenticator
	now     atomic.Pointer[time.Time]

	mu       sync.Mutex
	events   []identity.Event
	auditErr error
	policy   func(*identity.ExchangeRequest) (*identity.Grant, error)
}

func (e *exchangeEnv) clock() time.Time { return *e.now.Load() }

func (e *exchangeEnv) advance(d time.Duration) {
	n := e.clock().Add(d)
	e.now.Store(&n)
}

func newExchangeEnv(t testing.TB) *exchangeEnv {
	t.Helper()
	return newExchangeEnvWith(t, time.Now(), []*identity.Agent{
		{ID: "billing-bot", Owner: "alice@example.com", Enabled: true, Servers: []string{"bank", "crm", "hr"},
			Tools:       []string{"bank/balance", "bank/transfer", "crm/*"},
			Credentials: []identity.FederatedCredential{{Source: "ci", Subject: wlSub}}},
		{ID: "off-bot", Enabled: false, Servers: []string{"bank"}, Credentials: []identity.FederatedCredential{{Source: "ci", Subject: "repo:acme/off"}}},
	})
}

// newExchangeEnvWith is newExchangeEnv with the given agents, starting at n.
func newExchangeEnvWith(t testing.TB, n time.Time, agents []*identity.Agent) *exchangeEnv {
	t.Helper()
	e := &exchangeEnv{wl: newTestIssuer(t), idp: newTestIssuer(t)}
	e.now.Store(&n)
	e.reg = identity.NewStaticRegistry(agents)
	var err error
	e.ring, err = identity.NewKeyRing(identity.KeyRingConfig{Retain: 10 * time.Minute, Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	ci, err := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "ci", Policy: identity.TrustPolicy{Issuer: e.wl.URL, Audience: "gatehouse"}, Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	idp, err := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "corp", Users: true, Policy: identity.TrustPolicy{Issuer: e.idp.URL, Audience: "gatehouse"}, Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	sources, err := identity.NewSources(ci, idp)
	if err != nil {
		t.Fatal(err)
	}
	minter := &identity.Minter{Keys: e.ring, Issuer: gwURL, Audience: "gatehouse", MaxTTL: time.Hour, Now: e.clock}
	tv := &identity.TokenVerifier{Ring: e.ring, Issuer: gwURL, Audience: "gatehouse", Audiences: []string{resMain, resHR},
		Skew: 30 * time.Second, MaxTTL: time.Hour, Registry: e.reg, Now: e.clock}
	dpop := &identity.DPoPVerifier{Now: e.clock}
	e.svc, err = identity.NewTokenService(identity.TokenServiceConfig{
		Minter: minter, Sources: sources, Registry: e.reg,
		Resources: map[string][]string{resMain: {"bank", "crm"}, resHR: {"hr"}},
		TokenURL:  tokenURL, DPoP: dpop, Now: e.clock,
		Authorize: func(ctx context.Context, r *identity.ExchangeRequest) (*identity.Grant, error) {
			e.mu.Lock()
			p := e.policy
			e.mu.Unlock()
			if p == nil {
				return nil, nil
			}
			return p(r)
		},
		Audit: func(ctx context.Context, ev identity.Event) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.auditErr != nil {
				return e.auditErr
			}
			e.events = append(e.events, ev)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.authn = &identity.Authenticator{Tokens: tv, Sources: sources, DPoP: dpop, PublicURL: gwURL, Now: e.clock,
		Resource: func(r *http.Request) string { return gwURL + r.URL.Path }}
	return e
}

func (e *exchangeEnv) wlToken(t testing.TB, sub string) string {
	now := e.clock()
	return e.wl.sign(t, map[string]any{"iss": e.wl.URL, "sub": sub, "aud": "gatehouse", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()})
}

func (e *exchangeEnv) userToken(t testing.TB, sub string, act map[string]any) string {
	now := e.clock()
	c := map[string]any{"iss": e.idp.URL, "sub": sub, "aud": "gatehouse", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	if act != nil {
		c["act"] = act
	}
	return e.idp.sign(t, c)
}

type exchangeResult struct {
	status int
	body   map[string]any
	token  string
}

func (e *exchangeEnv) exchange(t testing.TB, form url.Values, dpopProof string) exchangeResult {
	t.Helper()
	form.Set("grant_type", identity.GrantTypeTokenExchange)
	req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if dpopProof != "" {
		req.Header.Set("DPoP", dpopProof)
	}
	rec := httptest.NewRecorder()
	e.svc.ServeHTTP(rec, req)
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("token endpoint answered %d %q", rec.Code, rec.Body.String())
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("token response is cacheable")
	}
	tok, _ := body["access_token"].(string)
	return exchangeResult{status: rec.Code, body: body, token: tok}
}

func (e *exchangeEnv) call(t testing.TB, path, scheme, token, proof string) (*identity.Principal, error) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, nil)
	req.Header.Set("Authorization", scheme+" "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return e.authn.Authenticate(context.Background(), req)
}

func (e *exchangeEnv) lastEvent(t testing.TB) identity.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.events) == 0 {
		t.Fatal("no audit event")
	}
	return e.events[len(e.events)-1]
}

func TestExchangeAutonomous(t *testing.T) {
	e := newExchangeEnv(t)
	r := e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT},
		"resource": {resMain}, "scope": {"bank/balance crm/*"}, "task": {"task-42"}}, "")
	if r.status != 200 || r.body["token_type"] != "Bearer" || r.body["issued_token_type"] != identity.TokenTypeAccessToken || r.body["expires_in"] != 300.0 {
		t.Fatalf("exchange: %d %v", r.status, r.body)
	}
	p, err := e.call(t, "/mcp", "Bearer", r.token, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Agent.ID != "billing-bot" || p.Task != "task-42" || p.User != "" || len(p.Act) != 0 || p.Source == nil || p.Source.Subject != wlSub {
		t.Fatalf("principal = %+v", p)
	}
	if !p.MayCallTool("bank", "balance") || p.MayCallTool("bank", "transfer") || !p.MayCallTool("crm", "lookup") || p.MayUseServer("hr") {
		t.Errorf("tool scoping wrong: tools %v servers %v", p.Tools, p.Servers)
	}
	ev := e.lastEvent(t)
	if !ev.Success || ev.Agent != "billing-bot" || ev.TokenID != p.TokenID || ev.Task != "task-42" || ev.Workload.Subject != wlSub {
		t.Errorf("audit event = %+v", ev)
	}
	// Per-resource audience: the token is refused at another resource.
	if _, err := e.call(t, "/mcp/hr", "Bearer", r.token, ""); identity.ErrorCode(err) != identity.CodeAudience {
		t.Errorf("token used at another resource: %v", err)
	}
}

// TestExchangeTaskPurposeAndWindow: a task's purpose and time window travel
// in the token (tctx), and the token does not outlive the window.
func TestExchangeTaskPurposeAndWindow(t *testing.T) {
	e := newExchangeEnv(t)
	now := e.clock().Truncate(time.Second)
	nb, na := now.Add(-time.Minute), now.Add(2*time.Minute)
	r := e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain},
		"task": {"task-7"}, "task_purpose": {"reconcile March invoices"}, "lifetime": {"600"},
		"task_not_before": {nb.Format(time.RFC3339)}, "task_not_after": {na.Format(time.RFC3339)}}, "")
	if r.status != 200 {
		t.Fatalf("exchange: %d %v", r.status, r.body)
	}
	if exp, _ := r.body["expires_in"].(float64); exp > 120 || exp < 110 {
		t.Errorf("expires_in = %v, want the rest of the task's window (at most 120)", r.body["expires_in"])
	}
	p, err := e.call(t, "/mcp", "Bearer", r.token, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Task != "task-7" || p.TaskPurpose != "reconcile March invoices" || !p.TaskNotBefore.Equal(nb) || !p.TaskNotAfter.Equal(na) {
		t.Errorf("principal task = %q %q [%v, %v)", p.Task, p.TaskPurpose, p.TaskNotBefore, p.TaskNotAfter)
	}
	// Without them, the token says nothing about purpose or window.
	r = e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	if p, err = e.call(t, "/mcp", "Bearer", r.token, ""); err != nil || p.TaskPurpose != "" || !p.TaskNotBefore.IsZero() || !p.TaskNotAfter.IsZero() {
		t.Errorf("principal without a task description: %+v, %v", p, err)
	}
}

func TestExchangeDelegated(t *testing.T) {
	e := newExchangeEnv(t)
	// The user's token already names an earlier actor (e.g. a front-end
	// service that obtained it on the user's behalf).
	user := e.userToken(t, "alice", map[string]any{"sub": "portal", "iss": e.idp.URL})
	r := e.exchange(t, url.Values{"subject_token": {user}, "subject_token_type": {identity.TokenTypeIDToken},
		"actor_token": {e.wlToken(t, wlSub)}, "actor_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	if r.status != 200 {
		t.Fatalf("exchange: %d %v", r.status, r.body)
	}
	p, err := e.call(t, "/mcp", "Bearer", r.token, "")
	if err != nil {
		t.Fatal(err)
	}
	wantAct := []identity.Actor{{Subject: "billing-bot", Issuer: gwURL}, {Subject: "portal", Issuer: e.idp.URL}}
	if p.Agent.ID != "billing-bot" || p.Subject != "alice" || p.User != e.idp.URL+"#alice" || !slices.Equal(p.Act, wantAct) {
		t.Fatalf("principal = %+v", p)
	}
	ev := e.lastEvent(t)
	if ev.User == nil || ev.User.Subject != "alice" || !slices.Equal(ev.Act, wantAct) {
		t.Errorf("audit event act chain = %+v", ev.Act)
	}
	if p.UserGroups != nil {
		t.Errorf("user groups without a groups claim: %v", p.UserGroups)
	}
	// The user's groups claim travels in the token (RFC 9068 groups).
	now := e.clock()
	grouped := e.idp.sign(t, map[string]any{"iss": e.idp.URL, "sub": "alice", "aud": "gatehouse", "iat": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(), "groups": []string{"finance", "approvers"}})
	r = e.exchange(t, url.Values{"subject_token": {grouped}, "subject_token_type": {identity.TokenTypeJWT},
		"actor_token": {e.wlToken(t, wlSub)}, "actor_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	if p, err = e.call(t, "/mcp", "Bearer", r.token, ""); err != nil || !slices.Equal(p.UserGroups, []string{"finance", "approvers"}) {
		t.Errorf("delegated token with groups: %+v, %v", p, err)
	}
	// An autonomous token names no user, hence no user groups.
	r = e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	if p, err = e.call(t, "/mcp", "Bearer", r.token, ""); err != nil || p.UserGroups != nil {
		t.Errorf("autonomous token: %+v, %v", p, err)
	}
	// A workload cannot stand in for the user, nor a user for the agent.
	r = e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT},
		"actor_token": {e.wlToken(t, wlSub)}, "actor_token_type": {identity.TokenTypeJWT}}, "")
	if r.body["error_code"] != identity.CodeSubject {
		t.Errorf("workload as user: %v", r.body)
	}
	r = e.exchange(t, url.Values{"subject_token": {e.userToken(t, "alice", nil)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	if r.body["error_code"] != identity.CodeSubject {
		t.Errorf("user as agent: %v", r.body)
	}
}

func TestExchangeRefusals(t *testing.T) {
	e := newExchangeEnv(t)
	good := func() url.Values {
		return url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}
	}
	set := func(v url.Values, kv ...string) url.Values {
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v
	}
	tests := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"unknown resource", set(good(), "resource", "https://elsewhere/mcp"), 400, identity.CodeInvalidTarget},
		{"audience differs from resource", set(good(), "audience", "other"), 400, identity.CodeInvalidTarget},
		{"scope on another resource", set(good(), "scope", "hr/payroll"), 400, identity.CodeInvalidScope},
		{"scope beyond baseline", set(good(), "scope", "bank/close_account"), 400, identity.CodeInvalidScope},
		{"wildcard beyond baseline", set(good(), "scope", "bank/*"), 400, identity.CodeInvalidScope},
		{"malformed scope", set(good(), "scope", "bank"), 400, identity.CodeInvalidScope},
		{"unregistered workload", set(good(), "subject_token", e.wlToken(t, "repo:acme/unknown")), 400, identity.CodeNoCredential},
		{"disabled agent", set(good(), "subject_token", e.wlToken(t, "repo:acme/off")), 400, identity.CodeAgentDisabled},
		{"untrusted issuer", set(good(), "subject_token", newTestIssuer(t).sign(t, oidcClaims("https://evil"))), 400, identity.CodeIssuer},
		{"missing subject token", set(good(), "subject_token", ""), 400, identity.CodeInvalidRequest},
		{"unknown token type", set(good(), "subject_token_type", "urn:x"), 400, identity.CodeInvalidRequest},
		{"actor token without type", set(good(), "actor_token", "x"), 400, identity.CodeInvalidRequest},
		{"bad lifetime", set(good(), "lifetime", "-5"), 400, identity.CodeInvalidRequest},
		{"task window not a time", set(good(), "task_not_after", "tomorrow"), 400, identity.CodeInvalidRequest},
		{"task window reversed", set(good(), "task_not_before", e.clock().Add(time.Hour).Format(time.RFC3339),
			"task_not_after", e.clock().Format(time.RFC3339)), 400, identity.CodeInvalidRequest},
		{"task window ended", set(good(), "task_not_after", e.clock().Add(-time.Minute).Format(time.RFC3339)), 400, identity.CodeInvalidRequest},
		{"task purpose too long", set(good(), "task_purpose", strings.Repeat("p", 257)), 400, identity.CodeInvalidRequest},
		{"task purpose with a control character", set(good(), "task_purpose", "pay\nrent"), 400, identity.CodeInvalidRequest},
		{"refresh token grant", set(good(), "grant_type", "refresh_token"), 400, identity.CodeUnsupportedGrant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := tt.form
			gt := form.Get("grant_type")
			r := e.exchange(t, form, "")
			if gt != "" {
				// exchange() overwrote grant_type; send the raw form.
				req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(strings.Replace(form.Encode(), "grant_type="+url.QueryEscape(identity.GrantTypeTokenExchange), "grant_type="+gt, 1)))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				rec := httptest.NewRecorder()
				e.svc.ServeHTTP(rec, req)
				r = exchangeResult{status: rec.Code}
				_ = json.Unmarshal(rec.Body.Bytes(), &r.body)
			}
			if r.status != tt.status || r.body["error_code"] != tt.code || r.body["access_token"] != nil {
				t.Errorf("got %d %v, want %d %s", r.status, r.body, tt.status, tt.code)
			}
			if ev := e.lastEvent(t); ev.Success || ev.Code != tt.code {
				t.Errorf("audit event = %+v", ev)
			}
		})
	}
	t.Run("policy denies", func(t *testing.T) {
		e.policy = func(*identity.ExchangeRequest) (*identity.Grant, error) {
			return nil, errors.New("forbid: outside business hours")
		}
		defer func() { e.policy = nil }()
		r := e.exchange(t, good(), "")
		if r.status != 403 || r.body["error_code"] != identity.CodePolicy {
			t.Errorf("got %d %v", r.status, r.body)
		}
	})
	t.Run("policy narrows", func(t *testing.T) {
		e.policy = func(r *identity.ExchangeRequest) (*identity.Grant, error) {
			return &identity.Grant{Tools: []string{"bank/balance"}, TTL: time.Minute}, nil
		}
		defer func() { e.policy = nil }()
		r := e.exchange(t, good(), "")
		if r.status != 200 || r.body["expires_in"] != 60.0 {
			t.Fatalf("got %d %v", r.status, r.body)
		}
		p, err := e.call(t, "/mcp", "Bearer", r.token, "")
		if err != nil || !slices.Equal(p.Tools, []string{"bank/balance"}) {
			t.Errorf("principal %+v, %v", p, err)
		}
	})
	t.Run("policy may not widen", func(t *testing.T) {
		e.policy = func(r *identity.ExchangeRequest) (*identity.Grant, error) {
			return &identity.Grant{Tools: []string{"hr/payroll"}}, nil
		}
		defer func() { e.policy = nil }()
		if r := e.exchange(t, good(), ""); r.status != 403 {
			t.Errorf("got %d %v", r.status, r.body)
		}
	})
	t.Run("audit unavailable", func(t *testing.T) {
		e.mu.Lock()
		e.auditErr = errors.New("disk full")
		e.mu.Unlock()
		defer func() { e.mu.Lock(); e.auditErr = nil; e.mu.Unlock() }()
		r := e.exchange(t, good(), "")
		if r.status != 503 || r.token != "" || r.body["error_code"] != identity.CodeAuditFailed {
			t.Errorf("got %d %v", r.status, r.body)
		}
	})
	t.Run("lifetime capped", func(t *testing.T) {
		r := e.exchange(t, set(good(), "lifetime", "86400"), "")
		if r.status != 200 || r.body["expires_in"] != 3600.0 {
			t.Errorf("got %d %v", r.status, r.body)
		}
	})
}

// dpopKey is an agent's DPoP key pair.
type dpopKey struct{ k *ecdsa.PrivateKey }

func newDPoPKey(t testing.TB) dpopKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return dpopKey{k}
}

func (d dpopKey) proof(t testing.TB, method, u, accessToken string, iat time.Time) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: d.k}, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	c := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(randBytes(12)), "htm": method, "htu": u, "iat": iat.Unix()}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	b, _ := json.Marshal(c)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestDPoPBoundToken(t *testing.T) {
	e := newExchangeEnv(t)
	key := newDPoPKey(t)
	now := e.clock()
	r := e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}},
		key.proof(t, "POST", tokenURL, "", now))
	if r.status != 200 || r.body["token_type"] != "DPoP" {
		t.Fatalf("exchange: %d %v", r.status, r.body)
	}
	if p, err := e.call(t, "/mcp", "DPoP", r.token, key.proof(t, "POST", resMain, r.token, now)); err != nil || p.Confirmation == "" {
		t.Fatalf("with proof: %+v %v", p, err)
	}
	replayed := key.proof(t, "POST", resMain, r.token, now)
	_, _ = e.call(t, "/mcp", "DPoP", r.token, replayed)
	other := newDPoPKey(t)
	tests := []struct {
		name, scheme, proof, want string
	}{
		{"bearer scheme, no proof", "Bearer", "", identity.CodeDPoPMissing},
		{"DPoP scheme, no proof", "DPoP", "", identity.CodeDPoPMissing},
		{"proof by another key", "DPoP", other.proof(t, "POST", resMain, r.token, now), identity.CodeDPoPMismatch},
		{"proof for another URL", "DPoP", key.proof(t, "POST", gwURL+"/other", r.token, now), identity.CodeDPoPInvalid},
		{"proof for another method", "DPoP", key.proof(t, "GET", resMain, r.token, now), identity.CodeDPoPInvalid},
		{"proof for another token", "DPoP", key.proof(t, "POST", resMain, "other-token", now), identity.CodeDPoPInvalid},
		{"stale proof", "DPoP", key.proof(t, "POST", resMain, r.token, now.Add(-5*time.Minute)), identity.CodeDPoPInvalid},
		{"replayed proof", "DPoP", replayed, identity.CodeDPoPReplayed},
		{"not a JWT", "DPoP", "nope", identity.CodeDPoPInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.call(t, "/mcp", tt.scheme, r.token, tt.proof); identity.ErrorCode(err) != tt.want {
				t.Errorf("code = %q, want %q (%v)", identity.ErrorCode(err), tt.want, err)
			}
		})
	}
	// An unbound token is refused under the DPoP scheme.
	plain := e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	if _, err := e.call(t, "/mcp", "DPoP", plain.token, key.proof(t, "POST", resMain, plain.token, now)); identity.ErrorCode(err) != identity.CodeDPoPInvalid {
		t.Errorf("unbound token under DPoP: %v", err)
	}
	// A token-endpoint proof for another URL is refused.
	r = e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, key.proof(t, "POST", gwURL+"/elsewhere", "", now))
	if r.body["error_code"] != identity.CodeDPoPInvalid {
		t.Errorf("token endpoint proof for another URL: %v", r.body)
	}
}

func TestSuspendedAgentRefusedAtOnce(t *testing.T) {
	e := newExchangeEnv(t)
	r := e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	if _, err := e.call(t, "/mcp", "Bearer", r.token, ""); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.reg.SetEnabled("billing-bot", false); err != nil {
		t.Fatal(err)
	}
	_, err := e.call(t, "/mcp", "Bearer", r.token, "")
	if identity.ErrorCode(err) != identity.CodeAgentDisabled {
		t.Fatalf("after suspension: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("suspension took %v to apply", d)
	}
	// Nor can the agent get a new token.
	if r := e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, ""); r.body["error_code"] != identity.CodeAgentDisabled {
		t.Errorf("exchange while suspended: %v", r.body)
	}
}

func TestKeyRotationWithCallsInFlight(t *testing.T) {
	e := newExchangeEnv(t)
	form := func() url.Values {
		return url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}
	}
	first := e.exchange(t, form(), "")
	oldKID := tokenKID(t, first.token)
	var wg sync.WaitGroup
	var failures atomic.Int32
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := e.exchange(t, form(), "")
				if r.status != 200 {
					failures.Add(1)
					continue
				}
				if _, err := e.call(t, "/mcp", "Bearer", r.token, ""); err != nil {
					failures.Add(1)
				}
				if _, err := e.call(t, "/mcp", "Bearer", first.token, ""); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	for range 5 {
		time.Sleep(20 * time.Millisecond)
		if _, err := e.ring.Rotate(); err != nil {
			t.Fatal(err)
		}
		e.advance(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d calls failed during rotation", n)
	}
	newTok := e.exchange(t, form(), "")
	if tokenKID(t, newTok.token) == oldKID {
		t.Error("still signing with the first key after rotation")
	}
	jwks := e.ring.JWKS()
	if len(jwks.Keys) != 6 {
		t.Errorf("JWKS has %d keys, want 6", len(jwks.Keys))
	}
	// Once the retention passes, the first key stops verifying.
	e.advance(11 * time.Minute)
	if _, err := e.call(t, "/mcp", "Bearer", first.token, ""); identity.ErrorCode(err) == "" {
		t.Error("token of a retired key still accepted")
	}
}

func tokenKID(t testing.TB, tok string) string {
	h, _, _ := strings.Cut(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(h)
	var hdr struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(b, &hdr)
	return hdr.Kid
}

func TestChallenge(t *testing.T) {
	meta := identity.ResourceMetadataURL(gwURL, "/mcp")
	if meta != gwURL+"/.well-known/oauth-protected-resource/mcp" {
		t.Errorf("metadata URL = %s", meta)
	}
	for err, want := range map[error]string{
		&identity.Error{Code: identity.CodeMissing, Message: "a bearer token is required"}: `Bearer resource_metadata="` + meta + `"`,
		&identity.Error{Code: identity.CodeExpired, Message: "the token has expired"}:      `Bearer error="invalid_token", error_description="the token has expired", resource_metadata="` + meta + `"`,
		&identity.Error{Code: identity.CodeDPoPMissing, Message: "x"}:                      `DPoP error="invalid_dpop_proof", error_description="x", resource_metadata="` + meta + `", algs="ES256 EdDSA RS256 PS256"`,
	} {
		if got := identity.Challenge(err, meta); got != want {
			t.Errorf("Challenge = %s\nwant        %s", got, want)
		}
	}
}

func FuzzParseTokenRequest(f *testing.F) {
	f.Add("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&scope=a%2Fb")
	f.Add("a=1&a=2")
	f.Add("lifetime=99999999999999999999")
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		tr, err := identity.ParseTokenRequest(req)
		if err != nil {
			if identity.ErrorCode(err) == "" {
				t.Fatalf("error without code: %v", err)
			}
			return
		}
		if tr.GrantType != identity.GrantTypeTokenExchange || tr.SubjectToken == "" || tr.Lifetime < 0 || tr.Lifetime > 24*time.Hour {
			t.Fatalf("accepted an invalid request: %+v", tr)
		}
	})
}

func FuzzDPoPProof(f *testing.F) {
	key := newDPoPKey(f)
	f.Add(key.proof(f, "POST", resMain, "tok", t0))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	d := &identity.DPoPVerifier{Now: fixedNow(t0)}
	f.Fuzz(func(t *testing.T, proof string) {
		jkt, err := d.Verify(context.Background(), proof, "POST", resMain, "tok")
		if err == nil && jkt == "" {
			t.Fatal("accepted without a thumbprint")
		}
		if err != nil && identity.ErrorCode(err) == "" {
			t.Fatalf("error without code: %v", err)
		}
	})
}

func TestKillSwitchAndSingleUseTokens(t *testing.T) {
	e := newExchangeEnv(t)
	r := e.exchange(t, url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}, "")
	p, err := e.call(t, "/mcp", "Bearer", r.token, "")
	if err != nil {
		t.Fatal(err)
	}
	cache := &identity.MemoryReplayCache{Now: e.clock}
	if err := identity.UseToken(context.Background(), cache, p); err != nil {
		t.Fatal(err)
	}
	if err := identity.UseToken(context.Background(), cache, p); identity.ErrorCode(err) != identity.CodeReplayed {
		t.Errorf("second side-effecting call with one token: %v", err)
	}
	direct := *p
	direct.Method = "kubernetes"
	if err := identity.UseToken(context.Background(), cache, &direct); identity.ErrorCode(err) != identity.CodeReplayed {
		t.Errorf("single-use call with a direct workload token: %v", err)
	}
	var locked atomic.Bool
	e.authn.Locked = func(ctx context.Context, p *identity.Principal) error {
		if locked.Load() && p.Agent.ID == "billing-bot" {
			return errors.New("kill switch engaged")
		}
		return nil
	}
	locked.Store(true)
	if _, err := e.call(t, "/mcp", "Bearer", r.token, ""); identity.ErrorCode(err) != identity.CodeAgentDisabled {
		t.Errorf("locked agent: %v", err)
	}
	locked.Store(false)
	if _, err := e.call(t, "/mcp", "Bearer", r.token, ""); err != nil {
		t.Errorf("unlocked agent: %v", err)
	}
}

func TestAuthenticationFailuresAudited(t *testing.T) {
	e := newExchangeEnv(t)
	var got []identity.Event
	e.authn.Audit = func(_ context.Context, ev identity.Event) error { got = append(got, ev); return nil }
	for _, tok := range []string{"", unsignedJWT(oidcClaims(gwURL)), strings.Repeat("x", identity.MaxTokenBytes+1)} {
		_, _ = e.call(t, "/mcp", "Bearer", tok, "")
	}
	want := []string{identity.CodeMalformed, identity.CodeAlgorithm, identity.CodeTooLarge}
	if len(got) != len(want) {
		t.Fatalf("%d audit events, want %d", len(got), len(want))
	}
	for i, ev := range got {
		if ev.Type != "authentication" || ev.Success || ev.Code != want[i] || strings.Contains(ev.Detail, "eyJ") {
			t.Errorf("event %d = %+v", i, ev)
		}
	}
}

// TestTaskTokenClaims checks a delegated, DPoP-bound task token on the
// wire: the claim names and shapes of the Transaction Tokens draft (txn,
// purp, tctx, rctx.req_wl), RFC 8693 act, RFC 9449 cnf.jkt, RFC 9068
// client_id, one audience, a jti and the default 5-minute lifetime.
func TestTaskTokenClaims(t *testing.T) {
	e := newExchangeEnv(t)
	key := newDPoPKey(t)
	r := e.exchange(t, url.Values{"subject_token": {e.userToken(t, "alice", nil)}, "subject_token_type": {identity.TokenTypeJWT},
		"actor_token": {e.wlToken(t, wlSub)}, "actor_token_type": {identity.TokenTypeJWT},
		"resource": {resMain}, "scope": {"bank/balance crm/*"}, "task": {"task-9"}, "task_purpose": {"monthly close"}},
		key.proof(t, "POST", tokenURL, "", e.clock()))
	if r.status != 200 {
		t.Fatalf("exchange: %d %v", r.status, r.body)
	}
	parts := strings.Split(r.token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", r.token)
	}
	var hdr map[string]any
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(b, &hdr) != nil {
		t.Fatalf("header: %v", err)
	}
	if hdr["alg"] != "EdDSA" || hdr["kid"] == nil {
		t.Errorf("header = %v, want alg EdDSA and a kid", hdr)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	jkt, err := (&jose.JSONWebKey{Key: &key.k.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"iss":       gwURL,
		"sub":       "alice",
		"client_id": "billing-bot",
		"txn":       "task-9",
		"purp":      "bank/balance crm/*",
		"tctx":      map[string]any{"servers": []any{"bank", "crm"}, "tools": []any{"bank/balance", "crm/*"}, "purpose": "monthly close"},
		"rctx": map[string]any{"req_wl": map[string]any{"src": "ci", "kind": "oidc", "sub": wlSub},
			"user": e.idp.URL + "#alice"},
		"act": map[string]any{"sub": "billing-bot", "iss": gwURL},
		"cnf": map[string]any{"jkt": base64.RawURLEncoding.EncodeToString(jkt)},
	}
	for k, v := range want {
		if diff := cmp.Diff(v, c[k]); diff != "" {
			t.Errorf("claim %s (-want +got):\n%s", k, diff)
		}
	}
	// Exactly one audience: the resource.
	if aud := c["aud"]; aud != resMain && !cmp.Equal(aud, []any{resMain}) {
		t.Errorf("aud = %v, want %s alone", aud, resMain)
	}
	if jti, _ := c["jti"].(string); len(jti) < 16 {
		t.Errorf("jti = %v", c["jti"])
	}
	iat, _ := c["iat"].(float64)
	exp, _ := c["exp"].(float64)
	if nbf, _ := c["nbf"].(float64); nbf != iat || exp-iat < 299 || exp-iat > 300 {
		t.Errorf("iat %v nbf %v exp %v: want a 5-minute token valid from issuance", iat, c["nbf"], exp)
	}
}

// TestRequireDPoP: with RequireDPoP the Authenticator accepts a bound
// token with its proof and refuses unbound gateway tokens and workload
// tokens presented directly.
func TestRequireDPoP(t *testing.T) {
	e := newExchangeEnv(t)
	e.authn.Direct = []string{"ci"}
	e.authn.RequireDPoP = true
	key := newDPoPKey(t)
	now := e.clock()
	form := func() url.Values {
		return url.Values{"subject_token": {e.wlToken(t, wlSub)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}
	}
	bound := e.exchange(t, form(), key.proof(t, "POST", tokenURL, "", now))
	if bound.status != 200 || bound.body["token_type"] != "DPoP" {
		t.Fatalf("exchange: %d %v", bound.status, bound.body)
	}
	if _, err := e.call(t, "/mcp", "DPoP", bound.token, key.proof(t, "POST", resMain, bound.token, now)); err != nil {
		t.Fatalf("bound token with its proof: %v", err)
	}
	plain := e.exchange(t, form(), "")
	for name, tok := range map[string]string{"unbound gateway token": plain.token, "direct workload token": e.wlToken(t, wlSub)} {
		if _, err := e.call(t, "/mcp", "Bearer", tok, ""); identity.ErrorCode(err) != identity.CodeDPoPMissing {
			t.Errorf("%s: %v, want %s", name, err, identity.CodeDPoPMissing)
		}
	}
	// Without RequireDPoP both are accepted.
	e.authn.RequireDPoP = false
	for name, tok := range map[string]string{"unbound gateway token": plain.token, "direct workload token": e.wlToken(t, wlSub)} {
		if _, err := e.call(t, "/mcp", "Bearer", tok, ""); err != nil {
			t.Errorf("%s without RequireDPoP: %v", name, err)
		}
	}
}

// TestAgentLifecycleRefusals: an agent past its expiry date is refused at
// the token endpoint and its earlier tokens stop working; a retired agent
// is refused with its own code.
func TestAgentLifecycleRefusals(t *testing.T) {
	const sub = "repo:acme/temp-bot"
	now := time.Now()
	e := newExchangeEnvWith(t, now, []*identity.Agent{
		{ID: "temp-bot", Enabled: true, Servers: []string{"bank"}, Expires: now.Add(time.Minute),
			Credentials: []identity.FederatedCredential{{Source: "ci", Subject: sub}}},
		{ID: "old-bot", Enabled: true, Status: identity.StatusRetired, Servers: []string{"bank"},
			Credentials: []identity.FederatedCredential{{Source: "ci", Subject: "repo:acme/old-bot"}}},
	})
	form := func(s string) url.Values {
		return url.Values{"subject_token": {e.wlToken(t, s)}, "subject_token_type": {identity.TokenTypeJWT}, "resource": {resMain}}
	}
	r := e.exchange(t, form(sub), "")
	if r.status != 200 {
		t.Fatalf("exchange before expiry: %d %v", r.status, r.body)
	}
	if _, err := e.call(t, "/mcp", "Bearer", r.token, ""); err != nil {
		t.Fatalf("call before expiry: %v", err)
	}
	e.advance(2 * time.Minute) // the token (5 min) is still valid; the registration is not
	if _, err := e.call(t, "/mcp", "Bearer", r.token, ""); identity.ErrorCode(err) != identity.CodeAgentExpired {
		t.Errorf("call after expiry: %v, want %s", err, identity.CodeAgentExpired)
	}
	if r := e.exchange(t, form(sub), ""); r.status == 200 || r.body["error_code"] != identity.CodeAgentExpired {
		t.Errorf("exchange after expiry: %d %v", r.status, r.body)
	}
	if r := e.exchange(t, form("repo:acme/old-bot"), ""); r.status == 200 || r.body["error_code"] != identity.CodeAgentRetired {
		t.Errorf("exchange as a retired agent: %d %v", r.status, r.body)
	}
}
