package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// EntraConfig configures a Microsoft Entra ID trust source: managed
// identities (system- and user-assigned), service principals (including
// those using workload identity federation) and, when Users is set,
// delegated user tokens. Entra Agent ID tokens are recognised and their
// blueprint recorded; they are never required.
type EntraConfig struct {
	Name string
	// Tenants lists the tenant ids whose tokens are accepted (at least
	// one). Each tenant has its own v1 and v2 issuer.
	Tenants []string
	// Audience is the gateway's audience as Entra writes it: the App ID URI
	// (v1 tokens, e.g. "api://gatehouse") or the application (client) id
	// (v2 tokens), depending on the app registration's
	// requestedAccessTokenVersion.
	Audience string
	// Versions lists accepted token versions, "1.0" and/or "2.0". Default
	// both.
	Versions []string
	// Authority is the login host. Default https://login.microsoftonline.com
	// (sovereign clouds use their own).
	Authority string
	// V1Issuer is the v1 issuer host. Default https://sts.windows.net.
	V1Issuer string
	// Users accepts delegated user tokens (as subject_token only).
	Users bool
	// UserTags maps user tag names to the claims of users' tokens that
	// carry them (see Identity.Tags). Users only.
	UserTags map[string]string
	// Algorithms default RS256.
	Algorithms []string
	MaxAge     time.Duration
	Skew       time.Duration
	// Keys overrides the per-tenant JWKS ({Authority}/{tenant}/discovery/v2.0/keys).
	Keys   KeySource
	Client *http.Client
	Now    func() time.Time
}

// EntraVerifier verifies Microsoft Entra access tokens. The principal is
// tenant id + object id (oid): xms_mirid is recorded when present but is
// absent for custom audiences and never identifies.
type EntraVerifier struct {
	cfg      EntraConfig
	policies map[string]*TrustPolicy // by issuer
	tenantOf map[string]string       // issuer → tenant
	verOf    map[string]string       // issuer → version
	keys     map[string]KeySource    // tenant → keys
}

// NewEntraVerifier checks cfg and returns a verifier.
func NewEntraVerifier(cfg EntraConfig) (*EntraVerifier, error) {
	if cfg.Name == "" {
		return nil, errors.New("entra trust source needs a name")
	}
	if len(cfg.Tenants) == 0 {
		return nil, fmt.Errorf("trust source %s: entra needs at least one tenant id", cfg.Name)
	}
	if cfg.Authority == "" {
		cfg.Authority = "https://login.microsoftonline.com"
	}
	if cfg.V1Issuer == "" {
		cfg.V1Issuer = "https://sts.windows.net"
	}
	cfg.Authority = strings.TrimSuffix(cfg.Authority, "/")
	cfg.V1Issuer = strings.TrimSuffix(cfg.V1Issuer, "/")
	if len(cfg.Versions) == 0 {
		cfg.Versions = []string{"1.0", "2.0"}
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{"RS256"}
	}
	v := &EntraVerifier{cfg: cfg, policies: map[string]*TrustPolicy{}, tenantOf: map[string]string{}, verOf: map[string]string{}, keys: map[string]KeySource{}}
	for _, t := range cfg.Tenants {
		if t == "" || strings.ContainsAny(t, "/?#") || t == "common" || t == "organizations" || t == "consumers" {
			return nil, fmt.Errorf("trust source %s: %q is not a tenant id", cfg.Name, t)
		}
		for _, ver := range cfg.Versions {
			var iss string
			switch ver {
			case "1.0":
				iss = cfg.V1Issuer + "/" + t + "/"
			case "2.0":
				iss = cfg.Authority + "/" + t + "/v2.0"
			default:
				return nil, fmt.Errorf("trust source %s: unknown token version %q", cfg.Name, ver)
			}
			p := &TrustPolicy{Issuer: iss, Audience: cfg.Audience, Algorithms: cfg.Algorithms, MaxAge: cfg.MaxAge, Skew: cfg.Skew}
			if err := p.check(); err != nil {
				return nil, fmt.Errorf("trust source %s: %w", cfg.Name, err)
			}
			v.policies[iss], v.tenantOf[iss], v.verOf[iss] = p, t, ver
		}
		if cfg.Keys != nil {
			v.keys[t] = cfg.Keys
		} else {
			v.keys[t] = &RemoteKeys{URL: cfg.Authority + "/" + t + "/discovery/v2.0/keys", Client: cfg.Client, Now: cfg.Now}
		}
	}
	return v, nil
}

// Name implements Verifier.
func (v *EntraVerifier) Name() string { return v.cfg.Name }

// Issuers returns every issuer this source accepts.
func (v *EntraVerifier) Issuers() []string {
	out := make([]string, 0, len(v.policies))
	for iss := range v.policies {
		out = append(out, iss)
	}
	slices.Sort(out)
	return out
}

// Verify implements Verifier.
func (v *EntraVerifier) Verify(ctx context.Context, token string) (*Identity, error) {
	if len(token) > MaxTokenBytes {
		return nil, fail(CodeTooLarge, "token too large", nil)
	}
	iss := rawString(peekClaims(token), "iss")
	p, ok := v.policies[iss]
	if !ok {
		return nil, fail(CodeIssuer, "the token's issuer is not an allowed Entra tenant", nil)
	}
	tenant := v.tenantOf[iss]
	c, err := verifyJWT(ctx, token, p, v.keys[tenant], nowOr(v.cfg.Now))
	if err != nil {
		return nil, err
	}
	if ver := c.str("ver"); ver != v.verOf[iss] {
		return nil, fail(CodeClaims, "the token's version does not match its issuer", nil)
	}
	if c.str("tid") != tenant {
		return nil, fail(CodeTenant, "the token's tenant does not match its issuer", nil)
	}
	oid := c.str("oid")
	if oid == "" {
		return nil, fail(CodeClaims, "the token has no object id (oid)", nil)
	}
	idtyp, scp := c.str("idtyp"), c.str("scp")
	user := idtyp == "user" || (idtyp == "" && scp != "")
	if user && !v.cfg.Users {
		return nil, fail(CodeSubject, "user tokens are not accepted from this trust source", nil)
	}
	id := &Identity{Source: v.cfg.Name, Kind: "entra", Issuer: iss, Subject: oid, Tenant: tenant, User: user,
		TokenID: c.str("uti"), IssuedAt: c.IssuedAt.Time(), Expiry: c.Expiry.Time(), Attributes: map[string]string{}}
	if id.TokenID == "" {
		id.TokenID = c.ID
	}
	app := c.str("azp")
	if app == "" {
		app = c.str("appid")
	}
	for k, val := range map[string]string{
		"app_id":          app,
		"idtyp":           idtyp,
		"token_version":   v.verOf[iss],
		"mi_resource_id":  c.str("xms_mirid"),
		"agent_blueprint": c.str("xms_par_app_azp"),
		"actor_facets":    c.str("xms_act_fct"),
		"subject_facets":  c.str("xms_sub_fct"),
		"upn":             c.str("upn"),
	} {
		if val != "" {
			id.Attributes[k] = val
		}
	}
	if id.Attributes["agent_blueprint"] != "" {
		id.Attributes["entra_agent_id"] = "true"
	}
	if user {
		if err := c.userFacts(id, v.cfg.UserTags); err != nil {
			return nil, err
		}
	}
	return id, nil
}
