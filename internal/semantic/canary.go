package semantic

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/gatehouse/gatehouse/internal/semantic/textnorm"
)

// canaryPrefix starts every canary; the rest is 16 base32 characters.
const canaryPrefix = "GHC"

// NewCanary returns the canary token for a session: a string to plant in
// the session's context (for example in a system prompt or a decoy
// record) that must never appear in output. It is derived from sessionID
// with Config.CanaryKey, so the same key gives the same canary on every
// replica, and Screen finds it in outputs given only Input.SessionID.
func (e *Engine) NewCanary(sessionID string) string {
	m := hmac.New(sha256.New, e.canaryKey)
	m.Write([]byte("gatehouse canary v1\x00"))
	m.Write([]byte(sessionID))
	sum := m.Sum(nil)
	return canaryPrefix + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:10])
}

// squeeze keeps the lower-cased letters and digits of s, so that a token
// split by spaces, punctuation or line breaks, or written in another case,
// is found as a substring.
func squeeze(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		}
	}
	return b.String()
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// base64Cores returns, for each of the three alignments at which token's
// bytes can start inside a larger base64 stream, the base64 characters that
// depend on token's bytes alone.
func base64Cores(token string) []string {
	var out []string
	for k := 0; k < 3; k++ {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, k), token...))
		first := (8*k + 5) / 6
		last := 8 * (k + len(token)) / 6
		if last-first >= 8 {
			out = append(out, enc[first:last])
		}
	}
	return out
}

// canaryForms are the forms in which a canary is looked for in squeezed
// text (lower-case letters and digits only).
func canaryForms(token string) []string {
	t := squeeze(token)
	return []string{t, reverse(t), squeeze(hex.EncodeToString([]byte(token))), squeeze(textnorm.Rotate13(t))}
}

// canary looks for the session's canaries in text leaving on an output
// surface (model output, sampling, tool arguments): plain, split by
// whitespace or punctuation, reversed, hex or base64 encoded, rot13, or
// hidden in tag characters. Inputs are not searched: a canary may be
// planted there (a decoy record in a tool result).
func (s *screening) canary() {
	if !s.in.Surface.Output() {
		return
	}
	tokens := s.in.Canaries
	if s.in.SessionID != "" {
		tokens = append(tokens[:len(tokens):len(tokens)], s.e.NewCanary(s.in.SessionID))
	}
	if len(tokens) == 0 {
		return
	}
	hay := []string{s.in.Text, s.norm.Text, s.norm.Hidden}
	for _, d := range textnorm.FindEncoded(s.norm.Text) {
		hay = append(hay, d.Text)
	}
	squeezed := make([]string, len(hay))
	for i, h := range hay {
		squeezed[i] = squeeze(h)
	}
	for _, tok := range tokens {
		if len(squeeze(tok)) < 8 {
			continue // too short to find without false alarms
		}
		found, rule := false, ""
		for _, form := range canaryForms(tok) {
			for _, h := range squeezed {
				if strings.Contains(h, form) {
					found, rule = true, "text"
				}
			}
		}
		if !found {
			compact := strings.Join(strings.Fields(s.in.Text), "") // base64 wrapped over lines
			for _, core := range base64Cores(tok) {
				url := strings.NewReplacer("+", "-", "/", "_").Replace(core)
				if strings.Contains(compact, core) || strings.Contains(compact, url) {
					found, rule = true, "base64"
				}
			}
		}
		if found {
			a, b := -1, -1
			if i := strings.Index(s.in.Text, tok); i >= 0 {
				a, b = i, i+len(tok)
			}
			s.add(Finding{Detector: string(DetectCanary), Kind: "canary_leak", Rule: rule, Score: 1, Start: a, End: b, Action: ActionBlock})
		}
	}
}
