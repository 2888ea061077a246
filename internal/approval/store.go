package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Store keeps approvals, their uses, notification deliveries and
// after-the-fact review items durably. The Manager is its only writer of
// approvals; several Managers (gateway replicas) may share one Store.
//
// Implementations must guarantee:
//   - Durability: a method that returns nil has made its change survive a
//     crash.
//   - At most one open (Pending or Approved) call approval per call hash:
//     Create stores nothing and returns the open one when there is one.
//   - Update is a compare-and-swap on Version: it stores a (whose Version
//     must be prev+1) only if the stored Version is prev, else returns
//     ErrConflict; it never changes the uses.
//   - Use is atomic: of any number of concurrent Use calls on one approval,
//     from any number of processes, at most MaxUses succeed (MaxUses 0:
//     unlimited), and none succeeds unless the approval is Approved and
//     now is within its grant window. The use that reaches MaxUses sets the
//     status to Used in the same transaction. Each success bumps Version.
//   - Get, Latest and List return Grant.Uses and Uses as stored by Use.
//   - Errors: ErrNotFound for an unknown id or hash; ErrNoGrant when Use's
//     conditions do not hold; other errors are store failures.
type Store interface {
	// Create stores a new approval (Version 1). When a is a call approval
	// and another open approval holds the same call hash, it stores nothing
	// and returns that approval and false.
	Create(ctx context.Context, a Approval) (Approval, bool, error)
	// Get returns the approval id.
	Get(ctx context.Context, id string) (Approval, error)
	// Latest returns the newest approval bound to callHash, open or not.
	Latest(ctx context.Context, callHash string) (Approval, error)
	// List returns the approvals matching q, newest (Created, then ID)
	// first.
	List(ctx context.Context, q Query) ([]Approval, error)
	// Count returns how many approvals match q's filters (its Limit does
	// not apply).
	Count(ctx context.Context, q Query) (int, error)
	// Due returns up to limit open approvals whose deadline is at or before
	// now: pending ones past Expires, approved ones past Grant.Expires.
	Due(ctx context.Context, now time.Time, limit int) ([]Approval, error)
	// Update replaces the approval if its stored Version is prev.
	Update(ctx context.Context, a Approval, prev int64) error
	// Use consumes one use of approval id's grant (see the type's doc) and
	// returns the approval after it; u.Seq is assigned.
	Use(ctx context.Context, id string, u Use, now time.Time) (Approval, error)
	// Unuse gives back use seq (whose audit record failed), restoring the
	// status Approved if the use had made it Used. When another open
	// approval holds the same call hash meanwhile, it changes nothing (the
	// use stays consumed: fail closed).
	Unuse(ctx context.Context, id string, seq int) error
	// AddDelivery records one notification attempt; Deliveries lists an
	// approval's attempts in order.
	AddDelivery(ctx context.Context, d Delivery) error
	Deliveries(ctx context.Context, approval string) ([]Delivery, error)
	// PutReviewItem inserts or replaces a review item; ReviewItem and
	// ReviewItems read them (status "" lists all, oldest first).
	PutReviewItem(ctx context.Context, it ReviewItem) error
	ReviewItem(ctx context.Context, id string) (ReviewItem, error)
	ReviewItems(ctx context.Context, status string) ([]ReviewItem, error)
}

// Query selects approvals for List. Zero fields do not filter.
type Query struct {
	Status Status `json:"status,omitempty"`
	Kind   Kind   `json:"kind,omitempty"`
	Agent  string `json:"agent,omitempty"`
	// Open selects Pending and Approved approvals only.
	Open bool `json:"open,omitempty"`
	// Limit caps the results; 0 means 100.
	Limit int `json:"limit,omitempty"`
}

// Match reports whether a satisfies q's filters (not its Limit).
func (q Query) Match(a *Approval) bool {
	return (q.Status == "" || a.Status == q.Status) &&
		(q.Kind == "" || a.Kind == q.Kind) &&
		(q.Agent == "" || a.Agent() == q.Agent) &&
		(!q.Open || a.Status.Open())
}

// Delivery is one attempt to deliver a notification.
type Delivery struct {
	ID       string    `json:"id"`
	Approval string    `json:"approval"`
	Notifier string    `json:"notifier"`
	Event    string    `json:"event"`
	Attempt  int       `json:"attempt"`
	Time     time.Time `json:"time"`
	OK       bool      `json:"ok"`
	// Status is the HTTP status answered, when there was an answer.
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Review item statuses.
const (
	ItemOpen   = "open"
	ItemClosed = "closed"
)

// ReviewItem is a mandatory after-the-fact review of a break-glass
// approval. It stays open until a human other than the one who broke the
// glass closes it.
type ReviewItem struct {
	ID       string `json:"id"`
	Approval string `json:"approval"`
	Status   string `json:"status"`
	// Reason says why the item exists ("break_glass").
	Reason        string    `json:"reason"`
	By            string    `json:"by"`
	Justification string    `json:"justification"`
	Created       time.Time `json:"created"`
	ClosedBy      *Approver `json:"closed_by,omitempty"`
	Closed        time.Time `json:"closed,omitzero"`
	Comment       string    `json:"comment,omitempty"`
}

// Memory is an in-memory Store for tests and single-process use. It is
// safe for concurrent use and not durable.
type Memory struct {
	mu         sync.Mutex
	approvals  map[string]Approval
	order      []string
	deliveries map[string][]Delivery
	items      map[string]ReviewItem
	itemOrder  []string
	fail       error
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{approvals: map[string]Approval{}, deliveries: map[string][]Delivery{}, items: map[string]ReviewItem{}}
}

// Fail makes every later call fail with err (nil restores service).
func (m *Memory) Fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

// clone deep-copies an approval through its JSON form.
func clone(a Approval) Approval {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(a)
	b := buf.Bytes()
	if err != nil {
		panic(fmt.Sprintf("approval: cloning: %v", err))
	}
	var out Approval
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("approval: cloning: %v", err))
	}
	out.Version = a.Version
	return out
}

// Create implements Store.
func (m *Memory) Create(ctx context.Context, a Approval) (Approval, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return Approval{}, false, m.fail
	}
	if _, ok := m.approvals[a.ID]; ok {
		return Approval{}, false, fmt.Errorf("approval %s already exists", a.ID)
	}
	if h := a.CallHash(); h != "" && a.Status.Open() {
		for _, id := range m.order {
			o := m.approvals[id]
			if o.Status.Open() && o.CallHash() == h {
				return clone(o), false, nil
			}
		}
	}
	a.Version = 1
	m.approvals[a.ID] = clone(a)
	m.order = append(m.order, a.ID)
	return clone(a), true, nil
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, id string) (Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return Approval{}, m.fail
	}
	a, ok := m.approvals[id]
	if !ok {
		return Approval{}, ErrNotFound
	}
	return clone(a), nil
}

// Latest implements Store.
func (m *Memory) Latest(ctx context.Context, callHash string) (Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return Approval{}, m.fail
	}
	var best *Approval
	for _, id := range m.order {
		a := m.approvals[id]
		if callHash == "" || a.CallHash() != callHash {
			continue
		}
		if best == nil || a.Created.After(best.Created) || (a.Created.Equal(best.Created) && a.ID > best.ID) {
			best = &a
		}
	}
	if best == nil {
		return Approval{}, ErrNotFound
	}
	return clone(*best), nil
}

// List implements Store.
func (m *Memory) List(ctx context.Context, q Query) ([]Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	var out []Approval
	for _, id := range m.order {
		if a := m.approvals[id]; q.Match(&a) {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(x, y Approval) int {
		if c := y.Created.Compare(x.Created); c != 0 {
			return c
		}
		return strings.Compare(y.ID, x.ID)
	})
	out = out[:min(limit, len(out))]
	for i := range out {
		out[i] = clone(out[i])
	}
	return out, nil
}

// Count implements Store.
func (m *Memory) Count(ctx context.Context, q Query) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, m.fail
	}
	n := 0
	for _, id := range m.order {
		if a := m.approvals[id]; q.Match(&a) {
			n++
		}
	}
	return n, nil
}

// Due implements Store.
func (m *Memory) Due(ctx context.Context, now time.Time, limit int) ([]Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var out []Approval
	for _, id := range m.order {
		if len(out) >= limit {
			break
		}
		a := m.approvals[id]
		if due(&a, now) {
			out = append(out, clone(a))
		}
	}
	return out, nil
}

// due reports whether an open approval's deadline has passed.
func due(a *Approval, now time.Time) bool {
	switch a.Status {
	case Pending:
		return !now.Before(a.Expires)
	case Approved:
		return a.Grant != nil && !now.Before(a.Grant.Expires)
	}
	return false
}

// Update implements Store.
func (m *Memory) Update(ctx context.Context, a Approval, prev int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	cur, ok := m.approvals[a.ID]
	if !ok {
		return ErrNotFound
	}
	if cur.Version != prev {
		return ErrConflict
	}
	a.Version = prev + 1
	// Uses belong to Use.
	a.Uses = cur.Uses
	if a.Grant != nil {
		a.Grant.Uses = len(cur.Uses)
	}
	m.approvals[a.ID] = clone(a)
	return nil
}

// Use implements Store.
func (m *Memory) Use(ctx context.Context, id string, u Use, now time.Time) (Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return Approval{}, m.fail
	}
	a, ok := m.approvals[id]
	if !ok {
		return Approval{}, ErrNotFound
	}
	g := a.Grant
	if a.Status != Approved || g == nil || now.Before(g.Start) || !now.Before(g.Expires) || (g.MaxUses > 0 && g.Uses >= g.MaxUses) {
		return Approval{}, ErrNoGrant
	}
	u.Seq = 1
	if n := len(a.Uses); n > 0 {
		u.Seq = a.Uses[n-1].Seq + 1
	}
	a = clone(a)
	a.Uses = append(a.Uses, u)
	a.Grant.Uses++
	if a.Grant.MaxUses > 0 && a.Grant.Uses >= a.Grant.MaxUses {
		a.Status = Used
		a.Reason = CodeUsed
	}
	a.Version++
	m.approvals[id] = a
	return clone(a), nil
}

// Unuse implements Store.
func (m *Memory) Unuse(ctx context.Context, id string, seq int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	a, ok := m.approvals[id]
	if !ok {
		return ErrNotFound
	}
	i := slices.IndexFunc(a.Uses, func(u Use) bool { return u.Seq == seq })
	if i < 0 {
		return nil
	}
	if a.Status == Used {
		for _, o := range m.approvals {
			if o.ID != a.ID && o.Status.Open() && o.CallHash() != "" && o.CallHash() == a.CallHash() {
				return nil
			}
		}
	}
	a = clone(a)
	a.Uses = slices.Delete(a.Uses, i, i+1)
	a.Grant.Uses--
	if a.Status == Used {
		a.Status, a.Reason = Approved, ""
	}
	a.Version++
	m.approvals[id] = a
	return nil
}

// AddDelivery implements Store.
func (m *Memory) AddDelivery(ctx context.Context, d Delivery) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.deliveries[d.Approval] = append(m.deliveries[d.Approval], d)
	return nil
}

// Deliveries implements Store.
func (m *Memory) Deliveries(ctx context.Context, approval string) ([]Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	return slices.Clone(m.deliveries[approval]), nil
}

// PutReviewItem implements Store.
func (m *Memory) PutReviewItem(ctx context.Context, it ReviewItem) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if _, ok := m.items[it.ID]; !ok {
		m.itemOrder = append(m.itemOrder, it.ID)
	}
	m.items[it.ID] = it
	return nil
}

// ReviewItem implements Store.
func (m *Memory) ReviewItem(ctx context.Context, id string) (ReviewItem, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return ReviewItem{}, m.fail
	}
	it, ok := m.items[id]
	if !ok {
		return ReviewItem{}, ErrNotFound
	}
	return it, nil
}

// ReviewItems implements Store.
func (m *Memory) ReviewItems(ctx context.Context, status string) ([]ReviewItem, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var out []ReviewItem
	for _, id := range m.itemOrder {
		if it := m.items[id]; status == "" || it.Status == status {
			out = append(out, it)
		}
	}
	return out, nil
}
