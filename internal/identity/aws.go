package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// TokenTypeAWSSigV4 is the subject_token_type of an AWS credential: a
// signed sts:GetCallerIdentity request, encoded by EncodeAWSRequest.
const TokenTypeAWSSigV4 = "urn:gatehouse:params:oauth:token-type:aws-sigv4-get-caller-identity"

// AWSRequest is a signed sts:GetCallerIdentity request as an agent presents
// it. The gateway never signs anything and holds no AWS credentials: it
// checks the request and forwards it, unchanged, to an allow-listed STS
// endpoint, which authenticates the signature.
type AWSRequest struct {
	Method  string              `json:"method"`
	URL     string              `json:"url"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

// EncodeAWSRequest encodes a signed request as a token (base64url of its
// JSON), for subject_token.
func EncodeAWSRequest(r *AWSRequest) (string, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// DecodeAWSRequest parses a token made by EncodeAWSRequest.
func DecodeAWSRequest(token string) (*AWSRequest, error) {
	if len(token) > 2*MaxTokenBytes {
		return nil, fail(CodeTooLarge, "token too large", nil)
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, fail(CodeSTSRequest, "the AWS credential is not base64url-encoded JSON", err)
	}
	var r AWSRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fail(CodeSTSRequest, "the AWS credential is not a signed request", err)
	}
	return &r, nil
}

// AWSConfig configures an AWS IAM trust source, modelled on Vault's AWS
// auth method (iam type).
type AWSConfig struct {
	Name string
	// Audience is the value the agent must put in AudienceHeader, and sign.
	Audience string
	// AudienceHeader names the signed header that carries the audience.
	// Default X-Gatehouse-Audience.
	AudienceHeader string
	// Endpoints allow-lists the STS endpoints requests may be sent to, as
	// base URLs (scheme and host; e.g. "https://sts.amazonaws.com",
	// "https://sts.eu-west-1.amazonaws.com"). Default the global endpoint.
	// Nothing else is ever contacted.
	Endpoints []string
	// Accounts, when not empty, lists the AWS accounts accepted.
	Accounts []string
	// AllowUsers accepts IAM users besides roles. Default false.
	AllowUsers bool
	// MaxAge bounds the age of the request's X-Amz-Date. Default 5m.
	MaxAge time.Duration
	// Client sends requests to STS; its CheckRedirect is replaced so
	// redirects are never followed. Default 10 s timeout.
	Client *http.Client
	// Replay, when set, makes each signed request usable once (keyed by
	// its signature) within MaxAge. Use a cache shared by replicas.
	Replay ReplayCache
	Now    func() time.Time
}

// AWSVerifier verifies AWS IAM identities.
type AWSVerifier struct {
	cfg       AWSConfig
	endpoints map[string]bool // scheme://host
	client    *http.Client
}

// NewAWSVerifier checks cfg and returns a verifier.
func NewAWSVerifier(cfg AWSConfig) (*AWSVerifier, error) {
	if cfg.Name == "" {
		return nil, errors.New("aws trust source needs a name")
	}
	if cfg.Audience == "" {
		return nil, fmt.Errorf("trust source %s: aws needs an audience", cfg.Name)
	}
	if cfg.AudienceHeader == "" {
		cfg.AudienceHeader = "X-Gatehouse-Audience"
	}
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []string{"https://sts.amazonaws.com"}
	}
	v := &AWSVerifier{cfg: cfg, endpoints: map[string]bool{}}
	for _, e := range cfg.Endpoints {
		u, err := url.Parse(e)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("trust source %s: STS endpoint %q is not a base URL", cfg.Name, e)
		}
		v.endpoints[u.Scheme+"://"+strings.ToLower(u.Host)] = true
	}
	c := http.Client{Timeout: 10 * time.Second}
	if cfg.Client != nil {
		c = *cfg.Client
	}
	c.CheckRedirect = noRedirect
	v.client = &c
	return v, nil
}

// Name implements Verifier.
func (v *AWSVerifier) Name() string { return v.cfg.Name }

var awsHopHeaders = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Content-Length": true}

// Verify implements Verifier: credential is an encoded AWSRequest.
func (v *AWSVerifier) Verify(ctx context.Context, credential string) (*Identity, error) {
	r, err := DecodeAWSRequest(credential)
	if err != nil {
		return nil, err
	}
	now := nowOr(v.cfg.Now)
	u, sig, date, err := v.checkRequest(r, now)
	if err != nil {
		return nil, err
	}
	if v.cfg.Replay != nil {
		err := v.cfg.Replay.Use(ctx, "aws-sigv4:"+sig, date.Add(orDefault(v.cfg.MaxAge, 5*time.Minute)+time.Minute))
		if errors.Is(err, ErrReplay) {
			return nil, fail(CodeReplayed, "the signed request was already used", nil)
		}
		if err != nil {
			return nil, fail(CodeReplayed, "the replay cache is unavailable", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(r.Body))
	if err != nil {
		return nil, fail(CodeSTSRequest, "the AWS credential is not a valid request", err)
	}
	for k, vals := range r.Headers {
		ck := http.CanonicalHeaderKey(k)
		if awsHopHeaders[ck] {
			continue
		}
		if ck == "Host" {
			req.Host = vals[0]
			continue
		}
		req.Header[ck] = vals
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fail(CodeSTSUnavailable, "AWS STS could not be reached", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 3 {
		return nil, fail(CodeSTSRedirect, "AWS STS answered with a redirect, which is never followed", nil)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code    string `xml:"Code"`
				Message string `xml:"Message"`
			} `xml:"Error"`
		}
		_ = xml.Unmarshal(b, &e)
		return nil, fail(CodeSTSRejected, "AWS STS rejected the signed request", fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, e.Error.Code, e.Error.Message))
	}
	var out struct {
		XMLName xml.Name `xml:"GetCallerIdentityResponse"`
		Result  struct {
			Arn     string `xml:"Arn"`
			UserID  string `xml:"UserId"`
			Account string `xml:"Account"`
		} `xml:"GetCallerIdentityResult"`
	}
	if err := xml.Unmarshal(b, &out); err != nil || out.Result.Arn == "" || out.Result.Account == "" {
		return nil, fail(CodeSTSRejected, "AWS STS answered with an unexpected document", err)
	}
	arn, session, err := CanonicalAWSPrincipal(out.Result.Arn)
	if err != nil {
		return nil, fail(CodeSTSPrincipal, "the AWS principal is not an IAM role", err)
	}
	if strings.Contains(arn, ":user/") && !v.cfg.AllowUsers {
		return nil, fail(CodeSTSPrincipal, "IAM users are not accepted; use a role", nil)
	}
	if acct := strings.Split(arn, ":")[4]; acct != out.Result.Account {
		return nil, fail(CodeSTSPrincipal, "the AWS principal's account does not match", nil)
	}
	if len(v.cfg.Accounts) > 0 && !slices.Contains(v.cfg.Accounts, out.Result.Account) {
		return nil, fail(CodeTenant, "the AWS account is not allowed", nil)
	}
	return &Identity{Source: v.cfg.Name, Kind: "aws", Subject: arn, Tenant: out.Result.Account, IssuedAt: now,
		Expiry:     now.Add(orDefault(v.cfg.MaxAge, 5*time.Minute)),
		Attributes: map[string]string{"caller_arn": out.Result.Arn, "user_id": out.Result.UserID, "session_name": session, "sts_endpoint": u.Host}}, nil
}

// checkRequest enforces everything the gateway can check before sending:
// the endpoint allow-list, the exact action, a signed audience header and
// a fresh signature date.
func (v *AWSVerifier) checkRequest(r *AWSRequest, now time.Time) (*url.URL, string, time.Time, error) {
	var none time.Time
	if r.Method != http.MethodPost {
		return nil, "", none, fail(CodeSTSRequest, "the signed request must be a POST", nil)
	}
	u, err := url.Parse(r.URL)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, "", none, fail(CodeSTSRequest, "the signed request has no valid URL", err)
	}
	if !v.endpoints[u.Scheme+"://"+strings.ToLower(u.Host)] {
		return nil, "", none, fail(CodeSTSHost, "the signed request is for an STS endpoint that is not allowed", nil)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, "", none, fail(CodeSTSRequest, "the signed request must post to the endpoint's root", nil)
	}
	form, err := url.ParseQuery(r.Body)
	if err != nil || len(form) != 2 || form.Get("Action") != "GetCallerIdentity" || form.Get("Version") != "2011-06-15" ||
		len(form["Action"]) != 1 || len(form["Version"]) != 1 {
		return nil, "", none, fail(CodeSTSRequest, "the signed request must be exactly sts:GetCallerIdentity", nil)
	}
	h := http.Header{}
	for k, vals := range r.Headers {
		if len(vals) == 0 {
			continue
		}
		h[http.CanonicalHeaderKey(k)] = vals
	}
	if host := h.Get("Host"); host != "" && !strings.EqualFold(host, u.Host) {
		return nil, "", none, fail(CodeSTSHost, "the signed request's Host header names another host", nil)
	}
	auth := h.Get("Authorization")
	signed, scope, sig, ok := parseSigV4(auth)
	if !ok {
		return nil, "", none, fail(CodeSTSRequest, "the request is not signed with AWS Signature Version 4", nil)
	}
	if len(scope) != 5 || scope[3] != "sts" || scope[4] != "aws4_request" {
		return nil, "", none, fail(CodeSTSRequest, "the request is not signed for STS", nil)
	}
	aud := strings.ToLower(v.cfg.AudienceHeader)
	if !slices.Contains(signed, aud) || !slices.Contains(signed, "host") || !slices.Contains(signed, "x-amz-date") {
		return nil, "", none, fail(CodeSTSUnsigned, "the audience header must be signed", nil)
	}
	if vals := h.Values(v.cfg.AudienceHeader); len(vals) != 1 || vals[0] != v.cfg.Audience {
		return nil, "", none, fail(CodeAudience, "the signed request is not for this gateway", nil)
	}
	date, err := time.Parse("20060102T150405Z", h.Get("X-Amz-Date"))
	if err != nil {
		return nil, "", none, fail(CodeSTSRequest, "the signed request has no valid X-Amz-Date", err)
	}
	maxAge := orDefault(v.cfg.MaxAge, 5*time.Minute)
	if now.Sub(date) > maxAge {
		return nil, "", none, fail(CodeTooOld, "the signed request is too old", nil)
	}
	if date.Sub(now) > time.Minute {
		return nil, "", none, fail(CodeNotYetValid, "the signed request is dated in the future", nil)
	}
	return u, sig, date, nil
}

// parseSigV4 splits an AWS4-HMAC-SHA256 Authorization header into its
// signed headers and credential scope (AKID/date/region/service/aws4_request).
func parseSigV4(auth string) (signed, scope []string, signature string, ok bool) {
	rest, found := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !found {
		return nil, nil, "", false
	}
	for part := range strings.SplitSeq(rest, ",") {
		k, val, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return nil, nil, "", false
		}
		switch k {
		case "Credential":
			scope = strings.Split(val, "/")
		case "SignedHeaders":
			signed = strings.Split(val, ";")
		case "Signature":
			signature = val
		}
	}
	return signed, scope, signature, signature != "" && len(signed) > 0 && len(scope) > 0
}

// CanonicalAWSPrincipal maps an ARN returned by GetCallerIdentity to the
// identity the gateway binds to: an assumed role's role ARN (never the
// caller-chosen session name, which is returned separately) or an IAM
// user's ARN. Role paths are not part of an assumed-role ARN; role names are
// unique within an account, so arn:<partition>:iam::<account>:role/<name>
// identifies the role.
func CanonicalAWSPrincipal(arn string) (canonical, session string, err error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[4] == "" {
		return "", "", fmt.Errorf("%q is not an ARN", arn)
	}
	partition, service, account, resource := parts[1], parts[2], parts[4], parts[5]
	switch {
	case service == "sts" && strings.HasPrefix(resource, "assumed-role/"):
		f := strings.Split(resource, "/")
		if len(f) != 3 || f[1] == "" || f[2] == "" {
			return "", "", fmt.Errorf("%q is not an assumed-role ARN", arn)
		}
		return "arn:" + partition + ":iam::" + account + ":role/" + f[1], f[2], nil
	case service == "iam" && strings.HasPrefix(resource, "user/"):
		return "arn:" + partition + ":iam::" + account + ":" + resource, "", nil
	}
	return "", "", fmt.Errorf("%q is neither an assumed role nor an IAM user", arn)
}
