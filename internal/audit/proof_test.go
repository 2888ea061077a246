package audit_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// checkpointOf opens a signed checkpoint the way a third party would:
// with golang.org/x/mod alone.
func checkpointOf(t *testing.T, msg string, v note.Verifier) (int64, tlog.Hash) {
	t.Helper()
	n, err := note.Open([]byte(msg), note.VerifierList(v))
	if err != nil {
		t.Fatalf("checkpoint does not verify: %v\n%s", err, msg)
	}
	lines := strings.Split(n.Text, "\n")
	var size int64
	for _, c := range lines[1] {
		size = size*10 + int64(c-'0')
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		t.Fatal(err)
	}
	return size, root
}

func TestInclusionProofs(t *testing.T) {
	ctx := context.Background()
	m, verifier, _ := newLog(t, 40) // checkpoints at 20 and 40
	for _, tc := range []struct{ index, size, want int64 }{{0, 0, 40}, {7, 0, 40}, {39, 0, 40}, {7, 20, 20}, {19, 20, 20}, {3, 33, 33}} {
		p, err := audit.ProveInclusion(ctx, m, m, tc.index, tc.size)
		if err != nil {
			t.Fatal(err)
		}
		if p.TreeSize != tc.want || p.Index != tc.index {
			t.Fatalf("proof of %d in %d: index %d, tree size %d", tc.index, tc.size, p.Index, p.TreeSize)
		}
		if tc.want == 33 {
			// No checkpoint of that size: nothing signed to verify against.
			if p.Checkpoint != "" || !errors.Is(p.Verify(verifier), audit.ErrProof) {
				t.Errorf("proof against unsigned size 33: checkpoint %q", p.Checkpoint)
			}
			continue
		}
		if err := p.Verify(verifier); err != nil {
			t.Errorf("proof of %d in %d: %v", tc.index, tc.want, err)
		}
		// A third party's check: the signed root, the leaf's hash, the path.
		size, root := checkpointOf(t, p.Checkpoint, verifier)
		if size != p.TreeSize || tlog.RecordHash([]byte(p.Leaf)) != p.LeafHash {
			t.Fatalf("checkpoint size %d, leaf hash mismatch", size)
		}
		if err := tlog.CheckRecord(p.Proof, size, root, p.Index, p.LeafHash); err != nil {
			t.Errorf("tlog.CheckRecord(%d in %d): %v", p.Index, size, err)
		}
	}

	p, err := audit.ProveInclusion(ctx, m, m, 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := audittest.Keys(t)
	forgeries := map[string]func(p audit.InclusionProof) audit.InclusionProof{
		"edited leaf": func(p audit.InclusionProof) audit.InclusionProof {
			p.Leaf = strings.Replace(p.Leaf, `"agent"`, `"agenX"`, 1)
			return p
		},
		"edited leaf, rehashed": func(p audit.InclusionProof) audit.InclusionProof {
			p.Leaf = strings.Replace(p.Leaf, `"agent"`, `"agenX"`, 1)
			p.LeafHash = tlog.RecordHash([]byte(p.Leaf))
			return p
		},
		"edited path": func(p audit.InclusionProof) audit.InclusionProof {
			p.Proof = append([]tlog.Hash(nil), p.Proof...)
			p.Proof[2][0] ^= 1
			return p
		},
		"another index": func(p audit.InclusionProof) audit.InclusionProof { p.Index = 6; return p },
		"another root": func(p audit.InclusionProof) audit.InclusionProof {
			p.Root = tlog.RecordHash([]byte("x"))
			return p
		},
		"smaller tree":  func(p audit.InclusionProof) audit.InclusionProof { p.TreeSize = 20; return p },
		"no checkpoint": func(p audit.InclusionProof) audit.InclusionProof { p.Checkpoint = ""; return p },
		"forged signature": func(p audit.InclusionProof) audit.InclusionProof {
			p.Checkpoint = strings.Replace(p.Checkpoint, "\n40\n", "\n41\n", 1)
			return p
		},
	}
	for name, forge := range forgeries {
		f := forge(*p)
		if err := f.Verify(verifier); !errors.Is(err, audit.ErrProof) {
			t.Errorf("%s: Verify = %v, want ErrProof", name, err)
		}
	}
	if err := p.Verify(other); !errors.Is(err, audit.ErrProof) {
		t.Errorf("another key: %v", err)
	}

	// A proof for a record edited in the store does not verify: the tree
	// committed to its original hash.
	m.Edit(func(es []audit.Entry) []audit.Entry {
		es[7] = rewrite(es[7], `"tool7"`, `"toolX"`, true)
		return es
	})
	if p, err := audit.ProveInclusion(ctx, m, m, 7, 0); err != nil || !errors.Is(p.Verify(verifier), audit.ErrProof) {
		t.Errorf("proof of an edited record: %v, %v", err, p.Verify(verifier))
	}

	for _, bad := range [][2]int64{{40, 0}, {-1, 0}, {5, 41}, {20, 20}} {
		if _, err := audit.ProveInclusion(ctx, m, m, bad[0], bad[1]); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("ProveInclusion(%d, %d) = %v, want ErrNotFound", bad[0], bad[1], err)
		}
	}
	if _, err := audit.ProveInclusion(ctx, audit.NewMemory(), audit.NewMemory(), 0, 0); !errors.Is(err, audit.ErrNotFound) {
		t.Errorf("empty log: %v", err)
	}
}

func TestConsistencyProofs(t *testing.T) {
	ctx := context.Background()
	m, verifier, _ := newLog(t, 40)
	p, err := audit.ProveConsistency(ctx, m, m, 20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.OldSize != 20 || p.NewSize != 40 || p.OldCheckpoint == "" || p.NewCheckpoint == "" {
		t.Fatalf("proof %+v", p)
	}
	if err := p.Verify(verifier); err != nil {
		t.Fatal(err)
	}
	oldSize, oldRoot := checkpointOf(t, p.OldCheckpoint, verifier)
	newSize, newRoot := checkpointOf(t, p.NewCheckpoint, verifier)
	if err := tlog.CheckTree(p.Proof, newSize, newRoot, oldSize, oldRoot); err != nil {
		t.Errorf("tlog.CheckTree: %v", err)
	}
	same, err := audit.ProveConsistency(ctx, m, m, 40, 40)
	if err != nil || same.Verify(verifier) != nil {
		t.Errorf("40 to 40: %v, %v", err, same.Verify(verifier))
	}

	forgeries := map[string]func(p audit.ConsistencyProof) audit.ConsistencyProof{
		"edited proof": func(p audit.ConsistencyProof) audit.ConsistencyProof {
			p.Proof = append([]tlog.Hash(nil), p.Proof...)
			p.Proof[0][5] ^= 1
			return p
		},
		"swapped roots": func(p audit.ConsistencyProof) audit.ConsistencyProof {
			p.OldRoot, p.NewRoot = p.NewRoot, p.OldRoot
			return p
		},
		"swapped checkpoints": func(p audit.ConsistencyProof) audit.ConsistencyProof {
			p.OldCheckpoint, p.NewCheckpoint = p.NewCheckpoint, p.OldCheckpoint
			return p
		},
		"truncated proof":   func(p audit.ConsistencyProof) audit.ConsistencyProof { p.Proof = p.Proof[:len(p.Proof)-1]; return p },
		"no old checkpoint": func(p audit.ConsistencyProof) audit.ConsistencyProof { p.OldCheckpoint = ""; return p },
	}
	for name, forge := range forgeries {
		f := forge(*p)
		if err := f.Verify(verifier); !errors.Is(err, audit.ErrProof) {
			t.Errorf("%s: Verify = %v, want ErrProof", name, err)
		}
	}
	for _, bad := range [][2]int64{{0, 0}, {41, 0}, {20, 41}, {30, 20}} {
		if _, err := audit.ProveConsistency(ctx, m, m, bad[0], bad[1]); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("ProveConsistency(%d, %d) = %v, want ErrNotFound", bad[0], bad[1], err)
		}
	}
}
