package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
)

// Protocol revisions the gateway speaks.
const (
	Version20250618 = "2025-06-18"
	Version20251125 = "2025-11-25"
	Version20260728 = "2026-07-28"
	latestVersion   = Version20251125
)

// SupportedVersions lists the protocol revisions the gateway accepts,
// newest first.
var SupportedVersions = []string{Version20260728, Version20251125, Version20250618}

func supportedVersion(v string) bool {
	for _, s := range SupportedVersions {
		if s == v {
			return true
		}
	}
	return false
}

// conn is one live connection to an upstream server: an MCP session, or a
// logical connection to a stateless server. Implementations must be safe for
// concurrent use; call may be invoked many times at once.
type conn interface {
	// call sends req (its ID is replaced by one unique on this connection)
	// and returns the final response, with req's original ID restored.
	// Messages related to the request that arrive before the response
	// (progress, logging, server-to-client requests) are passed to
	// o.onMsg. When ctx ends first, the upstream is sent
	// notifications/cancelled. o may be nil.
	call(ctx context.Context, req *Message, o *callOpts) (*Message, error)
	// send delivers a notification or a response to a server-to-client
	// request.
	send(ctx context.Context, m *Message) error
	// listen delivers messages the server sends outside any request to onMsg
	// until ctx ends or the server ends the stream. It returns
	// errNoStream when the server offers no such stream.
	listen(ctx context.Context, onMsg func(*Message)) error
	// init returns what the server said at initialization.
	init() *initResult
	// close ends the connection (and the session, where there is one).
	close()
	// alive reports whether the connection can still be used.
	alive() bool
}

// callOpts are the per-call options of conn.call.
type callOpts struct {
	// onMsg receives messages related to the call.
	onMsg func(*Message)
	// onStream is told that the server answers with an event stream.
	onStream func()
	// long disables the per-request timeout (subscriptions/listen).
	long bool
	// headers are added to the upstream HTTP request (Mcp-Param-*).
	headers http.Header
}

func (o *callOpts) msg(m *Message) {
	if o != nil && o.onMsg != nil {
		o.onMsg(m)
	}
}

var errNoStream = errors.New("the upstream server offers no standalone stream")

// initResult is the part of an initialize result the proxy uses. Raw keeps
// the whole result for single-server endpoints, which pass it through.
type initResult struct {
	ProtocolVersion string          `json:"protocolVersion"`
	Capabilities    json.RawMessage `json:"capabilities"`
	ServerInfo      json.RawMessage `json:"serverInfo"`
	Instructions    string          `json:"instructions,omitempty"`
	Raw             json.RawMessage `json:"-"`
}

// upstreamError is an error of an upstream server, shown to the agent as
// CodeUpstream with a public message.
type upstreamError struct {
	server string
	msg    string // public
	err    error  // internal
}

func (e *upstreamError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("upstream %s: %s: %v", e.server, e.msg, e.err)
	}
	return fmt.Sprintf("upstream %s: %s", e.server, e.msg)
}

func (e *upstreamError) Unwrap() error { return e.err }

// idSeq issues request ids unique within a process.
var idSeq atomic.Int64

func nextID() json.RawMessage {
	return json.RawMessage(fmt.Appendf(nil, "%d", idSeq.Add(1)))
}

// cancelledParams builds notifications/cancelled params.
func cancelledParams(id json.RawMessage, reason string) json.RawMessage {
	b, _ := json.Marshal(struct {
		RequestID json.RawMessage `json:"requestId"`
		Reason    string          `json:"reason,omitempty"`
	}{id, reason})
	return b
}
