package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// BundleFormat identifies the bundle file format.
const BundleFormat = "gatehouse-audit-bundle/1"

// A bundle is a self-contained, offline-verifiable export of a range of the
// log: JSON Lines, in this order:
//
//	{"type":"header","format":"gatehouse-audit-bundle/1","origin":…,"key":…,"from":F,"to":T}
//	{"type":"checkpoint","note":"<signed checkpoint>"}          (one or more)
//	{"type":"proof","tree_size":S,"nodes":[{"index":I,"hash":H}…]} (ranges not starting at 0)
//	{"type":"entry","index":P,"hash":H,"leaf":{…}}              (T−F lines)
//
// key is the note verifier key of the log (informational: verify with a key
// obtained out of band). A proof line lists the stored tree hashes (by
// tlog stored-hash index) of the subtrees outside [F, T) needed to
// recompute the root of the checkpoint of size S. An entry's leaf is its
// exact data, embedded as JSON; hash is its recorded leaf hash.
type bundleLine struct {
	Type string `json:"type"`
	// header
	Format string `json:"format,omitempty"`
	Origin string `json:"origin,omitempty"`
	Key    string `json:"key,omitempty"`
	From   int64  `json:"from,omitempty"`
	To     int64  `json:"to,omitempty"`
	// checkpoint
	Note string `json:"note,omitempty"`
	// proof
	TreeSize int64       `json:"tree_size,omitempty"`
	Nodes    []proofNode `json:"nodes,omitempty"`
	// entry
	Index int64           `json:"index,omitempty"`
	Hash  *tlog.Hash      `json:"hash,omitempty"`
	Leaf  json.RawMessage `json:"leaf,omitempty"`
}

type proofNode struct {
	Index int64     `json:"index"`
	Hash  tlog.Hash `json:"hash"`
}

// BundleOptions selects what WriteBundle exports.
type BundleOptions struct {
	// From and To bound the exported index range [From, To). To 0 means
	// the size of the latest checkpoint (or of the log, if it has none).
	From, To int64
	// Key is the verifier key written to the header (informational).
	Key string
}

// WriteBundle exports entries [opts.From, opts.To) of b with the
// checkpoints and subtree hashes needed to verify them offline.
func WriteBundle(ctx context.Context, w io.Writer, b Backend, cps CheckpointStore, opts BundleOptions) error {
	size, err := b.Size(ctx)
	if err != nil {
		return fmt.Errorf("exporting bundle: %w", err)
	}
	all, err := cps.Checkpoints(ctx)
	if err != nil {
		return fmt.Errorf("exporting bundle: reading checkpoints: %w", err)
	}
	from, to := max(opts.From, 0), opts.To
	if to <= 0 {
		to = size
		if n := len(all); n > 0 {
			to = all[n-1].Size
		}
	}
	// A deletion at the end may leave the store smaller than its
	// checkpoint: export what there is, verification reports the rest.
	readTo := min(to, size)
	if from > to {
		return fmt.Errorf("exporting bundle: range [%d, %d) is outside the log (size %d)", from, to, size)
	}
	// The checkpoints to include: all up to the covering one for a whole
	// log, only the covering one for a range.
	var include []Checkpoint
	var cover *Checkpoint
	for i, c := range all {
		if c.Size >= to {
			cover = &all[i]
			break
		}
		if from == 0 {
			include = append(include, c)
		}
	}
	if cover != nil {
		include = append(include, *cover)
	}
	origin := ""
	if len(include) > 0 {
		origin = firstLine(include[0].Note)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(bundleLine{Type: "header", Format: BundleFormat, Origin: origin, Key: opts.Key, From: from, To: to}); err != nil {
		return err
	}
	for _, c := range include {
		if err := enc.Encode(bundleLine{Type: "checkpoint", Note: string(c.Note)}); err != nil {
			return err
		}
	}
	if cover != nil && (from > 0 || cover.Size > to) {
		need := rangeNodes(from, to, cover.Size)
		hs, err := b.Hashes(ctx, need)
		if err != nil {
			return fmt.Errorf("exporting bundle: reading subtree hashes: %w", err)
		}
		p := bundleLine{Type: "proof", TreeSize: cover.Size}
		for i, x := range need {
			p.Nodes = append(p.Nodes, proofNode{Index: x, Hash: hs[i]})
		}
		if err := enc.Encode(p); err != nil {
			return err
		}
	}
	const chunk = 4096
	var line []byte
	for lo := from; lo < readTo; lo += chunk {
		es, err := b.Entries(ctx, lo, min(lo+chunk, readTo))
		if err != nil {
			return fmt.Errorf("exporting bundle: reading entries: %w", err)
		}
		for _, e := range es {
			line = entryLine(line[:0], e)
			if _, err := bw.Write(line); err != nil {
				return err
			}
		}
	}
	err = extend(ctx, b, readTo, size, func(e Entry) {
		if err == nil {
			_, err = bw.Write(entryLine(line[:0], e))
		}
	})
	if err != nil {
		return fmt.Errorf("exporting bundle: %w", err)
	}
	return bw.Flush()
}

func entryLine(line []byte, e Entry) []byte {
	hb, _ := e.Hash.MarshalJSON()
	line = append(line, `{"type":"entry","index":`...)
	line = strconv.AppendInt(line, e.Index, 10)
	line = append(line, `,"hash":`...)
	line = append(line, hb...)
	line = append(line, `,"leaf":`...)
	line = append(line, e.Data...)
	return append(line, "}\n"...)
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}

// BundleKey returns the verifier key recorded in a bundle's header.
func BundleKey(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	if !sc.Scan() {
		return "", errors.New("reading bundle: empty")
	}
	var h bundleLine
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Type != "header" {
		return "", errors.New("reading bundle: first line is not a header")
	}
	return h.Key, nil
}

// VerifyBundle verifies an exported bundle with the trusted key v, like
// VerifyBackend. Entry positions in the report are the entries' recorded
// indexes (their storage keys when exported).
func VerifyBundle(ctx context.Context, r io.Reader, v note.Verifier, window int) (*Report, error) {
	if v == nil {
		return nil, errors.New("verifying bundle: no verifier key")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var (
		rep     = &Report{}
		ver     *verifier
		cps     []Checkpoint
		proof   map[int64]tlog.Hash
		lineNo  int
		started bool
	)
	start := func(h bundleLine) {
		ver = newVerifier(rep, h.From, h.To, window)
		ver.proof = proof
		ver.setCheckpoints(cps, nil)
		started = true
	}
	var header bundleLine
	for sc.Scan() {
		lineNo++
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var l bundleLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			if !started {
				return nil, fmt.Errorf("reading bundle line %d: %w", lineNo, err)
			}
			// A damaged entry line is a modified entry.
			ver.push(Entry{Index: -1, Data: sc.Bytes()}, false)
			continue
		}
		switch l.Type {
		case "header":
			if lineNo != 1 || l.Format != BundleFormat {
				return nil, fmt.Errorf("reading bundle line %d: unexpected header (format %q)", lineNo, l.Format)
			}
			header = l
		case "checkpoint":
			if started || lineNo == 1 {
				return nil, fmt.Errorf("reading bundle line %d: checkpoint after entries", lineNo)
			}
			c, err := OpenCheckpoint([]byte(l.Note), v)
			if err != nil {
				rep.add(Discrepancy{Kind: BadCheckpoint, Index: -1, Position: -1, Detail: err.Error()})
				continue
			}
			cps = append(cps, c)
		case "proof":
			if started || lineNo == 1 {
				return nil, fmt.Errorf("reading bundle line %d: proof after entries", lineNo)
			}
			proof = map[int64]tlog.Hash{}
			for _, n := range l.Nodes {
				proof[n.Index] = n.Hash
			}
		case "entry":
			if lineNo == 1 {
				return nil, errors.New("reading bundle: no header")
			}
			if !started {
				start(header)
			}
			e := Entry{Index: l.Index, Data: l.Leaf}
			if l.Hash != nil {
				e.Hash = *l.Hash
			}
			ver.push(e, l.Hash != nil)
		default:
			return nil, fmt.Errorf("reading bundle line %d: unknown type %q", lineNo, l.Type)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading bundle: %w", err)
	}
	if lineNo == 0 {
		return nil, errors.New("reading bundle: empty")
	}
	if !started {
		start(header)
	}
	ver.finish()
	return rep, nil
}
