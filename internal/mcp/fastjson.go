package mcp

import (
	"bytes"
	"encoding/json"
	"slices"
)

// Fast paths for the JSON the proxy touches on every message. The proxy
// only needs an object's top-level members as raw bytes, and to write
// objects from raw members; doing that with encoding/json's reflection
// cost a large share of the gateway's CPU per call. These functions work on
// input that already passed checkJSON (valid, UTF-8, no duplicate names);
// anything else takes the encoding/json path.

// members calls f with the name and raw value of each member of the JSON
// object b, in order. It reports false if b is not an object.
func members(b []byte, f func(name string, raw []byte)) bool {
	s := scanner{b: b}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		return true
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		name, err := s.str()
		if err != nil {
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.ws()
		start := s.i
		if err := s.value(0); err != nil {
			return false
		}
		f(name, s.b[start:s.i])
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			return true
		default:
			return false
		}
	}
}

// unquote returns the value of a raw JSON string.
func unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// decodeFast decodes a message from b, which passed checkJSON. It
// reports false when b needs the general decoder.
func decodeFast(b []byte) (*Message, bool) {
	m := &Message{}
	ok := true
	found := false
	if !members(b, func(name string, raw []byte) {
		switch name {
		case "jsonrpc":
			m.JSONRPC, found = unquote(raw)
			ok = ok && found
		case "id":
			m.ID = raw
		case "method":
			var good bool
			m.Method, good = unquote(raw)
			ok = ok && good
		case "params":
			m.Params = raw
		case "result":
			m.Result = raw
		case "error":
			var e WireError
			if json.Unmarshal(raw, &e) != nil {
				ok = false
				return
			}
			m.Error = &e
		}
	}) || !ok {
		return nil, false
	}
	return m, true
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// encodeFast writes m; raw members are copied as they are (they are valid
// JSON: checked on the way in, or produced by the proxy).
func encodeFast(m *Message) []byte {
	n := 32 + len(m.ID) + len(m.Method) + len(m.Params) + len(m.Result)
	b := make([]byte, 0, n)
	b = append(b, `{"jsonrpc":"2.0"`...)
	if len(m.ID) > 0 {
		b = append(b, `,"id":`...)
		b = append(b, m.ID...)
	}
	if m.Method != "" {
		b = append(b, `,"method":`...)
		b = appendString(b, m.Method)
	}
	if len(m.Params) > 0 {
		b = append(b, `,"params":`...)
		b = append(b, m.Params...)
	}
	if len(m.Result) > 0 {
		b = append(b, `,"result":`...)
		b = append(b, m.Result...)
	}
	if m.Error != nil {
		e, err := json.Marshal(m.Error)
		if err != nil {
			e = []byte(`{"code":-32603,"message":"internal error encoding an error"}`)
		}
		b = append(b, `,"error":`...)
		b = append(b, e...)
	}
	return append(b, '}')
}

// encodeObject writes an object from raw members, names sorted.
func encodeObject(p map[string]json.RawMessage) json.RawMessage {
	names := make([]string, 0, len(p))
	n := 2
	for k, v := range p {
		names = append(names, k)
		n += len(k) + len(v) + 4
	}
	slices.Sort(names)
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, k := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = append(b, p[k]...)
	}
	return append(b, '}')
}
