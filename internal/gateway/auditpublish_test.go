package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// collector is a loopback HTTP endpoint that keeps the bodies POSTed to it
// and the Authorization header of each.
type collector struct {
	mu     sync.Mutex
	bodies [][]byte
	auth   []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.bodies = append(c.bodies, b)
	c.auth = append(c.auth, r.Header.Get("Authorization"))
	c.mu.Unlock()
}

func (c *collector) snapshot() ([][]byte, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.bodies...), append([]string(nil), c.auth...)
}

func collect(t *testing.T) (*collector, string) {
	c := &collector{}
	ln := listen(t)
	srv := &http.Server{Handler: c}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c, "http://" + ln.Addr().String()
}

// lines splits JSON Lines into decoded objects.
func lines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("export line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestAuditPublication configures, through the gateway's YAML, the
// checkpoint sinks (directory, webhook with a credential from a file) and
// two OCSF exports (an HTTP endpoint with a credential, a file), makes a
// mediated call, and checks that periodic checkpoints reach both sinks
// signed with the log's key, and that both exports hold every event of the
// log, in order, as stored.
func TestAuditPublication(t *testing.T) {
	hook, hookURL := collect(t)
	siem, siemURL := collect(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("Bearer s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ckptDir, archive := filepath.Join(dir, "checkpoints"), filepath.Join(dir, "audit.jsonl")
	h := start(t, fmt.Sprintf(`audit:
  checkpoint_interval: 1s
  checkpoint_dir: %s
  checkpoint_webhook: %s/checkpoints
  checkpoint_webhook_header_files: {Authorization: %s}
  export:
    - {name: siem, url: %s/ingest, header_files: {Authorization: %s}}
    - {name: archive, file: %s}
`, ckptDir, hookURL, secret, siemURL, secret, archive))
	cs := h.connect("assistant", nil, "")
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}}); err != nil {
		t.Fatal(err)
	}

	v := auditVerifier(t, h.dataDir)

	// Wait until the log is quiet and the exports and the periodic
	// checkpoints have caught up with it.
	var stored []map[string]any
	var exported [][]map[string]any
	var notes [][]byte
	var auths []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		stored = h.events(audit.Filter{}, 1)
		var bodies [][]byte
		bodies, auths = siem.snapshot()
		exported = [][]map[string]any{lines(t, bytes.Join(bodies, nil))}
		b, _ := os.ReadFile(archive)
		exported = append(exported, lines(t, b))
		var hookAuths []string
		notes, hookAuths = hook.snapshot()
		auths = append(auths, hookAuths...)
		latest := int64(-1)
		if len(notes) > 0 {
			c, err := audit.OpenCheckpoint(notes[len(notes)-1], v)
			if err != nil {
				t.Fatalf("webhook checkpoint does not verify: %v\n%s", err, notes[len(notes)-1])
			}
			latest = c.Size
		}
		n := len(stored)
		if len(exported[0]) == n && len(exported[1]) == n && latest == int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: %d events stored, %d exported over HTTP, %d to the file, latest published checkpoint size %d",
				n, len(exported[0]), len(exported[1]), latest)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The exports are the stored events, in log order.
	for i, name := range []string{"http export", "file export"} {
		if diff := cmp.Diff(stored, exported[i]); diff != "" {
			t.Errorf("%s differs from the log (-log +export):\n%s", name, diff)
		}
	}
	found := false
	for _, ev := range exported[0] {
		found = found || (ev["class_uid"] == float64(audit.ClassAPIActivity) && unmapped(ev, "tool") == "get_balance")
	}
	if !found {
		t.Error("the mediated call is not in the export")
	}
	for _, a := range auths {
		if a != "Bearer s3cret" {
			t.Errorf("a sink was called with Authorization %q", a)
		}
	}

	// The checkpoint directory holds the same signed notes as the webhook.
	last := notes[len(notes)-1]
	for _, name := range []string{"checkpoint", "checkpoint." + strconv.Itoa(len(stored))} {
		b, err := os.ReadFile(filepath.Join(ckptDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, last) {
			t.Errorf("%s differs from the webhook's latest checkpoint:\n%s\n%s", name, b, last)
		}
	}
	for _, n := range notes {
		if _, err := audit.OpenCheckpoint(n, v); err != nil {
			t.Errorf("published checkpoint does not verify: %v\n%s", err, n)
		}
	}
}
