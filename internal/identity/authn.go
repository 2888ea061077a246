package identity

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Authenticator is the gateway's single entry point for "who is acting?"
// on an agent request. It accepts, in this order:
//
//   - a gateway token (Authorization: Bearer, or DPoP for bound tokens);
//   - a workload token of a trust source listed in Direct (e.g. a
//     Kubernetes service-account token or a SPIFFE JWT-SVID presented as a
//     bearer token with the gateway as audience);
//   - with no Authorization header, an X.509-SVID client certificate of the
//     mTLS connection, when X509 is set.
type Authenticator struct {
	// Tokens verifies gateway tokens. Required.
	Tokens *TokenVerifier
	// Sources and Direct enable direct authentication with workload tokens
	// of the named trust sources.
	Sources *Sources
	Direct  []string
	// X509 verifies mTLS client certificates as X.509-SVIDs.
	X509 *SPIFFEVerifier
	// Registry resolves direct identities to agents. Default Tokens.Registry.
	Registry Registry
	// DPoP verifies proofs for DPoP-bound tokens. Default a DPoPVerifier
	// with a process-local replay cache.
	DPoP *DPoPVerifier
	// RequireDPoP accepts only DPoP-bound gateway tokens, presented with
	// their proof, and X.509-SVIDs of the mTLS connection (bound to the TLS
	// key): unbound gateway tokens and workload tokens presented directly
	// are refused with CodeDPoPMissing. It is what RFC 9728's
	// dpop_bound_access_tokens_required announces.
	RequireDPoP bool
	// PublicURL is the gateway's external base URL (the DPoP htu is
	// PublicURL + request path). Default from the request's Host.
	PublicURL string
	// Resource returns the resource URI a request targets (the MCP
	// endpoint URL). A task token minted for another resource is refused.
	// Nil disables the check.
	Resource func(r *http.Request) string
	// Audit, when set, records refused authentications.
	Audit AuditFunc
	// Locked, when set, is the kill switch: an error refuses the
	// authenticated principal (CodeAgentDisabled), so locking an agent makes
	// its tokens useless at once.
	Locked func(ctx context.Context, p *Principal) error
	Now    func() time.Time
}

// Authenticate authenticates r.
func (a *Authenticator) Authenticate(ctx context.Context, r *http.Request) (*Principal, error) {
	p, err := a.authenticate(ctx, r)
	if err == nil && a.Locked != nil {
		if lerr := a.Locked(ctx, p); lerr != nil {
			p, err = nil, fail(CodeAgentDisabled, "the agent is locked", lerr)
		}
	}
	if err != nil && a.Audit != nil {
		ev := Event{Type: "authentication", Time: nowOr(a.Now), Code: ErrorCode(err), Detail: err.Error()}
		_ = a.Audit(ctx, ev) // already refusing: nothing to fail closed on
	}
	return p, err
}

func (a *Authenticator) authenticate(ctx context.Context, r *http.Request) (*Principal, error) {
	hdr := r.Header.Values("Authorization")
	if len(hdr) == 0 {
		if a.X509 != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			return a.authenticateX509(ctx, r)
		}
		return nil, fail(CodeMissing, "a bearer token is required", nil)
	}
	if len(hdr) > 1 {
		return nil, fail(CodeMalformed, "more than one Authorization header", nil)
	}
	scheme, tok, ok := strings.Cut(hdr[0], " ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		return nil, fail(CodeMalformed, "the Authorization header must be a Bearer or DPoP token", nil)
	}
	dpop := strings.EqualFold(scheme, "DPoP")
	if !dpop && !strings.EqualFold(scheme, "Bearer") {
		return nil, fail(CodeMalformed, "the Authorization header must be a Bearer or DPoP token", nil)
	}
	if len(tok) > MaxTokenBytes {
		return nil, fail(CodeTooLarge, "token too large", nil)
	}
	if a.Sources == nil || a.Tokens.isCached(tok) {
		return a.authenticateGateway(ctx, r, tok, dpop)
	}
	claims := peekClaims(tok)
	if claims == nil {
		return nil, fail(CodeMalformed, "the token is not a valid JWT", nil)
	}
	if rawString(claims, "iss") == a.Tokens.Issuer {
		return a.authenticateGateway(ctx, r, tok, dpop)
	}
	if dpop {
		return nil, fail(CodeDPoPInvalid, "only gateway tokens can be DPoP-bound", nil)
	}
	if a.RequireDPoP {
		return nil, errDPoPRequired()
	}
	v, err := a.Sources.Resolve(tok, TokenTypeJWT, "")
	if err != nil {
		return nil, err
	}
	if !slices.Contains(a.Direct, v.Name()) {
		return nil, fail(CodeIssuer, "tokens of this trust source must be exchanged at the token endpoint", nil)
	}
	id, err := a.Sources.Verify(ctx, tok, TokenTypeJWT, v.Name())
	if err != nil {
		return nil, err
	}
	method := id.Kind
	if method == "spiffe" {
		method = "spiffe-jwt"
	}
	return a.principalFor(ctx, id, method)
}

func (a *Authenticator) registry() Registry {
	if a.Registry != nil {
		return a.Registry
	}
	return a.Tokens.Registry
}

func (a *Authenticator) principalFor(ctx context.Context, id *Identity, method string) (*Principal, error) {
	agent, err := agentFor(ctx, a.registry(), id, nowOr(a.Now))
	if err != nil {
		return nil, err
	}
	return &Principal{Agent: agent, Subject: id.Subject, Issuer: id.Issuer, TokenID: id.TokenID, Expiry: id.Expiry,
		Method: method, Source: id.source()}, nil
}

func (a *Authenticator) authenticateX509(ctx context.Context, r *http.Request) (*Principal, error) {
	id, err := a.X509.VerifyCertificate(ctx, r.TLS.PeerCertificates)
	if err != nil {
		return nil, err
	}
	return a.principalFor(ctx, id, "spiffe-x509")
}

func (a *Authenticator) authenticateGateway(ctx context.Context, r *http.Request, tok string, dpop bool) (*Principal, error) {
	p, err := a.Tokens.Verify(ctx, tok)
	if err != nil {
		return nil, err
	}
	if a.Resource != nil {
		if res := a.Resource(r); res != "" && !slices.Contains(p.Audience, res) && !slices.Contains(p.Audience, a.Tokens.Audience) {
			return nil, fail(CodeAudience, "the token was minted for another resource", nil)
		}
	}
	switch {
	case p.Confirmation == "" && dpop:
		return nil, fail(CodeDPoPInvalid, "the token is not DPoP-bound; use the Bearer scheme", nil)
	case p.Confirmation == "" && a.RequireDPoP:
		return nil, errDPoPRequired()
	case p.Confirmation == "":
		return p, nil
	case !dpop:
		return nil, fail(CodeDPoPMissing, "the token is DPoP-bound: present it with the DPoP scheme and a proof", nil)
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return nil, fail(CodeDPoPMissing, "the token is DPoP-bound: exactly one DPoP proof is required", nil)
	}
	d := a.DPoP
	if d == nil {
		d = defaultDPoP(a.Now)
	}
	jkt, err := d.Verify(ctx, proofs[0], r.Method, a.requestURL(r), tok)
	if err != nil {
		return nil, err
	}
	if jkt != p.Confirmation {
		return nil, fail(CodeDPoPMismatch, "the DPoP proof's key is not the one the token is bound to", nil)
	}
	return p, nil
}

func errDPoPRequired() error {
	return fail(CodeDPoPMissing, "this gateway accepts DPoP-bound tokens only: exchange the credential at the token endpoint with a DPoP proof", nil)
}

var defaultDPoPVerifier = &DPoPVerifier{}

func defaultDPoP(now func() time.Time) *DPoPVerifier {
	if now != nil {
		return &DPoPVerifier{Now: now}
	}
	return defaultDPoPVerifier
}

func (a *Authenticator) requestURL(r *http.Request) string {
	if a.PublicURL != "" {
		return strings.TrimSuffix(a.PublicURL, "/") + r.URL.Path
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.Path
}

// ResourceMetadata is RFC 9728 protected resource metadata.
type ResourceMetadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers,omitempty"`
	JWKSURI                string   `json:"jwks_uri,omitempty"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ResourceName           string   `json:"resource_name,omitempty"`
	DPoPSigningAlgs        []string `json:"dpop_signing_alg_values_supported,omitempty"`
	DPoPBoundRequired      bool     `json:"dpop_bound_access_tokens_required,omitempty"`
}

// ServeHTTP serves the metadata document.
func (m ResourceMetadata) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if m.BearerMethodsSupported == nil {
		m.BearerMethodsSupported = []string{"header"}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(m)
}

// ResourceMetadataURL returns the RFC 9728 §3.1 metadata URL of the
// resource at publicURL + path: the well-known segment goes between the
// host and the path.
func ResourceMetadataURL(publicURL, path string) string {
	base := strings.TrimSuffix(publicURL, "/")
	if path == "/" {
		path = ""
	}
	return base + "/.well-known/oauth-protected-resource" + path
}

// AuthServerMetadata is the RFC 8414 metadata of the gateway's token
// endpoint (serve at /.well-known/oauth-authorization-server).
type AuthServerMetadata struct {
	Issuer                 string   `json:"issuer"`
	TokenEndpoint          string   `json:"token_endpoint"`
	JWKSURI                string   `json:"jwks_uri"`
	GrantTypesSupported    []string `json:"grant_types_supported"`
	TokenEndpointAuth      []string `json:"token_endpoint_auth_methods_supported"`
	DPoPSigningAlgs        []string `json:"dpop_signing_alg_values_supported,omitempty"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	ResponseTypesSupported []string `json:"response_types_supported"`
}

// NewAuthServerMetadata describes a gateway whose public URL is base.
func NewAuthServerMetadata(issuer, base string, dpop bool) AuthServerMetadata {
	base = strings.TrimSuffix(base, "/")
	m := AuthServerMetadata{Issuer: issuer, TokenEndpoint: base + "/oauth/token", JWKSURI: base + "/.well-known/jwks.json",
		GrantTypesSupported: []string{GrantTypeTokenExchange}, TokenEndpointAuth: []string{"none"}, ResponseTypesSupported: []string{}}
	if dpop {
		m.DPoPSigningAlgs = []string{"ES256", "EdDSA", "RS256", "PS256"}
	}
	return m
}

// ServeHTTP serves the metadata document.
func (m AuthServerMetadata) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(m)
}

// Challenge returns the WWW-Authenticate value for a refused request
// (RFC 6750 §3, RFC 9449 §7.1, RFC 9728 §5.1): the error, its public
// description and the resource_metadata pointer.
func Challenge(err error, resourceMetadataURL string) string {
	scheme := "Bearer"
	errVal := "invalid_token"
	desc := ""
	var ie *Error
	if errors.As(err, &ie) {
		desc = ie.Message
		switch {
		case ie.Code == CodeMissing:
			errVal = ""
		case strings.HasPrefix(ie.Code, "dpop_"):
			scheme, errVal = "DPoP", "invalid_dpop_proof"
		case ie.Code == CodeServer:
			errVal = "insufficient_scope"
		}
	}
	var b strings.Builder
	b.WriteString(scheme)
	sep := " "
	add := func(k, v string) {
		if v == "" {
			return
		}
		b.WriteString(sep + k + `="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`)
		sep = ", "
	}
	add("error", errVal)
	if errVal != "" {
		add("error_description", desc)
	}
	add("resource_metadata", resourceMetadataURL)
	if scheme == "DPoP" {
		add("algs", "ES256 EdDSA RS256 PS256")
	}
	return b.String()
}
