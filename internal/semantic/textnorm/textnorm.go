// Package textnorm normalises untrusted text before detection and decodes
// the payload encodings that attackers use to hide instructions from
// keyword and classifier checks.
//
// Normalize applies, in order: removal (and accounting) of invisible and
// bidirectional control characters, decoding of Unicode tag characters
// (U+E0000–E007F, "ASCII smuggling") into a separate Hidden string, NFKC,
// and mapping of non-ASCII confusable characters to their ASCII prototypes
// (Unicode TS #39 confusables.txt). ASCII input is returned unchanged, so
// normalisation costs almost nothing on ordinary text.
//
// Invariants: Normalize and the decoders never panic on any input (they are
// fuzzed), always return valid UTF-8, and never return output longer than a
// fixed multiple of their input.
package textnorm

import (
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/unicode/norm"
)

// Result is normalised text and what normalisation removed from it.
type Result struct {
	// Text is the normalised text: invisible and bidi controls removed,
	// tag characters removed, NFKC applied, confusables mapped to ASCII.
	Text string
	// Hidden is the ASCII text smuggled in Unicode tag characters, if any.
	Hidden string
	// Invisible counts zero-width, soft-hyphen, variation-selector and
	// similar invisible format characters that were removed.
	Invisible int
	// Bidi counts bidirectional override, embedding and isolate controls.
	Bidi int
	// Tags counts Unicode tag characters (U+E0000–E007F).
	Tags int
	// Confusables counts non-ASCII characters mapped to an ASCII look-alike.
	Confusables int
	// Changed reports whether Text differs from the input.
	Changed bool
}

// Normalize normalises s. It is safe for concurrent use.
func Normalize(s string) Result {
	if isPrintableASCII(s) {
		return Result{Text: s}
	}
	var r Result
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
		r.Changed = true
	}
	var b, hidden strings.Builder
	b.Grow(len(s))
	for _, c := range s {
		switch {
		case c >= 0xE0000 && c <= 0xE007F:
			r.Tags++
			if c >= 0xE0020 && c <= 0xE007E {
				hidden.WriteRune(c - 0xE0000)
			}
			continue
		case isBidi(c):
			r.Bidi++
			continue
		case isInvisible(c):
			r.Invisible++
			continue
		}
		b.WriteRune(c)
	}
	t := norm.NFKC.String(b.String())
	t, r.Confusables = mapConfusables(t)
	r.Text = t
	r.Hidden = hidden.String()
	r.Changed = r.Changed || t != s
	return r
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// isBidi reports bidirectional formatting controls: embeddings, overrides,
// isolates and the implicit marks.
func isBidi(c rune) bool {
	switch {
	case c >= 0x202A && c <= 0x202E: // LRE RLE PDF LRO RLO
		return true
	case c >= 0x2066 && c <= 0x2069: // LRI RLI FSI PDI
		return true
	case c == 0x200E || c == 0x200F || c == 0x061C: // LRM RLM ALM
		return true
	}
	return false
}

// isInvisible reports characters that render as nothing: zero-width
// characters, word joiners, soft hyphens, variation selectors and other
// format (Cf) characters, except the bidi controls counted separately.
func isInvisible(c rune) bool {
	switch {
	case c == 0x00AD, c == 0x034F, c == 0x115F, c == 0x1160, c == 0x3164, c == 0xFFA0:
		return true
	case c >= 0x200B && c <= 0x200D, c == 0x2060, c == 0xFEFF, c == 0x180E:
		return true
	case c >= 0x2061 && c <= 0x2064:
		return true
	case c >= 0xFE00 && c <= 0xFE0F, c >= 0xE0100 && c <= 0xE01EF:
		return true
	}
	return unicode.Is(unicode.Cf, c)
}

var confusableCache sync.Map // rune -> string ("" when not mapped)

// mapConfusables maps each non-ASCII rune whose TS #39 prototype is ASCII to
// that prototype. ASCII runes are kept: the table maps some ASCII characters
// to each other (such as "0" and "O"), which would corrupt ordinary text.
func mapConfusables(s string) (string, int) {
	if isPrintableASCII(s) {
		return s, 0
	}
	var b strings.Builder
	b.Grow(len(s))
	n := 0
	for _, c := range s {
		if c < utf8.RuneSelf {
			b.WriteRune(c)
			continue
		}
		if m := confusableOf(c); m != "" {
			b.WriteString(m)
			n++
			continue
		}
		b.WriteRune(c)
	}
	return b.String(), n
}

func confusableOf(c rune) string {
	if v, ok := confusableCache.Load(c); ok {
		return v.(string)
	}
	m := ""
	sk := norm.NFC.String(confusables.Skeleton(string(c)))
	if sk != string(c) && isPrintableASCII(sk) && sk != "" {
		m = sk
	}
	if c < 0x20000 { // the planes that hold confusables; bounds the cache
		confusableCache.Store(c, m)
	}
	return m
}
