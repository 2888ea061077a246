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
	"sync/atomic"
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
	if !hasFormat(s) {
		// nothing to remove: skip the copy
		t := nfkc(mapCompat(s))
		t, r.Confusables = mapConfusables(t)
		r.Text = t
		r.Changed = r.Changed || t != s
		return r
	}
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
	t := nfkc(mapCompat(b.String()))
	t, r.Confusables = mapConfusables(t)
	r.Text = t
	r.Hidden = hidden.String()
	r.Changed = r.Changed || t != s
	return r
}

// compatBlocks caches, in blocks of 128 runes filled on first use, the
// ASCII character that NFKC makes of a rune on its own (0: none), for the
// planes below U+20000.
var compatBlocks [0x20000 / 128]atomic.Pointer[[128]byte]

func compatASCII(c rune) byte {
	if c < utf8.RuneSelf || c >= 0x20000 {
		return 0
	}
	blk := compatBlocks[c/128].Load()
	if blk == nil {
		blk = new([128]byte)
		base := c &^ 127
		for i := range blk {
			r := base + rune(i)
			if r < utf8.RuneSelf || !utf8.ValidRune(r) {
				continue
			}
			if t := norm.NFKC.String(string(r)); len(t) == 1 && t[0] >= 0x20 && t[0] < 0x7F {
				blk[i] = t[0]
			}
		}
		// racing fillers compute the same block; either may win
		compatBlocks[c/128].Store(blk)
	}
	return blk[c%128]
}

// mapCompat replaces each rune that NFKC turns into one printable ASCII
// character on its own (fullwidth forms, mathematical alphanumerics,
// circled letters, the ideographic space, …) by that character. NFKC of
// the result equals NFKC of s — a rune is replaced by its own
// compatibility decomposition — but the normaliser's slow decomposition
// path then no longer runs over text written in such characters.
func mapCompat(s string) string {
	var b strings.Builder
	for i, c := range s {
		a := byte(0)
		if c >= utf8.RuneSelf {
			a = compatASCII(c)
		}
		switch {
		case a != 0 && b.Cap() == 0:
			b.Grow(len(s))
			b.WriteString(s[:i])
			b.WriteByte(a)
		case a != 0:
			b.WriteByte(a)
		case b.Cap() > 0:
			b.WriteRune(c)
		}
	}
	if b.Cap() == 0 {
		return s
	}
	return b.String()
}

func nfkc(s string) string {
	if isPrintableASCII(s) {
		return s
	}
	return norm.NFKC.String(s)
}

// hasFormat reports whether s holds a tag, bidi or invisible character.
func hasFormat(s string) bool {
	for _, c := range s {
		if c >= utf8.RuneSelf && (c >= 0xE0000 && c <= 0xE007F || isBidi(c) || isInvisible(c)) {
			return true
		}
	}
	return false
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
	case c < 0x0600, c >= 0x0900 && c < 0x180E, c > 0x180E && c < 0x200B, c >= 0x2070 && c < 0xFEFF:
		return false // no format characters there: skip the table
	}
	return unicode.Is(unicode.Cf, c)
}

// confusableBlocks caches confusableOf's answers in blocks of 128 runes,
// each filled the first time one of its runes is looked up, for the
// planes that hold confusables (below U+20000).
var confusableBlocks [0x20000 / 128]atomic.Pointer[[128]string]

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
	if c >= 0x20000 {
		return skeletonOf(c)
	}
	blk := confusableBlocks[c/128].Load()
	if blk == nil {
		blk = new([128]string)
		base := c &^ 127
		for i := range blk {
			blk[i] = skeletonOf(base + rune(i))
		}
		// racing fillers compute the same block; either may win
		confusableBlocks[c/128].Store(blk)
	}
	return blk[c%128]
}

// skeletonOf returns the ASCII prototype of c, or "" when it has none.
func skeletonOf(c rune) string {
	if c < utf8.RuneSelf || !utf8.ValidRune(c) {
		return ""
	}
	sk := norm.NFC.String(confusables.Skeleton(string(c)))
	if sk != string(c) && isPrintableASCII(sk) && sk != "" {
		return sk
	}
	return ""
}
