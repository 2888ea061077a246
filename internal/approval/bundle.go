package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// BundleFormat identifies the evidence bundle format.
const BundleFormat = "gatehouse-approval-bundle/1"

// AuditReader reads what an evidence bundle needs from the audit log.
// Implementations must be safe for concurrent use; LogReader adapts an
// *audit.Log.
type AuditReader interface {
	// Query returns the records matching f in ascending index order (the
	// bundle asks by correlation id).
	Query(ctx context.Context, f audit.Filter) ([]audit.Record, error)
	// Entries returns the stored entries (exact leaf bytes) with
	// from <= Index < to.
	Entries(ctx context.Context, from, to int64) ([]audit.Entry, error)
	// Checkpoint returns a signed checkpoint covering every durable record.
	Checkpoint(ctx context.Context) (audit.Checkpoint, error)
	// InclusionProof proves record index in the tree of size treeSize.
	InclusionProof(ctx context.Context, index, treeSize int64) (tlog.RecordProof, error)
}

type logReader struct{ l *audit.Log }

// LogReader returns the AuditReader of an audit log.
func LogReader(l *audit.Log) AuditReader { return logReader{l} }

func (r logReader) Query(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	return r.l.Query(ctx, f)
}

func (r logReader) Entries(ctx context.Context, from, to int64) ([]audit.Entry, error) {
	return r.l.Backend().Entries(ctx, from, to)
}

func (r logReader) Checkpoint(ctx context.Context) (audit.Checkpoint, error) {
	return r.l.Checkpoint(ctx)
}

func (r logReader) InclusionProof(ctx context.Context, index, treeSize int64) (tlog.RecordProof, error) {
	return r.l.InclusionProof(ctx, index, treeSize)
}

// Bundle is a self-contained, offline-verifiable evidence bundle of one
// approval: its request, evidence snapshot, reviews (with how each approver
// authenticated), grant and uses; its notification deliveries and review
// items; a summary of the executed calls' records; and every audit record
// behind them with its exact leaf bytes and an inclusion proof to one
// signed checkpoint, whose verifier key it names.
//
// It is written as indented JSON (Encode) and verified byte for byte:
// VerifyBundle re-encodes what it parsed and refuses any difference, so a
// change of any byte — even one that JSON would ignore — is detected.
type Bundle struct {
	Format      string       `json:"format"`
	Approval    Approval     `json:"approval"`
	Deliveries  []Delivery   `json:"deliveries"`
	ReviewItems []ReviewItem `json:"review_items"`
	// Calls summarises the records of the held call and of the calls that
	// used the grant (decision, intent and outcome records).
	Calls   []CallRecord   `json:"calls"`
	Records []BundleRecord `json:"records"`
	// Checkpoint is the signed checkpoint note all proofs lead to.
	Checkpoint string `json:"checkpoint"`
	// Key is the checkpoint verifier key (informational: verify with a key
	// obtained out of band).
	Key string `json:"key"`
}

// BundleRecord is one audit record: its index, leaf hash, exact leaf bytes
// and the inclusion proof of the leaf in the checkpoint's tree.
type BundleRecord struct {
	Index int64       `json:"index"`
	Hash  tlog.Hash   `json:"hash"`
	Leaf  string      `json:"leaf"`
	Proof []tlog.Hash `json:"proof"`
}

// CallRecord summarises one record of a call the approval concerns.
type CallRecord struct {
	Index       int64  `json:"index"`
	Correlation string `json:"correlation"`
	// Phase is "decision", "intent" or "outcome".
	Phase string `json:"phase"`
	// Outcome is the recorded verdict (allow, challenge, block).
	Outcome string `json:"outcome,omitempty"`
	// Status is the OCSF status (Success, Failure) and Detail its detail.
	Status string `json:"status,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Time is the event time, milliseconds since the epoch.
	Time int64 `json:"time"`
}

// Encode writes the bundle in its one accepted encoding.
func (b *Bundle) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrNoBundles means the Manager has no AuditReader.
var ErrNoBundles = errors.New("evidence bundles are not available (no audit reader)")

// Bundle builds the evidence bundle of approval id. It reads the approval,
// then the records, then the approval again, and retries if it changed in
// between, so that the bundle is consistent.
func (m *Manager) Bundle(ctx context.Context, id string) (*Bundle, error) {
	r := m.cfg.AuditReader
	if r == nil {
		return nil, ErrNoBundles
	}
	for attempt := 0; ; attempt++ {
		b, version, err := m.bundleOnce(ctx, r, id)
		if err != nil {
			return nil, err
		}
		after, err := m.cfg.Store.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		// A change caught between its audit record and its store write
		// (an approval change, a delivery, a review item) makes the
		// bundle disagree with itself for a moment: check, and retry.
		consistent := after.Version == version
		if consistent {
			data, err := b.Encode()
			if err != nil {
				return nil, err
			}
			rep, err := VerifyBundle(data, nil)
			consistent = err == nil && rep.OK()
		}
		if consistent || attempt == 4 {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 20 * time.Millisecond):
		}
	}
}

func (m *Manager) bundleOnce(ctx context.Context, r AuditReader, id string) (*Bundle, int64, error) {
	a, err := m.cfg.Store.Get(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	normalize(&a)
	b := &Bundle{Format: BundleFormat, Approval: a, Key: m.cfg.VerifierKey, Deliveries: []Delivery{}, ReviewItems: []ReviewItem{}, Calls: []CallRecord{}}
	if b.Deliveries, err = m.cfg.Store.Deliveries(ctx, id); err != nil {
		return nil, 0, err
	}
	if b.Deliveries == nil {
		b.Deliveries = []Delivery{}
	}
	items, err := m.cfg.Store.ReviewItems(ctx, "")
	if err != nil {
		return nil, 0, err
	}
	for _, it := range items {
		if it.Approval == id {
			b.ReviewItems = append(b.ReviewItems, it)
		}
	}
	corrs := callCorrelations(&a)
	var recs []audit.Record
	for _, c := range append([]string{id}, corrs...) {
		rs, err := r.Query(ctx, audit.Filter{Correlation: c, Limit: 10000})
		if err != nil {
			return nil, 0, fmt.Errorf("reading audit records of %s: %w", c, err)
		}
		recs = append(recs, rs...)
	}
	slices.SortFunc(recs, func(x, y audit.Record) int { return int(x.Index - y.Index) })
	recs = slices.CompactFunc(recs, func(x, y audit.Record) bool { return x.Index == y.Index })
	if len(recs) == 0 {
		return nil, 0, fmt.Errorf("no audit records of approval %s", id)
	}
	cp, err := r.Checkpoint(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("getting a checkpoint: %w", err)
	}
	if last := recs[len(recs)-1].Index; cp.Size <= last {
		return nil, 0, fmt.Errorf("the checkpoint (size %d) does not cover record %d", cp.Size, last)
	}
	b.Checkpoint = string(cp.Note)
	for _, rec := range recs {
		es, err := r.Entries(ctx, rec.Index, rec.Index+1)
		if err != nil {
			return nil, 0, fmt.Errorf("reading audit record %d: %w", rec.Index, err)
		}
		if len(es) != 1 {
			return nil, 0, fmt.Errorf("audit record %d is missing", rec.Index)
		}
		proof, err := r.InclusionProof(ctx, rec.Index, cp.Size)
		if err != nil {
			return nil, 0, fmt.Errorf("proving audit record %d: %w", rec.Index, err)
		}
		b.Records = append(b.Records, BundleRecord{Index: rec.Index, Hash: tlog.RecordHash(es[0].Data), Leaf: string(es[0].Data), Proof: proof})
		if rec.Event.Metadata.CorrelationUID != id {
			b.Calls = append(b.Calls, callRecord(rec.Index, rec.Event))
		}
	}
	if b.Records == nil {
		b.Records = []BundleRecord{}
	}
	return b, a.Version, nil
}

// rawFields returns pointers to the approval's embedded JSON values.
func rawFields(a *Approval) []*json.RawMessage {
	var out []*json.RawMessage
	if a.Evidence != nil {
		out = append(out, &a.Evidence.Arguments)
	}
	if a.Elevation != nil {
		for i := range a.Elevation.Constraints {
			c := &a.Elevation.Constraints[i]
			if len(c.Equals) > 0 {
				out = append(out, &c.Equals)
			}
			for j := range c.OneOf {
				out = append(out, &c.OneOf[j])
			}
		}
	}
	return out
}

// normalize puts the approval's embedded JSON values in canonical form, the
// only form a bundle accepts (so that no byte of them can change unseen).
func normalize(a *Approval) {
	for _, p := range rawFields(a) {
		if c, err := Canonicalize(*p); err == nil {
			*p = c
		}
	}
}

// callCorrelations returns the correlation ids of the calls an approval
// concerns: the held call and every call that used the grant.
func callCorrelations(a *Approval) []string {
	var out []string
	if a.Evidence != nil && a.Evidence.Correlation != "" {
		out = append(out, a.Evidence.Correlation)
	}
	for _, u := range a.Uses {
		if u.Correlation != "" && !slices.Contains(out, u.Correlation) && u.Correlation != a.ID {
			out = append(out, u.Correlation)
		}
	}
	return out
}

func callRecord(index int64, e *audit.Event) CallRecord {
	c := CallRecord{Index: index, Correlation: e.Metadata.CorrelationUID, Status: e.Status, Detail: e.StatusDetail, Time: e.Time}
	if u := e.Unmapped; u != nil {
		c.Phase = u.Phase
		if u.Verdict != nil {
			c.Outcome = u.Verdict.Outcome
		}
	}
	return c
}

// BundleReport is the result of verifying a bundle.
type BundleReport struct {
	Approval string `json:"approval"`
	Status   Status `json:"status"`
	// Origin and TreeSize are the verified checkpoint's.
	Origin   string `json:"origin"`
	TreeSize int64  `json:"tree_size"`
	Records  int    `json:"records"`
	// KeyFromBundle is set when no trusted key was given and the bundle's
	// own key was used: that proves integrity, not origin.
	KeyFromBundle bool `json:"key_from_bundle"`
	// Reviews describe each review: who, how authenticated, what, when.
	Reviews []string `json:"reviews,omitempty"`
	// Problems lists every check that failed; empty means verified.
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether the bundle verified.
func (r *BundleReport) OK() bool { return len(r.Problems) == 0 }

func (r *BundleReport) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// VerifyBundle checks an evidence bundle offline:
//
//   - the file is exactly the encoding of what it holds (any byte changed
//     shows);
//   - the checkpoint's signature verifies with trusted (or, when trusted is
//     nil, the bundle's own key, which the report flags), and a trusted
//     key equals the bundle's;
//   - every record's leaf hashes to its recorded hash, holds its index, and
//     is included in the checkpoint's tree (RFC 6962 inclusion proof);
//   - the approval agrees with the records: the evidence's arguments hash
//     and call hash recompute; the last state record of the approval
//     commits (SHA-256 of canonical JSON) to exactly the bundled approval —
//     status, evidence, reviews and approvers, grant window, uses;
//     every delivery and review item is committed to by a record, and every
//     such record is in the bundle; the call summaries are those of the
//     records.
//
// The error is for a file that cannot be read as a bundle; failed checks
// are the report's Problems.
func VerifyBundle(data []byte, trusted note.Verifier) (*BundleReport, error) {
	var b Bundle
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("reading bundle: %w", err)
	}
	if dec.More() {
		return nil, errors.New("reading bundle: trailing data")
	}
	if b.Format != BundleFormat {
		return nil, fmt.Errorf("reading bundle: format %q, want %q", b.Format, BundleFormat)
	}
	rep := &BundleReport{Approval: b.Approval.ID, Status: b.Approval.Status, Records: len(b.Records)}
	if enc, err := b.Encode(); err != nil || !bytes.Equal(enc, data) {
		rep.problem("the file is not the exact encoding of its content: it was modified")
	}
	v := trusted
	if v == nil {
		rep.KeyFromBundle = true
		kv, err := note.NewVerifier(b.Key)
		if err != nil {
			rep.problem("the bundle's verifier key does not parse: %v", err)
			return rep, nil
		}
		v = kv
	} else if b.Key != "" {
		if kv, err := note.NewVerifier(b.Key); err != nil || kv.Name() != trusted.Name() || kv.KeyHash() != trusted.KeyHash() {
			rep.problem("the bundle names another verifier key than the trusted one")
		}
	}
	cp, err := audit.OpenCheckpoint([]byte(b.Checkpoint), v)
	if err != nil {
		rep.problem("checkpoint: %v", err)
		return rep, nil
	}
	rep.Origin, rep.TreeSize = v.Name(), cp.Size

	// Records: hashes, indexes, inclusion.
	events := map[int64]*audit.Event{}
	var last int64 = -1
	for i, r := range b.Records {
		if r.Index <= last {
			rep.problem("record %d: index %d out of order", i, r.Index)
		}
		last = r.Index
		if tlog.RecordHash([]byte(r.Leaf)) != r.Hash {
			rep.problem("record %d: the leaf does not hash to the recorded hash", r.Index)
			continue
		}
		if r.Index < 0 || r.Index >= cp.Size {
			rep.problem("record %d: outside the checkpoint's tree (size %d)", r.Index, cp.Size)
			continue
		}
		if err := tlog.CheckRecord(r.Proof, cp.Size, cp.Root, r.Index, r.Hash); err != nil {
			rep.problem("record %d: not included in the signed checkpoint: %v", r.Index, err)
			continue
		}
		lf, err := audit.ParseLeaf([]byte(r.Leaf))
		if err != nil || lf.Index != r.Index {
			rep.problem("record %d: the leaf does not hold its index", r.Index)
			continue
		}
		var e audit.Event
		if err := json.Unmarshal(lf.Event, &e); err != nil {
			rep.problem("record %d: event does not decode: %v", r.Index, err)
			continue
		}
		events[r.Index] = &e
	}
	checkApproval(rep, &b, events)
	return rep, nil
}

// checkApproval checks the bundle's summary against the verified records.
func checkApproval(rep *BundleReport, b *Bundle, events map[int64]*audit.Event) {
	a := &b.Approval
	calls := map[string]bool{}
	for _, c := range callCorrelations(a) {
		calls[c] = true
	}
	var state *record
	stateIndex := int64(-1)
	deliveries := map[string]bool{}
	itemHashes := map[string]string{} // item id → hash of its last record
	var wantCalls []CallRecord
	for _, r := range b.Records {
		e := events[r.Index]
		if e == nil {
			continue
		}
		corr := e.Metadata.CorrelationUID
		if corr != a.ID {
			if !calls[corr] {
				rep.problem("record %d: correlation %q belongs neither to the approval nor to its calls", r.Index, corr)
			}
			wantCalls = append(wantCalls, callRecord(r.Index, e))
			continue
		}
		if e.Entity == nil {
			rep.problem("record %d: an approval record without entity data", r.Index)
			continue
		}
		var rec record
		if err := json.Unmarshal(e.Entity.Data, &rec); err != nil || rec.Approval != a.ID {
			rep.problem("record %d: approval data does not decode or names another approval", r.Index)
			continue
		}
		switch {
		case rec.State != "":
			state, stateIndex = &rec, r.Index
		case rec.Delivery != "":
			deliveries[rec.Delivery] = true
		case rec.Item != "":
			itemHashes[e.Entity.UID] = rec.Item
		}
	}
	if state == nil {
		rep.problem("no record commits to the approval's state")
	} else if got := stateHash(a); got != state.State {
		rep.problem("the approval differs from the state recorded at index %d (version %d, status %s)", stateIndex, state.Version, state.Status)
	}
	for _, p := range rawFields(a) {
		// The encoder indents embedded JSON (the byte-for-byte check covers
		// whitespace); apart from it, it must be canonical.
		var compact bytes.Buffer
		c, err := Canonicalize(*p)
		if err != nil || json.Compact(&compact, *p) != nil || !bytes.Equal(c, compact.Bytes()) {
			rep.problem("embedded JSON %.40q is not in canonical form", *p)
		}
	}
	if e := a.Evidence; e != nil {
		args, err := Canonicalize(e.Arguments)
		switch {
		case err != nil:
			rep.problem("evidence arguments: %v", err)
		case sha256Hex(args) != e.ArgumentsHash:
			rep.problem("the evidence's arguments do not hash to its arguments hash")
		case sha256Hex(callDocument(e.Server, e.Tool, args, e.Agent, e.User, e.Task, e.PolicyVersion)) != e.CallHash:
			rep.problem("the evidence does not hash to its call hash")
		}
	}
	seen := map[string]bool{}
	for _, d := range b.Deliveries {
		h := canonicalHash(&d)
		if !deliveries[h] {
			rep.problem("delivery %s has no audit record", d.ID)
		}
		seen[h] = true
	}
	for h := range deliveries {
		if !seen[h] {
			rep.problem("an audited delivery is missing from the bundle")
		}
	}
	items := map[string]bool{}
	for _, it := range b.ReviewItems {
		items[it.ID] = true
		if itemHashes[it.ID] != canonicalHash(&it) {
			rep.problem("review item %s differs from its last audit record", it.ID)
		}
	}
	for id := range itemHashes {
		if !items[id] {
			rep.problem("audited review item %s is missing from the bundle", id)
		}
	}
	if a.ReviewItem != "" && !items[a.ReviewItem] {
		rep.problem("the break-glass review item %s is missing", a.ReviewItem)
	}
	if wantCalls == nil {
		wantCalls = []CallRecord{}
	}
	if !reflect.DeepEqual(wantCalls, b.Calls) {
		rep.problem("the call summaries differ from the call records")
	}
	for _, r := range a.Reviews {
		s := fmt.Sprintf("%s %s by %s (%s", r.Time.UTC().Format("2006-01-02T15:04:05Z"), r.Vote, r.Approver.Subject, methodName(r.Approver.Method))
		if !r.Approver.AuthTime.IsZero() {
			s += ", authenticated " + r.Approver.AuthTime.UTC().Format("2006-01-02T15:04:05Z")
		}
		if r.Approver.ACR != "" {
			s += ", acr " + r.Approver.ACR
		}
		s += ")"
		if r.BreakGlass {
			s += " BREAK-GLASS: " + strings.TrimSpace(r.Justification)
		}
		rep.Reviews = append(rep.Reviews, s)
	}
}
