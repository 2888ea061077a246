package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// auditFixture writes a SQLite audit log of 30 records with checkpoints and
// returns its path and verifier key.
func auditFixture(t *testing.T) (string, string) {
	t.Helper()
	ctx := context.Background()
	signer, _, vkey := audittest.Keys(t)
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(ctx, audit.Config{Backend: a, Signer: signer, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := []verdict.Outcome{verdict.Allow, verdict.Block, verdict.Challenge}
	for i := range 30 {
		if _, err := l.Append(ctx, audittest.Event(fmt.Sprint("agent", i%2), fmt.Sprint("tool", i%5), fmt.Sprint("corr", i/3), outcomes[i%3])); err != nil {
			t.Fatal(err)
		}
		if i == 14 {
			l.Checkpoint(ctx)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, vkey
}

func runAuditCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runAudit(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestAuditCLI(t *testing.T) {
	path, vkey := auditFixture(t)
	keyFile := filepath.Join(t.TempDir(), "key.pub")
	os.WriteFile(keyFile, []byte(vkey+"\n"), 0o644)

	out, _, err := runAuditCmd(t, "verify", "--db", path, "--key", "@"+keyFile)
	if err != nil || !strings.Contains(out, "OK") || !strings.Contains(out, "signed checkpoints verified: 2") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	out, _, err = runAuditCmd(t, "verify", "--db", path, "--key", vkey, "--from", "5", "--to", "12")
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify range: %v\n%s", err, out)
	}

	out, _, err = runAuditCmd(t, "query", "--db", path, "--agent", "agent1", "--verdict", "block", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "\n"); n != 5 {
		t.Errorf("query agent1/block: %d records, want 5\n%s", n, out)
	}
	out, _, err = runAuditCmd(t, "query", "--db", path, "--correlation", "corr3", "--since", "1h")
	if err != nil || strings.Count(out, "\n") != 4 || !strings.Contains(out, "API Activity") {
		t.Errorf("query correlation: %v\n%s", err, out)
	}

	out, _, err = runAuditCmd(t, "checkpoint", "--db", path, "--key", vkey)
	if err != nil || !strings.HasPrefix(out, "gatehouse.test/audit\n30\n") {
		t.Errorf("checkpoint: %v\n%s", err, out)
	}

	bundle := filepath.Join(t.TempDir(), "audit.bundle")
	if _, _, err := runAuditCmd(t, "export", "--db", path, "--from", "10", "--to", "20", "--out", bundle, "--key", vkey); err != nil {
		t.Fatal(err)
	}
	out, _, err = runAuditCmd(t, "verify", "--bundle", bundle, "--key", vkey)
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify bundle: %v\n%s", err, out)
	}
	_, stderr, err := runAuditCmd(t, "verify", "--bundle", bundle)
	if err != nil || !strings.Contains(stderr, "warning: using the key recorded in the bundle") {
		t.Fatalf("verify bundle with its own key: %v\n%s", err, stderr)
	}

	// Tamper with the store: edit record 7.
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_entries SET data = replace(data, 'tool2', 'toolX') WHERE idx = 7`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, _, err = runAuditCmd(t, "verify", "--db", path, "--key", vkey)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, "FAIL modified: index 7") {
		t.Fatalf("verify tampered: %v\n%s", err, out)
	}
}

func TestAuditCLIUsage(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{"verify", "--db", "x"},
		{"query"},
		{"query", "--db", "x", "--verdict", "maybe"},
		{"export", "--db", "x"},
		{"verify", "--nope"},
	} {
		if _, _, err := runAuditCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if _, _, err := runAuditCmd(t, "query", "--db", filepath.Join(t.TempDir(), "missing.db")); err == nil || errors.Is(err, errUsage) {
		t.Errorf("query on a missing store: %v", err)
	}
}

func TestAuditKeygen(t *testing.T) {
	out := filepath.Join(t.TempDir(), "audit.key")
	vkey, _, err := runAuditCmd(t, "keygen", "--name", "gatehouse.example/audit", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadVerifier(strings.TrimSpace(vkey)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
}
