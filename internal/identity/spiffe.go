package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SPIFFEBundles is where trust bundles come from: a
// *workloadapi.BundleSource (the local SPIRE agent) or a static
// *spiffebundle.Bundle / Set both satisfy it.
type SPIFFEBundles interface {
	jwtbundle.Source
	x509bundle.Source
}

// SPIFFEConfig configures a SPIFFE trust source.
type SPIFFEConfig struct {
	Name string
	// TrustDomain is the one trust domain accepted (e.g. "example.org").
	TrustDomain string
	// Audience is the audience JWT-SVIDs must carry (the gateway).
	Audience string
	// IDs, when not empty, lists the SPIFFE IDs accepted (exact).
	IDs []string
	// IDPrefixes, when not empty, accepts IDs under these path prefixes
	// (e.g. "spiffe://example.org/agents/"). With both empty any ID of the
	// trust domain passes this rule (a federated credential is still
	// needed to become an agent).
	IDPrefixes []string
	// Algorithms for JWT-SVIDs. Default RS256, ES256, ES384, PS256.
	Algorithms []string
	// MaxAge bounds a JWT-SVID's age. Default 1h.
	MaxAge  time.Duration
	Skew    time.Duration
	Bundles SPIFFEBundles
	Now     func() time.Time
}

// SPIFFEVerifier verifies JWT-SVIDs (bearer) and X.509-SVIDs (mTLS peer
// chains) with go-spiffe.
type SPIFFEVerifier struct {
	cfg    SPIFFEConfig
	td     spiffeid.TrustDomain
	policy TrustPolicy
}

// NewSPIFFEVerifier checks cfg and returns a verifier.
func NewSPIFFEVerifier(cfg SPIFFEConfig) (*SPIFFEVerifier, error) {
	if cfg.Name == "" {
		return nil, errors.New("spiffe trust source needs a name")
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust source %s: %w", cfg.Name, err)
	}
	if cfg.Bundles == nil {
		return nil, fmt.Errorf("trust source %s: spiffe needs a bundle source", cfg.Name)
	}
	for _, id := range append(slices.Clone(cfg.IDs), cfg.IDPrefixes...) {
		if !strings.HasPrefix(id, td.IDString()+"/") {
			return nil, fmt.Errorf("trust source %s: %q is not in trust domain %s", cfg.Name, id, td)
		}
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{"RS256", "ES256", "ES384", "PS256"}
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Hour
	}
	v := &SPIFFEVerifier{cfg: cfg, td: td, policy: TrustPolicy{Issuer: td.IDString(), Audience: cfg.Audience,
		Subjects: cfg.IDs, SubjectPrefixes: cfg.IDPrefixes, Algorithms: cfg.Algorithms, MaxAge: cfg.MaxAge, Skew: cfg.Skew}}
	if err := v.policy.check(); err != nil {
		return nil, fmt.Errorf("trust source %s: %w", cfg.Name, err)
	}
	return v, nil
}

// Name implements Verifier.
func (v *SPIFFEVerifier) Name() string { return v.cfg.Name }

// TrustDomain returns the accepted trust domain.
func (v *SPIFFEVerifier) TrustDomain() string { return v.td.Name() }

// bundleKeys adapts the JWT bundle of the trust domain to KeySource.
type bundleKeys struct {
	src jwtbundle.Source
	td  spiffeid.TrustDomain
}

func (b bundleKeys) Key(_ context.Context, kid string) (*jose.JSONWebKey, error) {
	bundle, err := b.src.GetJWTBundleForTrustDomain(b.td)
	if err != nil {
		return nil, fail(CodeKeysUnavail, "the trust domain's bundle is unavailable", err)
	}
	k, ok := bundle.FindJWTAuthority(kid)
	if !ok {
		return nil, fail(CodeUnknownKey, "the token's signing key is not known", nil)
	}
	return &jose.JSONWebKey{Key: k, KeyID: kid}, nil
}

// Verify implements Verifier for JWT-SVIDs. SPIRE does not set iss by
// default, so the trust domain is taken from the subject and must be the
// configured one; an iss, when present, is not trusted for anything.
func (v *SPIFFEVerifier) Verify(ctx context.Context, token string) (*Identity, error) {
	if len(token) > MaxTokenBytes {
		return nil, fail(CodeTooLarge, "token too large", nil)
	}
	p := v.policy
	p.Issuer = rawString(peekClaims(token), "iss") // the trust domain is checked below, through the subject
	c, err := verifyJWT(ctx, token, &p, bundleKeys{v.cfg.Bundles, v.td}, nowOr(v.cfg.Now))
	if err != nil {
		if ErrorCode(err) == CodeIssuer {
			err = fail(CodeClaims, "the JWT-SVID is malformed", nil)
		}
		return nil, err
	}
	id, err := spiffeid.FromString(c.Subject)
	if err != nil || id.TrustDomain() != v.td {
		return nil, fail(CodeSubject, "the JWT-SVID's subject is not in the trusted trust domain", err)
	}
	return &Identity{Source: v.cfg.Name, Kind: "spiffe", Issuer: v.td.IDString(), Subject: id.String(), TokenID: c.ID,
		IssuedAt: c.IssuedAt.Time(), Expiry: c.Expiry.Time(), Attributes: map[string]string{"svid": "jwt"}}, nil
}

// VerifyCertificate verifies an X.509-SVID chain (leaf first, as in
// tls.ConnectionState.PeerCertificates) against the trust domain's bundle.
func (v *SPIFFEVerifier) VerifyCertificate(_ context.Context, chain []*x509.Certificate) (*Identity, error) {
	if len(chain) == 0 {
		return nil, fail(CodeMissing, "a client certificate is required", nil)
	}
	now := nowOr(v.cfg.Now)
	id, _, err := x509svid.Verify(chain, v.cfg.Bundles, x509svid.WithTime(now))
	if err != nil {
		return nil, fail(CodeSVID, "the client certificate is not a valid X.509-SVID", err)
	}
	if id.TrustDomain() != v.td {
		return nil, fail(CodeSubject, "the X.509-SVID is not in the trusted trust domain", nil)
	}
	if !v.policy.subjectAllowed(id.String()) {
		return nil, fail(CodeSubject, "the X.509-SVID's SPIFFE ID is not allowed by the trust policy", nil)
	}
	leaf := chain[0]
	return &Identity{Source: v.cfg.Name, Kind: "spiffe", Issuer: v.td.IDString(), Subject: id.String(),
		TokenID: leaf.SerialNumber.String(), IssuedAt: leaf.NotBefore, Expiry: leaf.NotAfter,
		Attributes: map[string]string{"svid": "x509"}}, nil
}
