package audit

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// InclusionProof proves that one record is in the tree a signed checkpoint
// commits to, for a third party (an external witness, an auditor) that
// holds the checkpoint verifier key. It is what `gatehouse audit prove`
// prints and GET /v1/audit/proofs/inclusion serves, as JSON; hashes are
// base64.
//
// To check it with any RFC 6962 implementation: LeafHash is SHA-256(0x00 ||
// Leaf) (Leaf is the record's stored bytes, the JSON string's contents);
// Proof is the Merkle audit path from that leaf at Index to Root, the root
// of the tree of TreeSize leaves (in Go, tlog.CheckRecord); Checkpoint is
// the C2SP signed note "<origin>\n<TreeSize>\n<Root>\n" with its signature.
// Verify does all of it.
type InclusionProof struct {
	Type       string      `json:"type"` // "inclusion"
	Index      int64       `json:"index"`
	TreeSize   int64       `json:"tree_size"`
	Root       tlog.Hash   `json:"root"`
	Leaf       string      `json:"leaf"`
	LeafHash   tlog.Hash   `json:"leaf_hash"`
	Proof      []tlog.Hash `json:"proof"`
	Checkpoint string      `json:"checkpoint,omitempty"`
}

// ConsistencyProof proves that the tree of OldSize leaves is a prefix of the
// tree of NewSize leaves: nothing the older checkpoint covers was changed,
// removed or reordered since. It is what `gatehouse audit consistency`
// prints and GET /v1/audit/proofs/consistency serves.
//
// To check it with any RFC 6962 implementation: Proof is the Merkle
// consistency proof from OldRoot (tree of OldSize) to NewRoot (tree of
// NewSize) (in Go, tlog.CheckTree); OldCheckpoint and NewCheckpoint are
// the signed notes that carry those roots. Verify does all of it.
type ConsistencyProof struct {
	Type          string      `json:"type"` // "consistency"
	OldSize       int64       `json:"old_size"`
	NewSize       int64       `json:"new_size"`
	OldRoot       tlog.Hash   `json:"old_root"`
	NewRoot       tlog.Hash   `json:"new_root"`
	Proof         []tlog.Hash `json:"proof"`
	OldCheckpoint string      `json:"old_checkpoint,omitempty"`
	NewCheckpoint string      `json:"new_checkpoint,omitempty"`
}

// ProveInclusion reads from b the proof that record index is in the tree
// of treeSize records. treeSize 0 means the largest stored checkpoint's
// size. When cps holds a checkpoint of that size, it is attached. Errors
// wrap ErrNotFound when the index or size is not in the log.
func ProveInclusion(ctx context.Context, b Backend, cps CheckpointStore, index, treeSize int64) (*InclusionProof, error) {
	size, cp, err := proofSize(ctx, b, cps, treeSize)
	if err != nil {
		return nil, err
	}
	if index < 0 || index >= size {
		return nil, fmt.Errorf("%w: record %d is not in the tree of size %d", ErrNotFound, index, size)
	}
	es, err := b.Entries(ctx, index, index+1)
	if err != nil {
		return nil, fmt.Errorf("reading record %d: %w", index, err)
	}
	if len(es) != 1 {
		return nil, fmt.Errorf("%w: record %d is missing from the store", ErrNotFound, index)
	}
	r := hashReader(ctx, b)
	p := &InclusionProof{Type: "inclusion", Index: index, TreeSize: size, Leaf: string(es[0].Data), LeafHash: tlog.RecordHash(es[0].Data)}
	if p.Root, err = tlog.TreeHash(size, r); err != nil {
		return nil, fmt.Errorf("computing the root of tree size %d: %w", size, err)
	}
	if p.Proof, err = tlog.ProveRecord(size, index, r); err != nil {
		return nil, fmt.Errorf("proving record %d in tree size %d: %w", index, size, err)
	}
	if p.Proof == nil {
		p.Proof = []tlog.Hash{}
	}
	if cp != nil {
		p.Checkpoint = string(cp.Note)
	}
	return p, nil
}

// ProveConsistency reads from b the proof that the tree of oldSize records
// is a prefix of the tree of newSize records. newSize 0 means the largest
// stored checkpoint's size. The stored checkpoints of both sizes, when
// there are any, are attached.
func ProveConsistency(ctx context.Context, b Backend, cps CheckpointStore, oldSize, newSize int64) (*ConsistencyProof, error) {
	size, newCP, err := proofSize(ctx, b, cps, newSize)
	if err != nil {
		return nil, err
	}
	if oldSize < 1 || oldSize > size {
		return nil, fmt.Errorf("%w: old tree size %d is not between 1 and %d", ErrNotFound, oldSize, size)
	}
	_, oldCP, err := proofSize(ctx, b, cps, oldSize)
	if err != nil {
		return nil, err
	}
	r := hashReader(ctx, b)
	p := &ConsistencyProof{Type: "consistency", OldSize: oldSize, NewSize: size}
	if p.OldRoot, err = tlog.TreeHash(oldSize, r); err != nil {
		return nil, fmt.Errorf("computing the root of tree size %d: %w", oldSize, err)
	}
	if p.NewRoot, err = tlog.TreeHash(size, r); err != nil {
		return nil, fmt.Errorf("computing the root of tree size %d: %w", size, err)
	}
	if p.Proof, err = tlog.ProveTree(size, oldSize, r); err != nil {
		return nil, fmt.Errorf("proving tree size %d consistent with %d: %w", oldSize, size, err)
	}
	if p.Proof == nil {
		p.Proof = []tlog.Hash{}
	}
	if oldCP != nil {
		p.OldCheckpoint = string(oldCP.Note)
	}
	if newCP != nil {
		p.NewCheckpoint = string(newCP.Note)
	}
	return p, nil
}

// proofSize resolves a requested tree size (0: the largest stored
// checkpoint's) and returns the stored checkpoint of that size, if any.
func proofSize(ctx context.Context, b Backend, cps CheckpointStore, want int64) (int64, *Checkpoint, error) {
	cs, err := cps.Checkpoints(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("reading checkpoints: %w", err)
	}
	if want == 0 {
		if len(cs) == 0 {
			return 0, nil, fmt.Errorf("%w: the log has no signed checkpoint yet", ErrNotFound)
		}
		want = cs[len(cs)-1].Size
	}
	size, err := b.Size(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("reading the log size: %w", err)
	}
	if want < 1 || want > size {
		return 0, nil, fmt.Errorf("%w: tree size %d (the log holds %d records)", ErrNotFound, want, size)
	}
	for i := range cs {
		if cs[i].Size == want {
			return want, &cs[i], nil
		}
	}
	return want, nil, nil
}

func hashReader(ctx context.Context, b Backend) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return b.Hashes(ctx, idx) })
}

// ErrProof is wrapped by the errors of Verify: the proof does not hold.
var ErrProof = errors.New("audit: proof does not verify")

// Verify checks the proof: the leaf hashes to LeafHash, the audit path
// leads from it to Root, and Checkpoint is signed by v and carries
// TreeSize and Root. A proof without a checkpoint does not verify: check
// its Root against a checkpoint obtained elsewhere with CheckRoot.
func (p *InclusionProof) Verify(v note.Verifier) error {
	if p.Checkpoint == "" {
		return fmt.Errorf("%w: no signed checkpoint of tree size %d is attached", ErrProof, p.TreeSize)
	}
	c, err := OpenCheckpoint([]byte(p.Checkpoint), v)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProof, err)
	}
	return p.CheckRoot(c)
}

// CheckRoot checks the proof against a verified checkpoint c.
func (p *InclusionProof) CheckRoot(c Checkpoint) error {
	if p.Type != "inclusion" {
		return fmt.Errorf("%w: not an inclusion proof (type %q)", ErrProof, p.Type)
	}
	if c.Size != p.TreeSize || c.Root != p.Root {
		return fmt.Errorf("%w: the checkpoint is for tree size %d with another root, the proof for tree size %d", ErrProof, c.Size, p.TreeSize)
	}
	if tlog.RecordHash([]byte(p.Leaf)) != p.LeafHash {
		return fmt.Errorf("%w: the leaf does not hash to leaf_hash", ErrProof)
	}
	if err := tlog.CheckRecord(p.Proof, p.TreeSize, p.Root, p.Index, p.LeafHash); err != nil {
		return fmt.Errorf("%w: record %d in tree size %d: %w", ErrProof, p.Index, p.TreeSize, err)
	}
	return nil
}

// Verify checks the proof: both checkpoints are signed by v and carry the
// sizes and roots, and the consistency proof leads from the old root to
// the new one.
func (p *ConsistencyProof) Verify(v note.Verifier) error {
	if p.OldCheckpoint == "" || p.NewCheckpoint == "" {
		return fmt.Errorf("%w: signed checkpoints of tree sizes %d and %d are not both attached", ErrProof, p.OldSize, p.NewSize)
	}
	oldC, err := OpenCheckpoint([]byte(p.OldCheckpoint), v)
	if err != nil {
		return fmt.Errorf("%w: old checkpoint: %w", ErrProof, err)
	}
	newC, err := OpenCheckpoint([]byte(p.NewCheckpoint), v)
	if err != nil {
		return fmt.Errorf("%w: new checkpoint: %w", ErrProof, err)
	}
	return p.CheckRoots(oldC, newC)
}

// CheckRoots checks the proof against two verified checkpoints.
func (p *ConsistencyProof) CheckRoots(oldC, newC Checkpoint) error {
	if p.Type != "consistency" {
		return fmt.Errorf("%w: not a consistency proof (type %q)", ErrProof, p.Type)
	}
	if oldC.Size != p.OldSize || oldC.Root != p.OldRoot || newC.Size != p.NewSize || newC.Root != p.NewRoot {
		return fmt.Errorf("%w: the checkpoints do not carry the proof's sizes and roots", ErrProof)
	}
	if err := tlog.CheckTree(p.Proof, p.NewSize, p.NewRoot, p.OldSize, p.OldRoot); err != nil {
		return fmt.Errorf("%w: tree size %d to %d: %w", ErrProof, p.OldSize, p.NewSize, err)
	}
	return nil
}
