package gateway_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
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

// TestShadowPoliciesReload: a reload (admin API or SIGHUP) reloads the
// shadow set from policy.shadow_dir too; a broken candidate is refused,
// naming the shadow set, file and line, and the candidate in force stays.
func TestShadowPoliciesReload(t *testing.T) {
	dir, extra := execConfig(t)
	shadow := filepath.Join(t.TempDir(), "shadow")
	if err := os.MkdirAll(shadow, 0o700); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.cedar"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		writePolicy(t, shadow, filepath.Base(f), string(b))
	}
	h := start(t, strings.Replace(extra, "policy: {dir: "+dir+"}", "policy: {dir: "+dir+", shadow_dir: "+shadow+"}", 1))
	cs := h.connect("assistant", nil, "")
	var info struct {
		Version       string `json:"version"`
		ShadowVersion string `json:"shadow_version"`
	}
	adminDo(t, h, "GET", "/v1/policy", nil, &info)
	before := info.ShadowVersion
	if before == "" || before != info.Version {
		t.Fatalf("a copy of the enforced set as candidate: %+v", info)
	}

	// A new candidate rule takes effect in shadow on reload.
	writePolicy(t, shadow, "stricter.cedar", `@id("no-balance") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__get_balance");`)
	var resp struct {
		Version       string `json:"version"`
		ShadowVersion string `json:"shadow_version"`
		Error         string `json:"error"`
	}
	if code := adminDo(t, h, "POST", "/v1/policy/reload", nil, &resp); code != http.StatusOK || resp.ShadowVersion == before || resp.Version != info.Version {
		t.Fatalf("reload: HTTP %d %+v", code, resp)
	}
	if _, e := callErr(t, cs, "bank__get_balance", map[string]any{"account": "acc-checking"}); e != nil {
		t.Fatalf("the shadow set must not enforce: %v", e)
	}
	found := false
	for _, ev := range h.events(audit.Filter{Class: audit.ClassEntityManagement}, 1) {
		if e, _ := ev["entity"].(map[string]any); e != nil && e["type"] == "policy_shadow" && e["uid"] == resp.ShadowVersion {
			found = true
		}
	}
	if !found {
		t.Error("no difference recorded under the reloaded candidate")
	}

	// A broken candidate is refused; the one in force stays.
	inForce := resp.ShadowVersion
	writePolicy(t, shadow, "broken.cedar", "permit (principal, action, resource);\nnot cedar\n")
	resp.Error = ""
	if code := adminDo(t, h, "POST", "/v1/policy/reload", nil, &resp); code != http.StatusUnprocessableEntity ||
		!strings.Contains(resp.Error, "shadow policies") || !strings.Contains(resp.Error, "broken.cedar:2") {
		t.Errorf("broken candidate: HTTP %d %q", code, resp.Error)
	}
	adminDo(t, h, "GET", "/v1/policy", nil, &info)
	if info.ShadowVersion != inForce {
		t.Errorf("shadow version %s after a refused reload, want %s", info.ShadowVersion, inForce)
	}
}
