package identity_test

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
)

func TestKeyRingPersistsAndReplicasFollow(t *testing.T) {
	for _, alg := range []string{"EdDSA", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			now := t0
			clock := func() time.Time { return now }
			cfg := identity.KeyRingConfig{Dir: dir, Algorithm: alg, PublishDelay: time.Minute, Retain: 10 * time.Minute, Now: clock}
			a, err := identity.NewKeyRing(cfg)
			if err != nil {
				t.Fatal(err)
			}
			b, err := identity.NewKeyRing(cfg) // a second replica on the same directory
			if err != nil {
				t.Fatal(err)
			}
			ka, _ := a.Current()
			kb, _ := b.Current()
			if ka.ID != kb.ID || string(ka.Algorithm) != alg {
				t.Fatalf("replicas disagree: %s vs %s (%s)", ka.ID, kb.ID, ka.Algorithm)
			}
			fi, err := os.Stat(filepath.Join(dir, ka.ID+".json"))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v %v", fi, err)
			}
			next, err := a.Rotate()
			if err != nil {
				t.Fatal(err)
			}
			// Published at once, signing only after the publish delay.
			if cur, _ := a.Current(); cur.ID != ka.ID {
				t.Error("new key signs before the publish delay")
			}
			if err := b.Reload(); err != nil {
				t.Fatal(err)
			}
			if _, ok := b.Verifying(next.ID); !ok {
				t.Error("replica does not know the new key after reload")
			}
			now = now.Add(time.Minute)
			if cur, _ := b.Current(); cur.ID != next.ID {
				t.Error("replica does not sign with the new key after the delay")
			}
			if _, ok := b.Verifying(ka.ID); !ok {
				t.Error("old key stopped verifying before retention")
			}
			// JWKS: public keys only.
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/jwks.json", nil))
			var set struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil || len(set.Keys) != 2 {
				t.Fatalf("JWKS: %s", rec.Body)
			}
			for _, k := range set.Keys {
				if _, private := k["d"]; private {
					t.Fatal("JWKS publishes a private key")
				}
				if k["alg"] != alg || k["use"] != "sig" || k["kid"] == "" {
					t.Errorf("JWKS key %v", k)
				}
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/jwk-set+json") {
				t.Errorf("content type %s", ct)
			}
			now = now.Add(11 * time.Minute)
			if err := b.Prune(); err != nil {
				t.Fatal(err)
			}
			if _, ok := b.Verifying(ka.ID); ok {
				t.Error("retired key still verifies")
			}
			if _, err := os.Stat(filepath.Join(dir, ka.ID+".json")); !os.IsNotExist(err) {
				t.Errorf("retired key file left behind: %v", err)
			}
			c, err := identity.NewKeyRing(cfg) // restart
			if err != nil {
				t.Fatal(err)
			}
			if cur, _ := c.Current(); cur.ID != next.ID {
				t.Errorf("after restart signing with %s, want %s", cur.ID, next.ID)
			}
		})
	}
}

// TestKeyRingFindsAnotherReplicasKey: two replicas starting at once on an
// empty directory each create a key; tokens of either verify at the other
// without waiting for the periodic reload.
func TestKeyRingFindsAnotherReplicasKey(t *testing.T) {
	dir := t.TempDir()
	a, _ := identity.NewKeyRing(identity.KeyRingConfig{Dir: filepath.Join(dir, "a")})
	ka, _ := a.Current()
	// Simulate the race: b starts on a directory where a's key is not
	// visible yet, then the file appears.
	bdir := filepath.Join(dir, "b")
	b, _ := identity.NewKeyRing(identity.KeyRingConfig{Dir: bdir})
	raw, err := os.ReadFile(filepath.Join(dir, "a", ka.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bdir, ka.ID+".json"), raw)
	if _, ok := b.Verifying(ka.ID); ok {
		t.Fatal("test setup: key already known")
	}
	if k, ok := b.Lookup(ka.ID); !ok || k.ID != ka.ID {
		t.Error("unknown kid did not trigger a reload")
	}
	if _, ok := b.Lookup("nope"); ok {
		t.Error("found a key that does not exist")
	}
}

func TestMetadataDocuments(t *testing.T) {
	rec := httptest.NewRecorder()
	identity.NewAuthServerMetadata(gwURL, gwURL+"/", true).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	var as map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &as); err != nil || as["token_endpoint"] != gwURL+"/oauth/token" ||
		as["jwks_uri"] != gwURL+"/.well-known/jwks.json" || as["issuer"] != gwURL {
		t.Errorf("authorization server metadata: %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	identity.ResourceMetadata{Resource: resMain, AuthorizationServers: []string{gwURL}, DPoPBoundRequired: true}.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	var rm map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &rm); err != nil || rm["resource"] != resMain || rm["dpop_bound_access_tokens_required"] != true {
		t.Errorf("resource metadata: %s", rec.Body)
	}
	if got := rm["bearer_methods_supported"].([]any); len(got) != 1 || got[0] != "header" {
		t.Errorf("bearer methods %v", got)
	}
}
