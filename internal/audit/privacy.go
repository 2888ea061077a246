package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
)

// Mode selects how much of a call's payload the log keeps.
type Mode int

const (
	// MetadataOnly keeps no payload: arguments and results are replaced by
	// a salted hash (HMAC-SHA256), enough to prove later which payload was
	// seen without storing it. The default.
	MetadataOnly Mode = iota
	// FullPayload keeps arguments and results as canonical JSON, with
	// secrets replaced by a salted hash.
	FullPayload
)

// ParseMode parses "metadata" or "full".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "metadata":
		return MetadataOnly, nil
	case "full":
		return FullPayload, nil
	}
	return MetadataOnly, fmt.Errorf("unknown payload mode %q (want metadata or full)", s)
}

// secretKey matches object keys whose values are secrets.
var secretKey = regexp.MustCompile(`(?i)(passw(or)?d|secret|token|api[_-]?key|authori[sz]ation|cookie|private[_-]?key|credential|session[_-]?id|access[_-]?key|signature)`)

// secretValue matches string values that look like credentials whatever
// their key: bearer tokens, JWTs, cloud and SaaS keys, PEM private keys.
var secretValue = regexp.MustCompile(`(?i)(^bearer\s+\S+|^basic\s+[a-z0-9+/=]{8,}|eyJ[a-zA-Z0-9_-]{8,}\.[a-zA-Z0-9_-]{8,}\.|\bAKIA[0-9A-Z]{16}\b|\bsk-[A-Za-z0-9_-]{16,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bxox[abprs]-[A-Za-z0-9-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)`)

// privacy applies a payload mode to events before they are hashed into the
// log: the log never holds a secret in clear.
type privacy struct {
	mode Mode
	salt []byte
}

// Hash returns the salted hash of b as "hmac-sha256:<hex>".
func (p privacy) hash(b []byte) string {
	m := hmac.New(sha256.New, p.salt)
	m.Write(b)
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))
}

func (p privacy) apply(e *Event) error {
	if u := e.Unmapped; u != nil {
		var err error
		if u.Arguments, u.ArgumentsHash, err = p.payload(u.Arguments, u.ArgumentsHash); err != nil {
			return fmt.Errorf("arguments: %w", err)
		}
		if u.Result, u.ResultHash, err = p.payload(u.Result, u.ResultHash); err != nil {
			return fmt.Errorf("result: %w", err)
		}
	}
	if e.Entity != nil && len(e.Entity.Data) > 0 {
		c, err := canonicalJSON(e.Entity.Data)
		if err != nil {
			return fmt.Errorf("entity data: %w", err)
		}
		if e.Entity.Data, err = p.redact(c); err != nil {
			return err
		}
	}
	return nil
}

func (p privacy) payload(raw json.RawMessage, hash string) (json.RawMessage, string, error) {
	if len(raw) == 0 {
		return nil, hash, nil
	}
	if p.mode != FullPayload {
		// Metadata only: the salted hash of the payload's compact bytes.
		// Compacting is linear and allocation-light, where canonicalising
		// (decoding and re-encoding) large tool results was not.
		var b bytes.Buffer
		b.Grow(len(raw))
		if err := json.Compact(&b, raw); err != nil {
			return nil, "", fmt.Errorf("decoding payload: %w", err)
		}
		return nil, p.hash(b.Bytes()), nil
	}
	c, err := canonicalJSON(raw)
	if err != nil {
		return nil, "", err
	}
	hash = p.hash(c)
	r, err := p.redact(c)
	return r, hash, err
}

// redact replaces secrets in canonical JSON c by their salted hash.
func (p privacy) redact(c []byte) (json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(c))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	v = p.walk(v)
	return marshalCanonical(v)
}

func (p privacy) walk(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if secretKey.MatchString(k) {
				if val == nil {
					continue
				}
				b, _ := json.Marshal(val)
				x[k] = "[REDACTED " + p.hash(b) + "]"
				continue
			}
			x[k] = p.walk(val)
		}
		return x
	case []any:
		for i := range x {
			x[i] = p.walk(x[i])
		}
		return x
	case string:
		if secretValue.MatchString(x) {
			return "[REDACTED " + p.hash([]byte(x)) + "]"
		}
	}
	return v
}

// canonicalJSON returns raw re-encoded with sorted object keys and no
// insignificant whitespace; numbers keep their literal form.
func canonicalJSON(raw []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("decoding payload: %w", err)
	}
	if d.More() {
		return nil, fmt.Errorf("decoding payload: trailing data")
	}
	return marshalCanonical(v)
}

// marshalCanonical encodes v without HTML escaping; encoding/json sorts map
// keys, and the event types declare fields in key order.
func marshalCanonical(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
