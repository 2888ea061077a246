package approval_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/approval"
)

func TestCanonicalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, `{}`},
		{` {} `, `{}`},
		{`{"b":1, "a":[1, 2,{"d":null,"c":true}]}`, `{"a":[1,2,{"c":true,"d":null}],"b":1}`},
		{"\t{\n\"a\" :\r\n false }", `{"a":false}`},
		// Numbers: one exact form.
		{`[1, 1.0, 1.00e0, 10e-1, 0.1e1, 1E0, 100e-2]`, `[1,1,1,1,1,1,1]`},
		{`[0, -0, 0.0, 0e10, -0.0e-5]`, `[0,0,0,0,0]`},
		{`[1500.00, 1.5e3, 15e2, 150000e-2]`, `[1500,1500,1500,1500]`},
		{`[123.4500, -0.001, 1e21, 1e20, 1.5e-7, 0.000001, 1e-6, 123e-9]`, `[123.45,-0.001,1e21,100000000000000000000,1.5e-7,0.000001,0.000001,1.23e-7]`},
		{`[9007199254740993, 9007199254740992]`, `[9007199254740993,9007199254740992]`},
		{`[12345678901234567890123, 1e400, -2.5E-400]`, `[1.2345678901234567890123e22,1e400,-2.5e-400]`},
		// Strings: minimal escaping, escapes resolved.
		{`["\u0041\u00e9\ud83d\ude00", "a\/b", "<>&\u2028"]`, "[\"Aé😀\",\"a/b\",\"<>&\u2028\"]"},
		{`["\b\f\n\r\t\u0001\u001f\"\\"]`, `["\b\f\n\r\t\u0001\u001f\"\\"]`},
		// Keys sort by their unescaped bytes.
		{`{"\u0062":1,"a":2,"é":3,"z":4}`, `{"a":2,"b":1,"z":4,"é":3}`},
	} {
		got, err := approval.Canonicalize([]byte(tc.in))
		if err != nil {
			t.Errorf("Canonicalize(%s): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("Canonicalize(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	for _, in := range []string{
		`{"a":1,"a":2}`,       // duplicate key
		`{"a":1,"\u0061":2}`,  // duplicate after unescaping
		`{"a":{"b":1,"b":1}}`, // nested duplicate
		"[\"\xff\"]",          // invalid UTF-8
		`["\ud800"]`,          // lone high surrogate
		`["\udc00"]`,          // lone low surrogate
		`["\ud800\u0041"]`,    // high surrogate without its pair
		`{"a":1}{}`,           // trailing data
		`{"a":01}`, `[1.]`, `[.5]`, `[1e]`, `[+1]`, `[NaN]`, `[Infinity]`,
		`{"a":1,}`, `[1,]`, `{a:1}`, `["a` + "\n" + `"]`, `["\x"]`,
		`[1e1000000000]`, // exponent out of range
		strings.Repeat("[", 200) + strings.Repeat("]", 200), // too deep
	} {
		if got, err := approval.Canonicalize([]byte(in)); !errors.Is(err, approval.ErrNotCanonicalizable) {
			t.Errorf("Canonicalize(%q) = %s, %v; want ErrNotCanonicalizable", in, got, err)
		}
	}
}

func TestCallHash(t *testing.T) {
	base := func() []string {
		return []string{"bank", "send_money", `{"amount":1500,"to":"x"}`, "agent", "user", "task", "pv1"}
	}
	hash := func(p []string) string {
		h, err := approval.CallHash(p[0], p[1], []byte(p[2]), p[3], p[4], p[5], p[6])
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	h0 := hash(base())
	// The SHA-256 of the documented document, computed independently:
	// {"agent":"agent","arguments":{"amount":1500,"to":"x"},"policy_version":"pv1",
	//  "server":"bank","task":"task","tool":"send_money","user":"user","v":1}
	if h0 != "sha256:90945c60fee29067af304a5fe7640056f37c130158030f9facb925fd35fb9380" {
		t.Errorf("call hash %s differs from the documented document's SHA-256", h0)
	}
	same := base()
	same[2] = ` { "to" : "x", "amount" : 1.5e3 } `
	if hash(same) != h0 {
		t.Error("the same call with other formatting hashes differently")
	}
	seen := map[string]int{h0: -1}
	for i := range 7 {
		p := base()
		p[i] += "x"
		if i == 2 {
			p[2] = `{"amount":1501,"to":"x"}`
		}
		h := hash(p)
		if j, dup := seen[h]; dup {
			t.Errorf("changing field %d gives the hash of field %d", i, j)
		}
		seen[h] = i
	}
	// Field boundaries are unambiguous: moving text from one field to the
	// next changes the hash.
	a := base()
	a[4], a[5] = "us", "ertask"
	if hash(a) == h0 {
		t.Error("field boundary ambiguity")
	}
	if _, err := approval.CallHash("s", "t", []byte(`{"a":1,"a":2}`), "a", "u", "t", "p"); err == nil {
		t.Error("CallHash accepted duplicate keys")
	}
}

// FuzzCanonicalize checks that the canonical form is valid JSON, a fixed
// point, and that only valid JSON canonicalizes.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1.50,"x"]}`, `[1e5,-0.0,"\u00e9\ud83d\ude00"]`, `{"a":{"a":null}}`, `"<&>"`, `123.456e-7`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := approval.Canonicalize(in)
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(in)) > 0 && !json.Valid(in) {
			t.Fatalf("canonicalized invalid JSON %q", in)
		}
		if !json.Valid(c) {
			t.Fatalf("canonical form %q of %q is not JSON", c, in)
		}
		c2, err := approval.Canonicalize(c)
		if err != nil || !bytes.Equal(c, c2) {
			t.Fatalf("not a fixed point: %q → %q (%v)", c, c2, err)
		}
		// The canonical form means the same: equal when both decode (floats
		// compare with ==, so -0 equals 0 and one real number decodes alike
		// from any of its spellings).
		var x, y any
		if len(bytes.TrimSpace(in)) > 0 && json.Unmarshal(in, &x) == nil {
			if err := json.Unmarshal(c, &y); err != nil || !reflect.DeepEqual(x, y) {
				t.Fatalf("meaning changed: %q → %q", in, c)
			}
		}
	})
}
