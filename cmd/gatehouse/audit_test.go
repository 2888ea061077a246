package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
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

	// The other filters: tool, class, time bounds, index and limit.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--tool", "tool2"}, 6},
		{[]string{"--tool", "tool2", "--agent", "agent0"}, 3},
		{[]string{"--class", "6003"}, 30},
		{[]string{"--class", "3002"}, 0},
		{[]string{"--until", "1h"}, 0},
		{[]string{"--until", future, "--since", "1h"}, 30},
		{[]string{"--from", "25"}, 5},
		{[]string{"--limit", "7"}, 7},
	} {
		out, _, err := runAuditCmd(t, append([]string{"query", "--db", path, "--json"}, tc.args...)...)
		if err != nil {
			t.Fatalf("query %v: %v", tc.args, err)
		}
		if n := strings.Count(out, "\n"); n != tc.want {
			t.Errorf("query %v: %d records, want %d\n%s", tc.args, n, tc.want, out)
		}
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

// TestAuditProofs prints inclusion and consistency proofs from the store,
// checks them as a third party would (golang.org/x/mod alone) and with
// verify --proof, and checks that forged proofs fail.
func TestAuditProofs(t *testing.T) {
	path, vkey := auditFixture(t) // 30 records, checkpoints at 15 and 30
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	signed := func(msg string) (int64, tlog.Hash) {
		n, err := note.Open([]byte(msg), note.VerifierList(v))
		if err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
		lines := strings.Split(n.Text, "\n")
		size, err := strconv.ParseInt(lines[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		root, err := tlog.ParseHash(lines[2])
		if err != nil {
			t.Fatal(err)
		}
		return size, root
	}

	// Inclusion of record 7 in the latest checkpoint (30), and in 15.
	for _, args := range [][]string{{"--index", "7"}, {"--index", "7", "--size", "15"}, {"--index", "29", "--key", vkey}} {
		out, _, err := runAuditCmd(t, append([]string{"prove", "--db", path}, args...)...)
		if err != nil {
			t.Fatalf("prove %v: %v", args, err)
		}
		var p struct {
			Index      int64       `json:"index"`
			TreeSize   int64       `json:"tree_size"`
			Leaf       string      `json:"leaf"`
			LeafHash   tlog.Hash   `json:"leaf_hash"`
			Proof      []tlog.Hash `json:"proof"`
			Checkpoint string      `json:"checkpoint"`
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("prove %v: %v\n%s", args, err, out)
		}
		size, root := signed(p.Checkpoint)
		if size != p.TreeSize || tlog.RecordHash([]byte(p.Leaf)) != p.LeafHash || !strings.Contains(p.Leaf, fmt.Sprintf(`"index":%s,`, args[1])) {
			t.Fatalf("prove %v: checkpoint size %d, leaf %s", args, size, p.Leaf)
		}
		if err := tlog.CheckRecord(p.Proof, size, root, p.Index, p.LeafHash); err != nil {
			t.Errorf("prove %v: %v", args, err)
		}
		if out, _, err := runAuditCmd(t, "verify", "--proof", write("inclusion.json", out), "--key", vkey); err != nil || !strings.HasPrefix(out, "OK") {
			t.Errorf("verify --proof (prove %v): %v %s", args, err, out)
		}
	}

	out, _, err := runAuditCmd(t, "consistency", "--db", path, "--old", "15", "--key", vkey)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		OldSize       int64       `json:"old_size"`
		NewSize       int64       `json:"new_size"`
		Proof         []tlog.Hash `json:"proof"`
		OldCheckpoint string      `json:"old_checkpoint"`
		NewCheckpoint string      `json:"new_checkpoint"`
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	oldSize, oldRoot := signed(c.OldCheckpoint)
	newSize, newRoot := signed(c.NewCheckpoint)
	if oldSize != 15 || newSize != 30 || c.OldSize != 15 || c.NewSize != 30 {
		t.Fatalf("consistency sizes %d→%d, checkpoints %d→%d", c.OldSize, c.NewSize, oldSize, newSize)
	}
	if err := tlog.CheckTree(c.Proof, newSize, newRoot, oldSize, oldRoot); err != nil {
		t.Errorf("consistency: %v", err)
	}
	consistency := out
	if out, _, err := runAuditCmd(t, "verify", "--proof", write("consistency.json", consistency), "--key", vkey); err != nil || !strings.HasPrefix(out, "OK") {
		t.Errorf("verify --proof consistency: %v %s", err, out)
	}

	// Forged proofs fail, with exit status 1.
	inclusion, _, err := runAuditCmd(t, "prove", "--db", path, "--index", "7")
	if err != nil {
		t.Fatal(err)
	}
	firstHash := func(s, key string) string { // the first hash of a proof array
		i := strings.Index(s, `"`+key+`": [`)
		j := strings.Index(s[i:], `"`+"\n") + i
		return s[strings.LastIndex(s[:j], `"`)+1 : j]
	}
	flip := func(h string) string {
		b, _ := base64.StdEncoding.DecodeString(h)
		b[0] ^= 1
		return base64.StdEncoding.EncodeToString(b)
	}
	for name, forged := range map[string]string{
		"edited leaf":        strings.Replace(inclusion, `agent1`, `agent0`, 1),
		"edited path":        strings.Replace(inclusion, firstHash(inclusion, "proof"), flip(firstHash(inclusion, "proof")), 1),
		"another index":      strings.Replace(inclusion, `"index": 7,`, `"index": 6,`, 1),
		"edited consistency": strings.Replace(consistency, firstHash(consistency, "proof"), flip(firstHash(consistency, "proof")), 1),
		"swapped sizes":      strings.Replace(strings.Replace(consistency, `"old_size": 15`, `"old_size": 16`, 1), `"new_size": 30`, `"new_size": 29`, 1),
	} {
		if forged == inclusion || forged == consistency {
			t.Fatalf("%s: the forgery changed nothing", name)
		}
		out, _, err := runAuditCmd(t, "verify", "--proof", write("forged.json", forged), "--key", vkey)
		var ee exitError
		if !errors.As(err, &ee) || ee.code != 1 || !strings.HasPrefix(out, "FAIL") {
			t.Errorf("%s: verify --proof = %v %q, want exit status 1", name, err, out)
		}
	}

	// Usage and range errors.
	for _, args := range [][]string{{"prove", "--db", path}, {"consistency", "--db", path}, {"verify", "--proof", "x"}} {
		if _, _, err := runAuditCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	for _, args := range [][]string{{"prove", "--db", path, "--index", "30"}, {"consistency", "--db", path, "--old", "31"}, {"consistency", "--db", path, "--old", "5", "--new", "40"}} {
		if _, _, err := runAuditCmd(t, args...); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("%v: %v, want ErrNotFound", args, err)
		}
	}
}
