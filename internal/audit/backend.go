package audit

import (
	"context"
	"errors"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Entry is one record of the log as stored.
type Entry struct {
	// Index is the position of the record in the log (the storage key).
	Index int64
	// Data is the leaf: canonical JSON {"event":…,"index":…,"prev":…,"v":1}.
	Data []byte
	// Hash is the recorded RFC 6962 leaf hash of Data.
	Hash tlog.Hash

	// Columns copied from the event for filtering. They are not covered by
	// the hash: Query results are re-read from Data.
	Time        int64 // event time, milliseconds since the epoch
	Class       int
	Agent       string
	Tool        string
	Outcome     string
	Correlation string
}

// Batch is what the log asks a backend to store in one transaction.
type Batch struct {
	// Entries are consecutive: Entries[i].Index == Entries[0].Index+i, and
	// Entries[0].Index equals the backend's current Size.
	Entries []Entry
	// Hashes are the tlog stored hashes that the entries add, at stored-hash
	// indexes HashStart, HashStart+1, … (see tlog.StoredHashIndex).
	HashStart int64
	Hashes    []tlog.Hash
}

// Backend stores the log. The Log is its only writer; it calls Append from a
// single goroutine, and the read methods from any goroutine.
//
// Implementations must guarantee:
//   - Append is atomic and durable: when it returns nil, every entry and hash
//     of the batch survives a crash of the process or the machine; when it
//     returns an error, either none of the batch is visible afterwards or all
//     of it is (the Log re-reads Size after a failure).
//   - Append fails with an error wrapping ErrConflict, storing nothing, if
//     Entries[0].Index is not the current Size (another writer).
//   - Entries returns the stored entries with from <= Index < to in
//     ascending Index order, and no others. A missing index is simply absent
//     (verification reports it); it is not an error.
//   - Hashes returns the stored hashes at the given stored-hash indexes, in
//     order, or an error if any is missing.
//   - Size returns one more than the highest stored Index (0 when empty).
type Backend interface {
	Append(ctx context.Context, b Batch) error
	Entries(ctx context.Context, from, to int64) ([]Entry, error)
	Hashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
	Size(ctx context.Context) (int64, error)
}

// Tidier is an optional Backend method: upkeep that the log's single
// writer does between commits, never while a commit is in progress, at
// most once per Config.TidyInterval, preferably when no record is waiting.
// SQLite's backend moves its write-ahead log into the database there, so
// that the next commit rewrites the log from its start (overwriting is
// much cheaper to sync than growing the file) instead of appending to a
// log that concurrent commits never let a background checkpoint finish.
// Tidy must not change what the backend stores; an error is logged and
// does not affect appends.
type Tidier interface {
	Tidy(ctx context.Context) error
}

// Checkpoint is a signed tree head.
type Checkpoint struct {
	Size int64
	Root tlog.Hash
	// Note is the C2SP signed note: "<origin>\n<size>\n<base64 root>\n",
	// a blank line and the signature lines.
	Note []byte
	Time time.Time
}

// CheckpointStore keeps signed checkpoints. PutCheckpoint must be durable
// when it returns nil and idempotent for an identical checkpoint;
// Checkpoints returns all stored checkpoints in ascending Size order.
type CheckpointStore interface {
	PutCheckpoint(ctx context.Context, c Checkpoint) error
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
}

// Filter selects entries for Query. Zero fields do not filter.
type Filter struct {
	Agent       string
	Tool        string
	Outcome     string // "allow", "challenge", "block"
	Class       int    // OCSF class_uid
	Correlation string
	Since       time.Time
	Until       time.Time
	// From returns only entries with Index >= From (for paging).
	From int64
	// Limit caps the number of results (0 = 1000). Results are in
	// ascending Index order.
	Limit int
}

// Searcher finds entries by their indexed columns. Search returns entries
// matching every non-zero field of f in ascending Index order, at most
// f.Limit of them (the Log resolves a zero Limit before calling).
type Searcher interface {
	Search(ctx context.Context, f Filter) ([]Entry, error)
}

// CursorStore persists named positions (the exporter's progress). Cursor
// returns -1 for an unknown name. SetCursor must be durable on return.
type CursorStore interface {
	Cursor(ctx context.Context, name string) (int64, error)
	SetCursor(ctx context.Context, name string, index int64) error
}

// Errors.
var (
	// ErrConflict means a backend append did not start at its Size.
	ErrConflict = errors.New("audit: append conflict")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("audit: log closed")
	// ErrUnavailable wraps any failure to make a record durable: the caller
	// must not perform the audited action (fail closed).
	ErrUnavailable = errors.New("audit: store unavailable")
	// ErrNotFound is returned for an index or tree size the log does not hold.
	ErrNotFound = errors.New("audit: not found")
)
