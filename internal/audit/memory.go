package audit

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// Memory is an in-memory Backend, CheckpointStore, Searcher and CursorStore
// for tests. It is not durable. Fail makes every later call fail, to test
// outages.
type Memory struct {
	mu          sync.Mutex
	entries     map[int64]Entry
	size        int64
	hashes      []tlog.Hash
	checkpoints []Checkpoint
	cursors     map[string]int64
	fail        error
}

// NewMemory returns an empty Memory backend.
func NewMemory() *Memory {
	return &Memory{entries: map[int64]Entry{}, cursors: map[string]int64{}}
}

// Fail makes every subsequent call return err (nil restores service).
func (m *Memory) Fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

// Edit lets a test tamper with the stored entries: f receives them in index
// order and returns the new content (indexes are taken from the returned
// entries).
func (m *Memory) Edit(f func([]Entry) []Entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var es []Entry
	for i := int64(0); i < m.size; i++ {
		if e, ok := m.entries[i]; ok {
			es = append(es, e)
		}
	}
	m.entries = map[int64]Entry{}
	m.size = 0
	for _, e := range f(es) {
		m.entries[e.Index] = e
		m.size = max(m.size, e.Index+1)
	}
}

// Append implements Backend.
func (m *Memory) Append(ctx context.Context, b Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if len(b.Entries) == 0 {
		return nil
	}
	if b.Entries[0].Index != m.size {
		return fmt.Errorf("%w: batch starts at %d, size is %d", ErrConflict, b.Entries[0].Index, m.size)
	}
	if b.HashStart != int64(len(m.hashes)) {
		return fmt.Errorf("%w: hashes start at %d, have %d", ErrConflict, b.HashStart, len(m.hashes))
	}
	for i, e := range b.Entries {
		if e.Index != m.size+int64(i) {
			return fmt.Errorf("appending: entries not consecutive at %d", e.Index)
		}
	}
	for _, e := range b.Entries {
		e.Data = slices.Clone(e.Data)
		m.entries[e.Index] = e
	}
	m.size += int64(len(b.Entries))
	m.hashes = append(m.hashes, b.Hashes...)
	return nil
}

// Entries implements Backend.
func (m *Memory) Entries(ctx context.Context, from, to int64) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var out []Entry
	for i := max(from, 0); i < min(to, m.size); i++ {
		if e, ok := m.entries[i]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Hashes implements Backend.
func (m *Memory) Hashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("%w: stored hash %d", ErrNotFound, x)
		}
		out[i] = m.hashes[x]
	}
	return out, nil
}

// Size implements Backend.
func (m *Memory) Size(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, m.fail
	}
	return m.size, nil
}

// PutCheckpoint implements CheckpointStore.
func (m *Memory) PutCheckpoint(ctx context.Context, c Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	for _, o := range m.checkpoints {
		if o.Size == c.Size {
			if o.Root != c.Root {
				return fmt.Errorf("%w: different checkpoint for size %d already stored", ErrConflict, c.Size)
			}
			return nil
		}
	}
	c.Note = slices.Clone(c.Note)
	m.checkpoints = append(m.checkpoints, c)
	slices.SortFunc(m.checkpoints, func(a, b Checkpoint) int { return int(a.Size - b.Size) })
	return nil
}

// Checkpoints implements CheckpointStore.
func (m *Memory) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	return slices.Clone(m.checkpoints), nil
}

// Search implements Searcher.
func (m *Memory) Search(ctx context.Context, f Filter) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var out []Entry
	for i := max(f.From, 0); i < m.size && len(out) < f.Limit; i++ {
		e, ok := m.entries[i]
		if ok && f.Match(e) {
			out = append(out, e)
		}
	}
	return out, nil
}

// Match reports whether e's indexed columns satisfy f.
func (f Filter) Match(e Entry) bool {
	return (f.Agent == "" || e.Agent == f.Agent) &&
		(f.Tool == "" || e.Tool == f.Tool) &&
		(f.Outcome == "" || e.Outcome == f.Outcome) &&
		(f.Class == 0 || e.Class == f.Class) &&
		(f.Correlation == "" || e.Correlation == f.Correlation) &&
		(f.Since.IsZero() || e.Time >= f.Since.UnixMilli()) &&
		(f.Until.IsZero() || e.Time < f.Until.UnixMilli()) &&
		e.Index >= f.From
}

// Cursor implements CursorStore.
func (m *Memory) Cursor(ctx context.Context, name string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, m.fail
	}
	if c, ok := m.cursors[name]; ok {
		return c, nil
	}
	return -1, nil
}

// SetCursor implements CursorStore.
func (m *Memory) SetCursor(ctx context.Context, name string, index int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.cursors[name] = index
	return nil
}
