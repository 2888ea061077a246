package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Identity is a verified external identity: a workload (or, from a source
// that vouches for users, a human) as its trust source names it.
type Identity struct {
	// Source is the trust source's configured name.
	Source string
	// Kind is the trust source's kind: "oidc", "entra", "aws",
	// "kubernetes", "spiffe".
	Kind string
	// Issuer is the token issuer ("" for AWS; the trust domain's SPIFFE ID
	// for X.509-SVIDs).
	Issuer string
	// Subject is the canonical subject (see FederatedCredential.Subject).
	Subject string
	// Tenant is the Entra tenant id or AWS account id, when the source has
	// tenants.
	Tenant string
	// User reports a human user rather than a workload.
	User bool
	// TokenID is the credential's jti or equivalent ("" when none).
	TokenID  string
	IssuedAt time.Time
	Expiry   time.Time
	// Attributes are informational details worth auditing (e.g. Entra
	// app_id, agent_blueprint; AWS session_name; Kubernetes pod).
	Attributes map[string]string
	// Act is the delegation chain the credential itself carried.
	Act []Actor
	// Groups are a user's groups from the token's groups claim (RFC 9068
	// §2.2.3.1; Entra: group object ids), for policy. Read for users only.
	Groups []string
	// Tags are facts about a user read from the claims its trust source's
	// UserTags names (tag name → set of strings), for policy's object
	// scoping (context.user.getTag("accounts")). Read for users only.
	Tags map[string][]string
}

// Source returns the identity as a token's source record.
func (id *Identity) source() *Source {
	return &Source{TrustSource: id.Source, Kind: id.Kind, Tenant: id.Tenant, Subject: id.Subject}
}

// Verifier verifies the credentials of one trust source.
// Implementations must be safe for concurrent use and return only *Error
// failures; a nil error means every rule of the trust policy held.
type Verifier interface {
	// Name returns the trust source's name.
	Name() string
	// Verify checks a presented credential (a JWT, or for AWS the encoded
	// signed request).
	Verify(ctx context.Context, credential string) (*Identity, error)
}

// TrustPolicy is the explicit trust placed in one JWT issuer.
type TrustPolicy struct {
	// Issuer is the exact iss required.
	Issuer string
	// Audience is the one audience required in aud: the gateway.
	Audience string
	// Subjects, when not empty, lists the only subjects accepted (exact).
	Subjects []string
	// SubjectPrefixes, when not empty, accepts subjects with one of these
	// prefixes (e.g. "system:serviceaccount:agents:"). With both lists
	// empty any subject passes this rule, and only subjects registered as a
	// federated credential can map to an agent.
	SubjectPrefixes []string
	// Algorithms lists the accepted JWS algorithms. Default RS256, ES256.
	// Symmetric algorithms and "none" are never accepted.
	Algorithms []string
	// MaxAge bounds now - iat. Default 24h; tokens without iat are refused.
	MaxAge time.Duration
	// Skew is the leeway on exp, nbf and iat. Default 60s, at most 5m.
	Skew time.Duration
}

var asymmetric = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true, "EdDSA": true,
}

// check validates p and fills defaults.
func (p *TrustPolicy) check() error {
	if p.Issuer == "" {
		return errors.New("trust policy needs an issuer")
	}
	if p.Audience == "" {
		return errors.New("trust policy needs an audience")
	}
	if len(p.Algorithms) == 0 {
		p.Algorithms = []string{"RS256", "ES256"}
	}
	for _, a := range p.Algorithms {
		if !asymmetric[a] {
			return errors.New("trust policy allows algorithm " + a + ": only asymmetric JWS algorithms are accepted")
		}
	}
	if p.MaxAge <= 0 {
		p.MaxAge = 24 * time.Hour
	}
	if p.Skew <= 0 {
		p.Skew = 60 * time.Second
	}
	if p.Skew > 5*time.Minute {
		return errors.New("trust policy clock skew exceeds 5m")
	}
	return nil
}

func (p *TrustPolicy) algs() []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(p.Algorithms))
	for i, a := range p.Algorithms {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}

func (p *TrustPolicy) subjectAllowed(sub string) bool {
	if len(p.Subjects) == 0 && len(p.SubjectPrefixes) == 0 {
		return true
	}
	if slices.Contains(p.Subjects, sub) {
		return true
	}
	for _, pre := range p.SubjectPrefixes {
		if strings.HasPrefix(sub, pre) {
			return true
		}
	}
	return false
}

// KeySource finds a verification key by key id.
type KeySource interface {
	// Key returns the key with kid. A missing key is an *Error with
	// CodeUnknownKey; an unreachable key set is CodeKeysUnavail.
	Key(ctx context.Context, kid string) (*jose.JSONWebKey, error)
}

// rawClaims are the registered claims plus the raw claim set.
type rawClaims struct {
	jwt.Claims
	raw map[string]json.RawMessage
}

func (c *rawClaims) str(name string) string {
	var s string
	if b, ok := c.raw[name]; ok {
		_ = json.Unmarshal(b, &s)
	}
	return s
}

// Bounds of a user's groups claim.
const (
	maxGroups     = 256
	maxGroupBytes = 256
)

// groups reads the groups claim: absent is no groups; anything but an
// array of at most maxGroups non-empty strings of at most maxGroupBytes
// refuses the token, so that policy never sees a partial or garbled list.
// A token that says its groups are elsewhere (the OIDC distributed-claims
// form _claim_names.groups, or Entra's hasgroups when there are too many)
// is refused for the same reason.
func (c *rawClaims) groups() ([]string, error) {
	var names map[string]json.RawMessage
	if b, ok := c.raw["_claim_names"]; ok && json.Unmarshal(b, &names) == nil && names["groups"] != nil || c.raw["hasgroups"] != nil {
		return nil, fail(CodeClaims, "the user's groups are not in the token (group overage); configure the identity provider to emit them, or fewer", nil)
	}
	b, ok := c.raw["groups"]
	if !ok {
		return nil, nil
	}
	var gs []string
	if err := json.Unmarshal(b, &gs); err != nil {
		return nil, fail(CodeClaims, "the groups claim must be an array of strings", err)
	}
	if len(gs) > maxGroups {
		return nil, fail(CodeClaims, fmt.Sprintf("the groups claim lists more than %d groups", maxGroups), nil)
	}
	for _, g := range gs {
		if g == "" || len(g) > maxGroupBytes {
			return nil, fail(CodeClaims, fmt.Sprintf("a group name in the groups claim is empty or longer than %d bytes", maxGroupBytes), nil)
		}
	}
	return gs, nil
}

// Bounds of user tags: a tag holds at most maxTagValues strings of at
// most maxTagValueBytes bytes, like groups.
const (
	maxTagValues     = 256
	maxTagValueBytes = 256
)

// tags reads the user tags that names maps (tag name → claim name): a
// claim that is a string gives a one-element set, an array of strings the
// set; an absent claim gives no tag. Any other shape, or a value out of
// bounds, refuses the token (CodeClaims), so policy never sees a partial
// set.
func (c *rawClaims) tags(names map[string]string) (map[string][]string, error) {
	var out map[string][]string
	for tag, claim := range names {
		b, ok := c.raw[claim]
		if !ok || string(b) == "null" {
			continue
		}
		var vs []string
		var one string
		if err := json.Unmarshal(b, &one); err == nil {
			vs = []string{one}
		} else if err := json.Unmarshal(b, &vs); err != nil {
			return nil, fail(CodeClaims, fmt.Sprintf("the %s claim (user tag %s) must be a string or an array of strings", claim, tag), err)
		}
		if len(vs) > maxTagValues {
			return nil, fail(CodeClaims, fmt.Sprintf("the %s claim (user tag %s) holds more than %d values", claim, tag, maxTagValues), nil)
		}
		for _, v := range vs {
			if v == "" || len(v) > maxTagValueBytes {
				return nil, fail(CodeClaims, fmt.Sprintf("a value of the %s claim (user tag %s) is empty or longer than %d bytes", claim, tag, maxTagValueBytes), nil)
			}
		}
		if out == nil {
			out = map[string][]string{}
		}
		out[tag] = vs
	}
	return out, nil
}

// userFacts sets the groups and user tags (tag name → claim name) of id,
// a user's identity, from its token's claims.
func (c *rawClaims) userFacts(id *Identity, tags map[string]string) (err error) {
	if id.Groups, err = c.groups(); err != nil {
		return err
	}
	id.Tags, err = c.tags(tags)
	return err
}

// peekClaims decodes a compact JWT's payload without verifying it, for
// routing only. It returns nil for anything that is not a JWS compact
// serialisation of a JSON object.
func peekClaims(token string) map[string]json.RawMessage {
	i := strings.IndexByte(token, '.')
	if i < 0 {
		return nil
	}
	j := strings.IndexByte(token[i+1:], '.')
	if j < 0 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token[i+1 : i+1+j])
	if err != nil {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func rawString(m map[string]json.RawMessage, name string) string {
	var s string
	if b, ok := m[name]; ok {
		_ = json.Unmarshal(b, &s)
	}
	return s
}

// verifyJWT checks token against policy with keys and returns its claims.
// It enforces, in order: size, algorithm allow-list, a single signature, a
// known key whose algorithm matches, the signature, exp/nbf/iat with skew,
// maximum age, the exact issuer, the audience and the subject rule.
func verifyJWT(ctx context.Context, token string, p *TrustPolicy, keys KeySource, now time.Time) (*rawClaims, error) {
	if token == "" {
		return nil, fail(CodeMissing, "a token is required", nil)
	}
	if len(token) > MaxTokenBytes {
		return nil, fail(CodeTooLarge, "token too large", nil)
	}
	tok, err := jwt.ParseSigned(token, p.algs())
	if err != nil {
		if alg := headerAlg(token); alg != "" && !slices.Contains(p.Algorithms, alg) {
			return nil, fail(CodeAlgorithm, "the token's signature algorithm is not accepted", err)
		}
		return nil, fail(CodeMalformed, "the token is not a valid JWT", err)
	}
	if len(tok.Headers) != 1 {
		return nil, fail(CodeMalformed, "the token must have exactly one signature", nil)
	}
	h := tok.Headers[0]
	if h.JSONWebKey != nil || h.ExtraHeaders["jku"] != nil || h.ExtraHeaders["x5u"] != nil {
		// Keys come from the trust source, never from the token.
		return nil, fail(CodeUnknownKey, "the token names its own key; keys come from the trust source", nil)
	}
	key, err := keys.Key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return nil, fail(CodeAlgorithm, "the token's algorithm does not match its key", nil)
	}
	var c rawClaims
	if err := tok.Claims(key.Key, &c.Claims, &c.raw); err != nil {
		return nil, fail(CodeSignature, "the token's signature does not verify", err)
	}
	if err := validateTimes(&c.Claims, now, p.Skew, p.MaxAge); err != nil {
		return nil, err
	}
	if c.Issuer != p.Issuer {
		return nil, fail(CodeIssuer, "the token's issuer is not trusted", nil)
	}
	if !c.Audience.Contains(p.Audience) {
		return nil, fail(CodeAudience, "the token is not for this gateway", nil)
	}
	if c.Subject == "" {
		return nil, fail(CodeClaims, "the token has no subject", nil)
	}
	if !p.subjectAllowed(c.Subject) {
		return nil, fail(CodeSubject, "the token's subject is not allowed by the trust policy", nil)
	}
	return &c, nil
}

func validateTimes(c *jwt.Claims, now time.Time, skew, maxAge time.Duration) error {
	if c.Expiry == nil {
		return fail(CodeClaims, "the token has no expiry", nil)
	}
	if now.After(c.Expiry.Time().Add(skew)) {
		return fail(CodeExpired, "the token has expired", nil)
	}
	if c.NotBefore != nil && now.Add(skew).Before(c.NotBefore.Time()) {
		return fail(CodeNotYetValid, "the token is not valid yet", nil)
	}
	if maxAge > 0 {
		if c.IssuedAt == nil {
			return fail(CodeClaims, "the token has no issue time", nil)
		}
		iat := c.IssuedAt.Time()
		if now.Add(skew).Before(iat) {
			return fail(CodeNotYetValid, "the token was issued in the future", nil)
		}
		if now.Sub(iat) > maxAge+skew {
			return fail(CodeTooOld, "the token is older than the trust policy allows", nil)
		}
	}
	return nil
}

// headerAlg returns the alg named in a compact JWS header, or "".
func headerAlg(token string) string {
	i := strings.IndexByte(token, '.')
	if i < 0 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(token[:i])
	if err != nil {
		return ""
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &hdr) != nil {
		return ""
	}
	return hdr.Alg
}
