package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCheckJSON(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = valid
	}{
		{`{"a":1,"b":[true,false,null,"x",-1.5e3]}`, ""},
		{`  {"a":{"b":{"c":[]}}}  `, ""},
		{`{"a":1,"a":2}`, "duplicate member"},
		{`{"a":1,"\u0061":2}`, "duplicate member"},
		{`{"x":{"a":1,"a":2}}`, "duplicate member"},
		{`[{"a":1},{"a":1}]`, ""},
		{`{"a":"\ud800"}`, "lone surrogate"},
		{`{"a":"\ud83d\ude00","\ud83d\ude00":1}`, ""},
		{"{\"a\":\"\xff\"}", "UTF-8"},
		{`{"a":1}{"b":2}`, "after the JSON value"},
		{`{"a":01}`, "expected"},
		{`{"a":1.}`, "invalid number"},
		{`{"a":tru}`, "invalid literal"},
		{`{"a":"x` + "\n" + `"}`, "control character"},
		{`{"a":"\q"}`, "invalid escape"},
		{strings.Repeat("[", 200) + strings.Repeat("]", 200), "nesting deeper"},
		{``, "unexpected end"},
	}
	for _, tt := range tests {
		err := checkJSON([]byte(tt.in))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("checkJSON(%q) = %v, want valid", tt.in, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("checkJSON(%q) = %v, want error containing %q", tt.in, err, tt.want)
		}
	}
}

func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, `{"a":[1,2,{"b":"\u00e9"}]}`, `{"a":1,"a":2}`, `[]`, `"x"`, `-0.5e-3`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkJSON(b)
		if err == nil && !json.Valid(b) {
			t.Fatalf("checkJSON accepted invalid JSON %q", b)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"a","result":{}}`,
		`{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"m"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkJSON(b) != nil {
			return
		}
		m, werr := decodeMessage(b)
		if werr != nil {
			if m != nil {
				t.Fatal("message and error")
			}
			return
		}
		kinds := 0
		for _, k := range []bool{m.IsRequest(), m.IsNotification(), m.IsResponse()} {
			if k {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("%q decodes to a message of %d kinds", b, kinds)
		}
		// What the proxy forwards must parse to the same message.
		out := encode(m)
		m2, werr := decodeMessage(out)
		if werr != nil || m2.Method != m.Method || !bytes.Equal(m2.ID, m.ID) {
			t.Fatalf("re-encoding %q gave %q (%v)", b, out, werr)
		}
	})
}

func TestSSEReader(t *testing.T) {
	in := ": comment\n\nid: 1\nevent: message\ndata: {\"a\":\ndata: 1}\n\nretry: 500\nid: 2\ndata: \n\ndata: x\r\n\r\ndata: unterminated"
	r := newSSEReader(strings.NewReader(in), 1<<10)
	var got []string
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.ID+"|"+string(ev.Data)+"|"+strings.Repeat("r", min(ev.Retry, 1)))
	}
	want := []string{"1|{\"a\":\n1}|", "2||r", "|x|"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("events = %q, want %q", got, want)
	}
	big := "data: " + strings.Repeat("a", 2000) + "\n\n"
	if _, err := newSSEReader(strings.NewReader(big), 1000).Next(); !errors.Is(err, errEventTooLarge) {
		t.Errorf("oversized event: %v", err)
	}
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("id: 1\ndata: {}\n\n"))
	f.Add([]byte("data: a\ndata: b\n\nretry: 10\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newSSEReader(bytes.NewReader(b), 4096)
		for i := 0; i < 1000; i++ {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if len(ev.Data) > 4096 {
				t.Fatal("event larger than the limit")
			}
		}
	})
}

func TestNamespacing(t *testing.T) {
	bank, ws := &upstream{id: "bank"}, &upstream{id: "work-space"}
	ep := &endpoint{namespace: true, servers: []*upstream{bank, ws}, byID: map[string]*upstream{"bank": bank, "work-space": ws}}
	tests := []struct {
		exposed, server, name string
		ok                    bool
	}{
		{"bank__send_money", "bank", "send_money", true},
		{"bank__a__b", "bank", "a__b", true},
		{"work-space__x", "work-space", "x", true},
		{"bank__", "", "", false},
		{"__x", "", "", false},
		{"nope__x", "", "", false},
		{"send_money", "", "", false},
	}
	for _, tt := range tests {
		u, name, ok := ep.resolveName(tt.exposed)
		if ok != tt.ok || ok && (u.id != tt.server || name != tt.name) {
			t.Errorf("resolveName(%q) = %v %q %v", tt.exposed, u, name, ok)
		}
		if ok && ep.exposeName(u.id, name) != tt.exposed {
			t.Errorf("exposeName does not invert resolveName for %q", tt.exposed)
		}
	}
	for _, uri := range []string{"file:///a/b", "bank://acct/1", "test://x?y=z+w"} {
		exp := ep.exposeURI("bank", uri)
		u, back, ok := ep.resolveURI(exp)
		if !ok || u != bank || back != uri {
			t.Errorf("URI %q → %q → %q", uri, exp, back)
		}
	}
	if _, _, ok := ep.resolveURI("ghost+file:///x"); ok {
		t.Error("resolved an unknown server's URI")
	}
	c := listCursor{Server: 1, Cursor: "abc"}
	if got, ok := decodeCursor(encodeCursor(c)); !ok || got != c {
		t.Errorf("cursor round trip: %v %v", got, ok)
	}
	if _, ok := decodeCursor("!!"); ok {
		t.Error("accepted a malformed cursor")
	}
}

func TestModernHeaderValues(t *testing.T) {
	for _, v := range []string{"plain", "with space", " lead", "ünïcode", "=?base64?trick?="} {
		enc := encodeHeaderValue(v)
		if dec, ok := decodeHeaderValue(enc); !ok || dec != v {
			t.Errorf("%q → %q → %q", v, enc, dec)
		}
	}
	if _, ok := decodeHeaderValue("=?base64?***?="); ok {
		t.Error("accepted invalid base64")
	}
	schema := json.RawMessage(`{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},"n":{"type":"integer","x-mcp-header":"N"},"o":{"type":"object","properties":{"deep":{"type":"boolean","x-mcp-header":"Deep"}}}}}`)
	h, err := paramHeaders(schema, json.RawMessage(`{"region":"eu west","n":3,"o":{"deep":true}}`))
	if err != nil || h.Get("Mcp-Param-Region") != "eu west" || h.Get("Mcp-Param-N") != "3" || h.Get("Mcp-Param-Deep") != "true" {
		t.Errorf("paramHeaders = %v, %v", h, err)
	}
	if err := checkParamHeaders(h, schema, json.RawMessage(`{"region":"eu west","n":3.0,"o":{"deep":true}}`)); err != nil {
		t.Errorf("matching headers refused: %v", err)
	}
	if err := checkParamHeaders(h, schema, json.RawMessage(`{"region":"us","n":3,"o":{"deep":true}}`)); err == nil {
		t.Error("mismatched header accepted")
	}
	if err := checkParamHeaders(nil, schema, json.RawMessage(`{"region":"us"}`)); err == nil {
		t.Error("missing header accepted")
	}
}

func FuzzFastJSON(f *testing.F) {
	for _, s := range []string{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,{"b":"\u00e9\n"}]}}}`,
		`{"jsonrpc":"2.0","id":"a\"b","result":{"x":1}}`, `{"jsonrpc":"2.0","id":null,"method":"m"}`, `{ "method" : "a\\b" , "jsonrpc":"2.0"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkJSON(b) != nil {
			return
		}
		// The fast decoder agrees with encoding/json, except that it matches
		// member names exactly where encoding/json folds case ("pArAms"):
		// the proxy re-encodes what it decoded, so what it forwards is what
		// it decided on either way.
		for _, k := range []string{`"jsonrpc"`, `"id"`, `"method"`, `"params"`, `"result"`, `"error"`} {
			if bytes.Contains(bytes.ToLower(b), []byte(k)) && !bytes.Contains(b, []byte(k)) {
				return
			}
			if bytes.Count(bytes.ToLower(b), []byte(k)) != bytes.Count(b, []byte(k)) {
				return
			}
		}
		fast, ok := decodeFast(b)
		var slow Message
		serr := json.Unmarshal(b, &slow)
		if !ok {
			return
		}
		if serr != nil {
			t.Fatalf("fast decode accepted what encoding/json refuses: %q (%v)", b, serr)
		}
		if fast.Method != slow.Method || fast.JSONRPC != slow.JSONRPC || !jsonEqual(fast.ID, slow.ID) || !jsonEqual(fast.Params, slow.Params) || !jsonEqual(fast.Result, slow.Result) {
			t.Fatalf("decoders disagree on %q:\nfast %+v\nslow %+v", b, fast, slow)
		}
		// Encoding is valid JSON that decodes to the same message.
		out := encodeFast(fast)
		var back Message
		if err := json.Unmarshal(out, &back); err != nil || back.Method != fast.Method {
			t.Fatalf("encodeFast(%q) = %q (%v)", b, out, err)
		}
		// params round-trip through members and encodeObject.
		if len(fast.Params) > 0 && fast.Params[0] == '{' {
			p, err := parseParams(fast.Params)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(p.raw(), fast.Params) {
				t.Fatalf("params %q re-encoded as %q", fast.Params, p.raw())
			}
		}
	})
}

func jsonEqual(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
