package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"github.com/cedar-policy/cedar-go/types"
)

// refConvert is the reference conversion: encoding/json's decoding, then
// the same typing rules as argDecoder (permissive kJSON fields excepted).
func refConvert(v any, t *argType) (types.Value, error) {
	if v == nil {
		return nil, nil
	}
	switch v := v.(type) {
	case string:
		return types.String(v), nil
	case bool:
		return types.Boolean(v), nil
	case json.Number:
		if t == nil || t.kind != kDecimal {
			if i, err := strconv.ParseInt(string(v), 10, 64); err == nil && !bytes.ContainsAny([]byte(v), ".eE") {
				return types.Long(i), nil
			}
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, fmt.Errorf("range")
		}
		return toDecimal(f)
	case []any:
		var et *argType
		if t != nil && t.kind == kSet {
			et = t.elem
		}
		var vs []types.Value
		for _, e := range v {
			ce, err := refConvert(e, et)
			if err != nil {
				return nil, err
			}
			if ce != nil {
				vs = append(vs, ce)
			}
		}
		return types.NewSet(vs...), nil
	case map[string]any:
		if t != nil && t.kind != kRecord {
			t = nil
		}
		m := types.RecordMap{}
		for k, e := range v {
			var ft *argType
			if t != nil {
				f, ok := t.fields[k]
				if !ok {
					continue
				}
				ft = f.t
			}
			ce, err := refConvert(e, ft)
			if err != nil {
				return nil, err
			}
			if ce != nil {
				m[types.String(k)] = ce
			}
		}
		return types.NewRecord(m), nil
	}
	return nil, fmt.Errorf("unexpected %T", v)
}

func FuzzDecodeArgs(f *testing.F) {
	typed, err := parseInputSchema(json.RawMessage(`{"type":"object","properties":{
		"a": {"type": "number"}, "b": {"type": "integer"}, "c": {"type": "string"},
		"d": {"type": "array", "items": {"type": "number"}},
		"e": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "boolean"}}}}}`))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{}`, `{"a": 1, "b": 2, "c": "x"}`, `{"a": 1.5e3, "b": -0, "d": [1, 2.5, null]}`,
		`{"e": {"x": 1, "y": true, "z": "dropped"}, "f": [{"g": null}]}`,
		`{"c": "\u00e9\ud83d\ude00\\\"\n", "c": "dup"}`, `{"c": "\ud800 lone"}`, "{\"c\": \"\xff\"}",
		`{"a": 1e400}`, `{"b": 9223372036854775808}`, `{"a" 1}`, `{"a": 01}`, `[1]`, `{"a": 1}x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, at := range []*argType{nil, typed} {
			got, gotErr := decodeArgs(data, at, map[string]string{}, types.RecordMap{})
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.UseNumber()
			var obj any
			refErr := dec.Decode(&obj)
			if refErr == nil && len(bytes.Trim(data[dec.InputOffset():], " \t\r\n")) > 0 {
				refErr = fmt.Errorf("trailing data")
			}
			m, isObj := obj.(map[string]any)
			if refErr == nil && !isObj {
				refErr = fmt.Errorf("not an object")
			}
			if refErr != nil {
				if gotErr == nil {
					t.Fatalf("decodeArgs(%q) accepted what encoding/json rejects (%v)", data, refErr)
				}
				continue
			}
			want, wantErr := refConvert(m, at)
			if (gotErr != nil) != (wantErr != nil) {
				t.Fatalf("decodeArgs(%q): error %v, reference error %v", data, gotErr, wantErr)
			}
			if gotErr == nil && !got.Equal(want) {
				t.Fatalf("decodeArgs(%q) = %s, reference %s", data, got.MarshalCedar(), want.(types.Record).MarshalCedar())
			}
		}
	})
}
