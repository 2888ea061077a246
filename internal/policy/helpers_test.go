package policy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

var now = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// writeDir writes files into a fresh directory and returns it.
func writeDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testSchema has a payments tool, a mail tool and a file tool.
func testSchema(t testing.TB) *policy.Schema {
	t.Helper()
	s, err := policy.SchemaFor([]policy.ToolSchema{
		{Server: "bank", Name: "send_money", Labels: []verdict.Label{verdict.Financial}, InputSchema: json.RawMessage(`{
			"type": "object",
			"properties": {
				"amount": {"type": "number"},
				"count": {"type": "integer"},
				"to": {"type": "string"},
				"memo": {"type": ["string", "null"]},
				"meta": {"oneOf": [{"type": "string"}, {"type": "object"}]},
				"tags": {"type": "array", "items": {"type": "string"}},
				"urgent": {"type": "boolean"},
				"beneficiary": {"type": "object", "properties": {"iban": {"type": "string"}}, "required": ["iban"]}
			},
			"required": ["amount", "to"]
		}`)},
		{Server: "mail", Name: "send", Labels: []verdict.Label{verdict.ExternalSink}, InputSchema: json.RawMessage(`{
			"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}`)},
		{Server: "fs", Name: "read_file", InputSchema: json.RawMessage(`{
			"type": "object", "properties": {"path": {"type": "string"}, "mode": {"type": "string"}}, "required": ["path"]}`),
			PathArgs: []string{"mode"}},
	}, policy.SchemaOptions{Totals: []string{"spend_today"}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func load(t testing.TB, schema *policy.Schema, src string) *policy.Set {
	t.Helper()
	set, err := policy.LoadFiles([]policy.File{{Name: "test.cedar", Data: []byte(src)}}, schema)
	if err != nil {
		t.Fatalf("loading policies: %v", err)
	}
	return set
}

func call(tool string, args string) policy.Request {
	server, name := "bank", tool
	for i := 0; i+1 < len(tool); i++ {
		if tool[i] == '_' && tool[i+1] == '_' {
			server, name = tool[:i], tool[i+2:]
			break
		}
	}
	return policy.Request{
		Action:    policy.CallTool,
		Agent:     policy.Agent{ID: "billing-bot", Owner: "alice", Hosting: "k8s", Groups: []string{"finance"}},
		Server:    server,
		Tool:      name,
		Arguments: json.RawMessage(args),
		Now:       now,
	}
}
