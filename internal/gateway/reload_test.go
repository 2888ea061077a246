package gateway_test

import (
	"encoding/json"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// TestPolicyReloadOnSIGHUP: the running gateway reloads its policy
// directory on SIGHUP; a set that does not load is refused, the set in
// force stays, and both attempts are on record.
func TestPolicyReloadOnSIGHUP(t *testing.T) {
	// Keep the default action of SIGHUP (exit) away from the test binary
	// whatever the gateway has registered when the signal arrives.
	guard := make(chan os.Signal, 4)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	dir, extra := execConfig(t)
	h := start(t, extra)
	cs := h.connect("assistant", nil, "")
	search := map[string]any{"query": "agenda"}
	if _, e := callErr(t, cs, "workspace__search_files", search); e != nil {
		t.Fatal(e)
	}
	hup := func() {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// reloads returns the comments of the policy reloads on record that
	// SIGHUP triggered, waiting up to 2s for at least n.
	reloads := func(n int) []string {
		t.Helper()
		var out []string
		deadline := time.Now().Add(2 * time.Second)
		for len(out) < n && time.Now().Before(deadline) {
			out = out[:0]
			for _, ev := range h.events(audit.Filter{Class: audit.ClassEntityManagement}, 1) {
				e, _ := ev["entity"].(map[string]any)
				actor, _ := json.Marshal(ev["actor"])
				if e != nil && e["type"] == "policy" && strings.Contains(string(actor), "SIGHUP") {
					c, _ := ev["comment"].(string)
					out = append(out, c)
				}
			}
			if len(out) < n {
				time.Sleep(50 * time.Millisecond)
			}
		}
		return out
	}

	// A good set takes effect on SIGHUP.
	writePolicy(t, dir, "no-search.cedar", `@id("no-search") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"workspace__search_files");`)
	hup()
	var e *jsonrpcErr
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, e = callErr(t, cs, "workspace__search_files", search); e != nil {
			break
		}
	}
	if e == nil || !strings.Contains(e.Message, "no-search") {
		t.Fatalf("after SIGHUP with a new rule: %v", e)
	}
	if got := reloads(1); !slices.Equal(got, []string{"policy set reloaded"}) {
		t.Errorf("reloads on record: %q", got)
	}

	// A broken set is refused, naming file and line; the rule stays.
	writePolicy(t, dir, "broken.cedar", "permit (principal, action, resource);\nnot cedar\n")
	hup()
	got := reloads(2)
	refused := slices.IndexFunc(got, func(c string) bool {
		return strings.HasPrefix(c, "policy reload refused") && strings.Contains(c, "broken.cedar:2")
	})
	if len(got) != 2 || refused < 0 {
		t.Fatalf("reloads on record: %q", got)
	}
	if _, e := callErr(t, cs, "workspace__search_files", search); e == nil || !strings.Contains(e.Message, "no-search") {
		t.Errorf("after a refused reload: %v", e)
	}
}
