package identity_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/gatehouse/gatehouse/internal/identity"
)

const (
	awsAccount = "123456789012"
	awsRoleARN = "arn:aws:iam::123456789012:role/billing-agent"
)

// testSTS is a loopback STS endpoint answering GetCallerIdentity as AWS
// documents it. It authenticates the SigV4 signature by recomputing it
// with the secret of the access key, so a request altered on the way fails
// as it would at AWS.
type testSTS struct {
	srv      *httptest.Server
	URL      string
	requests atomic.Int32
	redirect atomic.Bool
	// arns maps access key ids to the caller ARN returned.
	arns map[string]string
}

var awsSecrets = map[string]string{"ASIAROLE": "role-secret", "AKIAUSER": "user-secret", "ASIAOTHER": "other-secret"}

func newTestSTS(t testing.TB) *testSTS {
	s := &testSTS{arns: map[string]string{
		"ASIAROLE":  "arn:aws:sts::123456789012:assumed-role/billing-agent/attacker-chosen-session",
		"AKIAUSER":  "arn:aws:iam::123456789012:user/alice",
		"ASIAOTHER": "arn:aws:sts::999999999999:assumed-role/billing-agent/s",
	}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

func stsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>%s</Code>
    <Message>%s</Message>
  </Error>
  <RequestId>4c4e1a3f-0000-4000-8000-000000000000</RequestId>
</ErrorResponse>`, code, msg)
}

func (s *testSTS) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.redirect.Load() {
		http.Redirect(w, r, "https://evil.example/", http.StatusTemporaryRedirect)
		return
	}
	body, _ := io.ReadAll(r.Body)
	auth := r.Header.Get("Authorization")
	var akid, signed string
	for part := range strings.SplitSeq(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			akid, _, _ = strings.Cut(v, "/")
		case "SignedHeaders":
			signed = v
		}
	}
	secret, ok := awsSecrets[akid]
	if !ok {
		stsError(w, http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		return
	}
	date, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		stsError(w, http.StatusBadRequest, "IncompleteSignature", "missing date")
		return
	}
	// Recompute the signature over the headers the client signed.
	re, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), strings.NewReader(string(body)))
	for h := range strings.SplitSeq(signed, ";") {
		if h != "host" && h != "x-amz-date" {
			re.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}, re,
		hex.EncodeToString(sum[:]), "sts", "us-east-1", date); err != nil || re.Header.Get("Authorization") != auth {
		stsError(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	arn := s.arns[akid]
	acct := strings.Split(arn, ":")[4]
	w.Header().Set("Content-Type", "text/xml")
	_, _ = fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>%s</Arn>
    <UserId>AROA3XFRBF535PLBIFPI4:attacker-chosen-session</UserId>
    <Account>%s</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>`, arn, acct)
}

// signedSTSRequest signs a GetCallerIdentity request the way an agent's
// SDK would, with the audience header included in the signature (unless
// audienceAfterSigning), and encodes it as a token.
func signedSTSRequest(t testing.TB, endpoint, akid, audience string, at time.Time, mod func(*http.Request), audienceAfterSigning bool) string {
	t.Helper()
	body := "Action=GetCallerIdentity&Version=2011-06-15"
	req, _ := http.NewRequest(http.MethodPost, endpoint+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	if !audienceAfterSigning {
		req.Header.Set("X-Gatehouse-Audience", audience)
	}
	if mod != nil {
		mod(req)
	}
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: awsSecrets[akid], SessionToken: "tok"},
		req, hex.EncodeToString(sum[:]), "sts", "us-east-1", at); err != nil {
		t.Fatal(err)
	}
	if audienceAfterSigning {
		req.Header.Set("X-Gatehouse-Audience", audience)
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

func TestAWSVerifier(t *testing.T) {
	sts := newTestSTS(t)
	other := newTestSTS(t)
	v, err := identity.NewAWSVerifier(identity.AWSConfig{Name: "aws-prod", Audience: "gatehouse", Endpoints: []string{sts.URL},
		Accounts: []string{awsAccount}, Now: fixedNow(t0)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := v.Verify(ctx, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false))
	if err != nil {
		t.Fatal(err)
	}
	// Bound to the role, never to the caller-chosen session name.
	if id.Subject != awsRoleARN || id.Tenant != awsAccount || id.Attributes["session_name"] != "attacker-chosen-session" || id.Kind != "aws" {
		t.Fatalf("identity = %+v", id)
	}
	tests := []struct {
		name, token, want string
		reachesSTS        bool
	}{
		{"host not allow-listed", signedSTSRequest(t, other.URL, "ASIAROLE", "gatehouse", t0, nil, false), identity.CodeSTSHost, false},
		{"audience header unsigned", signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, true), identity.CodeSTSUnsigned, false},
		{"audience of another gateway", signedSTSRequest(t, sts.URL, "ASIAROLE", "other-gateway", t0, nil, false), identity.CodeAudience, false},
		{"stale signature", signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0.Add(-10*time.Minute), nil, false), identity.CodeTooOld, false},
		{"dated in the future", signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0.Add(10*time.Minute), nil, false), identity.CodeNotYetValid, false},
		{"IAM user", signedSTSRequest(t, sts.URL, "AKIAUSER", "gatehouse", t0, nil, false), identity.CodeSTSPrincipal, true},
		{"account not allowed", signedSTSRequest(t, sts.URL, "ASIAOTHER", "gatehouse", t0, nil, false), identity.CodeTenant, true},
		{"signature does not match", tamper(t, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false), func(r *identity.AWSRequest) {
			r.Headers["X-Gatehouse-Audience"] = []string{"gatehouse"}
			r.Headers["Authorization"] = []string{strings.Replace(r.Headers["Authorization"][0], "Signature=", "Signature=00", 1)}
		}), identity.CodeSTSRejected, true},
		{"another action", tamper(t, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false), func(r *identity.AWSRequest) {
			r.Body = "Action=AssumeRole&Version=2011-06-15"
		}), identity.CodeSTSRequest, false},
		{"GET", tamper(t, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false), func(r *identity.AWSRequest) { r.Method = "GET" }), identity.CodeSTSRequest, false},
		{"Host header elsewhere", tamper(t, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false), func(r *identity.AWSRequest) {
			r.Headers["Host"] = []string{"sts.evil.example"}
		}), identity.CodeSTSHost, false},
		{"not signed", tamper(t, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false), func(r *identity.AWSRequest) {
			delete(r.Headers, "Authorization")
		}), identity.CodeSTSRequest, false},
		{"userinfo in URL", tamper(t, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false), func(r *identity.AWSRequest) {
			r.URL = strings.Replace(r.URL, "http://", "http://user@", 1)
		}), identity.CodeSTSRequest, false},
		{"not base64", "%%%", identity.CodeSTSRequest, false},
		{"oversized", strings.Repeat("A", 3*identity.MaxTokenBytes), identity.CodeTooLarge, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, beforeOther := sts.requests.Load(), other.requests.Load()
			_, err := v.Verify(ctx, tt.token)
			if got := identity.ErrorCode(err); got != tt.want {
				t.Errorf("code = %q, want %q (%v)", got, tt.want, err)
			}
			if reached := sts.requests.Load() != before; reached != tt.reachesSTS {
				t.Errorf("reached STS = %v, want %v", reached, tt.reachesSTS)
			}
			if other.requests.Load() != beforeOther {
				t.Error("a request reached a host that is not allow-listed")
			}
		})
	}
	t.Run("redirect not followed", func(t *testing.T) {
		sts.redirect.Store(true)
		defer sts.redirect.Store(false)
		_, err := v.Verify(ctx, signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false))
		if identity.ErrorCode(err) != identity.CodeSTSRedirect {
			t.Errorf("redirect: %v", err)
		}
	})
	t.Run("signed request replayed", func(t *testing.T) {
		vr, _ := identity.NewAWSVerifier(identity.AWSConfig{Name: "a", Audience: "gatehouse", Endpoints: []string{sts.URL},
			Replay: &identity.MemoryReplayCache{Now: fixedNow(t0)}, Now: fixedNow(t0)})
		tok := signedSTSRequest(t, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false)
		if _, err := vr.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		before := sts.requests.Load()
		if _, err := vr.Verify(ctx, tok); identity.ErrorCode(err) != identity.CodeReplayed {
			t.Errorf("replay: %v", err)
		}
		if sts.requests.Load() != before {
			t.Error("a replayed request reached STS")
		}
	})
	t.Run("STS unreachable", func(t *testing.T) {
		down := httptest.NewServer(http.NotFoundHandler())
		url := down.URL
		down.Close()
		v2, _ := identity.NewAWSVerifier(identity.AWSConfig{Name: "a", Audience: "gatehouse", Endpoints: []string{url}, Now: fixedNow(t0)})
		_, err := v2.Verify(ctx, signedSTSRequest(t, url, "ASIAROLE", "gatehouse", t0, nil, false))
		if identity.ErrorCode(err) != identity.CodeSTSUnavailable {
			t.Errorf("unreachable: %v", err)
		}
	})
}

func tamper(t testing.TB, tok string, f func(*identity.AWSRequest)) string {
	r, err := identity.DecodeAWSRequest(tok)
	if err != nil {
		t.Fatal(err)
	}
	f(r)
	out, _ := identity.EncodeAWSRequest(r)
	return out
}

func TestCanonicalAWSPrincipal(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:sts::123456789012:assumed-role/r/s":          "arn:aws:iam::123456789012:role/r",
		"arn:aws-cn:sts::123456789012:assumed-role/r/s":       "arn:aws-cn:iam::123456789012:role/r",
		"arn:aws-us-gov:sts::123456789012:assumed-role/r/a@b": "arn:aws-us-gov:iam::123456789012:role/r",
		"arn:aws:iam::123456789012:user/division/alice":       "arn:aws:iam::123456789012:user/division/alice",
		"arn:aws:sts::123456789012:federated-user/bob":        "",
		"arn:aws:iam::123456789012:root":                      "",
		"arn:aws:sts::123456789012:assumed-role/r":            "",
		"not-an-arn": "",
	} {
		got, _, err := identity.CanonicalAWSPrincipal(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("CanonicalAWSPrincipal(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzAWSRequest(f *testing.F) {
	sts := newTestSTS(f)
	f.Add(signedSTSRequest(f, sts.URL, "ASIAROLE", "gatehouse", t0, nil, false))
	f.Add("e30")
	f.Add(`eyJtZXRob2QiOiJQT1NUIn0`)
	// The endpoint allow-list names a closed port: nothing may be sent.
	v, err := identity.NewAWSVerifier(identity.AWSConfig{Name: "a", Audience: "gatehouse", Endpoints: []string{"http://127.0.0.1:1"}, Now: fixedNow(t0)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(context.Background(), tok)
		if err == nil {
			t.Fatalf("accepted %q: %+v", tok, id)
		}
		if identity.ErrorCode(err) == "" {
			t.Fatalf("error without code: %v", err)
		}
	})
}
