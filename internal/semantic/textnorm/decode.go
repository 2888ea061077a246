package textnorm

import (
	"encoding/base64"
	"encoding/hex"
	"math/bits"
	"strings"
	"unicode/utf8"
)

// Encoding names a payload encoding found by FindEncoded.
type Encoding string

// The encodings FindEncoded recognises.
const (
	Base64 Encoding = "base64"
	Hex    Encoding = "hex"
	Rot13  Encoding = "rot13"
)

// Decoded is one encoded run found in a text, with its decoding.
type Decoded struct {
	Encoding Encoding
	// Start and End are byte offsets of the encoded run in the input.
	Start, End int
	// Text is the decoded payload; it is valid UTF-8 and mostly printable.
	Text string
}

// Limits that keep decoding cheap and bounded.
const (
	minBase64Run = 20 // shorter runs are ordinary words and identifiers
	minHexRun    = 16
	maxDecoded   = 8 // at most this many payloads per text
)

// FindEncoded finds base64 and hex runs in s whose decoding is printable
// text, and a rot13 reading of s when that reading is markedly more like
// English than s itself. It returns at most a handful of payloads, in order
// of appearance, and never panics.
func FindEncoded(s string) []Decoded {
	var out []Decoded
	i := 0
	for i < len(s) && len(out) < maxDecoded {
		if !isB64(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isB64(s[j]) {
			j++
		}
		for j < len(s) && s[j] == '=' && j-i < 1<<20 {
			j++
		}
		if d, ok := decodeRun(s[i:j]); ok {
			out = append(out, Decoded{Encoding: d.Encoding, Start: i, End: j, Text: d.Text})
		}
		i = j + 1
	}
	if len(out) < maxDecoded {
		if t, ok := rot13Reading(s); ok {
			out = append(out, Decoded{Encoding: Rot13, Start: 0, End: len(s), Text: t})
		}
	}
	return out
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func decodeRun(run string) (Decoded, bool) {
	core := strings.TrimRight(run, "=")
	if len(core) >= minHexRun && len(core)%2 == 0 && allHex(core) {
		if b, err := hex.DecodeString(core); err == nil && printable(b) {
			return Decoded{Encoding: Hex, Text: string(b)}, true
		}
		return Decoded{}, false
	}
	if len(core) < minBase64Run || !mixedBase64(core) {
		return Decoded{}, false
	}
	enc := base64.RawStdEncoding
	if strings.ContainsAny(core, "-_") {
		enc = base64.RawURLEncoding
	}
	// Trim to a whole number of 4-character quanta minus what raw decoding
	// tolerates, so that a run glued to trailing letters still decodes.
	for cut := 0; cut < 4 && len(core)-cut >= minBase64Run; cut++ {
		b, err := enc.DecodeString(core[:len(core)-cut])
		if err == nil {
			if printable(b) {
				return Decoded{Encoding: Base64, Text: string(b)}, true
			}
			return Decoded{}, false
		}
	}
	return Decoded{}, false
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

// mixedBase64 rejects runs that are plain words or numbers: real base64 of
// text mixes upper case, lower case and usually digits.
func mixedBase64(s string) bool {
	var up, low, dig bool
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			up = true
		case c >= 'a' && c <= 'z':
			low = true
		case c >= '0' && c <= '9':
			dig = true
		}
	}
	return up && low || (up || low) && dig
}

// printable reports whether b is UTF-8 text with at least 90% printable
// characters and at least one letter.
func printable(b []byte) bool {
	if len(b) < 4 || !utf8.Valid(b) {
		return false
	}
	total, good, letters := 0, 0, 0
	for _, r := range string(b) {
		total++
		switch {
		case r == '\n' || r == '\t' || r == '\r' || r >= 0x20 && r != 0x7F && r != utf8.RuneError:
			good++
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			letters++
		}
	}
	return good*10 >= total*9 && letters*2 >= total
}

// Rotate13 applies rot13 to the ASCII letters of s.
func Rotate13(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = 'a' + (c-'a'+13)%26
		case c >= 'A' && c <= 'Z':
			b[i] = 'A' + (c-'A'+13)%26
		}
	}
	return string(b)
}

// commonWords are frequent English function words and the verbs of
// instructions; they tell English from its rot13 reading.
var commonWords = func() map[string]uint8 {
	m := map[string]uint8{}
	for i, w := range []string{
		"the", "and", "you", "your", "to", "of", "is", "a",
		"in", "all", "that", "it", "for", "are", "with", "this",
		"ignore", "previous", "instructions", "now", "tell", "me",
		"system", "prompt", "be", "as", "not", "do", "what", "on",
	} {
		m[w] = uint8(i)
	}
	return m
}()

// rot13Reading returns the rot13 reading of s when at least three words and
// at least a quarter of the words of that reading are common English words,
// at least three of them different (one short word repeated — "or" reads as
// "be" — is a coincidence, as in a list of phone numbers), and s itself has
// at most a third as many.
func rot13Reading(s string) (string, bool) {
	if len(s) < 12 {
		return "", false
	}
	if len(s) > 1<<16 {
		s = s[:1<<16]
	}
	orig, _, words := countCommon(s, false)
	if words < 3 || orig*6 >= words {
		return "", false // too short, or already reads as English
	}
	rot, rotDistinct, _ := countCommon(s, true)
	if rot >= 3 && rotDistinct >= 3 && rot*4 >= words && rot >= 3*orig+3 {
		return Rotate13(s), true
	}
	return "", false
}

// countCommon counts the words of s, and those of them, and the different
// ones, that are common English words as they stand or, with rot, in their
// rot13 reading (without building the reading).
func countCommon(s string, rot bool) (common, distinct, words int) {
	var seen uint64 // bit i: commonWords' word i seen
	start := -1
	for i := 0; i <= len(s); i++ {
		letter := i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z')
		if letter {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			words++
			if n := i - start; n <= 12 {
				var buf [12]byte
				for k := 0; k < n; k++ {
					c := s[start+k]
					if c >= 'A' && c <= 'Z' {
						c += 'a' - 'A'
					}
					if rot {
						c = 'a' + (c-'a'+13)%26
					}
					buf[k] = c
				}
				if w, ok := commonWords[string(buf[:n])]; ok {
					common++
					seen |= 1 << w
				}
			}
			start = -1
		}
	}
	return common, bits.OnesCount64(seen), words
}
