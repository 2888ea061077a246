// Package identity answers "who is acting?": it holds the agent registry,
// verifies the credentials agents present, and mints the gateway's own
// short-lived agent tokens.
//
// Gateway tokens are JWTs signed with Ed25519 (alg EdDSA) by a key the
// gateway keeps in its data directory. A token names the agent in sub, the
// gateway's audience in aud, and carries iat, nbf, exp and a unique jti.
// Verification accepts only EdDSA with a known kid, the configured issuer
// and audience, and at most the configured clock skew (≤ 60 s).
//
// Every verification failure is an *Error with a stable Code that the
// transport maps to HTTP 401; nothing on this path turns an error into
// success. Verified tokens are cached by their SHA-256 until they expire, so
// a repeated token costs a map lookup; the agent's status is checked on every
// request, so disabling an agent takes effect at once.
package identity

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxTokenBytes bounds the size of a presented token.
const MaxTokenBytes = 8 << 10

// Error codes.
const (
	CodeMissing       = "token_missing"
	CodeMalformed     = "token_malformed"
	CodeTooLarge      = "token_too_large"
	CodeAlgorithm     = "token_algorithm"
	CodeUnknownKey    = "token_unknown_key"
	CodeSignature     = "token_signature"
	CodeExpired       = "token_expired"
	CodeNotYetValid   = "token_not_yet_valid"
	CodeIssuer        = "token_issuer"
	CodeAudience      = "token_audience"
	CodeLifetime      = "token_lifetime"
	CodeAgentUnknown  = "agent_unknown"
	CodeAgentDisabled = "agent_disabled"
)

// Error is a verification failure. Code is stable and public; Message is a
// deliberately public explanation.
type Error struct {
	Code    string
	Message string
	Err     error // internal detail, for logs only
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// PublicCode returns the code shown to the agent.
func (e *Error) PublicCode() string { return e.Code }

// PublicMessage returns the message shown to the agent.
func (e *Error) PublicMessage() string { return e.Message }

func fail(code, msg string, err error) *Error { return &Error{Code: code, Message: msg, Err: err} }

// Principal is an authenticated agent.
type Principal struct {
	Agent   *Agent
	Subject string
	Issuer  string
	TokenID string
	Expiry  time.Time
	// Method names how the agent authenticated ("gatehouse-jwt",
	// "anonymous").
	Method string
}

// Agent is a registered agent.
type Agent struct {
	ID      string
	Name    string
	Owner   string
	Servers []string
	Enabled bool
}

// MayUse reports whether the agent is allowed to use server.
func (a *Agent) MayUse(server string) bool {
	for _, s := range a.Servers {
		if s == server {
			return true
		}
	}
	return false
}

// Registry looks agents up. Implementations must be safe for concurrent use
// and must reflect status changes at once.
type Registry interface {
	Agent(ctx context.Context, id string) (*Agent, error)
}

// ErrNoAgent is returned by a Registry for an unknown agent.
var ErrNoAgent = errors.New("no such agent")

// StaticRegistry is a Registry over a fixed set of agents.
type StaticRegistry struct {
	mu     sync.RWMutex
	agents map[string]*Agent
}

// NewStaticRegistry returns a registry holding agents.
func NewStaticRegistry(agents []*Agent) *StaticRegistry {
	r := &StaticRegistry{agents: make(map[string]*Agent, len(agents))}
	for _, a := range agents {
		r.agents[a.ID] = a
	}
	return r
}

// Agent implements Registry.
func (r *StaticRegistry) Agent(_ context.Context, id string) (*Agent, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.agents[id]
	if !ok {
		return nil, ErrNoAgent
	}
	c := *a
	return &c, nil
}

// SetEnabled enables or disables an agent.
func (r *StaticRegistry) SetEnabled(id string, enabled bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[id]
	if !ok {
		return ErrNoAgent
	}
	c := *a
	c.Enabled = enabled
	r.agents[id] = &c
	return nil
}

// Key is the gateway's token signing key.
type Key struct {
	ID      string
	Private ed25519.PrivateKey
}

// Public returns the verification key.
func (k *Key) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// LoadOrCreateKey reads an Ed25519 JWK from path, creating it (and its
// directory, mode 0700; file mode 0600) when missing.
func LoadOrCreateKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		k := &Key{Private: priv}
		k.ID = thumbprint(k.Public())
		jwk := jose.JSONWebKey{Key: priv, KeyID: k.ID, Algorithm: string(jose.EdDSA), Use: "sig"}
		out, err := jwk.MarshalJSON()
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("creating key directory: %w", err)
		}
		// O_EXCL: two processes starting at once must not overwrite each
		// other's key.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return LoadOrCreateKey(path)
		}
		if err != nil {
			return nil, fmt.Errorf("writing signing key: %w", err)
		}
		if _, err := f.Write(out); err != nil {
			f.Close()
			return nil, fmt.Errorf("writing signing key: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("writing signing key: %w", err)
		}
		return k, f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("parsing signing key %s: %w", path, err)
	}
	priv, ok := jwk.Key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s is not an Ed25519 private key", path)
	}
	id := jwk.KeyID
	if id == "" {
		id = thumbprint(priv.Public().(ed25519.PublicKey))
	}
	return &Key{ID: id, Private: priv}, nil
}

func thumbprint(pub ed25519.PublicKey) string {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		sum := sha256.Sum256(pub)
		return hex.EncodeToString(sum[:8])
	}
	return hex.EncodeToString(tp[:8])
}

// Claims are the claims of a gateway token.
type Claims struct {
	jwt.Claims
	// Task optionally names the task the token was minted for.
	Task string `json:"task,omitempty"`
}

// Minter mints gateway tokens.
type Minter struct {
	Key      *Key
	Issuer   string
	Audience string
	MaxTTL   time.Duration
	Now      func() time.Time // nil = time.Now
}

// Mint returns a signed token for agent, valid for ttl (capped at MaxTTL).
func (m *Minter) Mint(agent string, ttl time.Duration) (string, time.Time, error) {
	if agent == "" {
		return "", time.Time{}, errors.New("minting token: empty agent")
	}
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("minting token: ttl %v is not positive", ttl)
	}
	if m.MaxTTL > 0 && ttl > m.MaxTTL {
		return "", time.Time{}, fmt.Errorf("minting token: ttl %v exceeds the maximum %v", ttl, m.MaxTTL)
	}
	now := time.Now()
	if m.Now != nil {
		now = m.Now()
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: m.Key.Private},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), m.Key.ID))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("minting token: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", time.Time{}, err
	}
	exp := now.Add(ttl).Truncate(time.Second)
	c := Claims{Claims: jwt.Claims{
		Issuer:    m.Issuer,
		Subject:   agent,
		Audience:  jwt.Audience{m.Audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(exp),
		ID:        hex.EncodeToString(jti),
	}}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("minting token: %w", err)
	}
	return tok, exp, nil
}

// TokenVerifier verifies gateway tokens and resolves their agent.
type TokenVerifier struct {
	Keys     []*Key // accepted keys (current and previous)
	Issuer   string
	Audience string
	Skew     time.Duration // ≤ 60s
	MaxTTL   time.Duration // tokens claiming a longer life are refused
	Registry Registry
	Now      func() time.Time

	cacheMu sync.RWMutex
	cache   map[[32]byte]cached
	sweep   time.Time
}

type cached struct {
	sub, jti string
	exp      time.Time
}

const maxCache = 1 << 16

// Verify checks token and returns the principal.
func (v *TokenVerifier) Verify(ctx context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fail(CodeMissing, "a bearer token is required", nil)
	}
	if len(token) > MaxTokenBytes {
		return nil, fail(CodeTooLarge, "token too large", nil)
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	sum := sha256.Sum256([]byte(token))
	v.cacheMu.RLock()
	c, hit := v.cache[sum]
	v.cacheMu.RUnlock()
	if hit && now.After(c.exp.Add(v.Skew)) {
		hit = false
	}
	if !hit {
		var err error
		c, err = v.verifySignature(token, now)
		if err != nil {
			return nil, err
		}
		v.remember(sum, c, now)
	}
	agent, err := v.Registry.Agent(ctx, c.sub)
	if errors.Is(err, ErrNoAgent) {
		return nil, fail(CodeAgentUnknown, "the token's agent is not registered", nil)
	}
	if err != nil {
		return nil, fail(CodeAgentUnknown, "the agent registry is unavailable", err)
	}
	if !agent.Enabled {
		return nil, fail(CodeAgentDisabled, "the agent is disabled", nil)
	}
	return &Principal{Agent: agent, Subject: c.sub, Issuer: v.Issuer, TokenID: c.jti, Expiry: c.exp, Method: "gatehouse-jwt"}, nil
}

func (v *TokenVerifier) remember(sum [32]byte, c cached, now time.Time) {
	v.cacheMu.Lock()
	defer v.cacheMu.Unlock()
	if v.cache == nil {
		v.cache = make(map[[32]byte]cached)
	}
	if len(v.cache) >= maxCache || now.After(v.sweep) {
		for k, e := range v.cache {
			if now.After(e.exp) {
				delete(v.cache, k)
			}
		}
		v.sweep = now.Add(time.Minute)
		if len(v.cache) >= maxCache {
			clear(v.cache)
		}
	}
	v.cache[sum] = c
}

func (v *TokenVerifier) verifySignature(token string, now time.Time) (cached, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		if alg := headerAlg(token); alg != "" && alg != string(jose.EdDSA) {
			return cached{}, fail(CodeAlgorithm, "only EdDSA tokens are accepted", err)
		}
		return cached{}, fail(CodeMalformed, "the token is not a valid JWT", err)
	}
	if len(tok.Headers) != 1 {
		return cached{}, fail(CodeMalformed, "the token must have exactly one signature", nil)
	}
	kid := tok.Headers[0].KeyID
	var key *Key
	for _, k := range v.Keys {
		if k.ID == kid {
			key = k
			break
		}
	}
	if key == nil {
		return cached{}, fail(CodeUnknownKey, "the token's signing key is not known", nil)
	}
	var c Claims
	if err := tok.Claims(key.Public(), &c); err != nil {
		return cached{}, fail(CodeSignature, "the token's signature does not verify", err)
	}
	if c.Expiry == nil || c.IssuedAt == nil || c.Subject == "" {
		return cached{}, fail(CodeMalformed, "the token lacks exp, iat or sub", nil)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: v.Issuer, AnyAudience: jwt.Audience{v.Audience}, Time: now}, v.Skew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return cached{}, fail(CodeExpired, "the token has expired", err)
		case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
			return cached{}, fail(CodeNotYetValid, "the token is not valid yet", err)
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return cached{}, fail(CodeIssuer, "the token's issuer is not trusted", err)
		case errors.Is(err, jwt.ErrInvalidAudience):
			return cached{}, fail(CodeAudience, "the token is not for this gateway", err)
		}
		return cached{}, fail(CodeMalformed, "the token's claims are invalid", err)
	}
	if v.MaxTTL > 0 && c.Expiry.Time().Sub(c.IssuedAt.Time()) > v.MaxTTL {
		return cached{}, fail(CodeLifetime, "the token's lifetime exceeds the maximum", nil)
	}
	return cached{sub: c.Subject, jti: c.ID, exp: c.Expiry.Time()}, nil
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
