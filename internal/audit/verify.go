package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sort"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Kind classifies a discrepancy found by verification.
type Kind string

// Kinds of discrepancy.
const (
	// Modified: the entry's data does not hash to what the log committed to
	// (its recorded hash, its successor's link, or the signed root).
	Modified Kind = "modified"
	// Deleted: an index is missing.
	Deleted Kind = "deleted"
	// Inserted: an entry that the log never committed to (nothing links to
	// it, or it duplicates an index).
	Inserted Kind = "inserted"
	// Reordered: an entry was found at another position than its index.
	Reordered Kind = "reordered"
	// CheckpointMismatch: a validly signed checkpoint's root does not match
	// the root recomputed from the entries.
	CheckpointMismatch Kind = "checkpoint_mismatch"
	// BadCheckpoint: a stored checkpoint does not verify with the key.
	BadCheckpoint Kind = "bad_checkpoint"
)

// Discrepancy is one finding of Verify.
type Discrepancy struct {
	Kind Kind `json:"kind"`
	// Index is the log index concerned (the tree size for checkpoint kinds).
	Index int64 `json:"index"`
	// Position is where the entry was found in storage (its storage key, or
	// its entry number in a bundle); -1 if it was not found.
	Position int64  `json:"position"`
	Detail   string `json:"detail"`
}

func (d Discrepancy) String() string {
	s := fmt.Sprintf("%s: index %d", d.Kind, d.Index)
	if d.Kind == CheckpointMismatch || d.Kind == BadCheckpoint {
		s = fmt.Sprintf("%s: tree size %d", d.Kind, d.Index)
	} else if d.Position >= 0 && d.Position != d.Index {
		s += fmt.Sprintf(" (at position %d)", d.Position)
	}
	if d.Detail != "" {
		s += ": " + d.Detail
	}
	return s
}

// Report is the result of a verification.
type Report struct {
	From, To int64 // index range checked: [From, To)
	Entries  int64 // entries read
	// Verified lists the tree sizes of signed checkpoints whose roots
	// matched the entries.
	Verified []int64
	// Unsigned counts entries after the largest checkpoint: their chain was
	// checked but no signature covers them yet.
	Unsigned      int64
	Discrepancies []Discrepancy
	Warnings      []string
}

// OK reports whether verification found no discrepancy.
func (r *Report) OK() bool { return len(r.Discrepancies) == 0 }

// maxReports caps the discrepancies reported per kind and run.
const maxReports = 1000

func (r *Report) add(d Discrepancy) {
	if len(r.Discrepancies) == maxReports {
		r.Warnings = append(r.Warnings, fmt.Sprintf("more than %d discrepancies: the rest are not listed", maxReports))
	}
	if len(r.Discrepancies) >= maxReports {
		r.Discrepancies = append(r.Discrepancies[:maxReports], d)[:maxReports+1]
		return
	}
	r.Discrepancies = append(r.Discrepancies, d)
}

// VerifyOptions configures a verification.
type VerifyOptions struct {
	// Verifier is the trusted checkpoint key. Required.
	Verifier note.Verifier
	// From and To bound the index range [From, To). To 0 means the end of
	// the log (or of the latest checkpoint, whichever is larger).
	From, To int64
	// Window is how far ahead (in entries) the verifier looks to tell a
	// reordering from a deletion and an insertion. Default 256.
	Window int
}

// VerifyBackend verifies the entries of b in [opts.From, opts.To) against
// the signed checkpoints in cps: every entry's hash and links, and the
// roots of the checkpoints that cover the range. It reports the index and
// kind of each discrepancy. The returned error is for failures to read,
// not for findings.
func VerifyBackend(ctx context.Context, b Backend, cps CheckpointStore, opts VerifyOptions) (*Report, error) {
	if opts.Verifier == nil {
		return nil, errors.New("verifying audit log: no verifier key")
	}
	size, err := b.Size(ctx)
	if err != nil {
		return nil, fmt.Errorf("verifying audit log: %w", err)
	}
	stored, err := cps.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("verifying audit log: reading checkpoints: %w", err)
	}
	rep := &Report{}
	var checkpoints []Checkpoint
	for _, c := range stored {
		vc, err := OpenCheckpoint(c.Note, opts.Verifier)
		if err != nil || vc.Size != c.Size || vc.Root != c.Root {
			rep.add(Discrepancy{Kind: BadCheckpoint, Index: c.Size, Position: -1, Detail: fmt.Sprint("stored checkpoint does not verify: ", err)})
			continue
		}
		checkpoints = append(checkpoints, vc)
	}
	end := size
	if n := len(checkpoints); n > 0 {
		end = max(end, checkpoints[n-1].Size)
	}
	from, to := max(opts.From, 0), opts.To
	if to <= 0 || to > end {
		to = end
	}
	v := newVerifier(rep, from, to, opts.Window)
	if from > 0 && from < size {
		if prev, err := b.Entries(ctx, from-1, from); err == nil && len(prev) == 1 {
			v.c.last, v.c.lastKnown = tlog.RecordHash(prev[0].Data), true
		}
	}
	v.setCheckpoints(checkpoints, func(idx []int64) ([]tlog.Hash, error) { return b.Hashes(ctx, idx) })
	v.treeLeaves = true
	if err := v.read(ctx, b, from, to); err != nil {
		return nil, fmt.Errorf("verifying audit log: reading entries: %w", err)
	}
	// Entries pushed past the range by insertions still belong to it.
	err = extend(ctx, b, to, size, func(e Entry) { v.push(e, true) })
	if err != nil {
		return nil, fmt.Errorf("verifying audit log: reading entries: %w", err)
	}
	v.checkTreeLeaves()
	v.finish()
	return rep, nil
}

// LeafReader is an optional Backend method that verification uses to read
// the log in one pass. ReadLeaves returns the entries with from <= Index <
// to in ascending Index order, like Entries, with Index, Data and Hash set
// (the filter columns may be left empty), together with the leaf hash that
// the tree holds for each entry's Index: the same hash Hashes returns for
// tlog.StoredHashIndex(0, Index). Where the tree holds none for an entry,
// TreeLeaf is absent (HasTreeLeaf false) and verification asks Hashes.
type LeafReader interface {
	ReadLeaves(ctx context.Context, from, to int64) ([]LeafRow, error)
}

// LeafRow is one entry read by a LeafReader.
type LeafRow struct {
	Entry
	TreeLeaf    tlog.Hash
	HasTreeLeaf bool
}

// verifyChunk is how many entries one read returns.
const verifyChunk = 4096

// chunk is one read of entries, parsed off the classifier's goroutine.
type chunk struct {
	lo, hi int64 // the index range read
	ps     []parsed
	tree   []tlog.Hash // tree leaf hashes by Index-lo, where known
	known  []bool
	err    error
	done   chan struct{}
}

// read pushes the entries of [from, to) through the classifier in storage
// order. Reading, hashing and parsing run ahead of the classifier in a
// pipeline: one goroutine reads chunks from b, each chunk is hashed and
// parsed on a goroutine of its own, and the classifier takes the chunks in
// order, so on several cores the store, the hashing and the classification
// overlap. A backend that implements LeafReader is read in one pass; the
// tree's leaf hashes it returns are compared with each logical leaf as
// checkTreeLeaves would otherwise read them with Hashes.
func (v *verifier) read(ctx context.Context, b Backend, from, to int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lr, _ := b.(LeafReader)
	// Up to 4 chunks are being parsed or waiting for the classifier.
	chunks := make(chan *chunk, 4)
	go func() {
		defer close(chunks)
		for lo := from; lo < to; lo += verifyChunk {
			c := &chunk{lo: lo, hi: min(lo+verifyChunk, to), done: make(chan struct{})}
			var es []Entry
			if lr != nil {
				var rows []LeafRow
				rows, c.err = lr.ReadLeaves(ctx, c.lo, c.hi)
				es = make([]Entry, len(rows))
				c.tree, c.known = make([]tlog.Hash, c.hi-c.lo), make([]bool, c.hi-c.lo)
				for i, r := range rows {
					es[i] = r.Entry
					if j := r.Index - c.lo; r.HasTreeLeaf && j >= 0 && j < c.hi-c.lo {
						c.tree[j], c.known[j] = r.TreeLeaf, true
					}
				}
			} else {
				es, c.err = b.Entries(ctx, c.lo, c.hi)
			}
			if c.err != nil {
				close(c.done)
			} else {
				go func() {
					c.ps = make([]parsed, len(es))
					for i, e := range es {
						c.ps[i] = parse(e, true)
					}
					close(c.done)
				}()
			}
			select {
			case chunks <- c:
			case <-ctx.Done():
				return
			}
			if c.err != nil {
				return
			}
		}
	}()
	var prev *chunk
	for c := range chunks {
		<-c.done
		if c.err != nil {
			return c.err
		}
		v.recent[0], v.recent[1] = prev, c
		for _, p := range c.ps {
			v.rep.Entries++
			v.c.pushParsed(p)
		}
		v.checkTreeLeaves()
		prev = c
		prev.ps = nil
	}
	v.recent = [2]*chunk{}
	return ctx.Err()
}

// treeLeaf returns the tree's leaf hash for index seq if a recent chunk
// read it.
func (v *verifier) treeLeaf(seq int64) (tlog.Hash, bool) {
	for _, c := range v.recent {
		if c != nil && c.tree != nil && seq >= c.lo && seq < c.hi && c.known[seq-c.lo] {
			return c.tree[seq-c.lo], true
		}
	}
	return tlog.Hash{}, false
}

// extend passes the entries stored at positions from `to` on whose own
// index is below to, stopping at the first that is not.
func extend(ctx context.Context, b Backend, to, size int64, f func(Entry)) error {
	for lo := to; lo < size; lo += 256 {
		es, err := b.Entries(ctx, lo, min(lo+256, size))
		if err != nil {
			return err
		}
		for _, e := range es {
			lf, err := ParseLeaf(e.Data)
			if err != nil || lf.Index >= to {
				return nil
			}
			f(e)
		}
	}
	return nil
}

// verifier runs the classifier over entries in storage order and checks
// the signed roots over the resulting logical sequence.
type verifier struct {
	rep      *Report
	from, to int64
	c        classifier

	// Tree check. Whole mode (from == 0): a frontier over the logical
	// leaves, checked at each checkpoint size. Range mode: leaves of the
	// range, combined with stored subtree hashes for the covering checkpoint.
	checkpoints []Checkpoint
	next        int // next checkpoint to check (whole mode)
	front       frontier
	broken      bool // a leaf was unknown: roots after it cannot be checked
	leaves      []tlog.Hash
	unknown     bool
	nodes       func([]int64) ([]tlog.Hash, error)
	proof       map[int64]tlog.Hash // range mode: subtree hashes given by a bundle

	mismatches []int64        // sizes of checkpoints whose root did not match
	located    map[int64]bool // indexes with a located discrepancy
	pending    []logicalLeaf  // leaves awaiting the tree-leaf comparison
	treeLeaves bool           // compare leaves with the tree's stored leaf hashes
	recent     [2]*chunk      // the chunks being classified, with their tree leaves
}

type logicalLeaf struct {
	seq int64
	h   tlog.Hash
}

func newVerifier(rep *Report, from, to int64, window int) *verifier {
	if window <= 0 {
		window = 256
	}
	rep.From, rep.To = from, to
	v := &verifier{rep: rep, from: from, to: to, located: map[int64]bool{}}
	v.c = classifier{expected: from, window: window, report: v.report, emit: v.leaf}
	return v
}

func (v *verifier) report(d Discrepancy) {
	if d.Kind == Modified {
		if v.located[d.Index] {
			return
		}
	}
	v.located[d.Index] = true
	v.rep.add(d)
}

// checkTreeLeaves compares the pending logical leaves with the leaf hashes
// stored in the tree (a second record of each leaf hash, next to the
// entry's own).
func (v *verifier) checkTreeLeaves() {
	if !v.treeLeaves || len(v.pending) == 0 {
		v.pending = v.pending[:0]
		return
	}
	// Leaves a recent chunk read with their tree hash are compared at
	// once; the others are read with Hashes.
	rest := v.pending[:0]
	for _, l := range v.pending {
		h, ok := v.treeLeaf(l.seq)
		switch {
		case !ok:
			rest = append(rest, l)
		case h != l.h:
			v.report(Discrepancy{Kind: Modified, Index: l.seq, Position: -1, Detail: "data does not match the leaf hash stored in the tree"})
		}
	}
	if len(rest) == 0 {
		v.pending = v.pending[:0]
		return
	}
	idx := make([]int64, len(rest))
	for i, l := range rest {
		idx[i] = tlog.StoredHashIndex(0, l.seq)
	}
	hs, err := v.nodes(idx)
	if err != nil {
		v.rep.Warnings = append(v.rep.Warnings, fmt.Sprintf("tree leaf hashes for indexes %d..%d not compared: %v", rest[0].seq, rest[len(rest)-1].seq, err))
		v.treeLeaves = false
	} else {
		for i, l := range rest {
			if hs[i] != l.h {
				v.report(Discrepancy{Kind: Modified, Index: l.seq, Position: -1, Detail: "data does not match the leaf hash stored in the tree"})
			}
		}
	}
	v.pending = v.pending[:0]
}

func (v *verifier) setCheckpoints(cs []Checkpoint, nodes func([]int64) ([]tlog.Hash, error)) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Size < cs[j].Size })
	v.checkpoints, v.nodes = cs, nodes
	if len(cs) == 0 {
		v.rep.Warnings = append(v.rep.Warnings, "no signed checkpoint: only the hash chain was checked")
	}
}

func (v *verifier) push(e Entry, hasStored bool) {
	v.rep.Entries++
	v.c.push(e, hasStored)
}

// leaf receives the logical sequence from the classifier.
func (v *verifier) leaf(seq int64, h tlog.Hash, known bool) {
	if known && v.treeLeaves {
		v.pending = append(v.pending, logicalLeaf{seq, h})
	}
	if v.from == 0 {
		if !known {
			v.broken = true
		}
		if !v.broken {
			v.front.add(h)
		}
		for v.next < len(v.checkpoints) && v.checkpoints[v.next].Size == seq+1 {
			v.checkRoot(v.checkpoints[v.next], v.front.root(), !v.broken)
			v.next++
		}
		return
	}
	if seq >= v.to {
		return
	}
	if !known {
		v.unknown = true
	}
	v.leaves = append(v.leaves, h)
}

func (v *verifier) checkRoot(c Checkpoint, root tlog.Hash, ok bool) {
	switch {
	case !ok:
		v.rep.Warnings = append(v.rep.Warnings, fmt.Sprintf("checkpoint at tree size %d not checked: deleted entries make its root impossible to recompute", c.Size))
	case root != c.Root:
		v.rep.add(Discrepancy{Kind: CheckpointMismatch, Index: c.Size, Position: -1,
			Detail: "the root recomputed from the entries differs from the signed root: entries before this size were modified, deleted or inserted"})
		v.mismatches = append(v.mismatches, c.Size)
	default:
		v.rep.Verified = append(v.rep.Verified, c.Size)
	}
}

func (v *verifier) finish() {
	var signed int64
	if n := len(v.checkpoints); n > 0 {
		signed = v.checkpoints[n-1].Size
	}
	// Missing indexes at the end are deletions only where a signature
	// proves the entries existed.
	v.c.flush(min(v.to, signed))
	v.checkTreeLeaves()
	defer v.locateMismatches()
	end := v.c.expected
	v.rep.Unsigned = max(0, end-max(signed, v.from))
	if v.from == 0 {
		for ; v.next < len(v.checkpoints); v.next++ {
			c := v.checkpoints[v.next]
			if c.Size > end {
				break
			}
			v.checkRoot(c, tlog.Hash{}, false)
		}
		return
	}
	// Range mode: check the smallest checkpoint that covers the range.
	v.to = v.from + int64(len(v.leaves))
	for _, c := range v.checkpoints {
		if c.Size < v.to {
			continue
		}
		if v.unknown {
			v.checkRoot(c, tlog.Hash{}, false)
			return
		}
		root, err := v.rangeRoot(c.Size)
		if err != nil {
			v.rep.Warnings = append(v.rep.Warnings, fmt.Sprintf("checkpoint at tree size %d not checked: %v", c.Size, err))
			return
		}
		v.checkRoot(c, root, true)
		return
	}
	v.rep.Warnings = append(v.rep.Warnings, "no signed checkpoint covers the end of the range")
}

// locateMismatches explains a root mismatch that no located discrepancy
// explains: with the chain intact, the one entry below the checkpoint's size
// that no successor links to is its last, so that is the modified entry —
// unless every entry after the last matching checkpoint was rewritten.
func (v *verifier) locateMismatches() {
	for _, size := range v.mismatches {
		lo := v.from
		for _, ok := range v.rep.Verified {
			if ok < size {
				lo = max(lo, ok)
			}
		}
		explained := false
		for i := range v.located {
			if i >= lo && i < size {
				explained = true
				break
			}
		}
		if !explained {
			v.report(Discrepancy{Kind: Modified, Index: size - 1, Position: -1, Detail: fmt.Sprintf(
				"the signed root at size %d does not match and every link holds: the last entry it covers was modified, or entries %d..%d were rewritten consistently", size, lo, size-1)})
		}
	}
}

// rangeRoot computes the root of the tree of size n from the range's leaves
// and the subtree hashes outside the range.
func (v *verifier) rangeRoot(n int64) (tlog.Hash, error) {
	need := rangeNodes(v.from, v.to, n)
	hashes := make(map[int64]tlog.Hash, len(need))
	if v.proof != nil {
		for _, x := range need {
			h, ok := v.proof[x]
			if !ok {
				lvl, k := tlog.SplitStoredHashIndex(x)
				return tlog.Hash{}, fmt.Errorf("bundle lacks subtree hash (level %d, %d)", lvl, k)
			}
			hashes[x] = h
		}
	} else if len(need) > 0 {
		hs, err := v.nodes(need)
		if err != nil {
			return tlog.Hash{}, fmt.Errorf("reading subtree hashes: %w", err)
		}
		for i, x := range need {
			hashes[x] = hs[i]
		}
	}
	return subtreeRoot(0, n, v.from, v.to, v.leaves, hashes), nil
}

// rangeNodes lists the stored-hash indexes of the complete subtrees outside
// [from, to) needed to compute the root of the tree of size n.
func rangeNodes(from, to, n int64) []int64 {
	var out []int64
	var walk func(lo, hi int64)
	walk = func(lo, hi int64) {
		if hi-lo == 1 && lo >= from && lo < to {
			return
		}
		if (hi <= from || lo >= to) && isComplete(lo, hi) {
			level := bits.TrailingZeros64(uint64(hi - lo))
			out = append(out, tlog.StoredHashIndex(level, lo>>level))
			return
		}
		k := split(hi - lo)
		walk(lo, lo+k)
		walk(lo+k, hi)
	}
	if n > 0 {
		walk(0, n)
	}
	return out
}

func subtreeRoot(lo, hi, from, to int64, leaves []tlog.Hash, nodes map[int64]tlog.Hash) tlog.Hash {
	if hi-lo == 1 && lo >= from && lo < to {
		return leaves[lo-from]
	}
	if (hi <= from || lo >= to) && isComplete(lo, hi) {
		level := bits.TrailingZeros64(uint64(hi - lo))
		return nodes[tlog.StoredHashIndex(level, lo>>level)]
	}
	k := split(hi - lo)
	return tlog.NodeHash(subtreeRoot(lo, lo+k, from, to, leaves, nodes), subtreeRoot(lo+k, hi, from, to, leaves, nodes))
}

// isComplete reports whether [lo, hi) is a complete, aligned subtree.
func isComplete(lo, hi int64) bool {
	n := hi - lo
	return n > 0 && n&(n-1) == 0 && lo%n == 0
}

// split returns the largest power of two smaller than n (n > 1), the size
// of the left subtree in RFC 6962.
func split(n int64) int64 {
	return 1 << (63 - bits.LeadingZeros64(uint64(n-1)))
}

// frontier is a compact range [0, n): the roots of the maximal complete
// subtrees, from which the RFC 6962 root of any prefix follows.
type frontier struct {
	hashes []tlog.Hash
	sizes  []int64
}

func (f *frontier) add(h tlog.Hash) {
	f.hashes = append(f.hashes, h)
	f.sizes = append(f.sizes, 1)
	for n := len(f.sizes); n >= 2 && f.sizes[n-1] == f.sizes[n-2]; n = len(f.sizes) {
		f.hashes[n-2] = tlog.NodeHash(f.hashes[n-2], f.hashes[n-1])
		f.sizes[n-2] *= 2
		f.hashes, f.sizes = f.hashes[:n-1], f.sizes[:n-1]
	}
}

func (f *frontier) root() tlog.Hash {
	n := len(f.hashes)
	if n == 0 {
		return tlog.Hash{}
	}
	r := f.hashes[n-1]
	for i := n - 2; i >= 0; i-- {
		r = tlog.NodeHash(f.hashes[i], r)
	}
	return r
}

// parsed is an entry as the classifier sees it.
type parsed struct {
	pos       int64
	seq       int64
	prev      tlog.Hash
	h         tlog.Hash // recomputed from the data
	stored    tlog.Hash // recorded
	hasStored bool
	bad       bool
}

// classifier turns entries in storage order into the logical sequence of
// leaves and locates discrepancies. Each leaf embeds its index and its
// predecessor's hash, so:
//   - a modified entry no longer hashes to its recorded hash, or to the
//     hash its successor links to;
//   - a deleted entry leaves a gap in the indexes (its hash survives in its
//     successor's link, so the signed root can still be checked);
//   - an inserted entry is linked to by no entry, or repeats an index;
//   - a reordered entry appears later than a higher index, and the chain
//     is intact once it is put back in place.
//
// The last accepted entry is held back one step so that it can be replaced
// when a later entry shows it to be an impostor.
type classifier struct {
	expected  int64
	last      tlog.Hash
	lastKnown bool
	window    int
	buf       []parsed

	held        *parsed
	heldLink    tlog.Hash // the hash the successor of held must link to
	beforeHeld  tlog.Hash
	beforeKnown bool
	report      func(Discrepancy)
	emit        func(seq int64, h tlog.Hash, known bool)
}

func (c *classifier) push(e Entry, hasStored bool) { c.pushParsed(parse(e, hasStored)) }

func (c *classifier) pushParsed(p parsed) {
	c.buf = append(c.buf, p)
	for len(c.buf) > c.window {
		c.step()
	}
}

// parse hashes an entry and reads the index and link its leaf embeds.
func parse(e Entry, hasStored bool) parsed {
	p := parsed{pos: e.Index, h: tlog.RecordHash(e.Data), stored: e.Hash, hasStored: hasStored, seq: -1}
	if seq, prev, err := chain(e.Data); err != nil {
		p.bad = true
	} else {
		p.seq, p.prev = seq, prev
	}
	return p
}

// chain returns the index and the predecessor's hash that a leaf embeds,
// accepting exactly the leaves ParseLeaf accepts. Leaves in the layout the
// log writes, {"event":E,"index":N,"prev":"P","v":1}, are read without
// decoding E: only its JSON syntax is checked (json.Valid, which is what
// decoding it as a json.RawMessage checks). Anything else goes through
// ParseLeaf.
func chain(data []byte) (int64, tlog.Hash, error) {
	const head, index, prevKey, tail = `{"event":`, `,"index":`, `,"prev":`, `,"v":1}`
	const hashLen = 46 // a quoted base64 SHA-256
	n := len(data)
	p := n - len(tail) - hashLen - len(prevKey) // start of `,"prev":`
	if p < len(head)+len(index) || !bytes.HasPrefix(data, []byte(head)) || !bytes.HasSuffix(data, []byte(tail)) ||
		string(data[p:p+len(prevKey)]) != prevKey {
		return slowChain(data)
	}
	var prev tlog.Hash
	if prev.UnmarshalJSON(data[p+len(prevKey):n-len(tail)]) != nil {
		return slowChain(data)
	}
	i := p
	for i > 0 && data[i-1] >= '0' && data[i-1] <= '9' {
		i--
	}
	digits := data[i:p]
	// 18 digits always fit an int64; JSON forbids leading zeros.
	if len(digits) == 0 || len(digits) > 18 || len(digits) > 1 && digits[0] == '0' ||
		i < len(head)+len(index) || string(data[i-len(index):i]) != index {
		return slowChain(data)
	}
	ev := data[len(head) : i-len(index)]
	if !json.Valid(ev) {
		return slowChain(data)
	}
	var seq int64
	for _, d := range digits {
		seq = seq*10 + int64(d-'0')
	}
	return seq, prev, nil
}

func slowChain(data []byte) (int64, tlog.Hash, error) {
	lf, err := ParseLeaf(data)
	return lf.Index, lf.Prev, err
}

// flush processes the remaining entries; indexes below to that never
// appeared are reported deleted.
func (c *classifier) flush(to int64) {
	for len(c.buf) > 0 {
		c.step()
	}
	if c.expected < to {
		c.deleted(c.expected, to, "missing at the end of the log")
		c.emitHeld()
		for i := c.expected; i < to; i++ {
			c.emit(i, tlog.Hash{}, false)
		}
		c.expected = to
	}
	c.emitHeld()
}

func (c *classifier) pop() parsed {
	e := c.buf[0]
	c.buf = c.buf[1:]
	return e
}

func (c *classifier) emitHeld() {
	if c.held != nil {
		c.emit(c.held.seq, c.held.h, true)
		c.held = nil
	}
}

func (c *classifier) accept(e parsed, link tlog.Hash, known bool) {
	c.emitHeld()
	c.held = &e
	c.beforeHeld, c.beforeKnown = c.last, c.lastKnown
	c.last, c.lastKnown = link, known
	c.heldLink = link
	c.expected = e.seq + 1
}

// linked reports whether an entry in buf[start:] links to h.
func (c *classifier) linked(h tlog.Hash, start int) bool {
	for _, o := range c.buf[min(start, len(c.buf)):] {
		if !o.bad && o.prev == h {
			return true
		}
	}
	return false
}

func (c *classifier) find(start int, f func(parsed) bool) int {
	for j := start; j < len(c.buf); j++ {
		if !c.buf[j].bad && f(c.buf[j]) {
			return j
		}
	}
	return -1
}

func (c *classifier) deleted(lo, hi int64, detail string) {
	for i := lo; i < hi; i++ {
		c.report(Discrepancy{Kind: Deleted, Index: i, Position: -1, Detail: detail})
	}
}

func (c *classifier) step() {
	e := c.buf[0]
	if e.bad {
		c.pop()
		c.report(Discrepancy{Kind: Modified, Index: c.expected, Position: e.pos, Detail: "entry data is not a valid leaf"})
		seq := c.expected
		e.seq = seq
		c.accept(e, e.h, false)
		return
	}
	// The hash the successor should link to: the recorded hash when the
	// data was changed under it, so one edit is reported once.
	link := e.h
	if e.hasStored && e.stored != e.h {
		link = e.stored
	}
	linkOK := !c.lastKnown || e.prev == c.last

	switch {
	case e.seq == c.expected:
		if linkOK {
			c.pop()
			c.modifiedIfRecorded(e)
			c.accept(e, link, true)
			return
		}
		// Another entry with the same index that links correctly: e is
		// the impostor.
		if c.find(1, func(o parsed) bool { return o.seq == e.seq && o.prev == c.last }) > 0 {
			c.pop()
			c.report(Discrepancy{Kind: Inserted, Index: e.seq, Position: e.pos, Detail: "entry repeats an index and does not link to its predecessor"})
			return
		}
		c.pop()
		next := c.find(0, func(o parsed) bool { return o.seq == e.seq+1 })
		switch {
		case e.hasStored && e.stored != e.h:
			c.modifiedIfRecorded(e)
		case next >= 0 && c.buf[next].prev != e.h:
			c.report(Discrepancy{Kind: Modified, Index: e.seq, Position: e.pos, Detail: "neither its link to its predecessor nor its successor's link to it holds"})
		case c.held != nil:
			c.report(Discrepancy{Kind: Modified, Index: c.held.seq, Position: c.held.pos, Detail: fmt.Sprintf("entry %d links to a different hash of it", e.seq)})
		default:
			c.report(Discrepancy{Kind: Modified, Index: e.seq, Position: e.pos, Detail: "does not link to its predecessor"})
		}
		c.accept(e, link, true)

	case e.seq > c.expected:
		if j := c.find(1, func(o parsed) bool { return o.seq == c.expected }); j > 0 {
			// e is genuine if the chain holds around it: its successor links
			// to it, or its predecessor is nearby.
			p := c.find(1, func(o parsed) bool { return o.seq == e.seq-1 && o.h == e.prev })
			if p > 0 && j == 1 {
				// e was moved ahead of its place: put it back after its
				// predecessor.
				c.report(Discrepancy{Kind: Reordered, Index: e.seq, Position: e.pos,
					Detail: fmt.Sprintf("found before index %d (position %d)", c.buf[1].seq, c.buf[1].pos)})
				copy(c.buf[:p], c.buf[1:p+1])
				c.buf[p] = e
				return
			}
			if p > 0 || c.linked(e.h, 1) {
				// The missing index appears later: it was moved back.
				moved := c.buf[j]
				c.report(Discrepancy{Kind: Reordered, Index: moved.seq, Position: moved.pos,
					Detail: fmt.Sprintf("found after index %d (position %d)", e.seq, e.pos)})
				copy(c.buf[1:j+1], c.buf[:j])
				c.buf[0] = moved
				return
			}
		}
		// Nothing links to e while an entry follows it: e was inserted.
		if len(c.buf) > 1 && !c.linked(e.h, 1) && !c.linked(e.stored, 1) {
			c.pop()
			c.report(Discrepancy{Kind: Inserted, Index: e.seq, Position: e.pos, Detail: "no entry links to it"})
			return
		}
		c.pop()
		c.deleted(c.expected, e.seq, fmt.Sprintf("gap before index %d (position %d)", e.seq, e.pos))
		// The successor's link is the hash of the last deleted entry.
		c.emitHeld()
		for i := c.expected; i < e.seq-1; i++ {
			c.emit(i, tlog.Hash{}, false)
		}
		c.emit(e.seq-1, e.prev, true)
		c.last, c.lastKnown = e.prev, true
		c.modifiedIfRecorded(e)
		c.accept(e, link, true)

	default: // e.seq < c.expected: a repeated index
		c.pop()
		if c.held != nil && e.seq == c.held.seq && (!c.beforeKnown || e.prev == c.beforeHeld) &&
			c.linked(e.h, 0) && !c.linked(c.heldLink, 0) {
			// The held entry was the impostor: e is the real one.
			c.report(Discrepancy{Kind: Inserted, Index: c.held.seq, Position: c.held.pos,
				Detail: fmt.Sprintf("no entry links to it; the entry at position %d has the same index and is linked", e.pos)})
			c.held = nil
			c.last, c.lastKnown = c.beforeHeld, c.beforeKnown
			c.modifiedIfRecorded(e)
			c.accept(e, link, true)
			return
		}
		c.report(Discrepancy{Kind: Inserted, Index: e.seq, Position: e.pos, Detail: fmt.Sprintf("repeats index %d out of sequence", e.seq)})
	}
}

func (c *classifier) modifiedIfRecorded(e parsed) {
	if e.hasStored && e.stored != e.h {
		c.report(Discrepancy{Kind: Modified, Index: e.seq, Position: e.pos, Detail: "data does not match its recorded hash"})
	}
}
