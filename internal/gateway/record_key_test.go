package gateway

import (
	"crypto/rand"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestVerifierKeyDerivedFromSigningKey(t *testing.T) {
	for range 50 { // base64 with and without '+'
		skey, vkey, err := note.GenerateKey(rand.Reader, "gatehouse.local/audit")
		if err != nil {
			t.Fatal(err)
		}
		got, err := verifierKey(skey)
		if err != nil || got != vkey {
			t.Fatalf("verifierKey(%s) = %q, %v; want %q", skey, got, err, vkey)
		}
	}
	for _, bad := range []string{"", "PRIVATE+KEY+x", vkeyOnly, "PRIVATE+KEY+n+00000000+!!!"} {
		if _, err := verifierKey(bad); err == nil {
			t.Errorf("verifierKey(%q) accepted", bad)
		}
	}
}

const vkeyOnly = "gatehouse.local/audit+848895f8+AX5ElmdU60TqsewYftR3dWu0XozeP0tyf+MIy2EytdT6"
