package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Config configures a Log. The zero value of each field means its default.
type Config struct {
	// Backend stores the log. Required.
	Backend Backend
	// Checkpoints stores signed checkpoints. Default: Backend, which must
	// then implement CheckpointStore.
	Checkpoints CheckpointStore
	// Signer signs checkpoints (Ed25519 note key). Its name is the log's
	// origin, e.g. "gatehouse.example/audit". Required.
	Signer note.Signer
	// CheckpointInterval is how often a checkpoint is issued when the log
	// has grown. Default 1 minute; negative disables periodic checkpoints
	// (Checkpoint still issues on demand, and Close issues a last one).
	CheckpointInterval time.Duration
	// CheckpointSinks receive every issued checkpoint (FileSink,
	// WebhookSink). Publishing is asynchronous and retried; it never blocks
	// appends.
	CheckpointSinks []CheckpointSink
	// Privacy selects what is kept of payloads. Default MetadataOnly.
	Privacy Mode
	// Salt keys the HMAC that replaces payloads and secrets. Default: a
	// random salt per Open, which makes hashes incomparable across restarts;
	// set it (from a secret file) in production.
	Salt []byte
	// Registerer receives the log's metrics. Nil means no metrics.
	Registerer prometheus.Registerer
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// MaxBatch caps the records committed in one transaction. Default 1024.
	MaxBatch int
	// MaxDelay is how long the writer waits for more records before
	// committing a batch that is not full. Default 0: commit at once; batches
	// form naturally from the records that arrive during a commit.
	MaxDelay time.Duration
	// LazyDelay bounds how long a record appended with AppendLazy may wait
	// to be committed together with a later record. Default 20ms.
	LazyDelay time.Duration
	// QueueSize is the number of records that may wait for the writer; a
	// full queue blocks Append (back-pressure). Default 4×MaxBatch.
	QueueSize int
	// CommitTimeout bounds one backend append. Default 10 s.
	CommitTimeout time.Duration
	// TidyInterval is how often the writer lets a backend that implements
	// Tidier do its upkeep, after a commit: when no record is waiting, or
	// after four intervals in any case. Default 1 s.
	TidyInterval time.Duration
}

// Receipt identifies a durable record.
type Receipt struct {
	Index int64     `json:"index"`
	Hash  tlog.Hash `json:"hash"`
}

// Log is the tamper-evident audit log. It is safe for concurrent use.
type Log struct {
	cfg     Config
	b       Backend
	cps     CheckpointStore
	origin  string
	priv    privacy
	logger  *slog.Logger
	now     func() time.Time
	metrics *metrics

	queue   chan *request
	ckptReq chan chan ckptResult
	stop    chan struct{}
	done    chan struct{}
	sinks   []*sinkQueue

	closeMu sync.RWMutex
	closed  bool

	committed atomic.Int64 // size visible to readers

	// Writer state, owned by the writer goroutine.
	size    int64
	prev    tlog.Hash
	edge    edge
	healthy bool
	last    Checkpoint
	// tidied is when the backend last tidied, at log size tidySize.
	tidied   time.Time
	tidySize int64
}

type request struct {
	event []byte
	cols  Entry
	start time.Time
	done  chan result
	// lazy requests may wait up to LazyDelay to share a commit.
	lazy bool
}

type result struct {
	r   Receipt
	err error
}

type ckptResult struct {
	c   Checkpoint
	err error
}

// edge holds, for each level, the hash of the rightmost complete node of the
// tree: exactly the hashes tlog needs to extend the tree or compute its root.
type edge [64]struct {
	idx int64
	h   tlog.Hash
	ok  bool
}

func (e *edge) set(idx int64, h tlog.Hash) {
	level, _ := tlog.SplitStoredHashIndex(idx)
	e[level].idx, e[level].h, e[level].ok = idx, h, true
}

// Open loads the log's state from cfg.Backend, checks it against the latest
// stored checkpoint, and starts the writer.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Backend == nil {
		return nil, errors.New("opening audit log: no backend")
	}
	if cfg.Signer == nil {
		return nil, errors.New("opening audit log: no checkpoint signer")
	}
	if cfg.Checkpoints == nil {
		cs, ok := cfg.Backend.(CheckpointStore)
		if !ok {
			return nil, errors.New("opening audit log: backend stores no checkpoints and Config.Checkpoints is nil")
		}
		cfg.Checkpoints = cs
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Minute
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1024
	}
	if cfg.LazyDelay <= 0 {
		cfg.LazyDelay = 20 * time.Millisecond
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4 * cfg.MaxBatch
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 10 * time.Second
	}
	if cfg.TidyInterval <= 0 {
		cfg.TidyInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	salt := cfg.Salt
	if len(salt) == 0 {
		salt = make([]byte, 32)
		rand.Read(salt)
		logger.Warn("audit log has no configured salt: payload hashes will not be comparable across restarts")
	}
	l := &Log{
		cfg:     cfg,
		b:       cfg.Backend,
		cps:     cfg.Checkpoints,
		origin:  cfg.Signer.Name(),
		priv:    privacy{mode: cfg.Privacy, salt: salt},
		logger:  logger,
		now:     cfg.Now,
		queue:   make(chan *request, cfg.QueueSize),
		ckptReq: make(chan chan ckptResult),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := l.resync(ctx); err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	cps, err := l.cps.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: reading checkpoints: %w", err)
	}
	if len(cps) > 0 {
		c := cps[len(cps)-1]
		if c.Size > l.size {
			return nil, fmt.Errorf("opening audit log: latest checkpoint covers %d entries but the store holds %d: entries were deleted", c.Size, l.size)
		}
		root, err := tlog.TreeHash(c.Size, l.backendReader(ctx))
		if err != nil {
			return nil, fmt.Errorf("opening audit log: recomputing checkpoint root: %w", err)
		}
		if root != c.Root {
			return nil, fmt.Errorf("opening audit log: stored tree does not match the signed checkpoint at size %d: the log was modified (run gatehouse audit verify)", c.Size)
		}
		l.last = c
	}
	l.tidied, l.tidySize = time.Now(), l.size
	l.metrics = newMetrics(cfg.Registerer, l)
	for _, s := range cfg.CheckpointSinks {
		l.sinks = append(l.sinks, newSinkQueue(s, logger, l.metrics))
	}
	go l.writer()
	return l, nil
}

// resync (re)loads the writer state from the backend.
func (l *Log) resync(ctx context.Context) error {
	size, err := l.b.Size(ctx)
	if err != nil {
		return fmt.Errorf("reading log size: %w", err)
	}
	var prev tlog.Hash
	var e edge
	if size > 0 {
		last, err := l.b.Entries(ctx, size-1, size)
		if err != nil {
			return fmt.Errorf("reading last entry: %w", err)
		}
		if len(last) != 1 {
			return fmt.Errorf("reading last entry %d: missing", size-1)
		}
		prev = last[0].Hash
		var idx []int64
		for level := 0; size>>level > 0; level++ {
			idx = append(idx, tlog.StoredHashIndex(level, size>>level-1))
		}
		hs, err := l.b.Hashes(ctx, idx)
		if err != nil {
			return fmt.Errorf("reading tree edge: %w", err)
		}
		for i, x := range idx {
			e.set(x, hs[i])
		}
		if hs[0] != prev {
			return fmt.Errorf("last entry %d: recorded hash differs from the tree's leaf hash", size-1)
		}
	}
	l.size, l.prev, l.edge, l.healthy = size, prev, e, true
	l.committed.Store(size)
	return nil
}

// Size returns the number of durable records.
func (l *Log) Size() int64 { return l.committed.Load() }

// Origin returns the log's origin (the signer's name).
func (l *Log) Origin() string { return l.origin }

// Backend returns the log's backend, for read-only use.
func (l *Log) Backend() Backend { return l.b }

// Append records e and returns once the record is durable. It fills
// e.Time (if zero), e.Metadata.UID (if empty) and e.Metadata.LoggedTime,
// and applies the payload privacy mode before hashing. Concurrent appends
// are committed together (group commit).
//
// An error means the record may not be durable: the caller must not perform
// the audited action. Errors wrap ErrUnavailable (store failure), ErrClosed,
// or ctx's error.
func (l *Log) Append(ctx context.Context, e *Event) (Receipt, error) {
	return l.append(ctx, e, false)
}

// AppendLazy is Append for a record that need not be durable at once: it
// may wait up to Config.LazyDelay to be committed with a later record, so
// that records nobody waits on (outcomes, reads) do not cost a commit of
// their own. It returns, like Append, once the record is durable.
func (l *Log) AppendLazy(ctx context.Context, e *Event) (Receipt, error) {
	return l.append(ctx, e, true)
}

func (l *Log) append(ctx context.Context, e *Event, lazy bool) (Receipt, error) {
	start := time.Now()
	data, cols, err := l.encode(e)
	if err != nil {
		return Receipt{}, err
	}
	req := &request{event: data, cols: cols, start: start, done: make(chan result, 1), lazy: lazy}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return Receipt{}, ErrClosed
	}
	select {
	case l.queue <- req:
	case <-ctx.Done():
		l.closeMu.RUnlock()
		return Receipt{}, ctx.Err()
	}
	l.closeMu.RUnlock()
	select {
	case r := <-req.done:
		return r.r, r.err
	case <-ctx.Done():
		return Receipt{}, ctx.Err()
	}
}

// encode fills defaults, applies privacy and returns the canonical event.
func (l *Log) encode(e *Event) ([]byte, Entry, error) {
	now := l.now()
	if e.Time == 0 {
		e.Time = now.UnixMilli()
	}
	e.Metadata.LoggedTime = now.UnixMilli()
	if e.Metadata.Version == "" {
		e.Metadata.Version = OCSFVersion
	}
	if e.Metadata.Product.VendorName == "" {
		e.Metadata.Product = Product
	}
	if e.Metadata.UID == "" {
		var b [16]byte
		rand.Read(b[:])
		e.Metadata.UID = hex.EncodeToString(b[:])
	}
	if err := l.priv.apply(e); err != nil {
		return nil, Entry{}, fmt.Errorf("encoding audit event: %w", err)
	}
	data, err := marshalCanonical(e)
	if err != nil {
		return nil, Entry{}, fmt.Errorf("encoding audit event: %w", err)
	}
	return data, columns(e), nil
}

func columns(e *Event) Entry {
	c := Entry{Time: e.Time, Class: e.ClassUID, Correlation: e.Metadata.CorrelationUID}
	if u := e.Unmapped; u != nil {
		c.Agent, c.Tool = u.Agent, u.Tool
		if u.Verdict != nil {
			c.Outcome = u.Verdict.Outcome
		}
	}
	return c
}

// leaf builds the leaf bytes of record index: canonical JSON with the
// event, the index and the previous leaf's hash, so that deletion, insertion
// and reordering are visible in the data itself.
func leaf(event []byte, index int64, prev tlog.Hash) []byte {
	b := make([]byte, 0, len(event)+100)
	b = append(b, `{"event":`...)
	b = append(b, event...)
	b = append(b, `,"index":`...)
	b = strconv.AppendInt(b, index, 10)
	b = append(b, `,"prev":"`...)
	b = base64.StdEncoding.AppendEncode(b, prev[:])
	b = append(b, `","v":1}`...)
	return b
}

// Leaf is the decoded form of an entry's data.
type Leaf struct {
	Event json.RawMessage `json:"event"`
	Index int64           `json:"index"`
	Prev  tlog.Hash       `json:"prev"`
	V     int             `json:"v"`
}

// ParseLeaf decodes an entry's data.
func ParseLeaf(data []byte) (Leaf, error) {
	var lf Leaf
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&lf); err != nil {
		return Leaf{}, fmt.Errorf("parsing leaf: %w", err)
	}
	if lf.V != 1 || len(lf.Event) == 0 {
		return Leaf{}, fmt.Errorf("parsing leaf: unsupported version %d", lf.V)
	}
	return lf, nil
}

func (l *Log) writer() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.cfg.CheckpointInterval > 0 {
		t := time.NewTicker(l.cfg.CheckpointInterval)
		defer t.Stop()
		tick = t.C
	}
	batch := make([]*request, 0, l.cfg.MaxBatch)
	// Lazy records wait in pending until a record that is waited on
	// arrives, the batch is full, or LazyDelay has passed.
	var pending []*request
	lazyTimer := time.NewTimer(time.Hour)
	lazyTimer.Stop()
	defer lazyTimer.Stop()
	// flush commits the pending records, MaxBatch at a time.
	flush := func() {
		lazyTimer.Stop()
		for i := 0; i < len(pending); i += l.cfg.MaxBatch {
			l.commit(pending[i:min(i+l.cfg.MaxBatch, len(pending))])
		}
		pending = pending[:0]
	}
	for {
		select {
		case r := <-l.queue:
			got := l.gather(append(batch[:0], r))
			eager := false
			for _, g := range got {
				eager = eager || !g.lazy
			}
			if !eager && len(pending)+len(got) < l.cfg.MaxBatch {
				if len(pending) == 0 {
					lazyTimer.Reset(l.cfg.LazyDelay)
				}
				pending = append(pending, got...)
				continue
			}
			pending = append(pending, got...)
			flush()
			l.tidy()
		case <-lazyTimer.C:
			flush()
			l.tidy()
		case reply := <-l.ckptReq:
			flush()
			c, err := l.issue()
			reply <- ckptResult{c, err}
		case <-tick:
			if l.size > l.last.Size {
				if _, err := l.issue(); err != nil {
					l.logger.Error("issuing periodic checkpoint", "err", err)
				}
			}
		case <-l.stop:
			flush()
			for {
				select {
				case r := <-l.queue:
					batch = l.gather(append(batch[:0], r))
					l.commit(batch)
					continue
				default:
				}
				break
			}
			if l.size > l.last.Size {
				if _, err := l.issue(); err != nil {
					l.logger.Error("issuing final checkpoint", "err", err)
				}
			}
			return
		}
	}
}

// tidy lets a Tidier backend do its upkeep (writer only), between
// commits: once TidyInterval has passed since the last time and the log
// has grown, when no record waits, or after four intervals even when
// records wait (they are delayed by the upkeep, once).
func (l *Log) tidy() {
	t, ok := l.b.(Tidier)
	if !ok || l.size == l.tidySize || !l.healthy {
		return
	}
	since := time.Since(l.tidied)
	if since < l.cfg.TidyInterval || (len(l.queue) > 0 && since < 4*l.cfg.TidyInterval) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
	defer cancel()
	if err := t.Tidy(ctx); err != nil {
		l.logger.Warn("audit store upkeep failed", "err", err)
	}
	l.tidied, l.tidySize = time.Now(), l.size
}

// gather adds queued requests to batch, waiting up to MaxDelay for more.
func (l *Log) gather(batch []*request) []*request {
	var timeout <-chan time.Time
	if l.cfg.MaxDelay > 0 {
		t := time.NewTimer(l.cfg.MaxDelay)
		defer t.Stop()
		timeout = t.C
	}
	for len(batch) < l.cfg.MaxBatch {
		if timeout == nil {
			select {
			case r := <-l.queue:
				batch = append(batch, r)
				continue
			default:
				return batch
			}
		}
		select {
		case r := <-l.queue:
			batch = append(batch, r)
		case <-timeout:
			return batch
		}
	}
	return batch
}

func (l *Log) commit(batch []*request) {
	start := time.Now()
	err := l.commitBatch(batch)
	l.metrics.observeCommit(time.Since(start), len(batch), err)
	if err != nil {
		l.logger.Error("committing audit records", "records", len(batch), "err", err)
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		for _, r := range batch {
			r.done <- result{err: err}
		}
		return
	}
	first := l.size - int64(len(batch))
	now := time.Now()
	for i, r := range batch {
		r.done <- result{r: Receipt{Index: first + int64(i), Hash: r.cols.Hash}}
		l.metrics.observeAppend(now.Sub(r.start))
	}
}

func (l *Log) commitBatch(batch []*request) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
	defer cancel()
	if !l.healthy {
		if err := l.resync(ctx); err != nil {
			return err
		}
	}
	b := Batch{HashStart: tlog.StoredHashIndex(0, l.size), Entries: make([]Entry, len(batch))}
	work := l.edge
	reader := l.edgeReader(ctx, &work)
	n, prev := l.size, l.prev
	for i, r := range batch {
		data := leaf(r.event, n, prev)
		h := tlog.RecordHash(data)
		hs, err := tlog.StoredHashesForRecordHash(n, h, reader)
		if err != nil {
			return fmt.Errorf("computing tree hashes: %w", err)
		}
		for j, x := range hs {
			work.set(b.HashStart+int64(len(b.Hashes)+j), x)
		}
		b.Hashes = append(b.Hashes, hs...)
		e := r.cols
		e.Index, e.Data, e.Hash = n, data, h
		b.Entries[i] = e
		r.cols.Hash = h
		n, prev = n+1, h
	}
	if err := l.b.Append(ctx, b); err != nil {
		// The batch may or may not have been stored: re-read before the
		// next one.
		l.healthy = false
		return err
	}
	l.size, l.prev, l.edge = n, prev, work
	l.committed.Store(n)
	return nil
}

// edgeReader serves tree hashes from the edge, falling back to the backend.
func (l *Log) edgeReader(ctx context.Context, e *edge) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		var miss []int64
		for i, x := range idx {
			level, _ := tlog.SplitStoredHashIndex(x)
			if e[level].ok && e[level].idx == x {
				out[i] = e[level].h
			} else {
				miss = append(miss, x)
			}
		}
		if len(miss) == 0 {
			return out, nil
		}
		hs, err := l.b.Hashes(ctx, miss)
		if err != nil {
			return nil, err
		}
		j := 0
		for i, x := range idx {
			level, _ := tlog.SplitStoredHashIndex(x)
			if !(e[level].ok && e[level].idx == x) {
				out[i] = hs[j]
				j++
			}
		}
		return out, nil
	})
}

func (l *Log) backendReader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return l.b.Hashes(ctx, idx)
	})
}

// issue signs and stores a checkpoint for the current size (writer only).
func (l *Log) issue() (Checkpoint, error) {
	if l.size == 0 {
		return Checkpoint{}, fmt.Errorf("%w: the log is empty", ErrNotFound)
	}
	if l.size == l.last.Size {
		return l.last, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
	defer cancel()
	root, err := tlog.TreeHash(l.size, l.edgeReader(ctx, &l.edge))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("computing tree root: %w", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(formatCheckpoint(l.origin, l.size, root))}, l.cfg.Signer)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("signing checkpoint: %w", err)
	}
	c := Checkpoint{Size: l.size, Root: root, Note: msg, Time: l.now()}
	if err := l.cps.PutCheckpoint(ctx, c); err != nil {
		l.metrics.checkpointFailures.Inc()
		return Checkpoint{}, fmt.Errorf("%w: storing checkpoint: %w", ErrUnavailable, err)
	}
	l.last = c
	l.metrics.checkpointSize.Set(float64(c.Size))
	for _, s := range l.sinks {
		s.push(c)
	}
	return c, nil
}

// Checkpoint issues a signed checkpoint covering every durable record (or
// returns the latest one if the log has not grown) and returns it.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	reply := make(chan ckptResult, 1)
	select {
	case l.ckptReq <- reply:
	case <-l.done:
		return Checkpoint{}, ErrClosed
	case <-ctx.Done():
		return Checkpoint{}, ctx.Err()
	}
	select {
	case r := <-reply:
		return r.c, r.err
	case <-ctx.Done():
		return Checkpoint{}, ctx.Err()
	}
}

// InclusionProof proves that record index is in the tree of size treeSize
// (check with tlog.CheckRecord against that checkpoint's root).
func (l *Log) InclusionProof(ctx context.Context, index, treeSize int64) (tlog.RecordProof, error) {
	if treeSize > l.Size() || index < 0 || index >= treeSize {
		return nil, fmt.Errorf("%w: record %d in tree of size %d (log size %d)", ErrNotFound, index, treeSize, l.Size())
	}
	return tlog.ProveRecord(treeSize, index, l.backendReader(ctx))
}

// ConsistencyProof proves that the tree of size oldSize is a prefix of the
// tree of size newSize (check with tlog.CheckTree).
func (l *Log) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	if newSize > l.Size() || oldSize < 1 || oldSize > newSize {
		return nil, fmt.Errorf("%w: consistency %d→%d (log size %d)", ErrNotFound, oldSize, newSize, l.Size())
	}
	return tlog.ProveTree(newSize, oldSize, l.backendReader(ctx))
}

// TreeHash returns the root of the tree of size n (n ≤ Size).
func (l *Log) TreeHash(ctx context.Context, n int64) (tlog.Hash, error) {
	if n > l.Size() {
		return tlog.Hash{}, fmt.Errorf("%w: tree size %d > %d", ErrNotFound, n, l.Size())
	}
	return tlog.TreeHash(n, l.backendReader(ctx))
}

// Query returns the records matching f (see Search).
func (l *Log) Query(ctx context.Context, f Filter) ([]Record, error) {
	return Search(ctx, l.b, f)
}

// Close stops accepting appends, commits those already queued, issues a
// last checkpoint and waits up to 5 s for checkpoint publishing to finish.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return nil
	}
	l.closed = true
	l.closeMu.Unlock()
	close(l.stop)
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range l.sinks {
		s.close(ctx)
	}
	l.metrics.unregister()
	return nil
}

// Record is a decoded entry.
type Record struct {
	Index int64     `json:"index"`
	Hash  tlog.Hash `json:"hash"`
	Event *Event    `json:"event"`
}

// Search returns the records of b matching f, using b's Searcher if it has
// one and scanning otherwise. It works offline, without a Log.
func Search(ctx context.Context, b Backend, f Filter) ([]Record, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	var es []Entry
	if s, ok := b.(Searcher); ok {
		var err error
		if es, err = s.Search(ctx, f); err != nil {
			return nil, fmt.Errorf("searching audit log: %w", err)
		}
	} else {
		size, err := b.Size(ctx)
		if err != nil {
			return nil, err
		}
		for from := f.From; from < size && len(es) < f.Limit; from += 1000 {
			chunk, err := b.Entries(ctx, from, min(from+1000, size))
			if err != nil {
				return nil, err
			}
			for _, e := range chunk {
				if f.Match(e) && len(es) < f.Limit {
					es = append(es, e)
				}
			}
		}
	}
	out := make([]Record, 0, len(es))
	for _, e := range es {
		lf, err := ParseLeaf(e.Data)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", e.Index, err)
		}
		var ev Event
		if err := json.Unmarshal(lf.Event, &ev); err != nil {
			return nil, fmt.Errorf("entry %d: decoding event: %w", e.Index, err)
		}
		out = append(out, Record{Index: e.Index, Hash: tlog.RecordHash(e.Data), Event: &ev})
	}
	return out, nil
}

// sinkQueue publishes checkpoints to one sink in order, from one goroutine.
type sinkQueue struct {
	sink    CheckpointSink
	mu      sync.Mutex
	pending []Checkpoint
	wake    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	logger  *slog.Logger
	m       *metrics
}

func newSinkQueue(s CheckpointSink, logger *slog.Logger, m *metrics) *sinkQueue {
	ctx, cancel := context.WithCancel(context.Background())
	q := &sinkQueue{sink: s, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}), logger: logger, m: m}
	go q.run()
	return q
}

func (q *sinkQueue) push(c Checkpoint) {
	q.mu.Lock()
	q.pending = append(q.pending, c)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *sinkQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		var c *Checkpoint
		if len(q.pending) > 0 {
			c = &q.pending[0]
		}
		q.mu.Unlock()
		if c == nil {
			select {
			case <-q.wake:
				continue
			case <-q.ctx.Done():
				return
			}
		}
		if err := q.sink.Publish(q.ctx, *c); err != nil {
			q.m.checkpointFailures.Inc()
			q.logger.Error("publishing checkpoint", "size", c.Size, "err", err)
			if q.ctx.Err() != nil {
				return
			}
		}
		q.mu.Lock()
		q.pending = q.pending[1:]
		q.mu.Unlock()
	}
}

// close lets the queue drain until ctx ends, then stops it.
func (q *sinkQueue) close(ctx context.Context) {
	for {
		q.mu.Lock()
		n := len(q.pending)
		q.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			q.cancel()
			<-q.done
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	q.cancel()
	<-q.done
}
