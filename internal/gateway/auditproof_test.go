package gateway_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// TestAuditProofRoutes fetches inclusion and consistency proofs from the
// admin API, as an external witness would, and checks them against the
// signed checkpoints with golang.org/x/mod alone.
func TestAuditProofRoutes(t *testing.T) {
	h := start(t, "audit: {checkpoint_interval: 1h}\n")
	cs := h.connect("assistant", nil, "")
	ctx := context.Background()
	call := func() {
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__get_balance", Arguments: map[string]any{"account": "acc-checking"}}); err != nil {
			t.Fatal(err)
		}
	}
	checkpoint := func() int64 {
		var c struct {
			Size int64 `json:"size"`
		}
		if code := adminDo(t, h, "POST", "/v1/audit/checkpoint", nil, &c); code != http.StatusOK || c.Size == 0 {
			t.Fatalf("checkpoint: HTTP %d, size %d", code, c.Size)
		}
		return c.Size
	}
	call()
	old := checkpoint()
	call()
	call()
	latest := checkpoint()
	if latest <= old {
		t.Fatalf("checkpoints %d then %d", old, latest)
	}

	v := auditVerifier(t, h.dataDir)
	signed := func(msg string) tlog.Hash {
		t.Helper()
		c, err := audit.OpenCheckpoint([]byte(msg), v)
		if err != nil {
			t.Fatal(err)
		}
		return c.Root
	}

	var p audit.InclusionProof
	if code := adminDo(t, h, "GET", "/v1/audit/proofs/inclusion?index=1", nil, &p); code != http.StatusOK {
		t.Fatalf("inclusion: HTTP %d", code)
	}
	if p.TreeSize != latest || tlog.RecordHash([]byte(p.Leaf)) != p.LeafHash {
		t.Fatalf("inclusion proof: tree size %d (want %d), leaf hash ok %v", p.TreeSize, latest, tlog.RecordHash([]byte(p.Leaf)) == p.LeafHash)
	}
	if err := tlog.CheckRecord(p.Proof, p.TreeSize, signed(p.Checkpoint), 1, p.LeafHash); err != nil {
		t.Errorf("inclusion proof: %v", err)
	}
	p.Leaf = strings.Replace(p.Leaf, `"event":{`, `"event":{"x":1,`, 1)
	if p.Verify(v) == nil {
		t.Error("a proof with an edited leaf verifies")
	}

	var c audit.ConsistencyProof
	if code := adminDo(t, h, "GET", "/v1/audit/proofs/consistency?old="+itoa(old), nil, &c); code != http.StatusOK {
		t.Fatalf("consistency: HTTP %d", code)
	}
	if c.OldSize != old || c.NewSize != latest {
		t.Fatalf("consistency %d→%d, want %d→%d", c.OldSize, c.NewSize, old, latest)
	}
	if err := tlog.CheckTree(c.Proof, c.NewSize, signed(c.NewCheckpoint), c.OldSize, signed(c.OldCheckpoint)); err != nil {
		t.Errorf("consistency proof: %v", err)
	}

	for path, want := range map[string]int{
		"/v1/audit/proofs/inclusion?index=" + itoa(latest):      http.StatusNotFound,
		"/v1/audit/proofs/inclusion":                            http.StatusBadRequest,
		"/v1/audit/proofs/inclusion?index=x":                    http.StatusBadRequest,
		"/v1/audit/proofs/consistency?old=" + itoa(latest+1000): http.StatusNotFound,
		"/v1/audit/proofs/consistency?old=1&new=-2":             http.StatusBadRequest,
	} {
		if code := adminDo(t, h, "GET", path, nil, nil); code != want {
			t.Errorf("GET %s: HTTP %d, want %d", path, code, want)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
