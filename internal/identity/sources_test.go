package identity_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/internal/identity"
)

func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }

func oidcClaims(iss string) map[string]any {
	return map[string]any{"iss": iss, "sub": "repo:acme/agent:ref:refs/heads/main", "aud": "gatehouse",
		"iat": t0.Add(-time.Minute).Unix(), "nbf": t0.Add(-time.Minute).Unix(), "exp": t0.Add(9 * time.Minute).Unix(), "jti": "j1"}
}

func TestOIDCVerifier(t *testing.T) {
	is := newTestIssuer(t)
	now := t0
	v, err := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "ci", Policy: identity.TrustPolicy{
		Issuer: is.URL, Audience: "gatehouse", SubjectPrefixes: []string{"repo:acme/"}, MaxAge: time.Hour,
	}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	base := oidcClaims(is.URL)
	id, err := v.Verify(context.Background(), is.sign(t, base))
	if err != nil {
		t.Fatal(err)
	}
	if id.Source != "ci" || id.Kind != "oidc" || id.Subject != base["sub"] || id.Issuer != is.URL || id.TokenID != "j1" {
		t.Errorf("identity = %+v", id)
	}
	if _, err := v.Verify(context.Background(), is.signEC(t, base)); err != nil {
		t.Errorf("ES256: %v", err)
	}
	tests := []struct {
		name, token, want string
	}{
		{"alg none", unsignedJWT(base), identity.CodeAlgorithm},
		{"HS256 keyed with the public key", hs256WithPublicKey(&is.rsa.PublicKey, rsaKID, base), identity.CodeAlgorithm},
		{"wrong issuer", is.sign(t, with(base, "iss", "https://evil.example")), identity.CodeIssuer},
		{"wrong audience", is.sign(t, with(base, "aud", "someone-else")), identity.CodeAudience},
		{"audience list without us", is.sign(t, with(base, "aud", []string{"a", "b"})), identity.CodeAudience},
		{"expired", is.sign(t, with(base, "exp", t0.Add(-2*time.Minute).Unix())), identity.CodeExpired},
		{"not yet valid", is.sign(t, with(base, "nbf", t0.Add(5*time.Minute).Unix())), identity.CodeNotYetValid},
		{"issued in the future", is.sign(t, with(base, "iat", t0.Add(5*time.Minute).Unix(), "nbf", nil)), identity.CodeNotYetValid},
		{"too old", is.sign(t, with(base, "iat", t0.Add(-2*time.Hour).Unix())), identity.CodeTooOld},
		{"no exp", is.sign(t, with(base, "exp", nil)), identity.CodeClaims},
		{"no iat", is.sign(t, with(base, "iat", nil)), identity.CodeClaims},
		{"subject outside rule", is.sign(t, with(base, "sub", "repo:evil/agent")), identity.CodeSubject},
		{"oversized", strings.Repeat("a", identity.MaxTokenBytes+1), identity.CodeTooLarge},
		{"garbage", "a.b.c", identity.CodeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tt.token)
			if got := identity.ErrorCode(err); got != tt.want {
				t.Errorf("code = %q, want %q (%v)", got, tt.want, err)
			}
		})
	}
}

func TestRemoteKeysUnknownKidCooldown(t *testing.T) {
	is := newTestIssuer(t)
	now := t0
	keys := &identity.RemoteKeys{URL: is.URL + "/jwks", Cooldown: 30 * time.Second, Now: func() time.Time { return now }}
	v, err := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "ci", Policy: identity.TrustPolicy{Issuer: is.URL, Audience: "gatehouse"},
		Keys: keys, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	base := oidcClaims(is.URL)
	is.hideEC.Store(true)
	if _, err := v.Verify(context.Background(), is.sign(t, base)); err != nil {
		t.Fatal(err)
	}
	if n := is.fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1", n)
	}
	// A new key appears at the issuer (rotation): the first token with its
	// kid triggers one refetch (once the cooldown since the last fetch has
	// passed)...
	now = now.Add(31 * time.Second)
	ecTok := is.signEC(t, base)
	if _, err := v.Verify(context.Background(), ecTok); identity.ErrorCode(err) != identity.CodeUnknownKey {
		t.Fatalf("hidden key: %v", err)
	}
	if n := is.fetches.Load(); n != 2 {
		t.Fatalf("fetches after unknown kid = %d, want 2", n)
	}
	is.hideEC.Store(false)
	// ...and within the cooldown, unknown kids cost nothing.
	for range 50 {
		if _, err := v.Verify(context.Background(), ecTok); identity.ErrorCode(err) != identity.CodeUnknownKey {
			t.Fatalf("within cooldown: %v", err)
		}
	}
	if n := is.fetches.Load(); n != 2 {
		t.Fatalf("fetches within cooldown = %d, want 2", n)
	}
	now = now.Add(31 * time.Second)
	if _, err := v.Verify(context.Background(), ecTok); err != nil {
		t.Fatalf("after cooldown: %v", err)
	}
	// JWKS unreachable: cached keys keep working until MaxStale.
	is.down.Store(true)
	now = now.Add(2 * time.Hour)
	if _, err := v.Verify(context.Background(), is.sign(t, with(base, "iat", now.Unix(), "nbf", now.Unix(), "exp", now.Add(time.Minute).Unix()))); err != nil {
		t.Fatalf("stale but within MaxStale: %v", err)
	}
	now = now.Add(25 * time.Hour)
	if _, err := v.Verify(context.Background(), is.sign(t, with(base, "iat", now.Unix(), "nbf", now.Unix(), "exp", now.Add(time.Minute).Unix()))); identity.ErrorCode(err) != identity.CodeKeysUnavail {
		t.Fatalf("beyond MaxStale: %v", err)
	}
}

func TestOIDCDiscoveryUnreachable(t *testing.T) {
	is := newTestIssuer(t)
	is.down.Store(true)
	v, err := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "ci", Policy: identity.TrustPolicy{Issuer: is.URL, Audience: "gatehouse"}, Now: fixedNow(t0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), is.sign(t, oidcClaims(is.URL))); identity.ErrorCode(err) != identity.CodeKeysUnavail {
		t.Fatalf("issuer down: %v", err)
	}
	is.down.Store(false)
	// Discovery with a document naming another issuer is refused by go-oidc.
	v2, _ := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "x", Policy: identity.TrustPolicy{Issuer: is.URL + "/", Audience: "gatehouse"}, Now: fixedNow(t0)})
	if _, err := v2.Verify(context.Background(), is.sign(t, with(oidcClaims(is.URL), "iss", is.URL+"/"))); identity.ErrorCode(err) != identity.CodeKeysUnavail {
		t.Fatalf("issuer mismatch in discovery: %v", err)
	}
}

func TestTrustPolicyRefusesSymmetricAlgorithms(t *testing.T) {
	for _, alg := range []string{"HS256", "none", ""} {
		_, err := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "x", Policy: identity.TrustPolicy{Issuer: "https://i", Audience: "a", Algorithms: []string{alg}}})
		if err == nil {
			t.Errorf("algorithm %q accepted", alg)
		}
	}
}

const (
	tenantA = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	tenantB = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
	miOID   = "b5f1c0f6-6a3c-4bb3-8f5e-6c1d1e3f2a10"
)

func entraSetup(t *testing.T, users bool) (*testIssuer, *identity.EntraVerifier) {
	is := newTestIssuer(t)
	v, err := identity.NewEntraVerifier(identity.EntraConfig{Name: "contoso", Tenants: []string{tenantA}, Audience: "api://gatehouse",
		Authority: is.URL, V1Issuer: is.URL + "/sts", Users: users, Now: fixedNow(t0)})
	if err != nil {
		t.Fatal(err)
	}
	return is, v
}

// entraV1 is a v1 access token of a user-assigned managed identity, as
// documented in the access token claims reference.
func entraV1(is *testIssuer, tid string) map[string]any {
	return map[string]any{
		"aud": "api://gatehouse", "iss": is.URL + "/sts/" + tid + "/", "iat": t0.Add(-time.Minute).Unix(), "nbf": t0.Add(-time.Minute).Unix(),
		"exp": t0.Add(time.Hour).Unix(), "aio": "k2BgYDi", "appid": "9a2b3c4d-0000-4000-8000-000000000001", "appidacr": "2",
		"idp": is.URL + "/sts/" + tid + "/", "idtyp": "app", "oid": miOID, "rh": "0.AAAA", "sub": miOID, "tid": tid,
		"uti": "u-1", "ver": "1.0",
		"xms_mirid": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent-mi",
	}
}

func entraV2(is *testIssuer, tid string) map[string]any {
	return map[string]any{
		"aud": "api://gatehouse", "iss": is.URL + "/" + tid + "/v2.0", "iat": t0.Add(-time.Minute).Unix(), "nbf": t0.Add(-time.Minute).Unix(),
		"exp": t0.Add(time.Hour).Unix(), "azp": "9a2b3c4d-0000-4000-8000-000000000002", "azpacr": "2", "idtyp": "app",
		"oid": miOID, "sub": miOID, "tid": tid, "uti": "u-2", "ver": "2.0", "roles": []string{"Agent.Invoke"},
	}
}

func TestEntraVerifier(t *testing.T) {
	is, v := entraSetup(t, false)
	ctx := context.Background()
	for name, claims := range map[string]map[string]any{"v1": entraV1(is, tenantA), "v2": entraV2(is, tenantA)} {
		id, err := v.Verify(ctx, is.sign(t, claims))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if id.Subject != miOID || id.Tenant != tenantA || id.User || id.Kind != "entra" {
			t.Errorf("%s: identity = %+v", name, id)
		}
	}
	id, _ := v.Verify(ctx, is.sign(t, entraV1(is, tenantA)))
	if id.Attributes["mi_resource_id"] == "" || id.Attributes["app_id"] == "" {
		t.Errorf("v1 attributes = %v", id.Attributes)
	}
	// A custom audience carries no xms_mirid: the principal is still tid+oid.
	id, err := v.Verify(ctx, is.sign(t, with(entraV1(is, tenantA), "xms_mirid", nil)))
	if err != nil || id.Subject != miOID {
		t.Fatalf("without xms_mirid: %+v, %v", id, err)
	}
	// Entra Agent ID token (documented sample claims): recognised, blueprint recorded.
	agentTok := with(entraV1(is, tenantA), "xms_act_fct", "3 9 11", "xms_sub_fct", "9 3 11", "xms_par_app_azp", "30cf4c22-9985-4ef7-8756-91cc888176bd", "xms_mirid", nil)
	id, err = v.Verify(ctx, is.sign(t, agentTok))
	if err != nil || id.Attributes["agent_blueprint"] != "30cf4c22-9985-4ef7-8756-91cc888176bd" || id.Attributes["entra_agent_id"] != "true" {
		t.Fatalf("agent id token: %+v, %v", id, err)
	}
	tests := []struct {
		name   string
		claims map[string]any
		want   string
	}{
		{"tenant not allowed", entraV2(is, tenantB), identity.CodeIssuer},
		{"tid differs from issuer", with(entraV2(is, tenantA), "tid", tenantB), identity.CodeTenant},
		{"version differs from issuer", with(entraV2(is, tenantA), "ver", "1.0"), identity.CodeClaims},
		{"no oid", with(entraV2(is, tenantA), "oid", nil), identity.CodeClaims},
		{"user token", with(entraV2(is, tenantA), "idtyp", "user", "scp", "Agent.Invoke"), identity.CodeSubject},
		{"v1 user token without idtyp", with(entraV1(is, tenantA), "idtyp", nil, "scp", "user_impersonation"), identity.CodeSubject},
		{"wrong audience", with(entraV2(is, tenantA), "aud", "https://graph.microsoft.com"), identity.CodeAudience},
		{"common endpoint issuer", with(entraV2(is, tenantA), "iss", is.URL+"/common/v2.0"), identity.CodeIssuer},
		{"expired", with(entraV2(is, tenantA), "exp", t0.Add(-time.Hour).Unix()), identity.CodeExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(ctx, is.sign(t, tt.claims))
			if got := identity.ErrorCode(err); got != tt.want {
				t.Errorf("code = %q, want %q (%v)", got, tt.want, err)
			}
		})
	}
	// With users allowed, a delegated token is a user identity.
	is2, vu := entraSetup(t, true)
	id, err = vu.Verify(ctx, is2.sign(t, with(entraV2(is2, tenantA), "idtyp", "user", "scp", "Agent.Invoke", "oid", "u-oid")))
	if err != nil || !id.User || id.Subject != "u-oid" || id.Groups != nil {
		t.Fatalf("user token: %+v, %v", id, err)
	}
	// A user's groups come from the groups claim (object ids); a token
	// whose groups are elsewhere (overage) is refused, not read as none.
	user := with(entraV2(is2, tenantA), "idtyp", "user", "scp", "Agent.Invoke", "oid", "u-oid")
	id, err = vu.Verify(ctx, is2.sign(t, with(user, "groups", []string{"0b1c-finance", "7f2e-staff"})))
	if err != nil || strings.Join(id.Groups, ",") != "0b1c-finance,7f2e-staff" {
		t.Errorf("user token with groups: %+v, %v", id, err)
	}
	for name, claims := range map[string]map[string]any{
		"distributed claims": with(user, "_claim_names", map[string]string{"groups": "src1"}),
		"hasgroups":          with(user, "hasgroups", true),
		"not an array":       with(user, "groups", "finance"),
		"an empty name":      with(user, "groups", []string{""}),
	} {
		if _, err := vu.Verify(ctx, is2.sign(t, claims)); identity.ErrorCode(err) != identity.CodeClaims {
			t.Errorf("%s: %v, want %s", name, err, identity.CodeClaims)
		}
	}
	// A workload's groups claim is not read.
	id, err = v.Verify(ctx, is.sign(t, with(entraV2(is, tenantA), "groups", "not-an-array")))
	if err != nil || id.Groups != nil {
		t.Errorf("workload token with groups: %+v, %v", id, err)
	}
}

// TestEntraUserTags: a user source's user_tags read facts about the user
// from its token's claims; a claim of another shape, or out of bounds,
// refuses the token rather than giving policy a partial set.
func TestEntraUserTags(t *testing.T) {
	ctx := context.Background()
	is := newTestIssuer(t)
	v, err := identity.NewEntraVerifier(identity.EntraConfig{Name: "contoso", Tenants: []string{tenantA}, Audience: "api://gatehouse",
		Authority: is.URL, V1Issuer: is.URL + "/sts", Users: true, UserTags: map[string]string{"accounts": "extn.accounts", "region": "ctry"},
		Now: fixedNow(t0)})
	if err != nil {
		t.Fatal(err)
	}
	user := with(entraV2(is, tenantA), "idtyp", "user", "scp", "Agent.Invoke", "oid", "u-oid")
	id, err := v.Verify(ctx, is.sign(t, with(user, "extn.accounts", []string{"acct-1", "acct-2"}, "ctry", "DE")))
	if err != nil || strings.Join(id.Tags["accounts"], ",") != "acct-1,acct-2" || strings.Join(id.Tags["region"], ",") != "DE" || len(id.Tags) != 2 {
		t.Fatalf("user token with tags: %+v, %v", id, err)
	}
	if id, err := v.Verify(ctx, is.sign(t, user)); err != nil || id.Tags != nil {
		t.Errorf("user token without the claims: %+v, %v", id, err)
	}
	many := make([]string, 257)
	for i := range many {
		many[i] = fmt.Sprint("a", i)
	}
	for name, claims := range map[string]map[string]any{
		"a number":        with(user, "ctry", 49),
		"an object":       with(user, "extn.accounts", map[string]string{"a": "b"}),
		"mixed array":     with(user, "extn.accounts", []any{"acct-1", 2}),
		"an empty value":  with(user, "extn.accounts", []string{""}),
		"a long value":    with(user, "ctry", strings.Repeat("x", 257)),
		"too many values": with(user, "extn.accounts", many),
	} {
		if _, err := v.Verify(ctx, is.sign(t, claims)); identity.ErrorCode(err) != identity.CodeClaims {
			t.Errorf("%s: %v, want %s", name, err, identity.CodeClaims)
		}
	}
	// A workload's claims are not read as user tags.
	if id, err := v.Verify(ctx, is.sign(t, with(entraV2(is, tenantA), "ctry", 49))); err != nil || id.Tags != nil {
		t.Errorf("workload token: %+v, %v", id, err)
	}
}

func saClaims(iss string) map[string]any {
	return map[string]any{
		"aud": []string{"gatehouse"}, "exp": t0.Add(time.Hour).Unix(), "iat": t0.Add(-time.Minute).Unix(), "nbf": t0.Add(-time.Minute).Unix(),
		"iss": iss, "jti": "c5e1f1f4-0000-4000-8000-000000000003",
		"kubernetes.io": map[string]any{
			"namespace":      "agents",
			"node":           map[string]any{"name": "node-1", "uid": "n-uid"},
			"pod":            map[string]any{"name": "billing-bot-7f9c", "uid": "p-uid"},
			"serviceaccount": map[string]any{"name": "billing-bot", "uid": "sa-uid"},
		},
		"sub": "system:serviceaccount:agents:billing-bot",
	}
}

func TestKubernetesVerifier(t *testing.T) {
	is := newTestIssuer(t)
	const iss = "https://kubernetes.default.svc.cluster.local"
	// Offline: the cluster's JWKS, saved to a file.
	dir := t.TempDir()
	resp, err := http.Get(is.URL + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	var set json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&set)
	_ = resp.Body.Close()
	path := dir + "/jwks.json"
	writeFile(t, path, set)
	keys, err := identity.LoadStaticKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	var reviews atomic.Int32
	var revoked atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reviews.Add(1)
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Header.Get("Authorization") != "Bearer gw-sa-token" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		var tr struct {
			Spec struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&tr)
		st := map[string]any{"authenticated": !revoked.Load(), "audiences": tr.Spec.Audiences,
			"user": map[string]any{"username": "system:serviceaccount:agents:billing-bot"}}
		if revoked.Load() {
			st["error"] = "pod not found"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": st})
	}))
	defer api.Close()
	now := t0
	v, err := identity.NewKubernetesVerifier(identity.KubernetesConfig{Name: "prod-cluster",
		Policy: identity.TrustPolicy{Issuer: iss, Audience: "gatehouse", SubjectPrefixes: []string{"system:serviceaccount:agents:"}},
		Keys:   keys, TokenReviewURL: api.URL, TokenReviewBearer: func() (string, error) { return "gw-sa-token", nil },
		ReviewTTL: 5 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok := is.sign(t, saClaims(iss))
	id, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "system:serviceaccount:agents:billing-bot" || id.Attributes["pod"] != "billing-bot-7f9c" || id.Kind != "kubernetes" {
		t.Errorf("identity = %+v", id)
	}
	_, _ = v.Verify(ctx, tok)
	if n := reviews.Load(); n != 1 {
		t.Errorf("reviews = %d, want 1 (cached)", n)
	}
	revoked.Store(true)
	now = now.Add(6 * time.Second)
	if _, err := v.Verify(ctx, tok); identity.ErrorCode(err) != identity.CodeRevoked {
		t.Errorf("revoked: %v", err)
	}
	for name, c := range map[string]map[string]any{
		"other namespace":      with(saClaims(iss), "sub", "system:serviceaccount:kube-system:default"),
		"sub differs from SA":  with(saClaims(iss), "sub", "system:serviceaccount:agents:other"),
		"not a SA token":       with(saClaims(iss), "kubernetes.io", nil),
		"legacy secret token":  with(saClaims(iss), "aud", nil),
		"other cluster issuer": with(saClaims(iss), "iss", "https://other-cluster"),
	} {
		_, err := v.Verify(ctx, is.sign(t, c))
		if identity.ErrorCode(err) == "" {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

// FuzzTrustSourceToken feeds arbitrary tokens to a trust source with
// offline keys and to the source router: nothing but the genuine token may
// pass, and every refusal carries a code.
func FuzzTrustSourceToken(f *testing.F) {
	is := newTestIssuer(f)
	resp, err := http.Get(is.URL + "/jwks")
	if err != nil {
		f.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	path := filepath.Join(f.TempDir(), "jwks.json")
	writeFile(f, path, b)
	keys, err := identity.LoadStaticKeys(path)
	if err != nil {
		f.Fatal(err)
	}
	v, err := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "ci", Policy: identity.TrustPolicy{Issuer: is.URL, Audience: "gatehouse"}, Keys: keys, Now: fixedNow(t0)})
	if err != nil {
		f.Fatal(err)
	}
	sources, _ := identity.NewSources(v)
	good := is.sign(f, oidcClaims(is.URL))
	f.Add(good)
	f.Add(unsignedJWT(oidcClaims(is.URL)))
	f.Add(hs256WithPublicKey(&is.rsa.PublicKey, rsaKID, oidcClaims(is.URL)))
	f.Add("eyJ9.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := sources.Verify(context.Background(), tok, identity.TokenTypeJWT, "")
		if err == nil && tok != good {
			// Another serialisation of the same signed content is fine;
			// anything else is not.
			if id.Subject != oidcClaims(is.URL)["sub"] {
				t.Fatalf("accepted %q as %+v", tok, id)
			}
		}
		if err != nil && identity.ErrorCode(err) == "" {
			t.Fatalf("error without code: %v", err)
		}
	})
}

// countingKeys counts signature-key lookups (one per full verification).
type countingKeys struct {
	identity.KeySource
	n atomic.Int32
}

func (c *countingKeys) Key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	c.n.Add(1)
	return c.KeySource.Key(ctx, kid)
}

func TestSourcesCacheVerifiedTokens(t *testing.T) {
	is := newTestIssuer(t)
	now := t0
	keys := &countingKeys{KeySource: &identity.RemoteKeys{URL: is.URL + "/jwks", Now: func() time.Time { return now }}}
	v, _ := identity.NewOIDCVerifier(identity.OIDCConfig{Name: "ci", Policy: identity.TrustPolicy{Issuer: is.URL, Audience: "gatehouse"},
		Keys: keys, Now: func() time.Time { return now }})
	sources, _ := identity.NewSources(v)
	tok := is.sign(t, oidcClaims(is.URL))
	ctx := context.Background()
	for range 3 {
		if _, err := sources.Verify(ctx, tok, identity.TokenTypeJWT, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := keys.n.Load(); n != 1 {
		t.Errorf("%d full verifications, want 1", n)
	}
	if _, err := sources.Verify(ctx, tok, identity.TokenTypeJWT, "other"); identity.ErrorCode(err) != identity.CodeSourceUnknown {
		t.Errorf("cached token under another source name: %v", err)
	}
	now = now.Add(31 * time.Second)
	if _, err := sources.Verify(ctx, tok, identity.TokenTypeJWT, ""); err != nil || keys.n.Load() != 2 {
		t.Errorf("after the cache TTL: %v, %d verifications", err, keys.n.Load())
	}
	// Expiry ends a cache entry early.
	now = t0.Add(9*time.Minute + 61*time.Second)
	if _, err := sources.Verify(ctx, tok, identity.TokenTypeJWT, ""); identity.ErrorCode(err) != identity.CodeExpired {
		t.Errorf("expired token: %v", err)
	}
}
