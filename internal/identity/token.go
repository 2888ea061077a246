package identity

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

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
			_ = f.Close()
			return nil, fmt.Errorf("writing signing key: %w", err)
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
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

// Claims are the claims of a gateway token. Task-scoped tokens follow the
// IETF Transaction Tokens draft where it fits: txn (task id), purp (the
// granted scope), tctx (transaction context: servers, tools, limits),
// rctx.req_wl (the requesting workload) and the RFC 8693 act chain; cnf
// binds a DPoP key (RFC 9449) and client_id names the agent (RFC 9068).
type Claims struct {
	jwt.Claims
	// Task optionally names the task the token was minted for (legacy
	// tokens from Mint).
	Task     string        `json:"task,omitempty"`
	Txn      string        `json:"txn,omitempty"`
	ClientID string        `json:"client_id,omitempty"`
	Purpose  string        `json:"purp,omitempty"`
	Context  *TxnContext   `json:"tctx,omitempty"`
	Request  *ReqContext   `json:"rctx,omitempty"`
	Act      *ActClaim     `json:"act,omitempty"`
	Cnf      *Confirmation `json:"cnf,omitempty"`
	// Groups are the groups of the subject when it is a user (delegated
	// tokens), from the user's token (RFC 9068 §2.2.3.1).
	Groups []string `json:"groups,omitempty"`
	// UserTags are facts about that user from its token's claims, by tag
	// name (the user trust source's user_tags), for policy.
	UserTags map[string][]string `json:"user_tags,omitempty"`
}

// TxnContext is the tctx claim: what the task may do, and what the task
// is. The Transaction Tokens draft leaves tctx's members to the
// deployment; these are Gatehouse's. (Value and rate limits are not
// claims: the limits layer enforces them from configuration.)
type TxnContext struct {
	Servers []string `json:"servers,omitempty"`
	Tools   []string `json:"tools,omitempty"`
	// Purpose is the task's purpose, as the agent stated it at the token
	// endpoint (task_purpose).
	Purpose string `json:"purpose,omitempty"`
	// NotBefore and NotAfter bound the task's time window (NumericDate;
	// task_not_before, task_not_after).
	NotBefore *jwt.NumericDate `json:"not_before,omitempty"`
	NotAfter  *jwt.NumericDate `json:"not_after,omitempty"`
}

// numericDate returns t as a NumericDate, nil for the zero time.
func numericDate(t time.Time) *jwt.NumericDate {
	if t.IsZero() {
		return nil
	}
	return jwt.NewNumericDate(t)
}

// ReqContext is the rctx claim: where the request came from.
type ReqContext struct {
	// Workload is the verified workload identity (req_wl).
	Workload *Source `json:"req_wl,omitempty"`
	// User is the verified user identity, "<issuer>#<subject>".
	User string `json:"user,omitempty"`
}

// ActClaim is the RFC 8693 act claim, nested for chains.
type ActClaim struct {
	Subject string    `json:"sub"`
	Issuer  string    `json:"iss,omitempty"`
	Act     *ActClaim `json:"act,omitempty"`
}

// Confirmation is the cnf claim.
type Confirmation struct {
	JKT string `json:"jkt,omitempty"`
}

func actChain(a *ActClaim) []Actor {
	var out []Actor
	for ; a != nil && len(out) < 16; a = a.Act {
		out = append(out, Actor{Subject: a.Subject, Issuer: a.Issuer})
	}
	return out
}

func actClaim(chain []Actor) *ActClaim {
	var a *ActClaim
	for i := len(chain) - 1; i >= 0; i-- {
		a = &ActClaim{Subject: chain[i].Subject, Issuer: chain[i].Issuer, Act: a}
	}
	return a
}

// Minter mints gateway tokens.
type Minter struct {
	Key      *Key // used when Keys is nil
	Keys     *KeyRing
	Issuer   string
	Audience string
	MaxTTL   time.Duration
	Now      func() time.Time // nil = time.Now
}

func (m *Minter) ring() *KeyRing {
	if m.Keys != nil {
		return m.Keys
	}
	return KeyRingFromKey(m.Key)
}

// Mint returns a signed token for agent, valid for ttl (capped at MaxTTL).
func (m *Minter) Mint(agent string, ttl time.Duration) (string, time.Time, error) {
	if agent == "" {
		return "", time.Time{}, errors.New("minting token: empty agent")
	}
	return m.MintClaims(Claims{Claims: jwt.Claims{Subject: agent, Audience: jwt.Audience{m.Audience}}}, ttl)
}

// MintClaims signs c after setting iss, iat, nbf, exp and jti (and aud when
// empty).
func (m *Minter) MintClaims(c Claims, ttl time.Duration) (string, time.Time, error) {
	return m.mint(&c, ttl)
}

// mint signs *c, filling in the registered claims it sets.
func (m *Minter) mint(c *Claims, ttl time.Duration) (string, time.Time, error) {
	if c.Subject == "" {
		return "", time.Time{}, errors.New("minting token: empty subject")
	}
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("minting token: ttl %v is not positive", ttl)
	}
	if m.MaxTTL > 0 && ttl > m.MaxTTL {
		return "", time.Time{}, fmt.Errorf("minting token: ttl %v exceeds the maximum %v", ttl, m.MaxTTL)
	}
	now := nowOr(m.Now)
	key, err := m.ring().Current()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("minting token: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: key.Algorithm, Key: key.Signer},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), key.ID))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("minting token: %w", err)
	}
	exp := now.Add(ttl).Truncate(time.Second)
	c.Issuer = m.Issuer
	if len(c.Audience) == 0 {
		c.Audience = jwt.Audience{m.Audience}
	}
	c.IssuedAt, c.NotBefore, c.Expiry = jwt.NewNumericDate(now), jwt.NewNumericDate(now), jwt.NewNumericDate(exp)
	c.ID = randomID()
	// Marshal once and sign the bytes: jwt.Signed(...).Claims would
	// marshal, re-parse and marshal again.
	payload, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("minting token: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("minting token: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("minting token: %w", err)
	}
	return tok, exp, nil
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// TokenVerifier verifies gateway tokens and resolves their agent.
type TokenVerifier struct {
	Keys     []*Key   // accepted keys (current and previous), when Ring is nil
	Ring     *KeyRing // the key ring, when set
	Issuer   string
	Audience string
	// Audiences are further accepted audiences: the per-resource audiences
	// task tokens are minted for. Authenticator checks that the audience
	// matches the resource the request is for.
	Audiences []string
	Skew      time.Duration // ≤ 60s
	MaxTTL    time.Duration // tokens claiming a longer life are refused
	Registry  Registry
	Now       func() time.Time

	cacheMu sync.RWMutex
	cache   map[string]*verified
	sweep   time.Time
}

// verified is a token whose signature and claims were checked; everything
// that can change (the agent's status) is still checked on every use.
type verified struct {
	exp    time.Time
	kid    string
	claims *Claims
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
	now := nowOr(v.Now)
	v.cacheMu.RLock()
	c, hit := v.cache[token]
	v.cacheMu.RUnlock()
	if hit && now.After(c.exp.Add(v.Skew)) {
		return nil, fail(CodeExpired, "the token has expired", nil)
	}
	if hit && v.Ring != nil {
		// A retired key makes its tokens useless even when cached.
		if _, ok := v.Ring.Verifying(c.kid); !ok {
			hit = false
		}
	}
	if !hit {
		var err error
		c, err = v.verifySignature(token, now)
		if err != nil {
			return nil, err
		}
		v.remember(token, c, now)
	}
	agentID := c.claims.ClientID
	if agentID == "" {
		agentID = c.claims.Subject
	}
	agent, err := v.Registry.Agent(ctx, agentID)
	if errors.Is(err, ErrNoAgent) {
		return nil, fail(CodeAgentUnknown, "the token's agent is not registered", nil)
	}
	if err != nil {
		return nil, fail(CodeAgentUnknown, "the agent registry is unavailable", err)
	}
	if err := agent.Usable(now); err != nil {
		return nil, err
	}
	cl := c.claims
	p := &Principal{Agent: agent, Subject: cl.Subject, Issuer: v.Issuer, TokenID: cl.ID, Expiry: c.exp, Method: "gatehouse-jwt",
		Task: cl.Txn, Audience: cl.Audience, Act: actChain(cl.Act)}
	if p.Task == "" {
		p.Task = cl.Task
	}
	if cl.Context != nil {
		p.Servers, p.Tools = cl.Context.Servers, cl.Context.Tools
		p.TaskPurpose = cl.Context.Purpose
		if nb := cl.Context.NotBefore; nb != nil {
			p.TaskNotBefore = nb.Time()
		}
		if na := cl.Context.NotAfter; na != nil {
			p.TaskNotAfter = na.Time()
		}
	}
	if cl.Request != nil {
		p.Source, p.User = cl.Request.Workload, cl.Request.User
		if p.User != "" {
			p.UserGroups, p.UserTags = cl.Groups, cl.UserTags
		}
		if p.Source != nil && !agent.TenantAllowed(p.Source.Tenant) {
			return nil, fail(CodeTenant, "the token's source tenant is no longer allowed for the agent", nil)
		}
	}
	if cl.Cnf != nil {
		p.Confirmation = cl.Cnf.JKT
	}
	return p, nil
}

// isCached reports whether token was verified before and is in the cache.
func (v *TokenVerifier) isCached(token string) bool {
	v.cacheMu.RLock()
	_, ok := v.cache[token]
	v.cacheMu.RUnlock()
	return ok
}

func (v *TokenVerifier) remember(token string, c *verified, now time.Time) {
	v.cacheMu.Lock()
	defer v.cacheMu.Unlock()
	if v.cache == nil {
		v.cache = make(map[string]*verified)
	}
	if len(v.cache) >= maxCache || now.After(v.sweep) {
		for k, e := range v.cache {
			if now.After(e.exp.Add(v.Skew)) {
				delete(v.cache, k)
			}
		}
		v.sweep = now.Add(time.Minute)
		if len(v.cache) >= maxCache {
			clear(v.cache)
		}
	}
	v.cache[token] = c
}

func (v *TokenVerifier) key(kid string) (crypto.PublicKey, bool) {
	if v.Ring != nil {
		k, ok := v.Ring.Lookup(kid)
		if !ok {
			return nil, false
		}
		return k.Public(), true
	}
	for _, k := range v.Keys {
		if k.ID == kid {
			return k.Public(), true
		}
	}
	return nil, false
}

var gatewayAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256}

func (v *TokenVerifier) verifySignature(token string, now time.Time) (*verified, error) {
	tok, err := jwt.ParseSigned(token, gatewayAlgs)
	if err != nil {
		if alg := headerAlg(token); alg != "" && alg != string(jose.EdDSA) && alg != string(jose.ES256) {
			return nil, fail(CodeAlgorithm, "only EdDSA and ES256 tokens are accepted", err)
		}
		return nil, fail(CodeMalformed, "the token is not a valid JWT", err)
	}
	if len(tok.Headers) != 1 {
		return nil, fail(CodeMalformed, "the token must have exactly one signature", nil)
	}
	key, ok := v.key(tok.Headers[0].KeyID)
	if !ok {
		return nil, fail(CodeUnknownKey, "the token's signing key is not known", nil)
	}
	var c Claims
	if err := tok.Claims(key, &c); err != nil {
		return nil, fail(CodeSignature, "the token's signature does not verify", err)
	}
	if c.Expiry == nil || c.IssuedAt == nil || c.Subject == "" {
		return nil, fail(CodeMalformed, "the token lacks exp, iat or sub", nil)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: v.Issuer, Time: now}, v.Skew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return nil, fail(CodeExpired, "the token has expired", err)
		case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
			return nil, fail(CodeNotYetValid, "the token is not valid yet", err)
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return nil, fail(CodeIssuer, "the token's issuer is not trusted", err)
		}
		return nil, fail(CodeMalformed, "the token's claims are invalid", err)
	}
	audOK := c.Audience.Contains(v.Audience)
	for _, a := range v.Audiences {
		audOK = audOK || c.Audience.Contains(a)
	}
	if !audOK {
		return nil, fail(CodeAudience, "the token is not for this gateway", nil)
	}
	if v.MaxTTL > 0 && c.Expiry.Time().Sub(c.IssuedAt.Time()) > v.MaxTTL {
		return nil, fail(CodeLifetime, "the token's lifetime exceeds the maximum", nil)
	}
	return &verified{exp: c.Expiry.Time(), kid: tok.Headers[0].KeyID, claims: &c}, nil
}
