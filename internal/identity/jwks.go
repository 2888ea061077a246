package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a fetched JWKS or discovery document.
const maxJWKSBytes = 512 << 10

// RemoteKeys is a KeySource over a remote JWKS: it caches the key set,
// refreshes it after MaxAge, and refetches on an unknown kid at most once
// per Cooldown, so a flood of tokens with made-up kids costs one fetch per
// Cooldown. A key set that cannot be refreshed is served until MaxStale,
// then every lookup fails closed.
type RemoteKeys struct {
	// URL is the JWKS URL. When empty, it is discovered from Issuer's
	// /.well-known/openid-configuration (go-oidc discovery, which also
	// checks that the document names the same issuer).
	URL    string
	Issuer string
	// Client fetches keys. Default: a client with a 10 s timeout that does
	// not follow redirects to other hosts.
	Client *http.Client
	// MaxAge is how long a fetched key set is used without refresh.
	// Default 1h.
	MaxAge time.Duration
	// Cooldown is the minimum time between fetches. Default 30s.
	Cooldown time.Duration
	// MaxStale is how long a key set is used when refreshing fails.
	// Default 24h.
	MaxStale time.Duration
	Now      func() time.Time

	mu       sync.Mutex
	keys     map[string]jose.JSONWebKey
	fetched  time.Time // last successful fetch
	tried    time.Time // last attempt
	inflight chan struct{}
	lastErr  error
	jwksURL  string
}

func (k *RemoteKeys) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Key implements KeySource.
func (k *RemoteKeys) Key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	for attempt := 0; ; attempt++ {
		k.mu.Lock()
		now := k.now()
		key, known := k.keys[kid]
		fresh := !k.fetched.IsZero() && now.Sub(k.fetched) < orDefault(k.MaxAge, time.Hour)
		stale := k.fetched.IsZero() || now.Sub(k.fetched) > orDefault(k.MaxStale, 24*time.Hour)
		cooling := !k.tried.IsZero() && now.Sub(k.tried) < orDefault(k.Cooldown, 30*time.Second)
		if known && (fresh || (!stale && cooling)) {
			k.mu.Unlock()
			return &key, nil
		}
		if attempt > 0 || cooling {
			err := k.lastErr
			k.mu.Unlock()
			switch {
			case known && !stale:
				return &key, nil
			case k.fetched.IsZero() || stale:
				return nil, fail(CodeKeysUnavail, "the issuer's signing keys are unavailable", err)
			}
			return nil, fail(CodeUnknownKey, "the token's signing key is not known", nil)
		}
		if k.inflight != nil {
			ch := k.inflight
			k.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, fail(CodeKeysUnavail, "the issuer's signing keys are unavailable", ctx.Err())
			}
			continue
		}
		ch := make(chan struct{})
		k.inflight = ch
		k.tried = now
		k.mu.Unlock()

		keys, err := k.fetch(ctx)
		k.mu.Lock()
		if err == nil {
			k.keys, k.fetched, k.lastErr = keys, k.now(), nil
		} else {
			k.lastErr = err
		}
		k.inflight = nil
		close(ch)
		k.mu.Unlock()
	}
}

func (k *RemoteKeys) client() *http.Client {
	if k.Client != nil {
		return k.Client
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (k *RemoteKeys) fetch(ctx context.Context) (map[string]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	u := k.URL
	if u == "" {
		k.mu.Lock()
		u = k.jwksURL
		k.mu.Unlock()
	}
	if u == "" {
		if k.Issuer == "" {
			return nil, errors.New("remote keys need a URL or an issuer")
		}
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, k.client()), k.Issuer)
		if err != nil {
			return nil, fmt.Errorf("discovering %s: %w", k.Issuer, err)
		}
		var meta struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
			return nil, fmt.Errorf("discovery document of %s has no jwks_uri", k.Issuer)
		}
		u = meta.JWKSURI
		k.mu.Lock()
		k.jwksURL = u
		k.mu.Unlock()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: HTTP %d", u, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", u, err)
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("fetching %s: key set larger than %d bytes", u, maxJWKSBytes)
	}
	return parseJWKS(b)
}

// parseJWKS decodes a key set, keeping public signature keys with a kid.
func parseJWKS(b []byte) (map[string]jose.JSONWebKey, error) {
	// Decode key by key so one unsupported key (e.g. an x5c-only entry)
	// does not reject the whole set.
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("parsing key set: %w", err)
	}
	out := make(map[string]jose.JSONWebKey, len(raw.Keys))
	for _, r := range raw.Keys {
		var k jose.JSONWebKey
		if k.UnmarshalJSON(r) != nil || !k.Valid() || !k.IsPublic() || k.KeyID == "" {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		out[k.KeyID] = k
	}
	if len(out) == 0 {
		return nil, errors.New("key set holds no usable signature key")
	}
	return out, nil
}

// StaticKeys is a KeySource over a fixed key set (offline verification,
// e.g. a Kubernetes cluster's JWKS saved to a file).
type StaticKeys map[string]jose.JSONWebKey

// LoadStaticKeys reads a JWKS file.
func LoadStaticKeys(path string) (StaticKeys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key set: %w", err)
	}
	m, err := parseJWKS(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return StaticKeys(m), nil
}

// Key implements KeySource.
func (s StaticKeys) Key(_ context.Context, kid string) (*jose.JSONWebKey, error) {
	k, ok := s[kid]
	if !ok {
		return nil, fail(CodeUnknownKey, "the token's signing key is not known", nil)
	}
	return &k, nil
}
