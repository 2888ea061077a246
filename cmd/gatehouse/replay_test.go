package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/gateway"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// TestPolicyReplay records decisions through a real gateway, then replays
// them under a candidate policy set that drops one rule.
func TestPolicyReplay(t *testing.T) {
	servers, err := demo.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer servers.Close()
	dir := t.TempDir()
	pol := filepath.Join(dir, "policies")
	if err := demo.WritePolicies(pol); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	text := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
data_dir: %s
audit: {privacy: full}
policy: {dir: %s}
agents: [{id: assistant, owner: dana@example.com, servers: [workspace]}]
servers:
  - id: workspace
    url: %q
    tools: {share_file: {labels: [external_sink]}, read_file: {labels: [reads_private]}}
`, filepath.Join(dir, "data"), pol, servers.WorkspaceURL)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := gateway.New(ctx, cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tok, _, _ := g.Minter().Mint("assistant", time.Minute)
	c := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: g.MCPURL(""),
		HTTPClient: &http.Client{Transport: bearer{token: tok, base: http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// One call allowed, one refused by share-only-notes.
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "workspace__read_file", Arguments: map[string]any{"path": "/notes/offsite-agenda.md"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "workspace__share_file", Arguments: map[string]any{"path": "/hr/salaries-2026.csv", "with": "x@example.com"}}); err == nil {
		t.Fatal("share outside /notes was allowed")
	}
	cs.Close()
	cancel()
	<-done
	g.Close()

	candidate := filepath.Join(dir, "candidate")
	os.MkdirAll(candidate, 0o700)
	files, _ := filepath.Glob(filepath.Join(pol, "*.cedar"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if filepath.Base(f) == "demo.cedar" {
			b = b[:bytes.Index(b, []byte("// Files may be shared only from /notes"))]
		}
		os.WriteFile(filepath.Join(candidate, filepath.Base(f)), b, 0o600)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"policy", "replay", "--config", cfgPath, "--candidate", candidate, "--since", "1h"}, &out, &errOut); err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut.String())
	}
	got := out.String()
	if !strings.Contains(got, "workspace/share_file") || !strings.Contains(got, "block (policy.forbid by share-only-notes)") ||
		!strings.Contains(got, "candidate: allow") || !strings.Contains(got, "2 recorded decisions replayed") || !strings.Contains(got, "1 would change") {
		t.Errorf("replay output:\n%s", got)
	}
}

// TestRecordedDecisionSource: a recorded call gives replay the workload
// identity behind its token (context.source) when the record has it in
// parts, and no source otherwise.
func TestRecordedDecisionSource(t *testing.T) {
	const withSource = `{"time": 1767225600000, "api": {"operation": "tools/call"}, "unmapped": {"agent": "assistant", "server": "bank",
		"tool": "get_balance", "phase": "decision", "source": "aws-prod:arn:aws:iam::123456789012:role/billing-agent",
		"source_identity": {"trust_source": "aws-prod", "kind": "aws", "tenant": "123456789012", "subject": "arn:aws:iam::123456789012:role/billing-agent"},
		"verdict": {"outcome": "allow", "reasons": [{"code": "policy.permit", "layer": "execution", "outcome": "allow", "policies": ["p"]}]}}}`
	var ev audit.Event
	if err := json.Unmarshal([]byte(withSource), &ev); err != nil {
		t.Fatal(err)
	}
	req, _, ok, _ := recordedDecision(&ev, nil)
	if !ok {
		t.Fatal("the record was not replayable")
	}
	want := &policy.Source{TrustSource: "aws-prod", Kind: "aws", Tenant: "123456789012", Subject: "arn:aws:iam::123456789012:role/billing-agent"}
	if diff := cmp.Diff(want, req.Source); diff != "" {
		t.Errorf("source (-want +got):\n%s", diff)
	}
	// An older record has only the "<trust source>:<subject>" string,
	// which cannot be split reliably (names may contain ':').
	ev.Unmapped.SourceIdentity = nil
	if req, _, ok, _ = recordedDecision(&ev, nil); !ok || req.Source != nil {
		t.Errorf("record without source_identity: ok %v, source %+v", ok, req.Source)
	}
}
