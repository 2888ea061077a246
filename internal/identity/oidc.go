package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// OIDCConfig configures a generic OIDC/JWT trust source.
type OIDCConfig struct {
	// Name is the trust source's name (referenced by federated
	// credentials).
	Name   string
	Policy TrustPolicy
	// Keys verifies signatures. Default: RemoteKeys discovered from
	// Policy.Issuer.
	Keys KeySource
	// Users marks a source whose tokens name human users (accepted only as
	// the subject_token of a delegation, never as an agent).
	Users bool
	// UserTags maps user tag names to the claims of users' tokens that
	// carry them (see Identity.Tags). Users only.
	UserTags map[string]string
	Now      func() time.Time
}

// OIDCVerifier verifies JWTs of one OIDC issuer (also EKS/IRSA and GitHub
// Actions style workload tokens).
type OIDCVerifier struct {
	cfg OIDCConfig
}

// NewOIDCVerifier checks cfg and returns a verifier. No network access
// happens here: keys are discovered on first use, so an issuer that is
// down fails requests (closed), not the gateway's start.
func NewOIDCVerifier(cfg OIDCConfig) (*OIDCVerifier, error) {
	if cfg.Name == "" {
		return nil, errors.New("oidc trust source needs a name")
	}
	if err := cfg.Policy.check(); err != nil {
		return nil, fmt.Errorf("trust source %s: %w", cfg.Name, err)
	}
	if cfg.Keys == nil {
		cfg.Keys = &RemoteKeys{Issuer: cfg.Policy.Issuer, Now: cfg.Now}
	}
	return &OIDCVerifier{cfg: cfg}, nil
}

// Name implements Verifier.
func (v *OIDCVerifier) Name() string { return v.cfg.Name }

// Issuer returns the exact issuer this source trusts.
func (v *OIDCVerifier) Issuer() string { return v.cfg.Policy.Issuer }

func nowOr(f func() time.Time) time.Time {
	if f != nil {
		return f()
	}
	return time.Now()
}

// Verify implements Verifier.
func (v *OIDCVerifier) Verify(ctx context.Context, token string) (*Identity, error) {
	c, err := verifyJWT(ctx, token, &v.cfg.Policy, v.cfg.Keys, nowOr(v.cfg.Now))
	if err != nil {
		return nil, err
	}
	id := &Identity{Source: v.cfg.Name, Kind: "oidc", Issuer: c.Issuer, Subject: c.Subject, User: v.cfg.Users,
		TokenID: c.ID, IssuedAt: c.IssuedAt.Time(), Expiry: c.Expiry.Time()}
	if act, ok := c.raw["act"]; ok {
		id.Act = parseAct(act)
	}
	if id.User {
		if err := c.userFacts(id, v.cfg.UserTags); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// parseAct flattens a nested RFC 8693 act claim into a chain, the current
// actor first. Depth is bounded.
func parseAct(b json.RawMessage) []Actor {
	var out []Actor
	for range 8 {
		var a struct {
			Sub string          `json:"sub"`
			Iss string          `json:"iss"`
			Act json.RawMessage `json:"act"`
		}
		if json.Unmarshal(b, &a) != nil || a.Sub == "" {
			break
		}
		out = append(out, Actor{Subject: a.Sub, Issuer: a.Iss})
		if len(a.Act) == 0 {
			break
		}
		b = a.Act
	}
	return out
}
