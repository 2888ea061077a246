package identity_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gatehouse/gatehouse/internal/identity"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func setup(t *testing.T) (*identity.Minter, *identity.TokenVerifier, *identity.StaticRegistry) {
	t.Helper()
	key, err := identity.LoadOrCreateKey(filepath.Join(t.TempDir(), "k", "signing.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	reg := identity.NewStaticRegistry([]*identity.Agent{
		{ID: "billing-bot", Owner: "alice", Servers: []string{"bank"}, Enabled: true},
		{ID: "off-bot", Owner: "bob", Enabled: false},
	})
	now := func() time.Time { return t0 }
	m := &identity.Minter{Key: key, Issuer: "gatehouse", Audience: "gatehouse", MaxTTL: time.Hour, Now: now}
	v := &identity.TokenVerifier{Keys: []*identity.Key{key}, Issuer: "gatehouse", Audience: "gatehouse", Skew: 60 * time.Second, MaxTTL: time.Hour, Registry: reg, Now: now}
	return m, v, reg
}

func code(err error) string {
	var ie *identity.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return "not-an-identity-error: " + errorString(err)
}

func errorString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestKeyPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.jwk")
	k1, err := identity.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := identity.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID != k2.ID || !k1.Private.Equal(k2.Private) {
		t.Fatal("reloaded key differs")
	}
}

func TestMintVerify(t *testing.T) {
	m, v, reg := setup(t)
	tok, exp, err := m.Mint("billing-bot", 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(5 * time.Minute)) {
		t.Errorf("exp = %v", exp)
	}
	p, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Agent.ID != "billing-bot" || p.TokenID == "" {
		t.Errorf("principal = %+v", p)
	}
	// Cached path gives the same answer, and disabling the agent applies at once.
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetEnabled("billing-bot", false); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok); code(err) != identity.CodeAgentDisabled {
		t.Errorf("after disable: %v", err)
	}
	if _, _, err := m.Mint("billing-bot", 2*time.Hour); err == nil {
		t.Error("minted a token beyond MaxTTL")
	}
}

func TestVerifyRefusals(t *testing.T) {
	m, v, _ := setup(t)
	good, _, err := m.Mint("billing-bot", 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(alg jose.SignatureAlgorithm, key any, kid string, c jwt.Claims) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		out, err := jwt.Signed(s).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	claims := func(mod func(*jwt.Claims)) jwt.Claims {
		c := jwt.Claims{Issuer: "gatehouse", Subject: "billing-bot", Audience: jwt.Audience{"gatehouse"},
			IssuedAt: jwt.NewNumericDate(t0), NotBefore: jwt.NewNumericDate(t0), Expiry: jwt.NewNumericDate(t0.Add(time.Minute))}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	kid := v.Keys[0].ID
	parts := strings.Split(good, ".")
	tests := []struct {
		name, token, want string
	}{
		{"empty", "", identity.CodeMissing},
		{"garbage", "not.a.jwt", identity.CodeMalformed},
		{"oversized", strings.Repeat("a", identity.MaxTokenBytes+1), identity.CodeTooLarge},
		{"alg none", "eyJhbGciOiJub25lIn0." + parts[1] + ".", identity.CodeAlgorithm},
		{"HS256 keyed with the public key", sign(jose.HS256, []byte(v.Keys[0].Public()), kid, claims(nil)), identity.CodeAlgorithm},
		{"unknown kid", sign(jose.EdDSA, otherKey, "nope", claims(nil)), identity.CodeUnknownKey},
		{"wrong key, right kid", sign(jose.EdDSA, otherKey, kid, claims(nil)), identity.CodeSignature},
		{"tampered payload", parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2], identity.CodeSignature},
		{"expired", sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(t0.Add(-10 * time.Minute))
			c.Expiry = jwt.NewNumericDate(t0.Add(-2 * time.Minute))
		})), identity.CodeExpired},
		{"within skew", "", ""},
		{"not yet valid", sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) {
			c.NotBefore = jwt.NewNumericDate(t0.Add(5 * time.Minute))
			c.Expiry = jwt.NewNumericDate(t0.Add(10 * time.Minute))
		})), identity.CodeNotYetValid},
		{"wrong issuer", sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) { c.Issuer = "evil" })), identity.CodeIssuer},
		{"wrong audience", sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) { c.Audience = jwt.Audience{"other"} })), identity.CodeAudience},
		{"too long-lived", sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(t0.Add(48 * time.Hour)) })), identity.CodeLifetime},
		{"unknown agent", sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) { c.Subject = "ghost" })), identity.CodeAgentUnknown},
		{"disabled agent", sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) { c.Subject = "off-bot" })), identity.CodeAgentDisabled},
	}
	for _, tt := range tests {
		if tt.name == "within skew" {
			tt.token = sign(jose.EdDSA, v.Keys[0].Private, kid, claims(func(c *jwt.Claims) {
				c.IssuedAt = jwt.NewNumericDate(t0.Add(-5 * time.Minute))
				c.Expiry = jwt.NewNumericDate(t0.Add(-30 * time.Second))
			}))
		}
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tt.token)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if got := code(err); got != tt.want {
				t.Errorf("code = %s, want %s (%v)", got, tt.want, err)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	key, err := identity.LoadOrCreateKey(filepath.Join(f.TempDir(), "k.jwk"))
	if err != nil {
		f.Fatal(err)
	}
	m := &identity.Minter{Key: key, Issuer: "gatehouse", Audience: "gatehouse", Now: func() time.Time { return t0 }}
	good, _, _ := m.Mint("a", time.Minute)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c.d.e")
	v := &identity.TokenVerifier{Keys: []*identity.Key{key}, Issuer: "gatehouse", Audience: "gatehouse", Skew: time.Minute,
		Registry: identity.NewStaticRegistry([]*identity.Agent{{ID: "a", Enabled: true}}), Now: func() time.Time { return t0 }}
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := v.Verify(context.Background(), tok)
		if err == nil && tok != good {
			t.Fatalf("accepted a token that was not minted: %q (%+v)", tok, p)
		}
		if err != nil && code(err) == "" {
			t.Fatal("error without code")
		}
	})
}
