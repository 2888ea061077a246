package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// fakeSTS answers GetCallerIdentity with the role of the request's access
// key id (it does not check signatures: the AWS verifier's own tests do).
func fakeSTS(t *testing.T, roles map[string]string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		i := strings.Index(auth, "Credential=")
		if i < 0 {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		akid, _, _ := strings.Cut(auth[i+len("Credential="):], "/")
		arn, ok := roles[akid]
		if !ok {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<ErrorResponse><Error><Code>InvalidClientTokenId</Code><Message>invalid</Message></Error></ErrorResponse>`)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>
<Arn>%s</Arn><UserId>AROAEXAMPLE:session</UserId><Account>%s</Account></GetCallerIdentityResult>
<ResponseMetadata><RequestId>0</RequestId></ResponseMetadata></GetCallerIdentityResponse>`, arn, strings.Split(arn, ":")[4])
	}))
	t.Cleanup(srv.Close)
	return srv
}

// stsToken signs a GetCallerIdentity request as an agent's AWS SDK would,
// with the gateway's audience header signed, and encodes it as a token.
// Each access key id has its own session token, so that two sessions'
// requests signed in the same second differ (a signed request is used once).
func stsToken(t *testing.T, endpoint, akid, audience string) string {
	t.Helper()
	body := "Action=GetCallerIdentity&Version=2011-06-15"
	req, _ := http.NewRequest(http.MethodPost, endpoint+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("X-Gatehouse-Audience", audience)
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: "secret", SessionToken: "tok-" + akid},
		req, hex.EncodeToString(sum[:]), "sts", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	h := map[string][]string{"Host": {req.URL.Host}}
	for k, v := range req.Header {
		h[k] = v
	}
	tok, err := identity.EncodeAWSRequest(&identity.AWSRequest{Method: req.Method, URL: req.URL.String(), Headers: h, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTrustSourcesFromConfig configures Entra, AWS and Kubernetes trust
// sources in the gateway's YAML and exchanges each kind of workload
// credential for a gateway token that reaches a tool; credentials outside
// the trust policy are refused.
func TestTrustSourcesFromConfig(t *testing.T) {
	const (
		tenant  = "72f988bf-86f1-41af-91ab-2d7cd011db47"
		miOID   = "6f2b1c7e-1d3a-4c5b-9e8f-0a1b2c3d4e5f"
		account = "123456789012"
		k8sIss  = "https://kubernetes.default.svc.cluster.local"
	)
	entraKeys := newIssuer(t, "https://login.example.test")
	k8sKeys := newIssuer(t, k8sIss)
	sts := fakeSTS(t, map[string]string{
		"ASIAROLE":  "arn:aws:sts::" + account + ":assumed-role/billing-agent/session-1",
		"ASIAOTHER": "arn:aws:sts::999999999999:assumed-role/billing-agent/session-2",
	})
	h := start(t, fmt.Sprintf(`identity:
  trust_sources:
    - {name: contoso, kind: entra, tenants: [%s], audience: "api://gatehouse", authority: %q, jwks_file: %q, algorithms: [ES256]}
    - {name: aws-prod, kind: aws, audience: gatehouse, endpoints: [%q], accounts: [%s]}
    - {name: cluster, kind: kubernetes, issuer: %q, audience: gatehouse, subject_prefixes: ["system:serviceaccount:agents:"], jwks_file: %q}
`, tenant, entraKeys.url, entraKeys.file, sts.URL, account, k8sIss, k8sKeys.file))
	base := strings.TrimSuffix(h.url, "/mcp")
	for agent, cred := range map[string]map[string]string{
		"assistant":  {"source": "contoso", "tenant": tenant, "subject": miOID},
		"intern-bot": {"source": "cluster", "subject": "system:serviceaccount:agents:triage"},
	} {
		var a map[string]any
		adminDo(t, h, "GET", "/v1/agents/"+agent, nil, &a)
		a["credentials"] = []map[string]string{cred}
		a["by"], a["reason"] = "ops", "federate"
		if agent == "assistant" {
			a["tenants"] = []string{tenant, account}
			a["credentials"] = []map[string]string{cred, {"source": "aws-prod", "tenant": account, "subject": "arn:aws:iam::" + account + ":role/billing-agent"}}
		}
		if code := adminDo(t, h, "PUT", "/v1/agents/"+agent, a, nil); code != http.StatusOK {
			t.Fatalf("federating %s: HTTP %d", agent, code)
		}
	}
	now := time.Now()
	entraClaims := func(tid, oid string) map[string]any {
		return map[string]any{"iss": entraKeys.url + "/" + tid + "/v2.0", "tid": tid, "oid": oid, "sub": oid, "ver": "2.0", "idtyp": "app",
			"azp": "9a2b3c4d-0000-4000-8000-000000000002", "iat": now.Add(-time.Minute).Unix()}
	}
	k8sClaims := func(sub, ns string) map[string]any {
		return map[string]any{"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": "triage", "uid": "sa-uid"},
			"pod": map[string]any{"name": "triage-7f9c", "uid": "p-uid"}}}
	}
	jwtType, awsType := "urn:ietf:params:oauth:token-type:jwt", "urn:gatehouse:params:oauth:token-type:aws-sigv4-get-caller-identity"
	tests := []struct {
		name, token, typ, agent string
		tool                    string
	}{
		{"entra managed identity", entraKeys.token(t, miOID, "api://gatehouse", entraClaims(tenant, miOID)), jwtType, "assistant", "bank__get_balance"},
		{"entra, another tenant", entraKeys.token(t, miOID, "api://gatehouse", entraClaims("00000000-0000-0000-0000-000000000bad", miOID)), jwtType, "", ""},
		{"entra, another object", entraKeys.token(t, "someone", "api://gatehouse", entraClaims(tenant, "someone")), jwtType, "", ""},
		{"aws role", stsToken(t, sts.URL, "ASIAROLE", "gatehouse"), awsType, "assistant", "bank__get_balance"},
		{"aws, audience of another gateway", stsToken(t, sts.URL, "ASIAROLE", "elsewhere"), awsType, "", ""},
		{"aws, account not allowed", stsToken(t, sts.URL, "ASIAOTHER", "gatehouse"), awsType, "", ""},
		{"kubernetes service account", k8sKeys.token(t, "system:serviceaccount:agents:triage", "gatehouse", k8sClaims("", "agents")), jwtType, "intern-bot", "workspace__read_inbox"},
		{"kubernetes, another namespace", k8sKeys.token(t, "system:serviceaccount:default:triage", "gatehouse", k8sClaims("", "default")), jwtType, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, code, msg := exchange(t, base, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token": {tt.token}, "subject_token_type": {tt.typ}, "resource": {h.url}})
			if tt.agent == "" {
				if code == http.StatusOK {
					t.Fatalf("exchanged a credential outside the trust policy")
				}
				return
			}
			if code != http.StatusOK {
				t.Fatalf("exchange: %d %s", code, msg)
			}
			c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
			cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			args := map[string]any{"account": "acc-checking"}
			if strings.HasPrefix(tt.tool, "workspace") {
				args = map[string]any{}
			}
			if _, e := callErr(t, cs, tt.tool, args); e != nil {
				t.Fatalf("%s as %s: %v", tt.tool, tt.agent, e)
			}
		})
	}
}

// TestAuditWorkloadAttributes: identity events record what the verified
// workload credential says about itself — an Entra Agent ID token's
// blueprint, an AWS role session's name — issued or refused.
func TestAuditWorkloadAttributes(t *testing.T) {
	const (
		tenant    = "72f988bf-86f1-41af-91ab-2d7cd011db47"
		miOID     = "6f2b1c7e-1d3a-4c5b-9e8f-0a1b2c3d4e5f"
		blueprint = "30cf4c22-9985-4ef7-8756-91cc888176bd"
		account   = "123456789012"
	)
	entraKeys := newIssuer(t, "https://login.example.test")
	sts := fakeSTS(t, map[string]string{"ASIAROLE": "arn:aws:sts::" + account + ":assumed-role/billing-agent/nightly-run-42"})
	h := start(t, fmt.Sprintf(`identity:
  trust_sources:
    - {name: contoso, kind: entra, tenants: [%s], audience: "api://gatehouse", authority: %q, jwks_file: %q, algorithms: [ES256]}
    - {name: aws-prod, kind: aws, audience: gatehouse, endpoints: [%q], accounts: [%s]}
`, tenant, entraKeys.url, entraKeys.file, sts.URL, account))
	base := strings.TrimSuffix(h.url, "/mcp")
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/assistant", nil, &a)
	a["credentials"] = []map[string]string{{"source": "contoso", "tenant": tenant, "subject": miOID},
		{"source": "aws-prod", "tenant": account, "subject": "arn:aws:iam::" + account + ":role/billing-agent"}}
	a["tenants"] = []string{tenant, account}
	a["by"], a["reason"] = "ops", "federate"
	if code := adminDo(t, h, "PUT", "/v1/agents/assistant", a, nil); code != http.StatusOK {
		t.Fatalf("federating: HTTP %d", code)
	}
	agentID := func(oid string) string {
		return entraKeys.token(t, oid, "api://gatehouse", map[string]any{"iss": entraKeys.url + "/" + tenant + "/v2.0", "tid": tenant, "oid": oid,
			"ver": "2.0", "idtyp": "app", "azp": "9a2b3c4d-0000-4000-8000-000000000002", "xms_par_app_azp": blueprint, "xms_act_fct": "3 9 11"})
	}
	jwtType, awsType := "urn:ietf:params:oauth:token-type:jwt", "urn:gatehouse:params:oauth:token-type:aws-sigv4-get-caller-identity"
	for _, c := range []struct{ token, typ string }{{agentID(miOID), jwtType}, {stsToken(t, sts.URL, "ASIAROLE", "gatehouse"), awsType}} {
		if _, code, msg := exchange(t, base, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {c.token}, "subject_token_type": {c.typ}, "resource": {h.url}}); code != http.StatusOK {
			t.Fatalf("exchange: %d %s", code, msg)
		}
	}
	// An Agent ID token of an unregistered object: refused, still recorded.
	if _, code, _ := exchange(t, base, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {agentID("someone-else")}, "subject_token_type": {jwtType}, "resource": {h.url}}); code == http.StatusOK {
		t.Fatal("an unregistered workload was issued a token")
	}
	sessions := h.events(audit.Filter{Class: audit.ClassAuthorizeSession}, 2)
	if len(sessions) != 2 {
		t.Fatalf("%d Authorize Session events, want 2", len(sessions))
	}
	if w := fmt.Sprint(unmapped(sessions[0], "workload")); !strings.Contains(w, "agent_blueprint:"+blueprint) || !strings.Contains(w, "entra_agent_id:true") {
		t.Errorf("Entra Agent ID exchange: unmapped.workload = %s", w)
	}
	if w := fmt.Sprint(unmapped(sessions[1], "workload")); !strings.Contains(w, "session_name:nightly-run-42") {
		t.Errorf("AWS exchange: unmapped.workload = %s", w)
	}
	var refused []map[string]any
	for _, ev := range h.events(audit.Filter{Class: audit.ClassAuthentication}, 1) {
		if ev["status_id"] == float64(audit.StatusFailure) {
			refused = append(refused, ev)
		}
	}
	if len(refused) != 1 || !strings.Contains(fmt.Sprint(unmapped(refused[0], "workload")), "agent_blueprint:"+blueprint) {
		t.Errorf("refused exchange events: %v", refused)
	}
	sch := ocsfSchema(t)
	for _, ev := range append(sessions, refused...) {
		if err := sch.Validate(ev); err != nil {
			t.Errorf("event does not validate against OCSF 1.3.0: %v\n%v", err, ev)
		}
	}
}
