package mcp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestValidateArgs(t *testing.T) {
	send := &toolInfo{schema: &argSchema{}, InputSchema: json.RawMessage(`{
		"type":"object",
		"properties":{"to_iban":{"type":"string","pattern":"^[A-Z]{2}"},"amount":{"type":"number","exclusiveMinimum":0}},
		"required":["to_iban","amount"],"additionalProperties":false}`)}
	draft7 := &toolInfo{schema: &argSchema{}, InputSchema: json.RawMessage(`{"$schema":"http://json-schema.org/draft-07/schema#",
		"type":"object","properties":{"n":{"$ref":"#/definitions/small"}},"definitions":{"small":{"type":"integer","maximum":10}}}`)}
	noSchema := &toolInfo{schema: &argSchema{}}
	remote := &toolInfo{schema: &argSchema{}, InputSchema: json.RawMessage(`{"$ref":"https://evil.example/schema.json"}`)}
	local := &toolInfo{schema: &argSchema{}, InputSchema: json.RawMessage(`{"$ref":"file:///etc/passwd"}`)}
	broken := &toolInfo{schema: &argSchema{}, InputSchema: json.RawMessage(`{"type":"nonsense"}`)}
	tests := []struct {
		name string
		tool *toolInfo
		args string
		want string // "" = valid
	}{
		{"valid", send, `{"to_iban":"DE89","amount":5}`, ""},
		{"missing required", send, `{"to_iban":"DE89"}`, "amount"},
		{"wrong type", send, `{"to_iban":"DE89","amount":"5"}`, "/amount"},
		{"extra property", send, `{"to_iban":"DE89","amount":5,"memo":"x"}`, "memo"},
		{"negative amount", send, `{"to_iban":"DE89","amount":-1}`, "/amount"},
		{"not an object", send, `[1]`, "must be a JSON object"},
		{"absent arguments", noSchema, ``, ""},
		{"absent arguments, required fields", send, ``, "missing"},
		{"draft-07", draft7, `{"n":5}`, ""},
		{"draft-07 violation", draft7, `{"n":11}`, "/n"},
		{"remote ref never fetched", remote, `{}`, "not allowed"},
		{"local file ref never read", local, `{}`, "not allowed"},
		{"invalid schema", broken, `{}`, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tool.validateArgs(json.RawMessage(tt.args))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validateArgs: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validateArgs = %v, want error containing %q", err, tt.want)
			}
		})
	}
	if err := remote.validateArgs(nil); !errors.Is(err, errSchema) {
		t.Errorf("a schema with an external ref is not reported as a schema error: %v", err)
	}
}
