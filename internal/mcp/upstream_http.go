package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxUpstreamMessage bounds one message from an upstream server.
const maxUpstreamMessage = 32 << 20

// httpServer describes a Streamable HTTP upstream.
type httpServer struct {
	id             string
	url            string
	headers        http.Header // credentials and static headers for the upstream
	client         *http.Client
	timeout        time.Duration
	connectTimeout time.Duration
	logger         *slog.Logger
	// inject, when set, adds headers to every upstream request (trace
	// context).
	inject func(ctx context.Context, h http.Header)
}

// httpConn is a connection to a Streamable HTTP server: the negotiated
// protocol version and, when the server keeps sessions, its session id.
type httpConn struct {
	srv *httpServer
	// modern marks a stateless protocol 2026-07-28 connection.
	modern    bool
	sessionID string
	initRes   *initResult
	dead      atomic.Bool
	closeOnce sync.Once
}

// dial initializes a session with the server using the given initialize
// params (the agent's, for session-mode endpoints).
func (s *httpServer) dial(ctx context.Context, initParams json.RawMessage) (*httpConn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	defer cancel()
	c := &httpConn{srv: s}
	req := &Message{JSONRPC: "2.0", ID: nextID(), Method: "initialize", Params: initParams}
	resp, hdr, err := c.roundTrip(ctx, req, nil)
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, &upstreamError{server: s.id, msg: "initialization refused: " + resp.Error.Message, err: resp.Error}
	}
	var ir initResult
	if err := json.Unmarshal(resp.Result, &ir); err != nil || ir.ProtocolVersion == "" {
		return nil, &upstreamError{server: s.id, msg: "invalid initialize result", err: err}
	}
	if !supportedVersion(ir.ProtocolVersion) {
		return nil, &upstreamError{server: s.id, msg: fmt.Sprintf("unsupported protocol version %q", ir.ProtocolVersion)}
	}
	ir.Raw = resp.Result
	c.initRes = &ir
	c.sessionID = hdr.Get("Mcp-Session-Id")
	if err := c.send(ctx, &Message{JSONRPC: "2.0", Method: "notifications/initialized"}); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *httpConn) init() *initResult { return c.initRes }

func (c *httpConn) alive() bool { return !c.dead.Load() }

func (c *httpConn) newRequest(ctx context.Context, method string, body []byte, m *Message) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r, err := http.NewRequestWithContext(ctx, method, c.srv.url, rd)
	if err != nil {
		return nil, &upstreamError{server: c.srv.id, msg: "building request", err: err}
	}
	for k, v := range c.srv.headers {
		r.Header[k] = v
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	r.Header.Set("Accept", "application/json, text/event-stream")
	if c.sessionID != "" {
		r.Header.Set("Mcp-Session-Id", c.sessionID)
	}
	switch {
	case c.modern:
		r.Header.Set("Mcp-Protocol-Version", Version20260728)
		if m != nil {
			setStandardHeaders(r.Header, m)
		}
	case c.initRes != nil:
		r.Header.Set("Mcp-Protocol-Version", c.initRes.ProtocolVersion)
	}
	if c.srv.inject != nil {
		c.srv.inject(ctx, r.Header)
	}
	return r, nil
}

// roundTrip POSTs m and, for a request, waits for its response, passing
// other messages on the response stream to o.
func (c *httpConn) roundTrip(ctx context.Context, m *Message, o *callOpts) (*Message, http.Header, error) {
	body := encode(m)
	r, err := c.newRequest(ctx, http.MethodPost, body, m)
	if err != nil {
		return nil, nil, err
	}
	if o != nil {
		for k, v := range o.headers {
			r.Header[k] = v
		}
	}
	resp, err := c.srv.client.Do(r)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, &upstreamError{server: c.srv.id, msg: "unreachable", err: err}
	}
	defer resp.Body.Close()
	if !m.IsRequest() {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode == http.StatusNotFound && c.sessionID != "" {
			c.dead.Store(true)
			return nil, resp.Header, &upstreamError{server: c.srv.id, msg: "session expired"}
		}
		if resp.StatusCode/100 != 2 {
			return nil, resp.Header, &upstreamError{server: c.srv.id, msg: fmt.Sprintf("HTTP %d", resp.StatusCode)}
		}
		return nil, resp.Header, nil
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusOK && ct == "text/event-stream":
		if o != nil && o.onStream != nil {
			o.onStream()
		}
		res, err := c.readStream(ctx, resp.Body, m.ID, o)
		return res, resp.Header, err
	case ct == "application/json":
		// Success, or an HTTP error that carries a JSON-RPC error response.
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamMessage+1))
		if err != nil {
			return nil, resp.Header, &upstreamError{server: c.srv.id, msg: "reading response", err: err}
		}
		res, err := c.parse(b)
		if err != nil {
			if resp.StatusCode/100 != 2 {
				return nil, resp.Header, c.statusError(resp)
			}
			return nil, resp.Header, err
		}
		if !res.IsResponse() || !bytes.Equal(res.ID, m.ID) {
			return nil, resp.Header, &upstreamError{server: c.srv.id, msg: "response does not answer the request"}
		}
		return res, resp.Header, nil
	default:
		return nil, resp.Header, c.statusError(resp)
	}
}

func (c *httpConn) statusError(resp *http.Response) error {
	if resp.StatusCode == http.StatusNotFound && c.sessionID != "" {
		c.dead.Store(true)
		return &upstreamError{server: c.srv.id, msg: "session expired"}
	}
	if resp.StatusCode/100 == 2 {
		return &upstreamError{server: c.srv.id, msg: fmt.Sprintf("unexpected content type %q", resp.Header.Get("Content-Type"))}
	}
	return &upstreamError{server: c.srv.id, msg: fmt.Sprintf("HTTP %d", resp.StatusCode)}
}

func (c *httpConn) parse(b []byte) (*Message, error) {
	if len(b) > maxUpstreamMessage {
		return nil, &upstreamError{server: c.srv.id, msg: "message too large"}
	}
	if err := checkJSON(b); err != nil {
		return nil, &upstreamError{server: c.srv.id, msg: "invalid JSON", err: err}
	}
	m, werr := decodeMessage(b)
	if werr != nil {
		return nil, &upstreamError{server: c.srv.id, msg: "invalid message", err: werr}
	}
	return m, nil
}

// readStream reads an SSE response stream until the response to id. When
// the server closes the stream early after giving event ids, the stream is
// resumed with GET and Last-Event-ID.
func (c *httpConn) readStream(ctx context.Context, body io.ReadCloser, id json.RawMessage, o *callOpts) (*Message, error) {
	lastID := ""
	retry := time.Duration(0)
	rd, release := pooledSSEReader(maxUpstreamMessage)
	defer release()
	for attempt := 0; ; attempt++ {
		rd.reset(body)
		for {
			ev, err := rd.Next()
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					break
				}
				return nil, &upstreamError{server: c.srv.id, msg: "reading event stream", err: err}
			}
			if ev.ID != "" {
				lastID = ev.ID
			}
			if ev.Retry > 0 {
				retry = time.Duration(ev.Retry) * time.Millisecond
			}
			if len(bytes.TrimSpace(ev.Data)) == 0 {
				continue // priming event
			}
			m, err := c.parse(ev.Data)
			if err != nil {
				return nil, err
			}
			if m.IsResponse() && bytes.Equal(m.ID, id) {
				drain(body)
				return m, nil
			}
			o.msg(m)
		}
		body.Close()
		if lastID == "" || attempt >= 10 {
			return nil, &upstreamError{server: c.srv.id, msg: "stream ended before the response"}
		}
		// The server closed the stream (SEP-1699 polling): resume it.
		if retry > 0 {
			t := time.NewTimer(min(retry, 30*time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		resp, err := c.get(ctx, lastID)
		if err != nil {
			return nil, err
		}
		body = resp.Body
	}
}

// drain reads what is left of a response stream after its answer, so the
// connection can be reused: a server ends the stream right after the
// response, and a stream that stays open is closed after a short wait.
func drain(body io.ReadCloser) {
	t := time.AfterFunc(50*time.Millisecond, func() { body.Close() })
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 256<<10))
	t.Stop()
}

// get opens a GET stream, resuming after lastEventID when set.
func (c *httpConn) get(ctx context.Context, lastEventID string) (*http.Response, error) {
	r, err := c.newRequest(ctx, http.MethodGet, nil, nil)
	if err != nil {
		return nil, err
	}
	r.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		r.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := c.srv.client.Do(r)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &upstreamError{server: c.srv.id, msg: "unreachable", err: err}
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		resp.Body.Close()
		if resp.StatusCode == http.StatusMethodNotAllowed {
			return nil, errNoStream
		}
		return nil, c.statusError(resp)
	}
	return resp, nil
}

func (c *httpConn) call(ctx context.Context, req *Message, o *callOpts) (*Message, error) {
	if c.dead.Load() {
		return nil, &upstreamError{server: c.srv.id, msg: "session expired"}
	}
	orig := req.ID
	up := *req
	up.ID = nextID()
	var cancel context.CancelFunc
	if o != nil && o.long {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, c.srv.timeout)
	}
	defer cancel()
	if c.modern {
		up.Params = withModernMeta(up.Params)
	}
	res, _, err := c.roundTrip(ctx, &up, o)
	if err != nil {
		if ctx.Err() != nil {
			// Tell the server to stop working on it (best effort, detached
			// from the ended context).
			go func() {
				cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer ccancel()
				_ = c.send(cctx, &Message{JSONRPC: "2.0", Method: "notifications/cancelled", Params: cancelledParams(up.ID, "request cancelled")})
			}()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, &upstreamError{server: c.srv.id, msg: "timed out", err: ctx.Err()}
			}
			return nil, ctx.Err()
		}
		return nil, err
	}
	out := *res
	out.ID = orig
	return &out, nil
}

func (c *httpConn) send(ctx context.Context, m *Message) error {
	_, _, err := c.roundTrip(ctx, m, nil)
	return err
}

func (c *httpConn) listen(ctx context.Context, onMsg func(*Message)) error {
	lastID := ""
	for attempt := 0; ; attempt++ {
		resp, err := c.get(ctx, lastID)
		if err != nil {
			return err
		}
		rd := newSSEReader(resp.Body, maxUpstreamMessage)
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			if ev.ID != "" {
				lastID = ev.ID
			}
			if len(bytes.TrimSpace(ev.Data)) == 0 {
				continue
			}
			m, err := c.parse(ev.Data)
			if err != nil {
				c.srv.logger.Warn("dropping invalid message from upstream stream", "server", c.srv.id, "err", err)
				continue
			}
			onMsg(m)
		}
		resp.Body.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if lastID == "" || attempt > 100 || c.dead.Load() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (c *httpConn) close() {
	c.closeOnce.Do(func() {
		c.dead.Store(true)
		if c.sessionID == "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.newRequest(ctx, http.MethodDelete, nil, nil)
		if err != nil {
			return
		}
		if resp, err := c.srv.client.Do(r); err == nil {
			resp.Body.Close()
		}
	})
}

// setStandardHeaders sets the request headers that protocol 2026-07-28
// requires to mirror the body (Mcp-Method, Mcp-Name).
func setStandardHeaders(h http.Header, m *Message) {
	if m.Method == "" {
		return
	}
	h.Set("Mcp-Method", m.Method)
	if name, ok := nameOf(m); ok {
		h.Set("Mcp-Name", encodeHeaderValue(name))
	}
}

// nameOf returns the name a request targets (tool, prompt or resource URI).
func nameOf(m *Message) (string, bool) {
	var key string
	switch m.Method {
	case "tools/call", "prompts/get":
		key = "name"
	case "resources/read":
		key = "uri"
	default:
		return "", false
	}
	p, err := parseParams(m.Params)
	if err != nil {
		return "", false
	}
	return p.str(key)
}

// encodeHeaderValue returns v as-is when it is printable ASCII without
// leading or trailing space, else in the =?base64?…?= form.
func encodeHeaderValue(v string) string {
	plain := v != "" && v[0] != ' ' && v[len(v)-1] != ' '
	for i := 0; plain && i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			plain = false
		}
	}
	if plain && !strings.HasPrefix(v, "=?base64?") {
		return v
	}
	return "=?base64?" + b64(v) + "?="
}
