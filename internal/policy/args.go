package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/cedar-policy/cedar-go/types"
)

// skipType marks a value that is checked as JSON but not converted.
var skipType = &argType{kind: kSkip}

// maxArgNesting bounds the nesting of a tool call's arguments.
const maxArgNesting = 64

var errSyntax = errors.New("invalid JSON")

// argDecoder turns a tool call's JSON arguments straight into Cedar values,
// typed by the tool's schema, in one pass and without an intermediate Go
// value: the decision path's cost is dominated by building its input.
//
// It accepts exactly RFC 8259 JSON, as encoding/json does: invalid UTF-8
// and lone surrogates in strings become U+FFFD, and of duplicate keys the
// last wins. Nulls become absent attributes (or are dropped from sets).
// Values whose shape differs from the declared type keep their own shape
// (so a policy relying on the declared type fails at evaluation, which
// blocks); numbers declared "number" become decimals; integers otherwise
// become Longs and other numbers decimals, rounded to four places.
type argDecoder struct {
	data []byte
	pos  int
	// top is the map the top-level object is built in (NewRecord copies
	// it), or nil.
	top types.RecordMap
	// strs receives the top-level string arguments, by name, when set.
	strs map[string]string
}

// decodeArgs decodes a JSON object of arguments. t is the tool's record
// type, or nil for a tool the schema does not know. top, if not nil, is an
// empty map to build the top-level record in (the record copies it).
func decodeArgs(data []byte, t *argType, strs map[string]string, top types.RecordMap) (types.Record, error) {
	d := argDecoder{data: data, strs: strs, top: top}
	d.space()
	if d.pos == len(d.data) || d.data[d.pos] != '{' {
		return types.Record{}, errors.New("arguments are not a JSON object")
	}
	v, err := d.value(t, 0, true)
	if err != nil {
		return types.Record{}, err
	}
	d.space()
	if d.pos != len(d.data) {
		return types.Record{}, errors.New("arguments have trailing data")
	}
	return v.(types.Record), nil
}

func (d *argDecoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *argDecoder) literal(lit string) error {
	if !bytes.HasPrefix(d.data[d.pos:], []byte(lit)) {
		return errSyntax
	}
	d.pos += len(lit)
	return nil
}

// value decodes one value at d.pos; nil with no error is a null.
func (d *argDecoder) value(t *argType, depth int, top bool) (types.Value, error) {
	if depth > maxArgNesting {
		return nil, errors.New("arguments nested too deeply")
	}
	d.space()
	if d.pos == len(d.data) {
		return nil, errSyntax
	}
	if t != nil && t.kind == kJSON {
		start := d.pos
		v, err := d.value(nil, depth, false)
		if err != nil || v == nil {
			return v, err
		}
		if s, ok := v.(types.String); ok {
			return s, nil
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, d.data[start:d.pos]); err != nil {
			return nil, errSyntax
		}
		return types.String(buf.String()), nil
	}
	switch c := d.data[d.pos]; {
	case c == '{':
		return d.object(t, depth, top)
	case c == '[':
		d.pos++
		var et *argType
		if t != nil && t.kind == kSet {
			et = t.elem
		} else if t == skipType {
			et = skipType
		}
		var vs []types.Value
		d.space()
		if d.pos < len(d.data) && d.data[d.pos] == ']' {
			d.pos++
			return types.NewSet(), nil
		}
		for {
			v, err := d.value(et, depth+1, false)
			if err != nil {
				return nil, err
			}
			if v != nil && t != skipType {
				vs = append(vs, v)
			}
			d.space()
			if d.pos == len(d.data) {
				return nil, errSyntax
			}
			if d.data[d.pos] == ']' {
				d.pos++
				if t == skipType {
					return nil, nil
				}
				return types.NewSet(vs...), nil
			}
			if d.data[d.pos] != ',' {
				return nil, errSyntax
			}
			d.pos++
		}
	case c == '"':
		s, err := d.str()
		return types.String(s), err
	case c == 't':
		return types.True, d.literal("true")
	case c == 'f':
		return types.False, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		v, err := d.number(t)
		if t == skipType {
			return nil, err
		}
		return v, err
	}
	return nil, errSyntax
}

func (d *argDecoder) object(t *argType, depth int, top bool) (types.Value, error) {
	d.pos++ // {
	skip := t == skipType
	if t != nil && t.kind != kRecord {
		t = nil
	}
	var m types.RecordMap
	if top && d.top != nil {
		m = d.top
	} else {
		m = types.RecordMap{}
	}
	d.space()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return types.NewRecord(m), nil
	}
	for {
		d.space()
		if d.pos == len(d.data) || d.data[d.pos] != '"' {
			return nil, errSyntax
		}
		k, f, err := d.key(t)
		if err != nil {
			return nil, err
		}
		d.space()
		if d.pos == len(d.data) || d.data[d.pos] != ':' {
			return nil, errSyntax
		}
		d.pos++
		var ft *argType
		keep := !skip && (t == nil || f != nil)
		if f != nil {
			ft = f.t
		} else if !keep {
			ft = skipType
		}
		v, err := d.value(ft, depth+1, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if top && d.strs != nil {
			if s, ok := v.(types.String); ok {
				d.strs[k] = string(s)
			} else {
				delete(d.strs, k)
			}
		}
		// Undeclared properties are dropped: no policy can name them.
		if keep && v != nil {
			m[types.String(k)] = v
		} else {
			delete(m, types.String(k))
		}
		d.space()
		if d.pos == len(d.data) {
			return nil, errSyntax
		}
		if d.data[d.pos] == '}' {
			d.pos++
			if skip {
				return nil, nil
			}
			return types.NewRecord(m), nil
		}
		if d.data[d.pos] != ',' {
			return nil, errSyntax
		}
		d.pos++
	}
}

func (d *argDecoder) number(t *argType) (types.Value, error) {
	start := d.pos
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.data[d.pos] == '-' {
		d.pos++
	}
	intStart := d.pos
	if n := digits(); n == 0 || (n > 1 && d.data[intStart] == '0') {
		return nil, errSyntax
	}
	integer := true
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		integer = false
		if digits() == 0 {
			return nil, errSyntax
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		integer = false
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return nil, errSyntax
		}
	}
	if t == skipType {
		return nil, nil
	}
	if v, ok := exactNumber(d.data[start:d.pos], t == nil || t.kind != kDecimal); ok {
		return v, nil
	}
	text := string(d.data[start:d.pos])
	if integer && (t == nil || t.kind != kDecimal) {
		if i, err := strconv.ParseInt(text, 10, 64); err == nil {
			return types.Long(i), nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, fmt.Errorf("number %s out of range", text)
	}
	return toDecimal(f)
}

// exactNumber converts a short number without an exponent exactly and
// without allocating: an integer to a Long (when long is set) and
// otherwise, with at most four decimal places, to a decimal. It reports
// false for anything else, which takes the general path.
func exactNumber(b []byte, long bool) (types.Value, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	var whole, frac int64
	i := 0
	for ; i < len(b) && b[i] != '.'; i++ {
		if b[i] < '0' || b[i] > '9' || i >= 15 {
			return nil, false
		}
		whole = whole*10 + int64(b[i]-'0')
	}
	places := 0
	if i < len(b) {
		for i++; i < len(b); i++ {
			if b[i] < '0' || b[i] > '9' || places == 4 {
				return nil, false
			}
			frac = frac*10 + int64(b[i]-'0')
			places++
		}
	}
	if places == 0 && long && !bytesContainDot(b) {
		if neg {
			whole = -whole
		}
		return types.Long(whole), true
	}
	for ; places < 4; places++ {
		frac *= 10
	}
	v := whole*10000 + frac
	if neg {
		v = -v
	}
	d, err := types.NewDecimal(v, -4)
	if err != nil {
		return nil, false
	}
	return d, true
}

func bytesContainDot(b []byte) bool { return bytes.IndexByte(b, '.') >= 0 }

// key decodes an object key at d.pos and looks it up in t's fields; a
// declared key's string is the schema's, so it costs no allocation.
func (d *argDecoder) key(t *argType) (string, *argField, error) {
	if t != nil {
		end := d.pos + 1
		for end < len(d.data) && d.data[end] != '"' && d.data[end] != '\\' && d.data[end] >= 0x20 {
			end++
		}
		if end < len(d.data) && d.data[end] == '"' {
			if f, ok := t.fields[string(d.data[d.pos+1:end])]; ok {
				d.pos = end + 1
				return f.name, f, nil
			}
		}
	}
	k, err := d.str()
	if err != nil {
		return "", nil, err
	}
	if t != nil {
		return k, t.fields[k], nil
	}
	return k, nil, nil
}

// str decodes a JSON string at d.pos (which is '"').
func (d *argDecoder) str() (string, error) {
	d.pos++
	start := d.pos
	// Fast path: no escapes, ASCII or valid UTF-8.
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if c == '"' {
			s := d.data[start:d.pos]
			d.pos++
			if utf8.Valid(s) {
				return string(s), nil
			}
			return replaceInvalid(s), nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		d.pos++
	}
	buf := append([]byte(nil), d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			if !utf8.Valid(buf) {
				return replaceInvalid(buf), nil
			}
			return string(buf), nil
		case c < 0x20:
			return "", errSyntax
		case c == '\\':
			if d.pos+1 >= len(d.data) {
				return "", errSyntax
			}
			e := d.data[d.pos+1]
			d.pos += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return "", errSyntax
				}
				if utf16.IsSurrogate(r) {
					if d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
						save := d.pos
						d.pos += 2
						r2, ok2 := d.hex4()
						if !ok2 {
							return "", errSyntax
						}
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							buf = utf8.AppendRune(buf, dec)
							continue
						}
						d.pos = save // not a pair: the second escape stands alone
					}
					r = utf8.RuneError
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return "", errSyntax
			}
		default:
			buf = append(buf, c)
			d.pos++
		}
	}
	return "", errSyntax
}

func (d *argDecoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.data) {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.pos : d.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	d.pos += 4
	return r, true
}

// replaceInvalid replaces each byte of invalid UTF-8 with U+FFFD, as
// encoding/json does.
func replaceInvalid(b []byte) string {
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return string(out)
}
