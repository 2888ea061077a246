package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// fakeLocksAPI fakes the admin API's lock routes and records what it got.
type fakeLocksAPI struct {
	mu   sync.Mutex
	reqs []string // "METHOD PATH?QUERY BODY"
}

func (f *fakeLocksAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+string(body)))
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer s3cret" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/locks":
		_ = json.NewEncoder(w).Encode([]lock.Lock{
			{Scope: lock.Global, Reason: "freeze", By: "alice", Created: created},
			{Scope: lock.Tool, Target: "bank/transfer", Reason: "fraud\nsuspected", By: "bob", Created: created, Expires: created.Add(time.Hour)},
		})
	case r.Method == "POST" && r.URL.Path == "/v1/locks":
		var q lock.Request
		if err := json.Unmarshal(body, &q); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		l := lock.Lock{Scope: lock.Scope(q.Scope), Target: q.Target, Reason: q.Reason, By: q.By, Created: created}
		if q.TTL != "" {
			d, _ := time.ParseDuration(q.TTL)
			l.Expires = created.Add(d)
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(l)
	case r.Method == "DELETE" && strings.HasPrefix(r.URL.EscapedPath(), "/v1/locks/agent/ghost"):
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "no such lock"})
	case r.Method == "DELETE":
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeLocksAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

func lockAdminArgs(t *testing.T, url string) []string {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--admin", url, "--admin-token-file", tok}
}

func runLockCmd(run func(context.Context, []string, io.Writer, io.Writer) error, args []string) (string, string, error) {
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestKillCommand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		request string
		out     string
	}{
		{"agent", []string{"agent", "a1", "--reason", "leaked token", "--by", "alice"},
			`POST /v1/locks {"scope":"agent","target":"a1","reason":"leaked token","by":"alice"}`, "locked agent a1\n"},
		{"flags first, with ttl", []string{"--reason=r", "--ttl", "90m", "--by=bob", "task", "t-42"},
			`POST /v1/locks {"scope":"task","target":"t-42","reason":"r","ttl":"1h30m0s","by":"bob"}`, "locked task t-42 until 2026-03-01T13:30:00Z\n"},
		{"global", []string{"global", "--reason", "incident", "--by", "carol"},
			`POST /v1/locks {"scope":"global","target":"","reason":"incident","by":"carol"}`, "locked the whole gateway\n"},
		{"tool", []string{"tool", "bank/transfer", "--reason", "r", "--by", "d"},
			`POST /v1/locks {"scope":"tool","target":"bank/transfer","reason":"r","by":"d"}`, "locked tool bank/transfer\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &fakeLocksAPI{}
			srv := httptest.NewServer(api)
			defer srv.Close()
			out, _, err := runLockCmd(runKill, append(tc.args, lockAdminArgs(t, srv.URL)...))
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.out {
				t.Errorf("output %q, want %q", out, tc.out)
			}
			if got := api.requests(); len(got) != 1 || got[0] != tc.request {
				t.Errorf("requests %q, want %q", got, tc.request)
			}
		})
	}
}

func TestKillList(t *testing.T) {
	api := &fakeLocksAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	out, _, err := runLockCmd(runKill, append([]string{"list"}, lockAdminArgs(t, srv.URL)...))
	if err != nil {
		t.Fatal(err)
	}
	want := `SCOPE   TARGET         BY     CREATED               EXPIRES               REASON
global  -              alice  2026-03-01T12:00:00Z  never                 freeze
tool    bank/transfer  bob    2026-03-01T12:00:00Z  2026-03-01T13:00:00Z  fraud suspected
`
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestUnlockCommand(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		request string
		out     string
	}{
		{[]string{"agent", "a1", "--by", "alice"}, "DELETE /v1/locks/agent/a1?by=alice", "unlocked agent a1\n"},
		{[]string{"global", "--by", "alice"}, "DELETE /v1/locks/global/-?by=alice", "unlocked the whole gateway\n"},
		{[]string{"--by=a b", "tool", "bank/transfer"}, "DELETE /v1/locks/tool/bank%2Ftransfer?by=a+b", "unlocked tool bank/transfer\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			api := &fakeLocksAPI{}
			srv := httptest.NewServer(api)
			defer srv.Close()
			out, _, err := runLockCmd(runUnlock, append(tc.args, lockAdminArgs(t, srv.URL)...))
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.out {
				t.Errorf("output %q, want %q", out, tc.out)
			}
			if got := api.requests(); len(got) != 1 || got[0] != tc.request {
				t.Errorf("requests %q, want %q", got, tc.request)
			}
		})
	}
	api := &fakeLocksAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	_, _, err := runLockCmd(runUnlock, append([]string{"agent", "ghost"}, lockAdminArgs(t, srv.URL)...))
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "no such lock") {
		t.Fatalf("unlocking a missing lock: %v", err)
	}
}

func TestKillUsageErrors(t *testing.T) {
	api := &fakeLocksAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	for _, tc := range []struct {
		run  func(context.Context, []string, io.Writer, io.Writer) error
		args []string
	}{
		{runKill, nil},
		{runKill, []string{"planet", "earth", "--reason", "r"}},
		{runKill, []string{"agent", "--reason", "r"}},
		{runKill, []string{"agent", "a1", "a2", "--reason", "r"}},
		{runKill, []string{"global", "x", "--reason", "r"}},
		{runKill, []string{"tool", "transfer", "--reason", "r"}},
		{runKill, []string{"agent", "a1"}},
		{runKill, []string{"agent", "a1", "--reason", "  "}},
		{runKill, []string{"agent", "a1", "--reason", "r", "--ttl", "soon"}},
		{runKill, []string{"agent", "a1", "--reason", "r", "--ttl", "-1h"}},
		{runKill, []string{"agent", "a1", "--reason", "r", "--bogus"}},
		{runUnlock, nil},
		{runUnlock, []string{"server"}},
		{runUnlock, []string{"global", "-"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := runLockCmd(tc.run, append(tc.args, lockAdminArgs(t, srv.URL)...))
			if !errors.Is(err, errUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
		})
	}
	if got := api.requests(); len(got) != 0 {
		t.Fatalf("usage errors reached the API: %q", got)
	}
}

// TestKillAgainstLockHandler runs the commands against the lock package's
// own admin handler: the contract holds end to end, and the lock stops the
// agent's requests.
func TestKillAgainstLockHandler(t *testing.T) {
	ctx := context.Background()
	var audited []lock.Change
	m, err := lock.New(ctx, lock.Config{Store: lock.NewMemoryStore(), Audit: func(_ context.Context, c lock.Change) error {
		audited = append(audited, c)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h := m.Handler(nil)
	mux.Handle("/v1/locks", h)
	mux.Handle("/v1/locks/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	admin := lockAdminArgs(t, srv.URL)
	r := &pipeline.Request{Phase: pipeline.PhaseCall, Action: pipeline.ActionCallTool, Caller: &pipeline.Caller{Agent: "a1"}, Server: "bank", Target: "transfer"}

	if _, _, err := runLockCmd(runKill, append([]string{"tool", "bank/transfer", "--reason", "fraud", "--ttl", "1h", "--by", "alice"}, admin...)); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Check(ctx, r); v.Outcome != verdict.Block || v.First().Code != "lock.tool" {
		t.Fatalf("after kill: %+v", v)
	}
	out, _, err := runLockCmd(runKill, append([]string{"list"}, admin...))
	if err != nil || !strings.Contains(out, "bank/transfer  alice") {
		t.Fatalf("list: %q, %v", out, err)
	}
	if _, _, err := runLockCmd(runUnlock, append([]string{"tool", "bank/transfer", "--by", "bob"}, admin...)); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Check(ctx, r); v.Outcome != verdict.Allow {
		t.Fatalf("after unlock: %+v", v)
	}
	if _, _, err := runLockCmd(runUnlock, append([]string{"tool", "bank/transfer"}, admin...)); err == nil || !strings.Contains(err.Error(), "no such lock") {
		t.Fatalf("second unlock: %v", err)
	}
	if _, _, err := runLockCmd(runKill, append([]string{"global", "--reason", "drill", "--by", "carol"}, admin...)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runLockCmd(runUnlock, append([]string{"global", "--by", "carol"}, admin...)); err != nil {
		t.Fatal(err)
	}
	if len(audited) != 4 || audited[0].By != "alice" || audited[1].Action != "unlock" || audited[1].By != "bob" || audited[3].Lock.Scope != lock.Global {
		t.Fatalf("audited %+v", audited)
	}
}
