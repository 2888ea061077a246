package identity

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ErrReplay is returned by a ReplayCache for an id already used.
var ErrReplay = errors.New("already used")

// ReplayCache remembers one-time identifiers (DPoP proof jti, gateway token
// jti of side-effecting calls) until they expire. Use must be atomic: of
// concurrent calls with one id exactly one succeeds. Implementations shared
// by replicas must be durable across them; errors other than ErrReplay mean
// the cache cannot answer and callers deny.
type ReplayCache interface {
	Use(ctx context.Context, id string, until time.Time) error
}

// MemoryReplayCache is a process-local ReplayCache.
type MemoryReplayCache struct {
	Now func() time.Time

	mu    sync.Mutex
	seen  map[string]time.Time
	sweep time.Time
}

// Use implements ReplayCache.
func (c *MemoryReplayCache) Use(_ context.Context, id string, until time.Time) error {
	now := nowOr(c.Now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if now.After(c.sweep) {
		for k, u := range c.seen {
			if now.After(u) {
				delete(c.seen, k)
			}
		}
		c.sweep = now.Add(30 * time.Second)
	}
	if u, ok := c.seen[id]; ok && !now.After(u) {
		return ErrReplay
	}
	c.seen[id] = until
	return nil
}

// UseToken consumes the principal's token id in cache, so that the token
// authorises at most one side-effecting call. The gateway calls it for
// calls to tools labelled destructive, financial or external_sink when the
// deployment asks for single-use task tokens.
func UseToken(ctx context.Context, cache ReplayCache, p *Principal) error {
	if p.Method != "gatehouse-jwt" {
		return fail(CodeReplayed, "this call needs a task token from the token endpoint", nil)
	}
	if p.TokenID == "" {
		return fail(CodeReplayed, "the token has no id and cannot be used for this call", nil)
	}
	err := cache.Use(ctx, "jti:"+p.Issuer+"\x00"+p.TokenID, p.Expiry.Add(time.Minute))
	if errors.Is(err, ErrReplay) {
		return fail(CodeReplayed, "the token was already used for a call", nil)
	}
	if err != nil {
		return fail(CodeReplayed, "the replay cache is unavailable", err)
	}
	return nil
}

// DPoPVerifier checks DPoP proofs (RFC 9449).
type DPoPVerifier struct {
	// Algorithms accepted for proofs. Default ES256, EdDSA, RS256, PS256.
	Algorithms []string
	// MaxAge bounds now - iat. Default 60s; proofs dated more than 5 s in
	// the future are refused.
	MaxAge time.Duration
	// Replay remembers proof jtis. Default a MemoryReplayCache.
	Replay ReplayCache
	Now    func() time.Time

	once sync.Once
}

func (d *DPoPVerifier) init() {
	d.once.Do(func() {
		if len(d.Algorithms) == 0 {
			d.Algorithms = []string{"ES256", "EdDSA", "RS256", "PS256"}
		}
		if d.Replay == nil {
			d.Replay = &MemoryReplayCache{Now: d.Now}
		}
	})
}

// Verify checks proof for a request with method to uri (scheme, host and
// path; query and fragment are ignored). When accessToken is not empty the
// proof must carry its hash (ath). It returns the RFC 7638 thumbprint of
// the proof's key.
func (d *DPoPVerifier) Verify(ctx context.Context, proof, method, uri, accessToken string) (string, error) {
	d.init()
	if proof == "" {
		return "", fail(CodeDPoPMissing, "a DPoP proof is required", nil)
	}
	if len(proof) > MaxTokenBytes {
		return "", fail(CodeDPoPInvalid, "the DPoP proof is too large", nil)
	}
	algs := make([]jose.SignatureAlgorithm, len(d.Algorithms))
	for i, a := range d.Algorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	tok, err := jwt.ParseSigned(proof, algs)
	if err != nil {
		return "", fail(CodeDPoPInvalid, "the DPoP proof is not a valid JWT with an accepted algorithm", err)
	}
	if len(tok.Headers) != 1 {
		return "", fail(CodeDPoPInvalid, "the DPoP proof must have exactly one signature", nil)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "dpop+jwt" {
		return "", fail(CodeDPoPInvalid, "the DPoP proof's typ must be dpop+jwt", nil)
	}
	if h.JSONWebKey == nil || !h.JSONWebKey.IsPublic() || !h.JSONWebKey.Valid() {
		return "", fail(CodeDPoPInvalid, "the DPoP proof must carry a public jwk", nil)
	}
	var c struct {
		jwt.Claims
		HTM string `json:"htm"`
		HTU string `json:"htu"`
		ATH string `json:"ath"`
	}
	if err := tok.Claims(h.JSONWebKey.Key, &c); err != nil {
		return "", fail(CodeDPoPInvalid, "the DPoP proof's signature does not verify", err)
	}
	now := nowOr(d.Now)
	if c.ID == "" || c.IssuedAt == nil {
		return "", fail(CodeDPoPInvalid, "the DPoP proof lacks jti or iat", nil)
	}
	iat := c.IssuedAt.Time()
	if now.Sub(iat) > orDefault(d.MaxAge, time.Minute) || iat.Sub(now) > 5*time.Second {
		return "", fail(CodeDPoPInvalid, "the DPoP proof is not fresh", nil)
	}
	if c.HTM != method {
		return "", fail(CodeDPoPInvalid, "the DPoP proof is for another method", nil)
	}
	if normalHTU(c.HTU) == "" || normalHTU(c.HTU) != normalHTU(uri) {
		return "", fail(CodeDPoPInvalid, "the DPoP proof is for another URL", nil)
	}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		if c.ATH != base64.RawURLEncoding.EncodeToString(sum[:]) {
			return "", fail(CodeDPoPInvalid, "the DPoP proof is not for this access token", nil)
		}
	}
	tp, err := h.JSONWebKey.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fail(CodeDPoPInvalid, "the DPoP proof's key has no thumbprint", err)
	}
	jkt := base64.RawURLEncoding.EncodeToString(tp)
	err = d.Replay.Use(ctx, "dpop:"+jkt+"\x00"+c.ID, iat.Add(orDefault(d.MaxAge, time.Minute)+10*time.Second))
	if errors.Is(err, ErrReplay) {
		return "", fail(CodeDPoPReplayed, "the DPoP proof was already used", nil)
	}
	if err != nil {
		return "", fail(CodeDPoPInvalid, "the DPoP replay cache is unavailable", err)
	}
	return jkt, nil
}

// normalHTU lowercases scheme and host and drops query and fragment.
func normalHTU(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return ""
	}
	host := strings.ToLower(u.Host)
	if (u.Scheme == "https" && strings.HasSuffix(host, ":443")) || (u.Scheme == "http" && strings.HasSuffix(host, ":80")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	return strings.ToLower(u.Scheme) + "://" + host + p
}
