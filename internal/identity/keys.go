package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// SigningKey is one key of the gateway's key ring.
type SigningKey struct {
	ID        string
	Algorithm jose.SignatureAlgorithm // EdDSA or ES256
	Signer    crypto.Signer
	Created   time.Time
	// ActiveFrom is when the key starts signing. Until then it is published
	// (so every replica and relying party can verify with it) but unused.
	ActiveFrom time.Time
	// RetireAt, when not zero, is when the key stops verifying: the
	// activation of its successor plus the longest token lifetime.
	RetireAt time.Time
}

// Public returns the verification key.
func (k *SigningKey) Public() crypto.PublicKey { return k.Signer.Public() }

func (k *SigningKey) jwk(private bool) jose.JSONWebKey {
	var key any = k.Signer
	if !private {
		key = k.Signer.Public()
	}
	return jose.JSONWebKey{Key: key, KeyID: k.ID, Algorithm: string(k.Algorithm), Use: "sig"}
}

// KeyRingConfig configures a KeyRing.
type KeyRingConfig struct {
	// Dir holds one file per key (<kid>.json, mode 0600). Empty keeps keys
	// in memory only (tests, single-key setups).
	Dir string
	// Algorithm of new keys: "EdDSA" (default) or "ES256".
	Algorithm string
	// PublishDelay is how long a new key is published before it signs, so
	// that every replica has loaded it. Default 0 (sign at once); with
	// several replicas set it above ReloadInterval.
	PublishDelay time.Duration
	// Retain is how long a superseded key keeps verifying after its
	// successor activates: at least the longest token lifetime plus clock
	// skew. Default 1h5m.
	Retain time.Duration
	// RotateEvery rotates automatically in Run when the newest key is older.
	// 0 disables automatic rotation.
	RotateEvery time.Duration
	// ReloadInterval is how often Run rereads Dir (keys rotated by another
	// replica). Default 30s.
	ReloadInterval time.Duration
	Now            func() time.Time
}

// KeyRing holds the gateway's token signing keys: the current one, the
// next one (published, not yet signing) and superseded ones still
// verifying. Readers see an immutable snapshot; rotation swaps it, so
// tokens being verified while a rotation happens are unaffected.
type KeyRing struct {
	cfg  KeyRingConfig
	mu   sync.Mutex // serialises writers
	snap atomic.Pointer[[]*SigningKey]
	// lastMiss rate-limits reloads triggered by unknown kids.
	lastMiss atomic.Int64
}

// DefaultRetain is how long a superseded key still verifies when
// KeyRingConfig.Retain is unset: the longest token lifetime the gateway
// mints by default (one hour) and five minutes of clock skew.
const DefaultRetain = time.Hour + 5*time.Minute

// NewKeyRing loads the keys in cfg.Dir, creating a first key when there is
// none.
func NewKeyRing(cfg KeyRingConfig) (*KeyRing, error) {
	if cfg.Algorithm == "" {
		cfg.Algorithm = string(jose.EdDSA)
	}
	if cfg.Algorithm != string(jose.EdDSA) && cfg.Algorithm != string(jose.ES256) {
		return nil, fmt.Errorf("key ring: algorithm %q is not EdDSA or ES256", cfg.Algorithm)
	}
	if cfg.Retain <= 0 {
		cfg.Retain = DefaultRetain
	}
	r := &KeyRing{cfg: cfg}
	empty := []*SigningKey{}
	r.snap.Store(&empty)
	if err := r.Reload(); err != nil {
		return nil, err
	}
	if len(*r.snap.Load()) == 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		k, err := r.newKey(r.now())
		if err != nil {
			return nil, err
		}
		if err := r.save(k, true); err != nil {
			return nil, err
		}
		r.snap.Store(&[]*SigningKey{k})
	}
	return r, nil
}

// KeyRingFromKey returns an in-memory ring holding one Ed25519 key (the
// gateway's legacy signing_key_file).
func KeyRingFromKey(k *Key) *KeyRing {
	r := &KeyRing{cfg: KeyRingConfig{Algorithm: string(jose.EdDSA), Retain: time.Hour + 5*time.Minute}}
	r.snap.Store(&[]*SigningKey{{ID: k.ID, Algorithm: jose.EdDSA, Signer: k.Private}})
	return r
}

func (r *KeyRing) now() time.Time { return nowOr(r.cfg.Now) }

func (r *KeyRing) newKey(now time.Time) (*SigningKey, error) {
	var s crypto.Signer
	var err error
	alg := jose.SignatureAlgorithm(r.cfg.Algorithm)
	switch alg {
	case jose.ES256:
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		_, s, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("generating signing key: %w", err)
	}
	jwk := jose.JSONWebKey{Key: s.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &SigningKey{ID: fmt.Sprintf("%x", tp[:12]), Algorithm: alg, Signer: s, Created: now, ActiveFrom: now}, nil
}

type keyFile struct {
	Created    time.Time       `json:"created"`
	ActiveFrom time.Time       `json:"active_from"`
	RetireAt   time.Time       `json:"retire_at,omitzero"`
	JWK        json.RawMessage `json:"jwk"`
}

// save writes k to Dir (a no-op for in-memory rings). A new key is written
// with O_EXCL; an update goes through a temporary file and rename.
func (r *KeyRing) save(k *SigningKey, create bool) error {
	if r.cfg.Dir == "" {
		return nil
	}
	jwk, err := json.Marshal(k.jwk(true))
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(keyFile{Created: k.Created, ActiveFrom: k.ActiveFrom, RetireAt: k.RetireAt, JWK: jwk}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("creating key directory: %w", err)
	}
	path := filepath.Join(r.cfg.Dir, k.ID+".json")
	tmp := path
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if !create {
		tmp = path + ".tmp"
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(tmp, flags, 0o600)
	if err != nil {
		return fmt.Errorf("writing signing key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing signing key: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if !create {
		return os.Rename(tmp, path)
	}
	return nil
}

// Reload rereads Dir, picking up keys rotated by another replica.
func (r *KeyRing) Reload() error {
	if r.cfg.Dir == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ents, err := os.ReadDir(r.cfg.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading key directory: %w", err)
	}
	var keys []*SigningKey
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(r.cfg.Dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading signing key: %w", err)
		}
		var kf keyFile
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(b, &kf); err != nil {
			return fmt.Errorf("parsing signing key %s: %w", path, err)
		}
		if err := jwk.UnmarshalJSON(kf.JWK); err != nil {
			return fmt.Errorf("parsing signing key %s: %w", path, err)
		}
		s, ok := jwk.Key.(crypto.Signer)
		if !ok || jwk.IsPublic() {
			return fmt.Errorf("signing key %s holds no private key", path)
		}
		if ek, isEC := s.(*ecdsa.PrivateKey); isEC {
			s = ek
		}
		keys = append(keys, &SigningKey{ID: jwk.KeyID, Algorithm: jose.SignatureAlgorithm(jwk.Algorithm), Signer: s,
			Created: kf.Created, ActiveFrom: kf.ActiveFrom, RetireAt: kf.RetireAt})
	}
	sortKeys(keys)
	r.snap.Store(&keys)
	return nil
}

// sortKeys orders keys by activation, newest first.
func sortKeys(keys []*SigningKey) {
	slices.SortFunc(keys, func(a, b *SigningKey) int {
		if c := b.ActiveFrom.Compare(a.ActiveFrom); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
}

// Current returns the key that signs at now: the newest active one.
func (r *KeyRing) Current() (*SigningKey, error) {
	now := r.now()
	for _, k := range *r.snap.Load() {
		if !k.ActiveFrom.After(now) && (k.RetireAt.IsZero() || now.Before(k.RetireAt)) {
			return k, nil
		}
	}
	return nil, errors.New("key ring has no active signing key")
}

// Verifying returns the key with kid if it may verify at now.
func (r *KeyRing) Verifying(kid string) (*SigningKey, bool) {
	now := r.now()
	for _, k := range *r.snap.Load() {
		if k.ID == kid {
			return k, k.RetireAt.IsZero() || now.Before(k.RetireAt)
		}
	}
	return nil, false
}

// Lookup is Verifying, except that an unknown kid makes a ring backed by a
// directory reread it (at most once a second): a key another replica just
// created is found without waiting for ReloadInterval.
func (r *KeyRing) Lookup(kid string) (*SigningKey, bool) {
	k, ok := r.Verifying(kid)
	if k != nil || r.cfg.Dir == "" {
		return k, ok
	}
	now := time.Now().UnixNano()
	last := r.lastMiss.Load()
	if now-last < int64(time.Second) || !r.lastMiss.CompareAndSwap(last, now) {
		return nil, false
	}
	if r.Reload() != nil {
		return nil, false
	}
	return r.Verifying(kid)
}

// Rotate adds a new key that starts signing after PublishDelay; every older
// key retires Retain after that. It returns the new key.
func (r *KeyRing) Rotate() (*SigningKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	k, err := r.newKey(now)
	if err != nil {
		return nil, err
	}
	k.ActiveFrom = now.Add(r.cfg.PublishDelay)
	old := *r.snap.Load()
	// Activation times order the keys: the new key must come last even
	// when the clock did not move since the previous rotation.
	for _, o := range old {
		if !k.ActiveFrom.After(o.ActiveFrom) {
			k.ActiveFrom = o.ActiveFrom.Add(time.Nanosecond)
		}
	}
	if err := r.save(k, true); err != nil {
		return nil, err
	}
	keys := []*SigningKey{k}
	for _, o := range old {
		c := *o
		if retire := k.ActiveFrom.Add(r.cfg.Retain); c.RetireAt.IsZero() || c.RetireAt.After(retire) {
			c.RetireAt = retire
			if err := r.save(&c, false); err != nil {
				return nil, err
			}
		}
		keys = append(keys, &c)
	}
	sortKeys(keys)
	r.snap.Store(&keys)
	return k, nil
}

// Prune deletes keys retired before now from memory and Dir.
func (r *KeyRing) Prune() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var keep []*SigningKey
	for _, k := range *r.snap.Load() {
		if !k.RetireAt.IsZero() && !now.Before(k.RetireAt) {
			if r.cfg.Dir != "" {
				if err := os.Remove(filepath.Join(r.cfg.Dir, k.ID+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			continue
		}
		keep = append(keep, k)
	}
	r.snap.Store(&keep)
	return nil
}

// Run reloads the directory every ReloadInterval, rotates when the newest
// key is older than RotateEvery, and prunes retired keys. It returns when
// ctx ends.
func (r *KeyRing) Run(ctx context.Context) error {
	t := time.NewTicker(orDefault(r.cfg.ReloadInterval, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := r.Reload(); err != nil {
			return err
		}
		if r.cfg.RotateEvery > 0 {
			keys := *r.snap.Load()
			if len(keys) == 0 || r.now().Sub(keys[0].Created) >= r.cfg.RotateEvery {
				if _, err := r.Rotate(); err != nil {
					return err
				}
			}
		}
		if err := r.Prune(); err != nil {
			return err
		}
	}
}

// JWKS returns the public keys that verify now or will sign soon.
func (r *KeyRing) JWKS() jose.JSONWebKeySet {
	now := r.now()
	var set jose.JSONWebKeySet
	for _, k := range *r.snap.Load() {
		if k.RetireAt.IsZero() || now.Before(k.RetireAt) {
			set.Keys = append(set.Keys, k.jwk(false))
		}
	}
	return set
}

// ServeHTTP serves the JWKS (mount at GET /.well-known/jwks.json).
func (r *KeyRing) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b, err := json.Marshal(r.JWKS())
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	_, _ = w.Write(b)
}
