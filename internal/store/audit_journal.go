package store

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"golang.org/x/mod/sumdb/tlog"
)

// The audit journal makes an audit batch durable with one write and one
// fdatasync of an append-only file, and moves it into SQLite afterwards,
// off the caller's path.
//
// Why: on SQLite, a synchronous transaction per batch (page writes, WAL
// frames, a sync) was a third of the gateway's CPU at 100–500 calls/s, where
// group commit finds one or two records per batch, and most of the time a
// side-effecting call waits before it is forwarded. The journal keeps the
// guarantee (Append returns once the batch survives a crash of the process
// or the machine) and lets SQLite take many batches per transaction.
//
// The file is created at its full size, filled with zeros and synced once,
// so a write never changes the file's size or allocation and fdatasync only
// flushes the written blocks. Each batch is one record:
//
//	magic "GHJ1" | payload length (u32) | CRC-32C of the payload (u32) | payload
//
// The payload holds the batch's first index, HashStart, its entries and its
// hashes (see encodeJournal). The file has two halves; in each, records
// follow one another from the half's start. The writer fills one half and
// then starts the other again from its start, once SQLite holds (committed
// with synchronous=FULL) every record that half held; when SQLite holds
// every journaled record, the journal is redundant and the writer starts
// its half again at once (see place). Recovery reads each half's chain
// from its start while each record is intact and starts where the previous
// one ended (first index = previous first index + its entries): stale
// records of an earlier pass hold lower indexes, so they end the chain, as
// does a torn write (bad CRC) or the zero fill. The two chains, in index
// order, give what SQLite may lack.
//
// Readers (Entries, Hashes, Search, …) first wait until SQLite holds every
// journaled batch, asking the applier to commit at once, so they see the
// same log as with direct appends. Other processes that read the SQLite
// file (the CLI) may see it up to journalApplyDelay (100 ms) behind a
// running gateway; checkpoints are stored only once SQLite holds what they cover.

const (
	journalMagic = "GHJ1"
	// journalApplyDelay is how long the applier collects batches before
	// committing them to SQLite, unless a reader or the writer waits.
	journalApplyDelay = 100 * time.Millisecond
	// journalApplyBatch is how many waiting records make the applier
	// commit without waiting for the rest of journalApplyDelay: under a
	// heavy load SQLite then keeps close behind the journal.
	journalApplyBatch = 1024
	// journalTidyEvery is how often the applier checkpoints SQLite's WAL.
	journalTidyEvery = time.Second
)

// journalSize is the journal's size when created (a journal is read at
// the size it has, then extended to this). A batch larger than half of it
// waits until SQLite holds everything and grows the file. A variable for
// tests.
var journalSize int64 = 16 << 20

var crc32c = crc32.MakeTable(crc32.Castagnoli)

type auditJournal struct {
	a      *AuditLog
	f      *os.File
	path   string
	logger *slog.Logger

	// Writer state (the log's single writer, through Append).
	off   int64
	limit int64
	buf   []byte
	ends  [2]int64 // per half, the end index of its last record (0: none unapplied)

	mu       sync.Mutex
	size     int64         // journaled (durable) size
	applied  int64         // size held by SQLite
	pending  []audit.Batch // journaled, not yet applied, in order
	pendingN int           // entries in pending
	urgent   bool          // someone waits for the applier
	applyErr error         // the applier's last failure, nil after a success
	failed   error         // a journal write failed: no further appends
	progress chan struct{} // closed and replaced when applied grows or applyErr changes
	closed   bool

	wake chan struct{} // (capacity 1) there is work, or urgency
	stop chan struct{}
	done chan struct{}
}

// journalPath is where the journal of the SQLite store at dbPath lives.
func journalPath(dbPath string) string { return dbPath + "-audit-journal" }

// UseJournal makes a's appends durable through a journal next to the SQLite
// file (see above), replaying into SQLite whatever the journal holds that
// SQLite does not (after a crash). It must be called before the first
// append. PostgreSQL stores ignore it: the server's commit is durable and
// shared by replicas. logger (nil discards) receives the applier's errors.
func (a *AuditLog) UseJournal(ctx context.Context, logger *slog.Logger) error {
	if a.db.Dialect != SQLite || a.j != nil {
		return nil
	}
	if a.db.Path == "" {
		return errors.New("audit journal: the SQLite store has no file path")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	j := &auditJournal{a: a, path: journalPath(a.db.Path), logger: logger, progress: make(chan struct{}),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := j.openRecovered(ctx); err != nil {
		return err
	}
	if err := j.prepare(); err != nil {
		j.f.Close()
		return err
	}
	a.j = j
	go j.applier()
	return nil
}

// RetireJournal is for a store that appends without the journal: it
// replays into SQLite whatever a journal left by an earlier start holds
// that SQLite lacks, then removes the journal file, so that turning the
// journal off loses nothing. Without a journal file it does nothing.
func (a *AuditLog) RetireJournal(ctx context.Context) error {
	if a.db.Dialect != SQLite || a.j != nil || a.db.Path == "" {
		return nil
	}
	path := journalPath(a.db.Path)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	j := &auditJournal{a: a, path: path}
	if err := j.openRecovered(ctx); err != nil {
		return err
	}
	j.f.Close()
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing the audit journal: %w", err)
	}
	return audit.SyncDir(filepath.Dir(path))
}

// openRecovered opens the journal file and applies to SQLite what it holds
// and SQLite lacks; the file stays open (and locked) on success.
func (j *auditJournal) openRecovered(ctx context.Context) error {
	if err := j.open(); err != nil {
		return err
	}
	if err := j.recover(ctx); err != nil {
		j.f.Close()
		return err
	}
	return nil
}

// open opens the journal file (created empty when missing) and locks it
// (flock, exclusive): two processes appending to one journal would
// overwrite each other's records. Its size fixes where its halves start,
// so it is read at the size it has; prepare extends it after recovery.
func (j *auditJournal) open() error {
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening audit journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening audit journal: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return fmt.Errorf("audit journal %s is in use by another process: one gateway per SQLite store (replicas share a PostgreSQL store)", j.path)
		}
		return fmt.Errorf("locking audit journal: %w", err)
	}
	j.f, j.limit = f, st.Size()
	return nil
}

// prepare extends a new or short journal to journalSize with zeros (after
// recovery: SQLite then holds every record, so the halves may move).
func (j *auditJournal) prepare() error {
	if j.limit >= journalSize {
		return nil
	}
	if err := j.fill(j.limit, journalSize); err != nil {
		return err
	}
	return audit.SyncDir(filepath.Dir(j.path))
}

// fill writes zeros over [from, to) and syncs the file.
func (j *auditJournal) fill(from, to int64) error {
	zeros := make([]byte, 1<<20)
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := j.f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("preparing audit journal: %w", err)
		}
		off += n
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("preparing audit journal: %w", err)
	}
	j.limit = max(j.limit, to)
	return nil
}

// recover applies to SQLite the journaled entries it lacks.
func (j *auditJournal) recover(ctx context.Context) error {
	var stored int64
	if err := j.a.db.QueryRowContext(ctx, sizeQuery).Scan(&stored); err != nil {
		return fmt.Errorf("reading audit log size: %w", err)
	}
	// The chains of both halves, in index order.
	var chains [][]audit.Batch
	for _, start := range []int64{0, j.limit / 2} {
		if c := j.readChain(start); len(c) > 0 {
			chains = append(chains, c)
		}
	}
	if len(chains) == 2 && chains[1][0].Entries[0].Index < chains[0][0].Entries[0].Index {
		chains[0], chains[1] = chains[1], chains[0]
	}
	var missing []audit.Batch
	next := stored
	for _, c := range chains {
		for _, b := range c {
			first, end := b.Entries[0].Index, b.Entries[0].Index+int64(len(b.Entries))
			switch {
			case end <= next:
				continue // SQLite holds it
			case first > next:
				return fmt.Errorf("audit journal %s holds records from %d but the store holds %d records: records %d to %d are missing (was the database replaced?)",
					j.path, first, next, next, first-1)
			}
			missing = append(missing, trimBatch(b, next))
			next = end
		}
	}
	size := stored
	if len(missing) > 0 {
		b := mergeBatches(missing)
		if err := j.a.appendSQLite(ctx, b); err != nil {
			return fmt.Errorf("replaying the audit journal: %w", err)
		}
		size = b.Entries[0].Index + int64(len(b.Entries))
	}
	j.size, j.applied = size, size
	return nil
}

// readChain reads the records that follow one another from offset start.
func (j *auditJournal) readChain(start int64) []audit.Batch {
	r := bufio.NewReaderSize(io.NewSectionReader(j.f, start, j.limit-start), 1<<20)
	var out []audit.Batch
	next := int64(-1)
	for {
		b, ok := readJournal(r, j.limit)
		if !ok || next >= 0 && b.Entries[0].Index != next {
			return out
		}
		next = b.Entries[0].Index + int64(len(b.Entries))
		out = append(out, b)
	}
}

// append journals b durably and queues it for SQLite (the log's writer).
func (j *auditJournal) append(ctx context.Context, b audit.Batch) error {
	j.mu.Lock()
	size, failed, closed, applyErr := j.size, j.failed, j.closed, j.applyErr
	j.mu.Unlock()
	switch {
	case closed:
		return errors.New("appending audit batch: sql: database is closed")
	case failed != nil:
		return fmt.Errorf("appending audit batch: the audit journal failed earlier: %w", failed)
	case applyErr != nil:
		// SQLite refuses the records: the journal would keep them, but
		// the store that queries, proofs and exports read is failing, so
		// the log fails closed as it does without a journal, until the
		// applier's retry succeeds.
		return fmt.Errorf("appending audit batch: the audit store lags its journal: %w", applyErr)
	case b.Entries[0].Index != size:
		return fmt.Errorf("%w: batch starts at %d, size is %d", audit.ErrConflict, b.Entries[0].Index, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("appending audit batch: %w", err)
	}
	j.buf = encodeJournal(j.buf[:0], b)
	n := int64(len(j.buf))
	if err := j.place(ctx, n, size); err != nil {
		return fmt.Errorf("appending audit batch: %w", err)
	}
	h := j.half() // before the offset moves: a record may end exactly at the middle
	if _, err := j.f.WriteAt(j.buf, j.off); err != nil {
		return j.fail(err)
	}
	if err := datasync(j.f); err != nil {
		return j.fail(err)
	}
	j.off += n
	j.ends[h] = b.Entries[0].Index + int64(len(b.Entries))
	j.mu.Lock()
	j.size = b.Entries[0].Index + int64(len(b.Entries))
	first := len(j.pending) == 0
	full := j.pendingN < journalApplyBatch && j.pendingN+len(b.Entries) >= journalApplyBatch
	j.pending = append(j.pending, b)
	j.pendingN += len(b.Entries)
	j.mu.Unlock()
	if first || full {
		// The applier is idle or applying what it took: this batch
		// starts its next collection. Later batches join it without
		// waking the applier, until there are enough to commit at once.
		j.signal()
	}
	return nil
}

// half is the half of the file the writer is in.
func (j *auditJournal) half() int {
	if j.off < j.limit/2 {
		return 0
	}
	return 1
}

// place chooses where the next record (n bytes, first index size) goes.
// The file has two halves, each a chain of records from its start. The
// writer fills one half, then starts the other again from its start once
// SQLite holds every record that half holds: they are older than the
// current half's, so that is normally long done. When SQLite holds every
// journaled record, the writer starts its half again at once. A record
// larger than a half waits for SQLite to hold everything and grows the
// file.
func (j *auditJournal) place(ctx context.Context, n, size int64) error {
	h := j.half()
	start, end := int64(h)*(j.limit/2), int64(h+1)*(j.limit/2)
	switch {
	case n > j.limit/2:
		if err := j.waitApplied(ctx, size); err != nil {
			return err
		}
		if err := j.fill(j.limit, 4*n); err != nil {
			return err
		}
		j.off, j.ends = 0, [2]int64{}
	case j.off > start && j.settled():
		j.off, j.ends = start, [2]int64{}
	case j.off+n > end:
		other := 1 - h
		if err := j.waitApplied(ctx, j.ends[other]); err != nil {
			return err
		}
		j.off, j.ends[other] = int64(other)*(j.limit/2), 0
	}
	return nil
}

// fail records a failed journal write. After a failed write or sync the
// file's state is unknown (on Linux a failed fsync may drop the dirty
// pages), so the journal refuses every later append: the gateway fails
// closed until it is restarted and recovery has re-read the file.
func (j *auditJournal) fail(err error) error {
	err = fmt.Errorf("writing audit journal %s: %w", j.path, err)
	j.mu.Lock()
	j.failed = err
	j.mu.Unlock()
	return err
}

// settled reports whether SQLite holds every journaled batch.
func (j *auditJournal) settled() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.applied == j.size
}

func (j *auditJournal) signal() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// sync waits until SQLite holds every batch journaled so far; readers call
// it so that they see every durable record.
func (j *auditJournal) sync(ctx context.Context) error {
	j.mu.Lock()
	size := j.size
	j.mu.Unlock()
	return j.waitApplied(ctx, size)
}

// waitApplied waits until SQLite holds size records, or the applier fails.
func (j *auditJournal) waitApplied(ctx context.Context, size int64) error {
	for {
		j.mu.Lock()
		applied, err, ch, closed := j.applied, j.applyErr, j.progress, j.closed
		if applied < size {
			j.urgent = true
		}
		j.mu.Unlock()
		switch {
		case applied >= size:
			return nil
		case err != nil:
			return fmt.Errorf("the audit store lags its journal: %w", err)
		case closed:
			// The applier has stopped (or is about to, after its last
			// commit): nothing more reaches SQLite until the next start.
			select {
			case <-j.done:
				j.mu.Lock()
				applied = j.applied
				j.mu.Unlock()
				if applied >= size {
					return nil
				}
				return errors.New("the audit store lags its journal, which is closed: the next start replays it")
			case <-ch:
				continue
			}
		}
		j.signal()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// applier commits journaled batches to SQLite, several per transaction:
// it collects them for journalApplyDelay unless someone waits.
func (j *auditJournal) applier() {
	defer close(j.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var tidied time.Time
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-j.wake:
		case <-j.stop:
			j.final()
			return
		}
		for deadline := time.Now().Add(journalApplyDelay); !j.isUrgent(); {
			d := time.Until(deadline)
			if d <= 0 {
				break
			}
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-j.wake: // someone waits, or a stale signal
				timer.Stop()
			case <-j.stop:
				timer.Stop()
				j.final()
				return
			}
		}
		if err := j.apply(); err != nil {
			j.logger.Error("audit journal: committing to SQLite failed; retrying", "in", backoff, "err", err)
			select {
			case <-time.After(backoff):
			case <-j.stop:
				j.final()
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			j.signal()
			continue
		}
		backoff = 10 * time.Millisecond
		if time.Since(tidied) >= journalTidyEvery {
			if err := j.a.checkpointWAL(context.Background()); err != nil {
				j.logger.Warn("audit journal", "err", err)
			}
			tidied = time.Now()
		}
	}
}

// isUrgent reports whether the applier should commit without waiting
// longer: someone waits for it, or enough records wait.
func (j *auditJournal) isUrgent() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.urgent || j.pendingN >= journalApplyBatch
}

// final commits what is pending when the applier stops. A failure loses
// nothing: the journal keeps the records and the next start replays them.
func (j *auditJournal) final() {
	if err := j.apply(); err != nil {
		j.logger.Error("audit journal: committing to SQLite at close failed; the next start replays the journal", "err", err)
	}
}

// apply commits every pending batch to SQLite in one transaction.
func (j *auditJournal) apply() error {
	j.mu.Lock()
	batches, applied := j.pending, j.applied
	j.pending, j.pendingN, j.urgent = nil, 0, false
	j.mu.Unlock()
	if len(batches) == 0 {
		return nil
	}
	b := trimBatch(mergeBatches(batches), applied)
	if len(b.Entries) == 0 {
		return nil // SQLite holds them already
	}
	err := j.a.appendSQLite(context.Background(), b)
	if errors.Is(err, audit.ErrConflict) {
		// A commit reported as failed may have been stored: resume from
		// what SQLite holds.
		var stored int64
		if qerr := j.a.db.QueryRowContext(context.Background(), sizeQuery).Scan(&stored); qerr == nil && stored > applied {
			if end := b.Entries[0].Index + int64(len(b.Entries)); stored >= end {
				err = nil
			} else {
				err = j.a.appendSQLite(context.Background(), trimBatch(b, stored))
			}
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err != nil {
		j.pending = append(batches, j.pending...)
		for _, b := range batches {
			j.pendingN += len(b.Entries)
		}
		if j.applyErr == nil {
			close(j.progress)
			j.progress = make(chan struct{})
		}
		j.applyErr = err
		return err
	}
	j.applied, j.applyErr = b.Entries[0].Index+int64(len(b.Entries)), nil
	close(j.progress)
	j.progress = make(chan struct{})
	return nil
}

// close commits what is pending and stops the applier.
func (j *auditJournal) close() {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return
	}
	j.closed = true
	j.mu.Unlock()
	close(j.stop)
	<-j.done
	j.f.Close()
}

// mergeBatches joins consecutive batches into one.
func mergeBatches(bs []audit.Batch) audit.Batch {
	if len(bs) == 1 {
		return bs[0]
	}
	out := audit.Batch{HashStart: bs[0].HashStart}
	for _, b := range bs {
		out.Entries = append(out.Entries, b.Entries...)
		out.Hashes = append(out.Hashes, b.Hashes...)
	}
	return out
}

// trimBatch drops the entries of b below index from (and their hashes);
// the result is empty when b holds none from there on.
func trimBatch(b audit.Batch, from int64) audit.Batch {
	first := b.Entries[0].Index
	if from <= first {
		return b
	}
	if from >= first+int64(len(b.Entries)) {
		return audit.Batch{}
	}
	k := from - first
	hs := tlog.StoredHashIndex(0, from)
	return audit.Batch{Entries: b.Entries[k:], HashStart: hs, Hashes: b.Hashes[hs-b.HashStart:]}
}

// encodeJournal appends b's journal record to buf.
func encodeJournal(buf []byte, b audit.Batch) []byte {
	start := len(buf)
	buf = append(buf, journalMagic...)
	buf = append(buf, make([]byte, 8)...) // length and CRC, below
	p := len(buf)
	buf = binary.AppendUvarint(buf, uint64(b.Entries[0].Index))
	buf = binary.AppendUvarint(buf, uint64(b.HashStart))
	buf = binary.AppendUvarint(buf, uint64(len(b.Entries)))
	for _, e := range b.Entries {
		buf = appendBytes(buf, e.Data)
		buf = append(buf, e.Hash[:]...)
		buf = binary.AppendVarint(buf, e.Time)
		buf = binary.AppendVarint(buf, int64(e.Class))
		buf = appendBytes(buf, []byte(e.Agent))
		buf = appendBytes(buf, []byte(e.Tool))
		buf = appendBytes(buf, []byte(e.Outcome))
		buf = appendBytes(buf, []byte(e.Correlation))
	}
	buf = binary.AppendUvarint(buf, uint64(len(b.Hashes)))
	for _, h := range b.Hashes {
		buf = append(buf, h[:]...)
	}
	binary.LittleEndian.PutUint32(buf[start+4:], uint32(len(buf)-p))
	binary.LittleEndian.PutUint32(buf[start+8:], crc32.Checksum(buf[p:], crc32c))
	return buf
}

func appendBytes(buf, b []byte) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(b))), b...)
}

// readJournal reads the next intact record of a journal of size limit; ok
// is false at the end of the chain (zeros, a torn or foreign record, or the
// end of the file).
func readJournal(r *bufio.Reader, limit int64) (b audit.Batch, ok bool) {
	var h [12]byte
	if _, err := io.ReadFull(r, h[:]); err != nil || string(h[:4]) != journalMagic {
		return b, false
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if n == 0 || int64(n) > limit {
		return b, false
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil || crc32.Checksum(p, crc32c) != binary.LittleEndian.Uint32(h[8:]) {
		return b, false
	}
	return decodeJournal(p)
}

// decodeJournal decodes a record's payload.
func decodeJournal(p []byte) (b audit.Batch, ok bool) {
	d := journalDecoder{p: p}
	first, hashStart, n := d.uvarint(), d.uvarint(), d.uvarint()
	// An entry takes at least minJournalEntry bytes, which bounds the
	// allocation a damaged record can ask for.
	if d.bad || n == 0 || n > uint64(len(d.p)/minJournalEntry) || first > 1<<62 || hashStart != uint64(tlog.StoredHashIndex(0, int64(first))) {
		return b, false
	}
	b.HashStart = int64(hashStart)
	b.Entries = make([]audit.Entry, n)
	for i := range b.Entries {
		e := &b.Entries[i]
		e.Index = int64(first) + int64(i)
		e.Data = d.bytes()
		copy(e.Hash[:], d.next(len(e.Hash)))
		e.Time = d.varint()
		e.Class = int(d.varint())
		e.Agent, e.Tool, e.Outcome, e.Correlation = string(d.bytes()), string(d.bytes()), string(d.bytes()), string(d.bytes())
	}
	nh := d.uvarint()
	want := tlog.StoredHashIndex(0, int64(first)+int64(n)) - int64(hashStart)
	if d.bad || nh != uint64(want) || want > int64(len(d.p)/len(tlog.Hash{})) {
		return b, false
	}
	b.Hashes = make([]tlog.Hash, nh)
	for i := range b.Hashes {
		copy(b.Hashes[i][:], d.next(len(tlog.Hash{})))
	}
	if d.bad || len(d.p) != 0 {
		return audit.Batch{}, false
	}
	return b, true
}

// minJournalEntry is the smallest encoding of an entry: a length, a hash,
// two varints and four lengths.
const minJournalEntry = 1 + 32 + 1 + 1 + 4

type journalDecoder struct {
	p   []byte
	bad bool
}

func (d *journalDecoder) uvarint() uint64 { return readVarint(d, binary.Uvarint) }

func (d *journalDecoder) varint() int64 { return readVarint(d, binary.Varint) }

// readVarint reads one varint with read (binary.Uvarint or binary.Varint).
func readVarint[T uint64 | int64](d *journalDecoder, read func([]byte) (T, int)) T {
	v, n := read(d.p)
	if n <= 0 {
		d.bad, d.p = true, nil
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *journalDecoder) next(n int) []byte {
	if n > len(d.p) {
		d.bad, d.p = true, nil
		return make([]byte, n)
	}
	v := d.p[:n:n]
	d.p = d.p[n:]
	return v
}

func (d *journalDecoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.p)) {
		d.bad, d.p = true, nil
		return nil
	}
	return d.next(int(n))
}
