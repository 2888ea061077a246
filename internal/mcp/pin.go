package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"
)

// Tool-definition pinning. The first time the gateway sees a tool, it
// records a hash of the tool's definition (name, title, description, input
// and output schemas, annotations). When a server later presents a
// different definition under the same name, the tool is quarantined: hidden
// from tools/list and refused at call time, until an operator approves the
// new definition. A server cannot change what a tool says or does behind
// the agent's back ("rug pull").

// PinState is the pinning state of one tool.
type PinState struct {
	Server string
	Tool   string
	// Approved is the hash of the approved definition.
	Approved string
	// Seen is the hash of the definition the server presents now.
	Seen string
	// ApprovedDef and SeenDef are the canonical definitions.
	ApprovedDef json.RawMessage
	SeenDef     json.RawMessage
	FirstSeen   time.Time
	ChangedAt   time.Time
}

// Quarantined reports whether the presented definition is not the approved
// one.
func (s PinState) Quarantined() bool { return s.Seen != s.Approved }

// PinStore keeps pins durably. Observe records that server presents tool
// with definition hash and def: a first sighting pins it (approved), a
// different definition is recorded as seen (quarantined). It returns the
// resulting state. Approve makes the seen definition the approved one,
// only if its hash is still expected (so an operator never approves a
// definition they did not review). Implementations must be safe for
// concurrent use and durable when they return.
type PinStore interface {
	Observe(ctx context.Context, server, tool, hash string, def json.RawMessage) (PinState, error)
	Approve(ctx context.Context, server, tool, expected string) (PinState, error)
	List(ctx context.Context) ([]PinState, error)
}

// toolDef is the part of a tool definition that pinning covers.
type toolDef struct {
	Name         string          `json:"name"`
	Title        string          `json:"title,omitempty"`
	Description  string          `json:"description,omitempty"`
	InputSchema  json.RawMessage `json:"inputSchema,omitempty"`
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
	Annotations  json.RawMessage `json:"annotations,omitempty"`
}

// canonicalDef returns the canonical JSON of the pinned part of a tool
// definition (object keys sorted at every level) and its SHA-256.
func canonicalDef(raw json.RawMessage) (json.RawMessage, string, error) {
	var d toolDef
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, "", err
	}
	var v any
	b, err := json.Marshal(d)
	if err != nil {
		return nil, "", err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, "", err
	}
	// encoding/json sorts map keys, which makes the encoding canonical for
	// the purpose of comparing definitions.
	canon, err := json.Marshal(v)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(canon)
	return canon, hex.EncodeToString(sum[:]), nil
}

// toolInfo is what the gateway knows of one upstream tool.
type toolInfo struct {
	Name        string
	Hash        string
	Raw         json.RawMessage // the definition as the server sent it
	Annotations json.RawMessage
	InputSchema json.RawMessage
	Quarantined bool
	// schema is the compiled input schema, built on first use.
	schema *argSchema
}

// catalog remembers the tools each server presented, so calls can be
// checked against the pinned definition without listing again.
type catalog struct {
	mu    sync.RWMutex
	tools map[string]map[string]*toolInfo // server → tool → info
}

func newCatalog() *catalog { return &catalog{tools: map[string]map[string]*toolInfo{}} }

func (c *catalog) get(server, tool string) (*toolInfo, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.tools[server][tool]
	return t, ok
}

func (c *catalog) put(server string, t *toolInfo) {
	if t.schema == nil {
		t.schema = &argSchema{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.tools[server]
	if m == nil {
		m = map[string]*toolInfo{}
		c.tools[server] = m
	}
	m[t.Name] = t
}

// setQuarantine updates the quarantine flag of a known tool.
func (c *catalog) setQuarantine(server, tool string, q bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tools[server][tool]; ok {
		cp := *t // shares the compiled schema
		cp.Quarantined = q
		c.tools[server][tool] = &cp
	}
}
