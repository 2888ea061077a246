package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
)

// TestTokenMint mints with the configuration's signing key (the single
// key, then a key ring) and checks the token with the verifier the gateway
// uses; unknown and disabled agents and over-long lifetimes are refused.
func TestTokenMint(t *testing.T) {
	for _, ring := range []bool{false, true} {
		t.Run(fmt.Sprintf("ring=%v", ring), func(t *testing.T) {
			dir := t.TempDir()
			keys := ""
			if ring {
				keys = "  keys: {algorithm: ES256}\n"
			}
			cfg := filepath.Join(dir, "gatehouse.yaml")
			text := fmt.Sprintf(`data_dir: %s
identity:
  issuer: https://gw.example
  max_token_ttl: 1h
%sagents:
  - {id: assistant, owner: dana@example.com, servers: [bank]}
  - {id: old-bot, owner: dana@example.com, servers: [bank], disabled: true}
servers:
  - {id: bank, url: "http://127.0.0.1:1/mcp"}
`, filepath.Join(dir, "data"), keys)
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			mint := func(args ...string) (string, string, error) {
				var out, errOut bytes.Buffer
				err := run(context.Background(), append([]string{"token", "mint", "--config", cfg}, args...), &out, &errOut)
				return out.String(), errOut.String(), err
			}
			before := time.Now()
			out, msg, err := mint("--agent", "assistant", "--ttl", "2m")
			if err != nil {
				t.Fatalf("mint: %v %s", err, msg)
			}
			if !strings.Contains(msg, "token for agent assistant, expires ") {
				t.Errorf("stderr = %q", msg)
			}
			v := &identity.TokenVerifier{Issuer: "https://gw.example", Audience: "gatehouse", MaxTTL: time.Hour,
				Registry: identity.NewStaticRegistry([]*identity.Agent{{ID: "assistant", Servers: []string{"bank"}, Enabled: true}})}
			if ring {
				r, err := identity.NewKeyRing(identity.KeyRingConfig{Dir: filepath.Join(dir, "data", "keys", "ring"), Algorithm: "ES256"})
				if err != nil {
					t.Fatal(err)
				}
				v.Ring = r
			} else {
				k, err := identity.LoadOrCreateKey(filepath.Join(dir, "data", "keys", "signing.jwk"))
				if err != nil {
					t.Fatal(err)
				}
				v.Keys = []*identity.Key{k}
			}
			p, err := v.Verify(context.Background(), strings.TrimSpace(out))
			if err != nil {
				t.Fatalf("the minted token does not verify: %v", err)
			}
			if p.Agent.ID != "assistant" || p.Expiry.Before(before.Add(2*time.Minute-time.Second)) || p.Expiry.After(time.Now().Add(2*time.Minute)) {
				t.Errorf("principal %s, expiry %v", p.Agent.ID, p.Expiry)
			}
			for _, tt := range []struct {
				args  []string
				want  string
				usage bool
			}{
				{[]string{"--agent", "ghost"}, "not registered", false},
				{[]string{"--agent", "old-bot"}, "disabled", false},
				{[]string{"--agent", "assistant", "--ttl", "2h"}, "exceeds the maximum", false},
				{nil, "--agent is required", true},
			} {
				out, _, err := mint(tt.args...)
				if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, errUsage) != tt.usage || out != "" {
					t.Errorf("%v: %q, %v; want an error containing %q", tt.args, out, err, tt.want)
				}
			}
		})
	}
}
