package identity_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
)

// TestExchangeEachTrustSource: each trust source authenticates an agent at
// the token endpoint, and is refused when its trust policy does not match.
func TestExchangeEachTrustSource(t *testing.T) {
	now := t0
	clock := func() time.Time { return now }
	is := newTestIssuer(t)
	sts := newTestSTS(t)
	const k8sIss = "https://kubernetes.default.svc.cluster.local"
	entra, err := identity.NewEntraVerifier(identity.EntraConfig{Name: "contoso", Tenants: []string{tenantA}, Audience: "api://gatehouse",
		Authority: is.URL, V1Issuer: is.URL + "/sts", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	aws, err := identity.NewAWSVerifier(identity.AWSConfig{Name: "aws-prod", Audience: "gatehouse", Endpoints: []string{sts.URL}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := identity.NewKubernetesVerifier(identity.KubernetesConfig{Name: "cluster",
		Policy: identity.TrustPolicy{Issuer: k8sIss, Audience: "gatehouse", SubjectPrefixes: []string{"system:serviceaccount:agents:"}},
		Keys:   &identity.RemoteKeys{URL: is.URL + "/jwks", Now: clock}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	sources, err := identity.NewSources(entra, aws, k8s)
	if err != nil {
		t.Fatal(err)
	}
	reg := identity.NewStaticRegistry([]*identity.Agent{
		{ID: "azure-bot", Enabled: true, Servers: []string{"bank"}, Tenants: []string{tenantA},
			Credentials: []identity.FederatedCredential{{Source: "contoso", Tenant: tenantA, Subject: miOID}}},
		{ID: "aws-bot", Enabled: true, Servers: []string{"bank"}, Tenants: []string{awsAccount},
			Credentials: []identity.FederatedCredential{{Source: "aws-prod", Tenant: awsAccount, Subject: awsRoleARN}}},
		{ID: "k8s-bot", Enabled: true, Servers: []string{"bank"},
			Credentials: []identity.FederatedCredential{{Source: "cluster", Subject: "system:serviceaccount:agents:billing-bot"}}},
	})
	ring, _ := identity.NewKeyRing(identity.KeyRingConfig{Now: clock})
	svc, err := identity.NewTokenService(identity.TokenServiceConfig{
		Minter:  &identity.Minter{Keys: ring, Issuer: gwURL, Audience: "gatehouse", MaxTTL: time.Hour, Now: clock},
		Sources: sources, Registry: reg, Resources: map[string][]string{resMain: {"bank"}},
		Audit: func(context.Context, identity.Event) error { return nil }, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	authn := &identity.Authenticator{Tokens: &identity.TokenVerifier{Ring: ring, Issuer: gwURL, Audience: "gatehouse", Audiences: []string{resMain}, Registry: reg, Now: clock}, Now: clock}
	exchange := func(tok, typ string) (int, map[string]any) {
		form := url.Values{"grant_type": {identity.GrantTypeTokenExchange}, "subject_token": {tok}, "subject_token_type": {typ}}
		req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		svc.ServeHTTP(rec, req)
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	tests := []struct {
		name, token, typ, agent, code string
	}{
		{"entra managed identity", is.sign(t, entraV1(is, tenantA)), identity.TokenTypeJWT, "azure-bot", ""},
		{"entra v2 service principal", is.sign(t, entraV2(is, tenantA)), identity.TokenTypeAccessToken, "azure-bot", ""},
		{"entra other tenant", is.sign(t, entraV2(is, tenantB)), identity.TokenTypeJWT, "", identity.CodeIssuer},
		{"entra other object", is.sign(t, with(entraV2(is, tenantA), "oid", "someone-else")), identity.TokenTypeJWT, "", identity.CodeNoCredential},
		{"aws role", signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false), identity.TokenTypeAWSSigV4, "aws-bot", ""},
		{"aws audience of another gateway", signedSTSRequest(t, sts.URL, "ASIAROLE", "elsewhere", t0, nil, false), identity.TokenTypeAWSSigV4, "", identity.CodeAudience},
		{"aws account without agent", signedSTSRequest(t, sts.URL, "ASIAOTHER", "gatehouse", t0, nil, false), identity.TokenTypeAWSSigV4, "", identity.CodeNoCredential},
		{"kubernetes service account", is.sign(t, saClaims(k8sIss)), identity.TokenTypeJWT, "k8s-bot", ""},
		{"kubernetes other namespace", is.sign(t, with(saClaims(k8sIss), "sub", "system:serviceaccount:default:billing-bot",
			"kubernetes.io", map[string]any{"namespace": "default", "serviceaccount": map[string]any{"name": "billing-bot"}})), identity.TokenTypeJWT, "", identity.CodeSubject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := exchange(tt.token, tt.typ)
			if tt.code != "" {
				if status == 200 || body["error_code"] != tt.code {
					t.Fatalf("got %d %v, want %s", status, body, tt.code)
				}
				return
			}
			if status != 200 {
				t.Fatalf("got %d %v", status, body)
			}
			req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			req.Header.Set("Authorization", "Bearer "+body["access_token"].(string))
			p, err := authn.Authenticate(context.Background(), req)
			if err != nil || p.Agent.ID != tt.agent || p.Source == nil {
				t.Fatalf("principal %+v, %v", p, err)
			}
		})
	}
}

// mutableRegistry is a one-agent Registry whose agent a test may change.
type mutableRegistry struct {
	mu    sync.Mutex
	agent identity.Agent
}

func (r *mutableRegistry) Agent(_ context.Context, id string) (*identity.Agent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != r.agent.ID {
		return nil, identity.ErrNoAgent
	}
	a := r.agent
	return &a, nil
}

func (r *mutableRegistry) AgentByCredential(ctx context.Context, source, tenant, subject string) (*identity.Agent, error) {
	r.mu.Lock()
	var id string
	for _, c := range r.agent.Credentials {
		if c.Source == source && c.Tenant == tenant && c.Subject == subject {
			id = r.agent.ID
		}
	}
	r.mu.Unlock()
	return r.Agent(ctx, id)
}

// TestAgentTenantBinding: an agent's tenants bound the workloads and the
// users that may act as or through it, at the token endpoint and again on
// every use of a token.
func TestAgentTenantBinding(t *testing.T) {
	is := newTestIssuer(t)
	clock := func() time.Time { return t0 }
	entra, err := identity.NewEntraVerifier(identity.EntraConfig{Name: "contoso", Tenants: []string{tenantA, tenantB}, Audience: "api://gatehouse",
		Authority: is.URL, Users: true, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	sources, err := identity.NewSources(entra)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's credential names a workload in each tenant; only tenant
	// A is allowed.
	reg := &mutableRegistry{agent: identity.Agent{ID: "azure-bot", Enabled: true, Servers: []string{"bank"}, Tenants: []string{tenantA},
		Credentials: []identity.FederatedCredential{{Source: "contoso", Tenant: tenantA, Subject: miOID}, {Source: "contoso", Tenant: tenantB, Subject: miOID}}}}
	ring, _ := identity.NewKeyRing(identity.KeyRingConfig{Now: clock})
	var events []identity.Event
	svc, err := identity.NewTokenService(identity.TokenServiceConfig{
		Minter:  &identity.Minter{Keys: ring, Issuer: gwURL, Audience: "gatehouse", MaxTTL: time.Hour, Now: clock},
		Sources: sources, Registry: reg, Resources: map[string][]string{resMain: {"bank"}},
		Audit: func(_ context.Context, ev identity.Event) error { events = append(events, ev); return nil }, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	authn := &identity.Authenticator{Tokens: &identity.TokenVerifier{Ring: ring, Issuer: gwURL, Audience: "gatehouse", Audiences: []string{resMain}, Registry: reg, Now: clock}, Now: clock}
	user := func(tid string) string {
		return is.sign(t, with(entraV2(is, tid), "idtyp", "user", "scp", "Agent.Invoke", "oid", "u-oid", "sub", "u-sub"))
	}
	exchange := func(form url.Values) (int, map[string]any) {
		form.Set("grant_type", identity.GrantTypeTokenExchange)
		form.Set("resource", resMain)
		req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		svc.ServeHTTP(rec, req)
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	jwtType := identity.TokenTypeJWT
	tests := []struct {
		name string
		form url.Values
		code string
	}{
		{"workload in an allowed tenant", url.Values{"subject_token": {is.sign(t, entraV2(is, tenantA))}, "subject_token_type": {jwtType}}, ""},
		{"workload in another tenant", url.Values{"subject_token": {is.sign(t, entraV2(is, tenantB))}, "subject_token_type": {jwtType}}, identity.CodeTenant},
		{"user in an allowed tenant", url.Values{"subject_token": {user(tenantA)}, "subject_token_type": {jwtType},
			"actor_token": {is.sign(t, entraV2(is, tenantA))}, "actor_token_type": {jwtType}}, ""},
		{"user in another tenant", url.Values{"subject_token": {user(tenantB)}, "subject_token_type": {jwtType},
			"actor_token": {is.sign(t, entraV2(is, tenantA))}, "actor_token_type": {jwtType}}, identity.CodeTenant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := exchange(tt.form)
			if tt.code == "" {
				if status != 200 {
					t.Fatalf("got %d %v", status, body)
				}
				return
			}
			if status == 200 || body["error_code"] != tt.code {
				t.Fatalf("got %d %v, want %s", status, body, tt.code)
			}
			if ev := events[len(events)-1]; ev.Success || ev.Code != tt.code {
				t.Errorf("audit event = %+v", ev)
			}
		})
	}
	// A token minted while tenant A was allowed is refused once the agent
	// no longer allows it.
	status, body := exchange(url.Values{"subject_token": {is.sign(t, entraV2(is, tenantA))}, "subject_token_type": {jwtType}})
	if status != 200 {
		t.Fatalf("exchange: %d %v", status, body)
	}
	call := func() error {
		req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
		req.Header.Set("Authorization", "Bearer "+body["access_token"].(string))
		_, err := authn.Authenticate(context.Background(), req)
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("before the change: %v", err)
	}
	reg.mu.Lock()
	reg.agent.Tenants = []string{tenantB}
	reg.mu.Unlock()
	if err := call(); identity.ErrorCode(err) != identity.CodeTenant {
		t.Errorf("after the agent's tenants changed: %v, want %s", err, identity.CodeTenant)
	}
}
