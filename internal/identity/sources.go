package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Sources routes a presented credential to the one trust source that may
// verify it: by token type (AWS), by exact issuer (OIDC, Entra, Kubernetes)
// or by SPIFFE trust domain (JWT-SVIDs, which carry no issuer). A
// credential no source claims is refused; nothing is tried in turn.
//
// Verified JWTs of sources whose verdict cannot change before expiry (all
// but AWS, which is one-time, and Kubernetes with TokenReview) are cached
// for at most identityCacheTTL, so an agent exchanging its workload token
// for several task tokens pays for one signature check.
type Sources struct {
	byName   map[string]Verifier
	byIssuer map[string]Verifier
	byTD     map[string]*SPIFFEVerifier
	aws      []Verifier

	mu    sync.RWMutex
	cache map[string]cachedIdentity
	sweep time.Time
}

type cachedIdentity struct {
	id    *Identity
	until time.Time
}

// identityCacheTTL bounds how long a verified workload token is reused
// without a new check (so a trust policy's MaxAge may be exceeded by at
// most this much).
const identityCacheTTL = 30 * time.Second

// cacheable is implemented by verifiers whose results may be cached; it
// returns their clock.
type cacheable interface {
	cacheClock() (ok bool, now func() time.Time)
}

func (v *OIDCVerifier) cacheClock() (bool, func() time.Time)   { return true, v.cfg.Now }
func (v *EntraVerifier) cacheClock() (bool, func() time.Time)  { return true, v.cfg.Now }
func (v *SPIFFEVerifier) cacheClock() (bool, func() time.Time) { return true, v.cfg.Now }
func (v *KubernetesVerifier) cacheClock() (bool, func() time.Time) {
	return v.cfg.TokenReviewURL == "", v.cfg.Now
}

// NewSources indexes verifiers. Names and issuers must be unique.
func NewSources(vs ...Verifier) (*Sources, error) {
	s := &Sources{byName: map[string]Verifier{}, byIssuer: map[string]Verifier{}, byTD: map[string]*SPIFFEVerifier{}}
	addIssuer := func(iss string, v Verifier) error {
		if o, dup := s.byIssuer[iss]; dup {
			return fmt.Errorf("trust sources %s and %s both claim issuer %s", o.Name(), v.Name(), iss)
		}
		s.byIssuer[iss] = v
		return nil
	}
	for _, v := range vs {
		if _, dup := s.byName[v.Name()]; dup {
			return nil, fmt.Errorf("trust source %s is defined twice", v.Name())
		}
		s.byName[v.Name()] = v
		var err error
		switch v := v.(type) {
		case *OIDCVerifier:
			err = addIssuer(v.Issuer(), v)
		case *KubernetesVerifier:
			err = addIssuer(v.Issuer(), v)
		case *EntraVerifier:
			for _, iss := range v.Issuers() {
				if err = addIssuer(iss, v); err != nil {
					break
				}
			}
		case *SPIFFEVerifier:
			if o, dup := s.byTD[v.TrustDomain()]; dup {
				return nil, fmt.Errorf("trust sources %s and %s both claim trust domain %s", o.Name(), v.Name(), v.TrustDomain())
			}
			s.byTD[v.TrustDomain()] = v
		case *AWSVerifier:
			s.aws = append(s.aws, v)
		}
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Source returns the verifier named name.
func (s *Sources) Source(name string) (Verifier, bool) {
	v, ok := s.byName[name]
	return v, ok
}

// SPIFFE returns the SPIFFE verifier of a trust domain.
func (s *Sources) SPIFFE(td string) (*SPIFFEVerifier, bool) {
	v, ok := s.byTD[td]
	return v, ok
}

// Resolve picks the verifier for credential of tokenType; name, when not
// empty, must be the trust source's name.
func (s *Sources) Resolve(credential, tokenType, name string) (Verifier, error) {
	if tokenType == TokenTypeAWSSigV4 {
		var match []Verifier
		for _, v := range s.aws {
			if name == "" || v.Name() == name {
				match = append(match, v)
			}
		}
		if len(match) != 1 {
			return nil, fail(CodeSourceUnknown, "no single AWS trust source matches; name one with the source parameter", nil)
		}
		return match[0], nil
	}
	claims := peekClaims(credential)
	if claims == nil {
		if len(credential) > MaxTokenBytes {
			return nil, fail(CodeTooLarge, "token too large", nil)
		}
		return nil, fail(CodeMalformed, "the credential is not a JWT", nil)
	}
	var v Verifier
	if iss := rawString(claims, "iss"); iss != "" {
		v = s.byIssuer[iss]
	}
	if v == nil {
		if sub, ok := strings.CutPrefix(rawString(claims, "sub"), "spiffe://"); ok {
			td, _, _ := strings.Cut(sub, "/")
			if sv, ok := s.byTD[td]; ok {
				v = sv
			}
		}
	}
	if v == nil {
		return nil, fail(CodeIssuer, "the token's issuer is not a trusted source", nil)
	}
	if name != "" && v.Name() != name {
		return nil, fail(CodeSourceUnknown, "the token's issuer does not belong to the named trust source", nil)
	}
	return v, nil
}

// Verify resolves and verifies credential.
func (s *Sources) Verify(ctx context.Context, credential, tokenType, name string) (*Identity, error) {
	if tokenType != TokenTypeAWSSigV4 {
		s.mu.RLock()
		c, ok := s.cache[credential]
		s.mu.RUnlock()
		if ok && (name == "" || c.id.Source == name) {
			if v, found := s.byName[c.id.Source]; found {
				if _, clock := v.(cacheable).cacheClock(); nowOr(clock).Before(c.until) {
					id := *c.id
					return &id, nil
				}
			}
		}
	}
	v, err := s.Resolve(credential, tokenType, name)
	if err != nil {
		return nil, err
	}
	id, err := v.Verify(ctx, credential)
	if err != nil {
		return nil, err
	}
	if cv, ok := v.(cacheable); ok && tokenType != TokenTypeAWSSigV4 {
		if yes, clock := cv.cacheClock(); yes {
			s.remember(credential, id, nowOr(clock))
		}
	}
	return id, nil
}

func (s *Sources) remember(credential string, id *Identity, now time.Time) {
	until := now.Add(identityCacheTTL)
	if id.Expiry.Before(until) {
		until = id.Expiry
	}
	if !now.Before(until) {
		return
	}
	c := *id
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache == nil {
		s.cache = map[string]cachedIdentity{}
	}
	if len(s.cache) >= 1<<14 || now.After(s.sweep) {
		for k, e := range s.cache {
			if !now.Before(e.until) {
				delete(s.cache, k)
			}
		}
		s.sweep = now.Add(identityCacheTTL)
		if len(s.cache) >= 1<<14 {
			clear(s.cache)
		}
	}
	s.cache[credential] = cachedIdentity{id: &c, until: until}
}

// agentFor maps a verified workload identity to its agent and checks that
// the agent may act now.
func agentFor(ctx context.Context, reg Registry, id *Identity, now time.Time) (*Agent, error) {
	if id.User {
		return nil, fail(CodeSubject, "a user credential cannot authenticate an agent", nil)
	}
	a, err := reg.AgentByCredential(ctx, id.Source, id.Tenant, id.Subject)
	if errors.Is(err, ErrNoAgent) {
		return nil, fail(CodeNoCredential, "no agent is registered for this workload identity", nil)
	}
	if err != nil {
		return nil, fail(CodeAgentUnknown, "the agent registry is unavailable", err)
	}
	if err := a.Usable(now); err != nil {
		return nil, err
	}
	if !a.TenantAllowed(id.Tenant) {
		return nil, fail(CodeTenant, "the workload's tenant or account is not allowed for this agent", nil)
	}
	return a, nil
}
