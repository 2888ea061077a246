package approval

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrNotCanonicalizable marks arguments that are not JSON, or JSON that has
// no single canonical form (duplicate object keys, invalid UTF-8, lone
// surrogates, numbers out of range).
var ErrNotCanonicalizable = errors.New("arguments are not canonicalizable JSON")

// maxDepth bounds the nesting of canonicalized JSON.
const maxDepth = 128

// maxExponentDigits bounds the exponent of a number (|exponent| < 10^9).
const maxExponentDigits = 9

// Canonicalize returns the canonical form of a JSON text:
//
//   - no insignificant whitespace;
//   - object members sorted by key, compared as byte strings of their
//     UTF-8 encoding; a duplicate key (after unescaping) is an error;
//   - strings are valid UTF-8 with no lone surrogate escapes; they are
//     written with only '"', '\\' and the control characters U+0000–U+001F
//     escaped (\b \f \n \r \t, else \u00xx in lower-case hex); everything
//     else, including '<', '>', '&', U+2028 and U+2029, is written as is;
//   - numbers are exact decimals in a single form (see canonicalNumber):
//     1, 1.0, 10e-1 and 1E0 are all "1"; -0 is "0"; no rounding to binary
//     floating point ever happens, so 9007199254740993 stays distinct from
//     9007199254740992;
//   - literals true, false, null as is.
//
// Empty input (no arguments) canonicalizes to {}. Nesting deeper than 128
// levels is refused.
func Canonicalize(data []byte) ([]byte, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return []byte("{}"), nil
	}
	p := &parser{in: data}
	var out bytes.Buffer
	out.Grow(len(data))
	p.skipSpace()
	if err := p.value(&out, 0); err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.in) {
		return nil, p.errorf("trailing data")
	}
	return out.Bytes(), nil
}

type parser struct {
	in  []byte
	pos int
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrNotCanonicalizable, p.pos, fmt.Sprintf(format, args...))
}

func (p *parser) skipSpace() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(out *bytes.Buffer, depth int) error {
	if depth > maxDepth {
		return p.errorf("nesting deeper than %d", maxDepth)
	}
	if p.pos >= len(p.in) {
		return p.errorf("unexpected end of input")
	}
	switch c := p.in[p.pos]; {
	case c == '{':
		return p.object(out, depth)
	case c == '[':
		return p.array(out, depth)
	case c == '"':
		s, err := p.str()
		if err != nil {
			return err
		}
		writeString(out, s)
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number(out)
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(p.in[p.pos:], []byte(lit)) {
				p.pos += len(lit)
				out.WriteString(lit)
				return nil
			}
		}
		return p.errorf("invalid character %q", c)
	}
}

type member struct {
	key string
	val []byte
}

func (p *parser) object(out *bytes.Buffer, depth int) error {
	p.pos++ // '{'
	var members []member
	seen := map[string]bool{}
	p.skipSpace()
	if p.pos < len(p.in) && p.in[p.pos] == '}' {
		p.pos++
		out.WriteString("{}")
		return nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.in) || p.in[p.pos] != '"' {
			return p.errorf("want an object key")
		}
		k, err := p.str()
		if err != nil {
			return err
		}
		if seen[k] {
			return p.errorf("duplicate object key %q", k)
		}
		seen[k] = true
		p.skipSpace()
		if p.pos >= len(p.in) || p.in[p.pos] != ':' {
			return p.errorf("want ':' after an object key")
		}
		p.pos++
		p.skipSpace()
		var v bytes.Buffer
		if err := p.value(&v, depth+1); err != nil {
			return err
		}
		members = append(members, member{k, v.Bytes()})
		p.skipSpace()
		if p.pos >= len(p.in) {
			return p.errorf("unterminated object")
		}
		if p.in[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.in[p.pos] != '}' {
			return p.errorf("want ',' or '}' in an object")
		}
		p.pos++
		break
	}
	slices.SortFunc(members, func(a, b member) int { return strings.Compare(a.key, b.key) })
	out.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			out.WriteByte(',')
		}
		writeString(out, m.key)
		out.WriteByte(':')
		out.Write(m.val)
	}
	out.WriteByte('}')
	return nil
}

func (p *parser) array(out *bytes.Buffer, depth int) error {
	p.pos++ // '['
	out.WriteByte('[')
	p.skipSpace()
	if p.pos < len(p.in) && p.in[p.pos] == ']' {
		p.pos++
		out.WriteByte(']')
		return nil
	}
	for i := 0; ; i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		p.skipSpace()
		if err := p.value(out, depth+1); err != nil {
			return err
		}
		p.skipSpace()
		if p.pos >= len(p.in) {
			return p.errorf("unterminated array")
		}
		if p.in[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.in[p.pos] != ']' {
			return p.errorf("want ',' or ']' in an array")
		}
		p.pos++
		out.WriteByte(']')
		return nil
	}
}

// str parses a JSON string at p.pos and returns its value.
func (p *parser) str() (string, error) {
	p.pos++ // '"'
	var b strings.Builder
	for {
		if p.pos >= len(p.in) {
			return "", p.errorf("unterminated string")
		}
		c := p.in[p.pos]
		switch {
		case c == '"':
			p.pos++
			return b.String(), nil
		case c == '\\':
			if p.pos+1 >= len(p.in) {
				return "", p.errorf("unterminated escape")
			}
			e := p.in[p.pos+1]
			p.pos += 2
			switch e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, err := p.hex4()
				if err != nil {
					return "", err
				}
				if utf16.IsSurrogate(r) {
					if r >= 0xdc00 || p.pos+1 >= len(p.in) || p.in[p.pos] != '\\' || p.in[p.pos+1] != 'u' {
						return "", p.errorf("lone surrogate escape")
					}
					p.pos += 2
					r2, err := p.hex4()
					if err != nil {
						return "", err
					}
					if r2 < 0xdc00 || r2 > 0xdfff {
						return "", p.errorf("lone surrogate escape")
					}
					r = utf16.DecodeRune(r, r2)
				}
				b.WriteRune(r)
			default:
				return "", p.errorf("invalid escape \\%c", e)
			}
		case c < 0x20:
			return "", p.errorf("control character in string")
		case c < utf8.RuneSelf:
			b.WriteByte(c)
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.in[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", p.errorf("invalid UTF-8")
			}
			b.Write(p.in[p.pos : p.pos+size])
			p.pos += size
		}
	}
}

func (p *parser) hex4() (rune, error) {
	if p.pos+4 > len(p.in) {
		return 0, p.errorf("short \\u escape")
	}
	v, err := strconv.ParseUint(string(p.in[p.pos:p.pos+4]), 16, 32)
	if err != nil {
		return 0, p.errorf("invalid \\u escape")
	}
	p.pos += 4
	return rune(v), nil
}

func writeString(out *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	out.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			out.WriteString(`\"`)
		case c == '\\':
			out.WriteString(`\\`)
		case c == '\b':
			out.WriteString(`\b`)
		case c == '\f':
			out.WriteString(`\f`)
		case c == '\n':
			out.WriteString(`\n`)
		case c == '\r':
			out.WriteString(`\r`)
		case c == '\t':
			out.WriteString(`\t`)
		case c < 0x20:
			out.WriteString(`\u00`)
			out.WriteByte(hexDigits[c>>4])
			out.WriteByte(hexDigits[c&0xf])
		default:
			out.WriteByte(c)
		}
	}
	out.WriteByte('"')
}

// number parses a JSON number (strict JSON grammar) and writes its
// canonical form.
func (p *parser) number(out *bytes.Buffer) error {
	neg := false
	if p.in[p.pos] == '-' {
		neg = true
		p.pos++
	}
	intStart := p.pos
	if p.pos >= len(p.in) {
		return p.errorf("truncated number")
	}
	if p.in[p.pos] == '0' {
		p.pos++
	} else if p.in[p.pos] >= '1' && p.in[p.pos] <= '9' {
		for p.pos < len(p.in) && isDigit(p.in[p.pos]) {
			p.pos++
		}
	} else {
		return p.errorf("invalid number")
	}
	intPart := string(p.in[intStart:p.pos])
	frac := ""
	if p.pos < len(p.in) && p.in[p.pos] == '.' {
		p.pos++
		fs := p.pos
		for p.pos < len(p.in) && isDigit(p.in[p.pos]) {
			p.pos++
		}
		if p.pos == fs {
			return p.errorf("invalid number: no digits after '.'")
		}
		frac = string(p.in[fs:p.pos])
	}
	exp := int64(0)
	if p.pos < len(p.in) && (p.in[p.pos] == 'e' || p.in[p.pos] == 'E') {
		p.pos++
		eneg := false
		if p.pos < len(p.in) && (p.in[p.pos] == '+' || p.in[p.pos] == '-') {
			eneg = p.in[p.pos] == '-'
			p.pos++
		}
		es := p.pos
		for p.pos < len(p.in) && isDigit(p.in[p.pos]) {
			p.pos++
		}
		if p.pos == es {
			return p.errorf("invalid number: no digits in exponent")
		}
		digits := strings.TrimLeft(string(p.in[es:p.pos]), "0")
		if len(digits) > maxExponentDigits {
			return p.errorf("number exponent out of range")
		}
		if digits != "" {
			e, _ := strconv.ParseInt(digits, 10, 64)
			exp = e
		}
		if eneg {
			exp = -exp
		}
	}
	out.WriteString(canonicalNumber(neg, intPart, frac, exp))
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// canonicalNumber writes the exact decimal (-1)^neg × intPart.frac × 10^exp
// in canonical form. With the value written as D × 10^e, D an integer
// without trailing zeros whose decimal digits are d (n = len(d)), and
// k = n + e the position of the decimal point after the first digit:
//
//   - zero is "0";
//   - 0 < k ≤ 21: plain decimal, "d" padded with zeros or split by a point
//     (12300, 123.45);
//   - -6 < k ≤ 0: "0." followed by -k zeros and d (0.00123);
//   - otherwise scientific: first digit, "." and the rest of d if any, "e",
//     and k-1 in decimal with a "-" sign when negative (1e21, 1.5e-7).
//
// The thresholds are those of ECMAScript's Number::toString (RFC 8785), so
// numbers that a binary64 holds exactly print the same as in JCS, except
// that the exponent has no "+" sign.
func canonicalNumber(neg bool, intPart, frac string, exp int64) string {
	digits := strings.TrimLeft(intPart+frac, "0")
	e := exp - int64(len(frac))
	if digits == "" {
		return "0"
	}
	trimmed := strings.TrimRight(digits, "0")
	e += int64(len(digits) - len(trimmed))
	digits = trimmed
	n := int64(len(digits))
	k := n + e
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	switch {
	case k > 0 && k <= 21:
		if e >= 0 {
			b.WriteString(digits)
			b.WriteString(strings.Repeat("0", int(e)))
		} else {
			b.WriteString(digits[:k])
			b.WriteByte('.')
			b.WriteString(digits[k:])
		}
	case k <= 0 && k > -6:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", int(-k)))
		b.WriteString(digits)
	default:
		b.WriteByte(digits[0])
		if n > 1 {
			b.WriteByte('.')
			b.WriteString(digits[1:])
		}
		b.WriteByte('e')
		b.WriteString(strconv.FormatInt(k-1, 10))
	}
	return b.String()
}

// ArgumentsHash returns "sha256:" and the hex SHA-256 of the canonical form
// of args.
func ArgumentsHash(args []byte) (string, error) {
	c, err := Canonicalize(args)
	if err != nil {
		return "", err
	}
	return sha256Hex(c), nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// CallHash is the identity of one exact call: "sha256:" and the hex SHA-256
// of the canonical JSON object
//
//	{"agent":A,"arguments":<canonical arguments>,"policy_version":P,
//	 "server":S,"task":T,"tool":N,"user":U,"v":1}
//
// (keys sorted, strings escaped as Canonicalize does). Tool is the name the
// upstream server knows; user is the human on whose behalf the agent acts
// (empty when unknown); policy version is the version of the policy set
// that decided. A grant bound to one hash never authorises a call with
// another: different arguments, another agent, user or task, or a reloaded
// policy set all give another hash.
func CallHash(server, tool string, args []byte, agent, user, task, policyVersion string) (string, error) {
	c, err := Canonicalize(args)
	if err != nil {
		return "", err
	}
	return sha256Hex(callDocument(server, tool, c, agent, user, task, policyVersion)), nil
}

func callDocument(server, tool string, canonicalArgs []byte, agent, user, task, policyVersion string) []byte {
	var b bytes.Buffer
	field := func(k, v string, first bool) {
		if !first {
			b.WriteByte(',')
		}
		writeString(&b, k)
		b.WriteByte(':')
		writeString(&b, v)
	}
	b.WriteByte('{')
	field("agent", agent, true)
	b.WriteString(`,"arguments":`)
	b.Write(canonicalArgs)
	field("policy_version", policyVersion, false)
	field("server", server, false)
	field("task", task, false)
	field("tool", tool, false)
	field("user", user, false)
	b.WriteString(`,"v":1}`)
	return b.Bytes()
}
