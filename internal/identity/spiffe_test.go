package identity_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/gatehouse/gatehouse/internal/identity"
)

// spiffeCA is a trust domain's X.509 CA and JWT signing key.
type spiffeCA struct {
	td      spiffeid.TrustDomain
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	jwtKey  *ecdsa.PrivateKey
	jwtKID  string
	bundles *spiffebundle.Bundle
}

func newSPIFFECA(t testing.TB, td string) *spiffeCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tdID := spiffeid.RequireTrustDomainFromString(td)
	u, _ := url.Parse(tdID.IDString())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"SPIFFE"}}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	jwtKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &spiffeCA{td: tdID, cert: cert, key: key, jwtKey: jwtKey, jwtKID: "jwt-1", bundles: spiffebundle.New(tdID)}
	ca.bundles.AddX509Authority(cert)
	if err := ca.bundles.AddJWTAuthority(ca.jwtKID, &jwtKey.PublicKey); err != nil {
		t.Fatal(err)
	}
	return ca
}

// svid issues an X.509-SVID for id, as SPIRE does: URI SAN, digital
// signature key usage, no CA.
func (ca *spiffeCA) svid(t testing.TB, id string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *spiffeCA) jwtSVID(t testing.TB, id string, aud ...string) string {
	now := time.Now()
	return signJWT(t, jose.ES256, ca.jwtKey, ca.jwtKID, map[string]any{"sub": id, "aud": aud, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}, nil)
}

// toolServer is an mTLS-capable HTTP server whose only "tool" answers with
// the authenticated agent: a stand-in for the gateway's MCP endpoint.
func toolServer(t testing.TB, a *identity.Authenticator) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r.Context(), r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", identity.Challenge(err, identity.ResourceMetadataURL("https://"+r.Host, r.URL.Path)))
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprint(w, identity.ErrorCode(err))
			return
		}
		if !p.MayUseServer("bank") {
			http.Error(w, identity.CodeServer, http.StatusForbidden)
			return
		}
		_, _ = fmt.Fprintf(w, "%s via %s as %s", p.Agent.ID, p.Method, p.Subject)
	}))
	// Certificates are verified by the Authenticator against the SPIFFE
	// bundle, not by the TLS stack's web PKI.
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(t testing.TB, c *http.Client, u, bearer string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Scan()
	return resp.StatusCode, sc.Text()
}

func clientWithCert(srv *httptest.Server, cert *tls.Certificate) *http.Client {
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = nil
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func spiffeEnv(t testing.TB, td string, bundles identity.SPIFFEBundles, id string) *identity.Authenticator {
	v, err := identity.NewSPIFFEVerifier(identity.SPIFFEConfig{Name: "spire", TrustDomain: td, Audience: "gatehouse",
		IDPrefixes: []string{"spiffe://" + td + "/agent/"}, Bundles: bundles})
	if err != nil {
		t.Fatal(err)
	}
	sources, err := identity.NewSources(v)
	if err != nil {
		t.Fatal(err)
	}
	reg := identity.NewStaticRegistry([]*identity.Agent{{ID: "billing-bot", Enabled: true, Servers: []string{"bank"},
		Credentials: []identity.FederatedCredential{{Source: "spire", Subject: id}}}})
	return &identity.Authenticator{Tokens: &identity.TokenVerifier{Issuer: "https://gw.test", Audience: "gatehouse", Audiences: []string{"https://gw.test/mcp"}, Registry: reg},
		Sources: sources, Direct: []string{"spire"}, X509: v}
}

func TestSPIFFE(t *testing.T) {
	ca := newSPIFFECA(t, "example.org")
	evil := newSPIFFECA(t, "example.org") // same name, other keys
	const id = "spiffe://example.org/agent/billing-bot"
	a := spiffeEnv(t, "example.org", ca.bundles, id)
	srv := toolServer(t, a)

	good := ca.svid(t, id)
	if code, body := get(t, clientWithCert(srv, &good), srv.URL+"/mcp", ""); code != 200 || body != "billing-bot via spiffe-x509 as "+id {
		t.Fatalf("X.509-SVID: %d %s", code, body)
	}
	if code, body := get(t, clientWithCert(srv, nil), srv.URL+"/mcp", ca.jwtSVID(t, id, "gatehouse")); code != 200 || body != "billing-bot via spiffe-jwt as "+id {
		t.Fatalf("JWT-SVID: %d %s", code, body)
	}
	forged, unregistered, outside := evil.svid(t, id), ca.svid(t, "spiffe://example.org/agent/other"), ca.svid(t, "spiffe://example.org/ops/db")
	tests := []struct {
		name   string
		cert   *tls.Certificate
		bearer string
		want   string
	}{
		{"X.509-SVID from another CA", &forged, "", identity.CodeSVID},
		{"X.509-SVID not registered", &unregistered, "", identity.CodeNoCredential},
		{"X.509-SVID outside the ID rule", &outside, "", identity.CodeSubject},
		{"no credential", nil, "", identity.CodeMissing},
		{"JWT-SVID for another audience", nil, ca.jwtSVID(t, id, "other"), identity.CodeAudience},
		{"JWT-SVID signed by another key", nil, evil.jwtSVID(t, id, "gatehouse"), identity.CodeSignature},
		{"JWT-SVID of another trust domain", nil, newSPIFFECA(t, "evil.org").jwtSVID(t, "spiffe://evil.org/agent/billing-bot", "gatehouse"), identity.CodeIssuer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, clientWithCert(srv, tt.cert), srv.URL+"/mcp", tt.bearer)
			if code != 401 || body != tt.want {
				t.Errorf("got %d %s, want 401 %s", code, body, tt.want)
			}
		})
	}
}

// TestSPIRE runs a real SPIRE server and agent on loopback
// (scripts/lib/spire.sh), fetches a JWT-SVID and an X.509-SVID through the
// Workload API, and authenticates with each at a tool server, directly and
// through token exchange.
func TestSPIRE(t *testing.T) {
	root, _ := filepath.Abs("../..")
	cache := os.Getenv("GATEHOUSE_CACHE")
	if cache == "" {
		cache = filepath.Join(root, ".cache")
	}
	bin := filepath.Join(cache, "spire", "v1.13.3", "bin")
	_, err := os.Stat(filepath.Join(bin, "spire-server"))
	if err == nil {
		_, err = os.Stat(filepath.Join(bin, "spire-agent"))
	}
	if err != nil {
		if os.Getenv("GATEHOUSE_REQUIRE_SPIRE") != "" {
			t.Fatalf("GATEHOUSE_REQUIRE_SPIRE is set but SPIRE is not built (%v): run scripts/lib/spire.sh ensure", err)
		}
		t.Skip("SPIRE is not built: run scripts/lib/spire.sh ensure (about 10 minutes), or set GATEHOUSE_REQUIRE_SPIRE to make this a failure")
	}
	dir, err := os.MkdirTemp("", "ghspire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("bash", filepath.Join(root, "scripts/lib/spire.sh"), "stop", dir).Run()
		_ = os.RemoveAll(dir)
	})
	out, err := exec.Command("bash", filepath.Join(root, "scripts/lib/spire.sh"), "start", dir).Output()
	if err != nil {
		logs, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("starting SPIRE: %v\n%s", err, logs)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	addr := workloadapi.WithAddr("unix://" + env["GH_SPIRE_SOCKET"])
	client, err := workloadapi.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	// The agent needs a sync cycle before it serves the new entry.
	var x509c *workloadapi.X509Context
	for {
		if x509c, err = client.FetchX509Context(ctx); err == nil && len(x509c.SVIDs) > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no X.509-SVID from the SPIRE agent: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	svid := x509c.DefaultSVID()
	if svid.ID.String() != env["GH_SPIRE_ID"] {
		t.Fatalf("SPIRE issued %s, want %s", svid.ID, env["GH_SPIRE_ID"])
	}
	jwt, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "gatehouse"})
	if err != nil {
		t.Fatal(err)
	}
	otherAud, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := workloadapi.NewBundleSource(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bundles.Close() }()

	a := spiffeEnv(t, env["GH_SPIRE_TRUST_DOMAIN"], bundles, env["GH_SPIRE_ID"])
	srv := toolServer(t, a)
	raw := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		raw[i] = c.Raw
	}
	cert := tls.Certificate{Certificate: raw, PrivateKey: svid.PrivateKey}
	if code, body := get(t, clientWithCert(srv, &cert), srv.URL+"/mcp", ""); code != 200 || body != "billing-bot via spiffe-x509 as "+env["GH_SPIRE_ID"] {
		t.Errorf("X.509-SVID over mTLS: %d %s", code, body)
	}
	if code, body := get(t, clientWithCert(srv, nil), srv.URL+"/mcp", jwt.Marshal()); code != 200 || body != "billing-bot via spiffe-jwt as "+env["GH_SPIRE_ID"] {
		t.Errorf("JWT-SVID: %d %s", code, body)
	}
	if code, body := get(t, clientWithCert(srv, nil), srv.URL+"/mcp", otherAud.Marshal()); code != 401 || body != identity.CodeAudience {
		t.Errorf("JWT-SVID for another audience: %d %s", code, body)
	}

	// Token exchange: the JWT-SVID buys a task-scoped gateway token.
	ring, _ := identity.NewKeyRing(identity.KeyRingConfig{})
	minter := &identity.Minter{Keys: ring, Issuer: "https://gw.test", Audience: "gatehouse", MaxTTL: time.Hour}
	svc, err := identity.NewTokenService(identity.TokenServiceConfig{Minter: minter, Sources: a.Sources, Registry: a.Tokens.Registry,
		Resources: map[string][]string{"https://gw.test/mcp": {"bank"}}, Audit: func(context.Context, identity.Event) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {identity.GrantTypeTokenExchange}, "subject_token": {jwt.Marshal()}, "subject_token_type": {identity.TokenTypeJWT}}
	req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	svc.ServeHTTP(rec, req)
	var resp identity.TokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != 200 {
		t.Fatalf("exchange: %d %s", rec.Code, rec.Body)
	}
	a.Tokens.Ring = ring
	if code, body := get(t, clientWithCert(srv, nil), srv.URL+"/mcp", resp.AccessToken); code != 200 || body != "billing-bot via gatehouse-jwt as billing-bot" {
		t.Errorf("exchanged token: %d %s", code, body)
	}
}
