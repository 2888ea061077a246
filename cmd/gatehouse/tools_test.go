package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestToolsApproveFlagsAfterArguments runs "tools approve SERVER TOOL
// --hash H" as the usage, docs/mcp.md and the hint of "tools diff" write it.
func TestToolsApproveFlagsAfterArguments(t *testing.T) {
	var mu sync.Mutex
	var got []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.EscapedPath()+" "+string(bytes.TrimSpace(body)))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(toolView{Server: "workspace", Tool: "read_file", Status: "pinned", Approved: "abc123"})
	}))
	defer api.Close()
	tok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"approve", "workspace", "read_file", "--hash", "abc123", "--by", "alice", "--admin", api.URL, "--admin-token-file", tok},
		{"approve", "--hash", "abc123", "--by", "alice", "--admin", api.URL, "--admin-token-file", tok, "workspace", "read_file"},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		var out, errb bytes.Buffer
		if err := runTools(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("tools %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		mu.Lock()
		want := `POST /v1/tools/workspace/read_file/approve {"by":"alice","hash":"abc123"}`
		if len(got) != 1 || got[0] != want {
			t.Errorf("tools %s sent %q, want %q", strings.Join(args, " "), got, want)
		}
		mu.Unlock()
		if !strings.Contains(out.String(), "approved workspace/read_file") {
			t.Errorf("output %q", out.String())
		}
	}
}
