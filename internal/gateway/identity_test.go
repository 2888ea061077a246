package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/gateway"
)

// issuer is a workload identity issuer whose keys the gateway reads from a
// JWKS file.
type issuer struct {
	url  string
	key  *ecdsa.PrivateKey
	kid  string
	file string
}

func newIssuer(t *testing.T, url string) *issuer {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	is := &issuer{url: url, key: k, kid: "k1", file: filepath.Join(t.TempDir(), "jwks.json")}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: is.kid, Algorithm: "ES256", Use: "sig"}}}
	b, _ := json.Marshal(set)
	if err := os.WriteFile(is.file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return is
}

func (is *issuer) token(t *testing.T, sub, aud string, extra map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: is.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", is.kid))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := jwt.Claims{Issuer: is.url, Subject: sub, Audience: jwt.Audience{aud}, IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
		Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)), ID: fmt.Sprint(now.UnixNano())}
	tok, err := jwt.Signed(s).Claims(c).Claims(extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// exchange posts an RFC 8693 token exchange and returns the access token.
func exchange(t *testing.T, base string, form url.Values) (string, int, string) {
	t.Helper()
	resp, err := http.PostForm(base+"/oauth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	tok, _ := body["access_token"].(string)
	return tok, resp.StatusCode, fmt.Sprint(body["error"], " ", body["error_description"])
}

func identityGateway(t *testing.T, extraYAML string) (*harness, *issuer, *issuer) {
	t.Helper()
	// Placeholders are filled once the listener's port is known: the
	// issuers are independent of it.
	workload := newIssuer(t, "https://ci.example.test")
	users := newIssuer(t, "https://login.example.test")
	yaml := fmt.Sprintf(`identity:
  trust_sources:
    - {name: ci, kind: oidc, issuer: %q, audience: gatehouse, jwks_file: %q, direct: true}
    - {name: corp, kind: oidc, issuer: %q, audience: gatehouse, jwks_file: %q, users: true, user_tags: {accounts: bank_accounts}}
`, workload.url, workload.file, users.url, users.file) + extraYAML
	h := start(t, yaml)
	return h, workload, users
}

func TestIdentityThroughGateway(t *testing.T) {
	h, workload, users := identityGateway(t, "")
	ctx := context.Background()
	base := strings.TrimSuffix(h.url, "/mcp")
	// Register the CI workload as the assistant's federated credential.
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/assistant", nil, &a)
	a["credentials"] = []map[string]string{{"source": "ci", "subject": "repo:acme/agents:environment:prod"}}
	a["by"], a["reason"] = "ops", "federate the CI workload"
	if code := adminDo(t, h, "PUT", "/v1/agents/assistant", a, nil); code != http.StatusOK {
		t.Fatalf("adding the credential: HTTP %d", code)
	}

	connectWith := func(tok string) (*sdk.ClientSession, error) {
		c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
		return c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
	}

	t.Run("a workload token authenticates directly", func(t *testing.T) {
		cs, err := connectWith(workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a token outside the trust policy is refused", func(t *testing.T) {
		for name, tok := range map[string]string{
			"wrong audience":      workload.token(t, "repo:acme/agents:environment:prod", "someone-else", nil),
			"unknown subject":     workload.token(t, "repo:evil/agents", "gatehouse", nil),
			"untrusted issuer":    newIssuer(t, "https://ci.example.test").token(t, "repo:acme/agents:environment:prod", "gatehouse", nil),
			"user token as agent": users.token(t, "carol", "gatehouse", nil),
		} {
			if _, err := connectWith(tok); err == nil {
				t.Errorf("%s: connected", name)
			}
		}
	})

	t.Run("token exchange without and with a user", func(t *testing.T) {
		sub := workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil)
		tok, code, msg := exchange(t, base, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {sub}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "resource": {h.url}})
		if code != 200 {
			t.Fatalf("exchange: %d %s", code, msg)
		}
		cs, err := connectWith(tok)
		if err != nil {
			t.Fatal(err)
		}
		cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}})
		cs.Close()

		// On behalf of a user: the user's token is the subject, the
		// workload the actor.
		userTok := users.token(t, "carol", "gatehouse", nil)
		tok, code, msg = exchange(t, base, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {userTok}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
			"actor_token": {workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil)}, "actor_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
			"resource": {h.url}})
		if code != 200 {
			t.Fatalf("exchange with a user: %d %s", code, msg)
		}
		cs, err = connectWith(tok)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-savings"}}); err != nil {
			t.Fatal(err)
		}
		// The call's record names the user and the act chain.
		evs := h.events(audit.Filter{Agent: "assistant", Tool: "get_balance"}, 6)
		found := false
		for _, ev := range evs {
			u, _ := ev["unmapped"].(map[string]any)
			if strings.Contains(fmt.Sprint(u["on_behalf_of"]), "carol") && u["act"] != nil {
				found = true
			}
		}
		if !found {
			t.Errorf("no call record with the user and act chain: %v", evs)
		}
	})

	t.Run("a DPoP-bound token is refused without its proof", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		proof := dpopProof(t, key, "POST", base+"/oauth/token")
		req, _ := http.NewRequest("POST", base+"/oauth/token", strings.NewReader(url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil)}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
			"resource": {h.url}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("DPoP", proof)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		tok, _ := body["access_token"].(string)
		if resp.StatusCode != 200 || body["token_type"] != "DPoP" {
			t.Fatalf("DPoP exchange: %d %v", resp.StatusCode, body)
		}
		// As a bearer token, without a proof: refused.
		r, _ := http.NewRequest("POST", h.url, strings.NewReader(initBody))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.Header.Set("Authorization", "DPoP "+tok)
		resp, err = http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("DPoP token without proof: HTTP %d", resp.StatusCode)
		}
		// RFC 9449 §7.1: the challenge names the DPoP scheme.
		if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "DPoP ") || !strings.Contains(ch, `error="invalid_dpop_proof"`) {
			t.Errorf("DPoP token without proof: WWW-Authenticate %q", ch)
		}
		// With its proof: accepted.
		r, _ = http.NewRequest("POST", h.url, strings.NewReader(initBody))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.Header.Set("Authorization", "DPoP "+tok)
		r.Header.Set("DPoP", dpopProofFor(t, key, "POST", h.url, tok))
		resp, err = http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("DPoP token with its proof: HTTP %d", resp.StatusCode)
		}
	})

	t.Run("a suspended agent is refused within 1s", func(t *testing.T) {
		cs := h.connect("intern-bot", nil, "")
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "workspace__search_files", Arguments: map[string]any{"query": "x"}}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if code := adminDo(t, h, "POST", "/v1/agents/intern-bot/suspend", map[string]string{"by": "ops", "reason": "investigation"}, nil); code != 200 {
			t.Fatalf("suspend: HTTP %d", code)
		}
		var err error
		for time.Since(start) < time.Second {
			if _, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "workspace__search_files", Arguments: map[string]any{"query": "x"}}); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err == nil {
			t.Errorf("suspended agent still served after %v", time.Since(start))
		}
	})
}

func dpopProof(t *testing.T, key *ecdsa.PrivateKey, method, u string) string {
	return dpopProofFor(t, key, method, u, "")
}

// dpopProofFor builds an RFC 9449 proof; with an access token it carries
// the token's hash (ath).
func dpopProofFor(t *testing.T, key *ecdsa.PrivateKey, method, u, accessToken string) string {
	t.Helper()
	jwk := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: "ES256"}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{EmbedJWK: false}).WithType("dpop+jwt").WithHeader("jwk", jwk))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"jti": fmt.Sprint(time.Now().UnixNano()), "htm": method, "htu": u, "iat": time.Now().Unix()}
	if accessToken != "" {
		claims["ath"] = athOf(accessToken)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestKeyRotationInFlight rotates the signing keys while agents call with
// tokens minted under each key.
func TestKeyRotationInFlight(t *testing.T) {
	h := start(t, "identity:\n  keys: {rotate_every: 300ms, publish_delay: 50ms, retain: 1h2m, reload_interval: 100ms}\n")
	ctx := context.Background()
	var failed atomic.Int32
	var calls atomic.Int32
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second)
	kids := sync.Map{}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				tok := h.token("assistant")
				hdr, _ := json.Marshal(strings.Split(tok, ".")[0])
				kids.Store(string(hdr), true)
				c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
				cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
				if err != nil {
					failed.Add(1)
					continue
				}
				for i := 0; i < 3; i++ {
					if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}}); err != nil {
						failed.Add(1)
					}
					calls.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
				cs.Close()
			}
		}()
	}
	wg.Wait()
	n := 0
	kids.Range(func(any, any) bool { n++; return true })
	if failed.Load() > 0 || calls.Load() < 20 || n < 3 {
		t.Errorf("%d failures in %d calls across %d signing keys", failed.Load(), calls.Load(), n)
	}
}

// TestSPIREThroughGateway runs a real SPIRE server and agent: a JWT-SVID
// and an mTLS X.509-SVID each reach a tool through the gateway.
func TestSPIREThroughGateway(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cache := os.Getenv("GATEHOUSE_CACHE")
	if cache == "" {
		cache = filepath.Join(root, ".cache")
	}
	bin := filepath.Join(cache, "spire", "v1.13.3", "bin")
	if _, err := os.Stat(filepath.Join(bin, "spire-agent")); err != nil {
		if os.Getenv("GATEHOUSE_REQUIRE_SPIRE") != "" {
			t.Fatalf("GATEHOUSE_REQUIRE_SPIRE is set but SPIRE is not built: %v", err)
		}
		t.Skip("SPIRE is not built (scripts/lib/spire.sh ensure)")
	}
	dir, err := os.MkdirTemp("", "ghspire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("bash", filepath.Join(root, "scripts/lib/spire.sh"), "stop", dir).Run()
		os.RemoveAll(dir)
	})
	out, err := exec.Command("bash", filepath.Join(root, "scripts/lib/spire.sh"), "start", dir).Output()
	if err != nil {
		t.Fatalf("starting SPIRE: %v", err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+env["GH_SPIRE_SOCKET"]))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var x509c *workloadapi.X509Context
	for {
		if x509c, err = client.FetchX509Context(ctx); err == nil && len(x509c.SVIDs) > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no X.509-SVID: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	jwtSVID, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "gatehouse"})
	if err != nil {
		t.Fatal(err)
	}

	// The gateway serves TLS and trusts the SPIRE trust domain.
	servers, err := demo.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer servers.Close()
	tdir := t.TempDir()
	certFile, keyFile, pool := serverCert(t, tdir)
	text := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
data_dir: %s
tls: {cert_file: %s, key_file: %s}
identity:
  trust_sources:
    - {name: spire, kind: spiffe, trust_domain: %s, audience: gatehouse, workload_api: "unix://%s", direct: true, mtls: true}
agents:
  - id: billing-bot
    owner: ops@example.com
    servers: [bank]
    credentials: [{source: spire, subject: %q}]
servers: [{id: bank, url: %q}]
`, filepath.Join(tdir, "data"), certFile, keyFile, env["GH_SPIRE_TRUST_DOMAIN"], env["GH_SPIRE_SOCKET"], env["GH_SPIRE_ID"], servers.BankURL)
	cfg, err := config.Parse([]byte(text), tdir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(ctx, cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(rctx) }()
	defer func() { rcancel(); <-done; g.Close() }()

	call := func(hc *http.Client) error {
		c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: g.MCPURL(""), HTTPClient: hc}, nil)
		if err != nil {
			return err
		}
		defer cs.Close()
		_, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}})
		return err
	}
	tlsc := &tls.Config{RootCAs: pool}
	// A JWT-SVID as the bearer token.
	if err := call(&http.Client{Transport: bearerTLS{token: jwtSVID.Marshal(), tr: &http.Transport{TLSClientConfig: tlsc}}}); err != nil {
		t.Errorf("JWT-SVID: %v", err)
	}
	// An X.509-SVID as the TLS client certificate, no token.
	svid := x509c.DefaultSVID()
	raw := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		raw[i] = c.Raw
	}
	mtls := tlsc.Clone()
	mtls.Certificates = []tls.Certificate{{Certificate: raw, PrivateKey: svid.PrivateKey}}
	if err := call(&http.Client{Transport: &http.Transport{TLSClientConfig: mtls}}); err != nil {
		t.Errorf("X.509-SVID over mTLS: %v", err)
	}
	// Neither: refused.
	if err := call(&http.Client{Transport: &http.Transport{TLSClientConfig: tlsc}}); err == nil {
		t.Error("no credential: connected")
	}
	// Outside the trust policy: a JWT-SVID for another audience is refused.
	other, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(&http.Client{Transport: bearerTLS{token: other.Marshal(), tr: &http.Transport{TLSClientConfig: tlsc}}}); err == nil {
		t.Error("JWT-SVID for another audience: connected")
	}
}

type bearerTLS struct {
	token string
	tr    http.RoundTripper
}

func (b bearerTLS) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.tr.RoundTrip(r)
}

// serverCert writes a self-signed loopback server certificate.
func serverCert(t *testing.T, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gatehouse.test"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return cf, kf, pool
}

// athOf is the DPoP ath claim of an access token: base64url(SHA-256).
func athOf(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestSingleUseTokens: with identity.single_use_labels, a gateway token can
// make one call to a labelled tool; a replay, and a workload credential
// presented directly, are refused, and other tools are not affected.
func TestSingleUseTokens(t *testing.T) {
	h, workload, _ := identityGateway(t, "  single_use_labels: [financial]\n")
	ctx := context.Background()
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/assistant", nil, &a)
	a["credentials"] = []map[string]string{{"source": "ci", "subject": "repo:acme/agents:environment:prod"}}
	a["by"], a["reason"] = "ops", "federate the CI workload"
	if code := adminDo(t, h, "PUT", "/v1/agents/assistant", a, nil); code != http.StatusOK {
		t.Fatalf("adding the credential: HTTP %d", code)
	}
	connect := func(tok string) *sdk.ClientSession {
		t.Helper()
		c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.Close() })
		return cs
	}
	pay := func(cs *sdk.ClientSession, amount float64) *jsonrpcErr {
		_, e := callErr(t, cs, "bank__send_money", map[string]any{"from_account": "acc-checking", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": amount})
		return e
	}
	before := h.demo.Bank.Balance("acc-checking")
	cs := connect(h.token("assistant"))
	if e := pay(cs, 100); e != nil {
		t.Fatalf("first single-use call: %v", e)
	}
	if e := pay(cs, 100); e == nil || !strings.Contains(e.Message, "identity.token_replayed") {
		t.Errorf("replayed token: %v", e)
	}
	// Tools without the label are not affected by the spent token.
	if _, e := callErr(t, cs, "bank__get_balance", map[string]any{"account": "acc-checking"}); e != nil {
		t.Errorf("unlabelled tool after the single-use call: %v", e)
	}
	// A fresh token makes one more call.
	if e := pay(connect(h.token("assistant")), 100); e != nil {
		t.Errorf("fresh token: %v", e)
	}
	// A workload credential presented directly cannot be spent.
	direct := connect(workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil))
	if e := pay(direct, 100); e == nil || !strings.Contains(e.Message, "identity.task_token_required") {
		t.Errorf("direct workload token: %v", e)
	}
	if got := h.demo.Bank.Balance("acc-checking"); got != before-200 {
		t.Errorf("balance %v, want %v", got, before-200)
	}
	if evs := h.events(audit.Filter{Agent: "assistant", Tool: "send_money", Outcome: "block"}, 2); len(evs) < 2 {
		t.Errorf("refusals on record: %d", len(evs))
	}
}

// TestProtectedResourceMetadata: a 401 at each MCP endpoint points at that
// endpoint's RFC 9728 metadata, whose resource is the endpoint's URL (the
// resource tokens are minted for); other paths have no metadata.
func TestProtectedResourceMetadata(t *testing.T) {
	h := start(t, "endpoints:\n  - {path: /mcp, servers: [bank, workspace]}\n  - {path: /stateless, servers: [bank], stateless: true}\n")
	base := strings.TrimSuffix(h.url, "/mcp")
	get := func(u string) (int, map[string]any) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	for _, path := range []string{"/mcp", "/stateless"} {
		meta := base + "/.well-known/oauth-protected-resource" + path
		for name, auth := range map[string]string{"no token": "", "bad token": "Bearer xyz"} {
			req, _ := http.NewRequest("POST", base+path, strings.NewReader(initBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			ch := resp.Header.Get("WWW-Authenticate")
			if resp.StatusCode != 401 || !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, `resource_metadata="`+meta+`"`) {
				t.Errorf("%s %s: HTTP %d, WWW-Authenticate %q; want 401 pointing at %s", path, name, resp.StatusCode, ch, meta)
			}
			// RFC 6750 §3.1: no error code when the request had no token.
			if hasErr := strings.Contains(ch, `error="invalid_token"`); hasErr != (auth != "") {
				t.Errorf("%s %s: WWW-Authenticate %q", path, name, ch)
			}
		}
		code, doc := get(meta)
		if code != 200 || doc["resource"] != base+path {
			t.Errorf("metadata of %s: HTTP %d %v, want resource %s", path, code, doc, base+path)
		}
		if as, _ := doc["authorization_servers"].([]any); len(as) != 1 || as[0] == "" {
			t.Errorf("metadata of %s names authorization servers %v", path, doc["authorization_servers"])
		}
	}
	for _, p := range []string{"", "/nope", "/mcp/x"} {
		if code, doc := get(base + "/.well-known/oauth-protected-resource" + p); code != 404 {
			t.Errorf("metadata for %q (not an endpoint): HTTP %d %v", p, code, doc)
		}
	}
}

// TestAgentTokenNotForwardedUpstream: an upstream server receives the
// credential configured for it (header_files), never the agent's token or
// DPoP proof.
func TestAgentTokenNotForwardedUpstream(t *testing.T) {
	srv := sdk.NewServer(&sdk.Implementation{Name: "vault", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "peek", Description: "reads"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, struct{}, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "ok"}}}, struct{}{}, nil
	})
	inner := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)
	var mu sync.Mutex
	var seen []http.Header
	ln := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		inner.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	defer hs.Close()
	secret := filepath.Join(t.TempDir(), "vault.token")
	if err := os.WriteFile(secret, []byte("Bearer upstream-credential\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := start(t, "", extraServer{id: "vault", url: "http://" + ln.Addr().String() + "/mcp", headerFiles: fmt.Sprintf("{Authorization: %q}", secret)})
	tok := h.token("assistant")
	c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, e := callErr(t, cs, "vault__peek", nil); e != nil {
		t.Fatal(e)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("the upstream server saw no request")
	}
	for i, hdr := range seen {
		if got := hdr.Values("Authorization"); len(got) != 1 || got[0] != "Bearer upstream-credential" {
			t.Errorf("upstream request %d: Authorization %q, want the configured credential", i, got)
		}
		for name, vs := range hdr {
			for _, v := range vs {
				if strings.Contains(v, tok) || (name == "Dpop" && v != "") {
					t.Errorf("upstream request %d: header %s carries the agent's credential", i, name)
				}
			}
		}
	}
}

// TestDPoPRequired: with identity.dpop: required the gateway issues and
// accepts DPoP-bound tokens only, as its RFC 9728 metadata announces.
func TestDPoPRequired(t *testing.T) {
	h, workload, _ := identityGateway(t, "  dpop: required\n")
	base := strings.TrimSuffix(h.url, "/mcp")
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/assistant", nil, &a)
	a["credentials"] = []map[string]string{{"source": "ci", "subject": "repo:acme/agents:environment:prod"}}
	a["by"], a["reason"] = "ops", "federate the CI workload"
	if code := adminDo(t, h, "PUT", "/v1/agents/assistant", a, nil); code != http.StatusOK {
		t.Fatalf("adding the credential: HTTP %d", code)
	}
	wl := func() string { return workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil) }
	form := func() url.Values {
		return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {wl()},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "resource": {h.url}}
	}
	if _, code, msg := exchange(t, base, form()); code != http.StatusBadRequest {
		t.Errorf("exchange without a proof: %d %s", code, msg)
	}
	post := func(authz, proof string) *http.Response {
		r, _ := http.NewRequest("POST", h.url, strings.NewReader(initBody))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.Header.Set("Authorization", authz)
		if proof != "" {
			r.Header.Set("DPoP", proof)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req, _ := http.NewRequest("POST", base+"/oauth/token", strings.NewReader(form().Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", dpopProof(t, key, "POST", base+"/oauth/token"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	tok, _ := body["access_token"].(string)
	if resp.StatusCode != 200 || body["token_type"] != "DPoP" {
		t.Fatalf("exchange with a proof: %d %v", resp.StatusCode, body)
	}
	if resp := post("DPoP "+tok, dpopProofFor(t, key, "POST", h.url, tok)); resp.StatusCode != 200 {
		t.Errorf("bound token with its proof: HTTP %d", resp.StatusCode)
	}
	for name, authz := range map[string]string{"unbound gateway token": "Bearer " + h.token("assistant"), "direct workload token": "Bearer " + wl()} {
		resp := post(authz, "")
		if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.HasPrefix(ch, "DPoP ") {
			t.Errorf("%s: HTTP %d, WWW-Authenticate %q; want 401 with a DPoP challenge", name, resp.StatusCode, ch)
		}
	}
	resp, err = http.Get(base + "/.well-known/oauth-protected-resource/mcp")
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if meta["dpop_bound_access_tokens_required"] != true {
		t.Errorf("metadata = %v", meta)
	}
}
