package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runPolicyCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"policy"}, args...), &out, &errb)
	return out.String(), errb.String(), err
}

func TestPolicyTestCommand(t *testing.T) {
	out, _, err := runPolicyCmd(t, "test", "../../policies")
	if err != nil || !strings.HasSuffix(out, " passed, 0 failed\n") {
		t.Fatalf("policy test policies: %v\n%s", err, out)
	}

	// A failing case: exit status 1 and a readable diff.
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("p.cedar", `@id("all") permit (principal, action, resource);`)
	write("x.test.yaml", `
cases:
  - name: wrong on purpose
    request: {action: call_tool, agent: {id: a, owner: o}, server: s, tool: t}
    expect: block
`)
	out, _, err = runPolicyCmd(t, "test", dir)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("policy test with a failing case: err %v, want exit status 1", err)
	}
	for _, want := range []string{"FAIL  x.test.yaml: wrong on purpose", "want: block", "got:  allow (policy.permit) by all", "0 passed, 1 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPolicyCheckCommand(t *testing.T) {
	out, _, err := runPolicyCmd(t, "check", "../../policies/templates")
	if err != nil || !strings.Contains(out, "11 policies (3 permit, 5 forbid, 3 challenge)") {
		t.Errorf("policy check templates: %v\n%s", err, out)
	}
	out, _, err = runPolicyCmd(t, "check", "-schema", "-tool", "payments__transfer", "../../policies/templates")
	if err != nil || !strings.Contains(out, "namespace Gatehouse") || !strings.Contains(out, "amount: decimal") {
		t.Errorf("policy check -schema: %v\n%s", err, out)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.cedar"), []byte("permit (principal, action, resource);\nforbid (principal action, resource);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runPolicyCmd(t, "check", dir)
	if err == nil || !strings.Contains(errOut, filepath.Join(dir, "bad.cedar")+":2:") {
		t.Errorf("policy check of a bad file: err %v, stderr %q", err, errOut)
	}
}

func TestPolicyUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"test"}, {"test", "a", "b"}, {"check", "-bogus", "x"}} {
		if _, _, err := runPolicyCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("policy %q: err %v, want a usage error", args, err)
		}
	}
}
