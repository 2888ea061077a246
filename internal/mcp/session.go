package mcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// session is one agent's MCP session on a session-mode endpoint.
type session struct {
	key     string // also the Mcp-Session-Id
	ep      *endpoint
	caller  *pipeline.Caller
	version string
	// initParams are the agent's initialize params, forwarded to upstreams.
	initParams json.RawMessage
	lastUsed   atomic.Int64 // unix nanos

	ctx    context.Context // ends with the session
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[string]conn // server id → connection
	labels map[verdict.Label]bool
	// s2c maps ids the gateway gave server-to-client requests to their
	// origin.
	s2c    map[string]*s2cRequest
	s2cSeq int64
	// standalone holds messages for the agent's GET stream.
	standalone *queue
	listening  bool
	// calls maps the ids of the agent's requests in flight to their
	// cancel functions.
	calls map[string]context.CancelFunc
	// listened marks connections whose standalone stream is relayed.
	listened map[conn]bool
	// watching lists the approvals whose decision the session awaits
	// (URL-mode elicitation).
	watching map[string]bool
}

// s2cRequest is a server-to-client request awaiting the agent's answer.
type s2cRequest struct {
	server   string
	conn     conn
	upstream json.RawMessage // the server's id for it
	req      *pipeline.Request
}

func newSessionKey() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

func (s *session) touch(now time.Time) { s.lastUsed.Store(now.UnixNano()) }

func (s *session) idleSince() time.Time { return time.Unix(0, s.lastUsed.Load()) }

// addLabels raises session labels and returns the current set.
func (s *session) addLabels(ls ...verdict.Label) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range ls {
		s.labels[l] = true
	}
}

func (s *session) labelList() []verdict.Label {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]verdict.Label, 0, len(s.labels))
	for l := range s.labels {
		out = append(out, l)
	}
	return out
}

// registerS2C records a server-to-client request and returns the id the
// agent sees.
func (s *session) registerS2C(r *s2cRequest) json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s2cSeq++
	id := json.RawMessage(fmt.Sprintf(`"gh-%d"`, s.s2cSeq))
	s.s2c[idKey(id)] = r
	return id
}

func (s *session) takeS2C(id json.RawMessage) (*s2cRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.s2c[idKey(id)]
	if ok {
		delete(s.s2c, idKey(id))
	}
	return r, ok
}

// sessionTable holds the live sessions.
type sessionTable struct {
	mu  sync.RWMutex
	m   map[string]*session
	max int
}

func newSessionTable(max int) *sessionTable {
	return &sessionTable{m: map[string]*session{}, max: max}
}

func (t *sessionTable) get(key string) (*session, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.m[key]
	return s, ok
}

func (t *sessionTable) add(s *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.max {
		return false
	}
	t.m[s.key] = s
	return true
}

func (t *sessionTable) remove(key string) (*session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[key]
	delete(t.m, key)
	return s, ok
}

func (t *sessionTable) all() []*session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*session, 0, len(t.m))
	for _, s := range t.m {
		out = append(out, s)
	}
	return out
}

// Len returns the number of live sessions.
func (t *sessionTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// endSession removes s and closes its upstream connections.
func (p *Proxy) endSession(s *session) {
	if _, ok := p.sessions.remove(s.key); !ok {
		return
	}
	p.cfg.Observer.SessionsChanged(-1)
	s.cancel()
	s.standalone.close()
	s.mu.Lock()
	conns := s.conns
	s.conns = map[string]conn{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.close()
		}()
	}
	wg.Wait()
}

// queue is a bounded queue of messages for an agent's standalone stream.
// When it is full, the oldest notification is dropped (requests are kept
// and refused upstream by the caller when they cannot be queued).
type queue struct {
	mu     sync.Mutex
	items  []*Message
	notify chan struct{}
	closed bool
	max    int
}

func newQueue(max int) *queue { return &queue{notify: make(chan struct{}, 1), max: max} }

func (q *queue) push(m *Message) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if len(q.items) >= q.max {
		dropped := false
		for i, it := range q.items {
			if it.IsNotification() {
				q.items = append(q.items[:i], q.items[i+1:]...)
				dropped = true
				break
			}
		}
		if !dropped {
			return false
		}
	}
	q.items = append(q.items, m)
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return true
}

// pop returns the queued messages, waiting until there is one or ctx ends.
func (q *queue) pop(ctx context.Context) ([]*Message, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			items := q.items
			q.items = nil
			q.mu.Unlock()
			return items, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-q.notify:
		}
	}
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (s *session) trackCall(id json.RawMessage, cancel context.CancelFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]context.CancelFunc{}
	}
	s.calls[idKey(id)] = cancel
}

func (s *session) untrackCall(id json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.calls, idKey(id))
}

// cancelCall cancels the agent's request id, if it is in flight.
func (s *session) cancelCall(id json.RawMessage) {
	s.mu.Lock()
	cancel := s.calls[idKey(id)]
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// findS2C returns the agent-facing id of the server-to-client request that
// c knows as upstreamID.
func (s *session) findS2C(c conn, upstreamID json.RawMessage) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, r := range s.s2c {
		if r.conn == c && idKey(r.upstream) == idKey(upstreamID) {
			return json.RawMessage(id), true
		}
	}
	return nil, false
}

// markListening records that c's standalone stream is relayed; it reports
// false when it already was.
func (s *session) markListening(c conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listened == nil {
		s.listened = map[conn]bool{}
	}
	if s.listened[c] {
		return false
	}
	s.listened[c] = true
	return true
}
