package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// ServeHTTP serves every endpoint of the proxy (Streamable HTTP transport:
// POST for messages, GET for the standalone stream, DELETE to end a
// session).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, ok := p.endpoints[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if msg, ok := p.checkOrigin(r); !ok {
		p.refuse(r.Context(), ep, nil, r.Method, verdict.Deny(verdict.Core, "request.origin", msg))
		writeHTTPError(w, http.StatusForbidden, msg)
		return
	}
	switch r.Method {
	case http.MethodPost:
		p.servePOST(w, r, ep)
	case http.MethodGet:
		p.serveGET(w, r, ep)
	case http.MethodDelete:
		p.serveDELETE(w, r, ep)
	default:
		p.refuse(r.Context(), ep, nil, r.Method, verdict.Deny(verdict.Core, "request.http_method", "method not allowed"))
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeHTTPError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// httpRefusal records a refusal at the HTTP level and answers it.
func (p *Proxy) httpRefusal(w http.ResponseWriter, r *http.Request, ep *endpoint, caller *pipeline.Caller, status int, code, msg string) {
	p.refuse(r.Context(), ep, caller, r.Method, verdict.Deny(verdict.Core, code, msg))
	writeHTTPError(w, status, msg)
}

// checkOrigin protects against DNS rebinding: a browser page must not reach
// the gateway through a name that resolves to it. Requests with an Origin
// must be same-origin or allow-listed; a loopback listener answers only
// loopback Host names.
func (p *Proxy) checkOrigin(r *http.Request) (string, bool) {
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && la != nil {
		if isLoopbackAddr(la.String()) && !isLoopbackHost(r.Host) {
			return fmt.Sprintf("invalid Host header %q", r.Host), false
		}
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return "", true
	}
	for _, o := range p.cfg.AllowedOrigins {
		if o == origin {
			return "", true
		}
	}
	if u, err := url.Parse(origin); err == nil && u.Host == r.Host {
		return "", true
	}
	return fmt.Sprintf("origin %q is not allowed", origin), false
}

func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeHTTPError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// writeMessage writes one JSON-RPC message as an application/json response.
func writeMessage(w http.ResponseWriter, status int, m *Message) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(encode(m))
}

// authenticate runs the Authenticator and answers 401 on failure.
func (p *Proxy) authenticate(w http.ResponseWriter, r *http.Request, ep *endpoint) (*pipeline.Caller, bool) {
	caller, err := p.cfg.Auth(r)
	if err == nil && caller != nil {
		return caller, true
	}
	code, msg := "invalid_token", "authentication failed"
	var ae AuthError
	if errors.As(err, &ae) {
		code, msg = ae.PublicCode(), ae.PublicMessage()
	}
	meta := p.cfg.ResourceMetadata
	if meta != "" && ep.path != "/" {
		meta += ep.path
	}
	var challenge string
	if p.cfg.Challenge != nil {
		challenge = p.cfg.Challenge(err, meta)
	} else {
		challenge = fmt.Sprintf(`Bearer realm="gatehouse", error="invalid_token", error_description=%q`, code+": "+msg)
		if meta != "" {
			challenge += fmt.Sprintf(`, resource_metadata=%q`, meta)
		}
	}
	w.Header().Set("WWW-Authenticate", challenge)
	p.cfg.Mediator.Refuse(r.Context(), &pipeline.Request{
		ID: newCorrelationID(), Time: p.cfg.Now(), Protocol: "mcp", Method: r.Method + " " + ep.path, Endpoint: ep.path, Action: pipeline.ActionOther,
	}, verdict.Deny(verdict.Identity, "identity."+code, msg))
	writeMessage(w, http.StatusUnauthorized, errorResponse(nil, CodeInvalidRequest, "unauthorized: "+msg, map[string]string{"code": code}))
	return nil, false
}

func (p *Proxy) servePOST(w http.ResponseWriter, r *http.Request, ep *endpoint) {
	caller, ok := p.authenticate(w, r, ep)
	if !ok {
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		p.httpRefusal(w, r, ep, caller, http.StatusUnsupportedMediaType, "request.content_type", "Content-Type must be application/json")
		return
	}
	if !acceptsBoth(r.Header.Values("Accept")) {
		p.httpRefusal(w, r, ep, caller, http.StatusNotAcceptable, "request.accept", "Accept must include application/json and text/event-stream")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			p.refuse(r.Context(), ep, caller, "", verdict.Deny(verdict.Core, "request.too_large", "request body too large"))
			writeMessage(w, http.StatusRequestEntityTooLarge, errorResponse(nil, CodeInvalidRequest, fmt.Sprintf("request body exceeds %d bytes", p.cfg.MaxBodyBytes), nil))
			return
		}
		p.httpRefusal(w, r, ep, caller, http.StatusBadRequest, "request.body", "reading request body failed")
		return
	}
	if err := checkJSON(body); err != nil {
		p.refuse(r.Context(), ep, caller, "", verdict.Deny(verdict.Core, "request.parse_error", err.Error()))
		writeMessage(w, http.StatusBadRequest, errorResponse(nil, CodeParseError, "parse error: "+err.Error(), nil))
		return
	}
	m, werr := decodeMessage(body)
	if werr != nil {
		p.refuse(r.Context(), ep, caller, "", verdict.Deny(verdict.Core, "request.invalid", werr.Message))
		writeMessage(w, http.StatusBadRequest, errorResponse(idOf(body), werr.Code, werr.Message, nil))
		return
	}
	if isModern(r.Header, m) {
		p.serveModern(w, r, ep, caller, m)
		return
	}
	if v := r.Header.Get("Mcp-Protocol-Version"); v != "" && !supportedVersion(v) {
		p.httpRefusal(w, r, ep, caller, http.StatusBadRequest, "request.protocol_version",
			fmt.Sprintf("unsupported protocol version %q (supported: %s)", v, strings.Join(SupportedVersions, ", ")))
		return
	}

	if ep.stateless {
		sc := &scope{p: p, ep: ep, caller: caller, version: r.Header.Get("Mcp-Protocol-Version")}
		if m.Method == "initialize" {
			p.initializeStateless(w, r, sc, m)
			return
		}
		if sc.version == "" {
			sc.version = Version20250618
		}
		p.dispatch(w, r, sc, m)
		return
	}

	sid := r.Header.Get("Mcp-Session-Id")
	if m.Method == "initialize" {
		if sid != "" {
			writeMessage(w, http.StatusBadRequest, errorResponse(m.ID, CodeInvalidRequest, "initialize must not carry a session id", nil))
			return
		}
		p.initialize(w, r, ep, caller, m)
		return
	}
	if sid == "" {
		p.httpRefusal(w, r, ep, caller, http.StatusBadRequest, "session.missing", "missing Mcp-Session-Id header")
		return
	}
	s, ok := p.sessions.get(sid)
	if !ok || s.ep != ep || s.caller.Agent != caller.Agent {
		// An unknown session and another agent's session look the same.
		p.httpRefusal(w, r, ep, caller, http.StatusNotFound, "session.unknown", "session not found")
		return
	}
	s.touch(p.cfg.Now())
	if v := r.Header.Get("Mcp-Protocol-Version"); v != "" && v != s.version {
		p.httpRefusal(w, r, ep, caller, http.StatusBadRequest, "request.protocol_version", fmt.Sprintf("protocol version %q does not match the session's %q", v, s.version))
		return
	}
	sc := &scope{p: p, ep: ep, caller: caller, sess: s, version: s.version}
	p.dispatch(w, r, sc, m)
}

// dispatch handles one decoded message.
func (p *Proxy) dispatch(w http.ResponseWriter, r *http.Request, sc *scope, m *Message) {
	switch {
	case m.IsRequest():
		rep := newReply(w)
		ctx, end := p.cfg.Observer.StartRequest(r.Context(), m.Method, sc.caller.Agent)
		p.handleRequest(ctx, sc, rep, m)
		end(rep.outcome())
		rep.finish()
	case m.IsNotification():
		p.handleNotification(r.Context(), sc, m)
		w.WriteHeader(http.StatusAccepted)
	default:
		p.handleClientResponse(r.Context(), sc, m)
		w.WriteHeader(http.StatusAccepted)
	}
}

func (p *Proxy) serveGET(w http.ResponseWriter, r *http.Request, ep *endpoint) {
	caller, ok := p.authenticate(w, r, ep)
	if !ok {
		return
	}
	if ep.stateless {
		w.Header().Set("Allow", "POST")
		p.httpRefusal(w, r, ep, caller, http.StatusMethodNotAllowed, "request.http_method", "this endpoint is stateless: no standalone stream")
		return
	}
	if !acceptsSSE(r.Header.Values("Accept")) {
		p.httpRefusal(w, r, ep, caller, http.StatusNotAcceptable, "request.accept", "Accept must include text/event-stream")
		return
	}
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		p.httpRefusal(w, r, ep, caller, http.StatusBadRequest, "session.missing", "missing Mcp-Session-Id header")
		return
	}
	s, ok := p.sessions.get(sid)
	if !ok || s.ep != ep || s.caller.Agent != caller.Agent {
		p.httpRefusal(w, r, ep, caller, http.StatusNotFound, "session.unknown", "session not found")
		return
	}
	s.mu.Lock()
	if s.listening {
		s.mu.Unlock()
		p.httpRefusal(w, r, ep, caller, http.StatusConflict, "session.stream_open", "a standalone stream is already open for this session")
		return
	}
	s.listening = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.listening = false
		s.mu.Unlock()
	}()
	p.startListeners(s)

	sse := newSSEWriter(w)
	sse.start(http.StatusOK)
	sse.flush() // the client sees the stream open at once
	ctx := r.Context()
	keepAlive := time.NewTicker(25 * time.Second)
	defer keepAlive.Stop()
	items := make(chan []*Message)
	go func() {
		defer close(items)
		for {
			batch, ok := s.standalone.pop(ctx)
			if !ok {
				return
			}
			select {
			case items <- batch:
			case <-ctx.Done():
				// Put them back for the next stream.
				for _, m := range batch {
					s.standalone.push(m)
				}
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case batch, ok := <-items:
			if !ok {
				return
			}
			for _, m := range batch {
				if err := sse.write("", encode(m)); err != nil {
					return
				}
			}
		case <-keepAlive.C:
			if err := sse.comment("keep-alive"); err != nil {
				return
			}
		}
	}
}

func (p *Proxy) serveDELETE(w http.ResponseWriter, r *http.Request, ep *endpoint) {
	caller, ok := p.authenticate(w, r, ep)
	if !ok {
		return
	}
	if ep.stateless {
		w.Header().Set("Allow", "POST")
		p.httpRefusal(w, r, ep, caller, http.StatusMethodNotAllowed, "request.http_method", "this endpoint is stateless: no sessions")
		return
	}
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		p.httpRefusal(w, r, ep, caller, http.StatusBadRequest, "session.missing", "missing Mcp-Session-Id header")
		return
	}
	s, ok := p.sessions.get(sid)
	if !ok || s.ep != ep || s.caller.Agent != caller.Agent {
		p.httpRefusal(w, r, ep, caller, http.StatusNotFound, "session.unknown", "session not found")
		return
	}
	p.endSession(s)
	w.WriteHeader(http.StatusNoContent)
}

func acceptsBoth(values []string) bool {
	var json, sse bool
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
			switch mt {
			case "application/json", "application/*":
				json = true
			case "text/event-stream", "text/*":
				sse = true
			case "*/*":
				json, sse = true, true
			}
		}
	}
	return json && sse
}

func acceptsSSE(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
			if mt == "text/event-stream" || mt == "text/*" || mt == "*/*" {
				return true
			}
		}
	}
	return false
}

// idOf extracts the id of a message that failed validation, so the error
// can answer it when the id itself is valid.
func idOf(body []byte) json.RawMessage {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(body, &probe) != nil || len(probe.ID) == 0 || validID(probe.ID) != nil {
		return nil
	}
	return probe.ID
}

// reply writes the answer to one POSTed request: a single JSON response, or
// an event stream when related messages precede the response. Writes after
// finish are dropped; reply is safe for concurrent use.
type reply struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	sse     *sseWriter
	final   *Message
	done    bool
	stream  bool // answer with an event stream even without related messages
	headers map[string]string
	// status maps the final message to the HTTP status of a JSON answer
	// (protocol 2026-07-28 maps some errors to 400 and 404); nil means 200.
	status func(*Message) int
	// post edits the final response before it is written.
	post func(*Message) *Message
	// held marks a final result that holds the call for approval
	// (input_required), for telemetry.
	held bool
}

// markHeld marks the answer as holding the call for approval.
func (r *reply) markHeld() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = true
}

// preferStream asks for an event stream: the upstream answered with one,
// and the agent sees the same.
func (r *reply) preferStream() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stream = true
}

func newReply(w http.ResponseWriter) *reply { return &reply{w: w} }

// event sends a message related to the request (switching to an event
// stream). It reports false when the reply is already finished.
func (r *reply) event(m *Message) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	if r.sse == nil {
		r.applyHeaders()
		r.sse = newSSEWriter(r.w)
		r.sse.start(http.StatusOK)
	}
	return r.sse.write("", encode(m)) == nil
}

// respond sets the final response; it is written by finish.
func (r *reply) respond(m *Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.final == nil {
		r.final = m
	}
}

// outcome classifies the final response for telemetry.
func (r *reply) outcome() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.final == nil:
		return "error"
	case r.held:
		return "challenge"
	case r.final.Error == nil:
		return "allow"
	case r.final.Error.Code == CodeDenied:
		return "block"
	case r.final.Error.Code == CodeApprovalRequired, r.final.Error.Code == CodeURLElicitationRequired:
		return "challenge"
	}
	return "error"
}

func (r *reply) applyHeaders() {
	for k, v := range r.headers {
		r.w.Header().Set(k, v)
	}
}

func (r *reply) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	final := r.final
	if final == nil {
		final = errorResponse(nil, CodeInternalError, "internal error: no response", nil)
	}
	if r.post != nil {
		final = r.post(final)
	}
	status := http.StatusOK
	if r.status != nil {
		status = r.status(final)
	}
	if r.sse == nil && r.stream && status == http.StatusOK {
		r.applyHeaders()
		r.sse = newSSEWriter(r.w)
		r.sse.start(http.StatusOK)
	}
	if r.sse != nil {
		// finish is the last write of the handler.
		_ = r.sse.writeLast("", encode(final))
		return
	}
	r.applyHeaders()
	writeMessage(r.w, status, final)
}

func newCorrelationID() string { return newSessionKey()[:32] }

// refuse records a refusal made before a request was routed.
func (p *Proxy) refuse(ctx context.Context, ep *endpoint, caller *pipeline.Caller, method string, v verdict.Verdict) {
	p.cfg.Mediator.Refuse(ctx, &pipeline.Request{
		ID: newCorrelationID(), Time: p.cfg.Now(), Protocol: "mcp", Method: method, Action: pipeline.ActionOther,
		Caller: caller, Endpoint: ep.path,
	}, v)
}
