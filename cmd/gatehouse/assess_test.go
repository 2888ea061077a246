package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAssessExitCodes runs the command as CI would and checks the exit
// status for each verdict, for usage errors and for invalid input.
func TestAssessExitCodes(t *testing.T) {
	td := filepath.Join("..", "..", "internal", "assess", "testdata")
	ex := filepath.Join("..", "..", "examples", "assess")
	desc := func(name string) string { return filepath.Join(td, "descriptors", name) }
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{"ready", []string{"--deployment", desc("azure-native.yaml"), "--today", "2026-11-25"}, 0, "Verdict: READY (", ""},
		{"ready with conditions", []string{"--deployment", desc("preview-acceptable.yaml"), "--today", "2026-11-25"}, 0, "READY WITH CONDITIONS", ""},
		{"ready with conditions, strict", []string{"--deployment", desc("preview-acceptable.yaml"), "--today", "2026-11-25", "--strict"}, 4, "READY WITH CONDITIONS", ""},
		{"ready, strict", []string{"--deployment", desc("azure-native.yaml"), "--today", "2026-11-25", "--strict"}, 0, "READY (", ""},
		{"not ready", []string{"--deployment", desc("hybrid.yaml"), "--today", "2026-11-25"}, 3, "NOT READY", ""},
		{"not ready with config", []string{"--deployment", filepath.Join(ex, "external-entra.yaml"), "--config", filepath.Join(td, "configs", "strong.yaml"), "--today", "2026-11-25"}, 3, "directory__remove_group_member (privilege grant) has no approval policy", ""},
		{"candidate policies", []string{"--deployment", filepath.Join(ex, "external-entra.yaml"), "--config", filepath.Join(td, "configs", "strong.yaml"), "--policies", filepath.Join(ex, "policies"), "--today", "2026-11-25", "--format", "markdown"}, 0, "remove-group-member", ""},
		{"example config", []string{"--deployment", filepath.Join(ex, "hybrid.yaml"), "--config", filepath.Join(ex, "gatehouse.yaml"), "--today", "2026-11-25", "--strict"}, 0, "Verdict: READY (", ""},
		{"expired agent", []string{"--deployment", desc("azure-native.yaml"), "--today", "2027-07-01"}, 3, "the agent expired on 2027-06-30", ""},
		{"invalid descriptor", []string{"--deployment", desc("invalid.yaml")}, 1, "", "24 problems"},
		{"missing descriptor", []string{"--deployment", desc("nope.yaml")}, 1, "", "reading deployment descriptor"},
		{"ownerless agent in the config", []string{"--deployment", desc("unobservable.yaml"), "--config", filepath.Join(td, "configs", "ownerless.yaml")}, 1, "", "every agent needs an accountable owner"},
		{"ownerless agent in the descriptor", []string{"--deployment", desc("unobservable.yaml"), "--today", "2026-11-25"}, 3, "[BLOCKER] the agent has no accountable owner", ""},
		{"invalid config", []string{"--deployment", desc("azure-native.yaml"), "--config", desc("azure-native.yaml")}, 1, "", "loading gateway configuration"},
		{"no deployment", []string{}, 2, "", "needs --deployment"},
		{"bad format", []string{"--deployment", desc("azure-native.yaml"), "--format", "pdf"}, 2, "", "unknown --format"},
		{"policies without config", []string{"--deployment", desc("azure-native.yaml"), "--policies", td}, 2, "", "--policies needs --config"},
		{"bad date", []string{"--deployment", desc("azure-native.yaml"), "--today", "tomorrow"}, 2, "", "--today"},
		{"stray argument", []string{"--deployment", desc("azure-native.yaml"), "extra"}, 2, "", "no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"assess"}, tt.args...), &stdout, &stderr)
			code := exitCode(err, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d (err %v)\nstderr: %s", code, tt.code, err, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, stderr.String())
			}
		})
	}
}

func TestAssessOutputFile(t *testing.T) {
	out := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"assess", "--deployment", filepath.Join("..", "..", "examples", "assess", "hybrid.yaml"), "--format", "json", "--output", out, "--today", "2026-11-25"}, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("report written to stdout as well: %q", stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Schema  string              `json:"schema"`
		Verdict string              `json:"verdict"`
		Pattern struct{ ID string } `json:"pattern"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Schema != "gatehouse.assess/v1" || rep.Verdict != "ready" || rep.Pattern.ID != "hybrid" {
		t.Errorf("report = %+v", rep)
	}
	if !strings.Contains(stderr.String(), "ready") {
		t.Errorf("no verdict on stderr: %q", stderr.String())
	}
}
