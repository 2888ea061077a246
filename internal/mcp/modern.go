package mcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Protocol revision 2026-07-28 is stateless: there is no initialize and no
// session; every request carries its protocol version, client capabilities
// and client info in _meta, and mirrors its method and target name in HTTP
// headers (Mcp-Method, Mcp-Name, Mcp-Param-*), which the receiver must check
// against the body. Server-to-client requests are replaced by results of
// type input_required that the client answers by retrying the call.
//
// A stateless endpoint serves 2026-07-28 requests and sessionless legacy
// requests side by side; a session endpoint answers server/discover with
// the legacy versions only, so a dual-era client falls back to initialize
// (as the go-sdk's stateful handler does).

// _meta keys of protocol 2026-07-28.
const (
	metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"
	metaClientCaps      = "io.modelcontextprotocol/clientCapabilities"
	metaClientInfo      = "io.modelcontextprotocol/clientInfo"
	metaServerInfo      = "io.modelcontextprotocol/serverInfo"
	metaSubscriptionID  = "io.modelcontextprotocol/subscriptionId"
)

// Error codes of protocol 2026-07-28.
const (
	CodeHeaderMismatch     = -32020
	CodeMissingCapability  = -32021
	CodeUnsupportedVersion = -32022
)

// legacyVersions are the revisions negotiated with initialize.
var legacyVersions = []string{Version20251125, Version20250618}

// modernMethods are the requests of protocol 2026-07-28 the gateway serves.
var modernMethods = map[string]bool{
	"server/discover": true, "tools/list": true, "tools/call": true, "prompts/list": true, "prompts/get": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true, "completion/complete": true,
	"subscriptions/listen": true,
}

// metaOf returns the _meta object of a request's params.
func metaOf(raw json.RawMessage) map[string]json.RawMessage {
	p, err := parseParams(raw)
	if err != nil {
		return nil
	}
	var meta map[string]json.RawMessage
	if json.Unmarshal(p["_meta"], &meta) != nil {
		return nil
	}
	return meta
}

func metaString(meta map[string]json.RawMessage, key string) string {
	var s string
	_ = json.Unmarshal(meta[key], &s)
	return s
}

// isModern reports whether a request uses protocol 2026-07-28 or later.
func isModern(h http.Header, m *Message) bool {
	if !m.IsRequest() {
		return false
	}
	if v := h.Get("Mcp-Protocol-Version"); v >= Version20260728 {
		return true
	}
	return metaString(metaOf(m.Params), metaProtocolVersion) >= Version20260728
}

// withModernMeta makes sure a request the gateway sends on a 2026
// connection carries the required _meta members.
func withModernMeta(raw json.RawMessage) json.RawMessage {
	p, err := parseParams(raw)
	if err != nil {
		return raw
	}
	var meta map[string]json.RawMessage
	_ = json.Unmarshal(p["_meta"], &meta)
	if meta == nil {
		meta = map[string]json.RawMessage{}
	}
	if _, ok := meta[metaProtocolVersion]; ok {
		if _, ok := meta[metaClientCaps]; ok {
			return raw
		}
	}
	if _, ok := meta[metaProtocolVersion]; !ok {
		meta[metaProtocolVersion] = json.RawMessage(`"` + Version20260728 + `"`)
	}
	if _, ok := meta[metaClientCaps]; !ok {
		meta[metaClientCaps] = json.RawMessage(`{}`)
	}
	if _, ok := meta[metaClientInfo]; !ok {
		meta[metaClientInfo] = json.RawMessage(`{"name":"gatehouse","version":"0.1.0"}`)
	}
	p["_meta"], _ = json.Marshal(meta)
	return p.raw()
}

// withoutModernMeta removes the 2026 per-request _meta members, for a
// request translated to a legacy connection (a legacy server would take
// them for a 2026 request it cannot serve).
func withoutModernMeta(raw json.RawMessage) json.RawMessage {
	p, err := parseParams(raw)
	if err != nil {
		return raw
	}
	var meta map[string]json.RawMessage
	if json.Unmarshal(p["_meta"], &meta) != nil || meta == nil {
		return raw
	}
	changed := false
	for _, k := range []string{metaProtocolVersion, metaClientCaps, metaClientInfo, "io.modelcontextprotocol/logLevel"} {
		if _, ok := meta[k]; ok {
			delete(meta, k)
			changed = true
		}
	}
	if !changed {
		return raw
	}
	if len(meta) == 0 {
		delete(p, "_meta")
	} else {
		p["_meta"], _ = json.Marshal(meta)
	}
	return p.raw()
}

// decodeHeaderValue undoes the =?base64?…?= form of a standard header.
func decodeHeaderValue(v string) (string, bool) {
	if inner, ok := strings.CutPrefix(v, "=?base64?"); ok {
		inner, ok = strings.CutSuffix(inner, "?=")
		if !ok {
			return v, true // not the full wrapper: a literal
		}
		b, err := base64.StdEncoding.Strict().DecodeString(inner)
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	return v, true
}

// modernError is a protocol error of a 2026 request: code, message, data
// and the HTTP status that goes with it.
type modernError struct {
	code   int
	msg    string
	data   any
	status int
}

// checkModern validates a 2026 request's version, _meta and standard
// headers.
func checkModern(h http.Header, m *Message) *modernError {
	if !modernMethods[m.Method] {
		return &modernError{CodeMethodNotFound, fmt.Sprintf("method not found: %q", m.Method), nil, http.StatusNotFound}
	}
	hv := h.Get("Mcp-Protocol-Version")
	meta := metaOf(m.Params)
	mv := metaString(meta, metaProtocolVersion)
	switch {
	case hv == "":
		return &modernError{CodeHeaderMismatch, "the Mcp-Protocol-Version header is required", nil, http.StatusBadRequest}
	case mv == "":
		return &modernError{CodeInvalidParams, fmt.Sprintf("missing or invalid _meta field %q", metaProtocolVersion), nil, http.StatusBadRequest}
	case hv != mv:
		return &modernError{CodeHeaderMismatch, fmt.Sprintf("the Mcp-Protocol-Version header %q does not match _meta %q", hv, mv), nil, http.StatusBadRequest}
	case mv != Version20260728:
		return &modernError{CodeUnsupportedVersion, "unsupported protocol version",
			map[string]any{"supported": SupportedVersions, "requested": mv}, http.StatusBadRequest}
	}
	if caps, ok := meta[metaClientCaps]; !ok || len(bytes.TrimSpace(caps)) == 0 || caps[0] != '{' {
		return &modernError{CodeInvalidParams, fmt.Sprintf("missing or invalid _meta field %q", metaClientCaps), nil, http.StatusBadRequest}
	}
	if info, ok := meta[metaClientInfo]; ok && (len(info) == 0 || info[0] != '{') {
		return &modernError{CodeInvalidParams, fmt.Sprintf("invalid _meta field %q", metaClientInfo), nil, http.StatusBadRequest}
	}
	hm := h.Get("Mcp-Method")
	if hm == "" {
		return &modernError{CodeHeaderMismatch, "missing required Mcp-Method header", nil, http.StatusBadRequest}
	}
	if hm != m.Method {
		return &modernError{CodeHeaderMismatch, fmt.Sprintf("header mismatch: Mcp-Method header value %q does not match body value %q", hm, m.Method), nil, http.StatusBadRequest}
	}
	if name, ok := nameOf(m); ok || m.Method == "tools/call" || m.Method == "prompts/get" || m.Method == "resources/read" {
		hn := h.Get("Mcp-Name")
		if hn == "" {
			return &modernError{CodeHeaderMismatch, fmt.Sprintf("missing required Mcp-Name header for method %q", m.Method), nil, http.StatusBadRequest}
		}
		dec, ok := decodeHeaderValue(strings.TrimSpace(hn))
		if !ok || dec != name {
			return &modernError{CodeHeaderMismatch, "header mismatch: the Mcp-Name header does not match the body", nil, http.StatusBadRequest}
		}
	}
	return nil
}

// modernStatus maps a 2026 response to its HTTP status.
func modernStatus(m *Message) int {
	if m.Error == nil {
		return http.StatusOK
	}
	switch m.Error.Code {
	case CodeMethodNotFound:
		return http.StatusNotFound
	case CodeInvalidParams, CodeHeaderMismatch, CodeMissingCapability, CodeUnsupportedVersion:
		return http.StatusBadRequest
	}
	return http.StatusOK
}

// completeResult adds resultType "complete" to a result that lacks one (a
// legacy upstream's answer to a 2026 client).
func completeResult(m *Message) *Message {
	if m.Error != nil || len(m.Result) == 0 || m.Result[0] != '{' {
		return m
	}
	var res map[string]json.RawMessage
	if json.Unmarshal(m.Result, &res) != nil {
		return m
	}
	if _, ok := res["resultType"]; ok {
		return m
	}
	res["resultType"] = json.RawMessage(`"complete"`)
	out := *m
	out.Result, _ = json.Marshal(res)
	return &out
}

// serveModern handles a 2026-07-28 request.
func (p *Proxy) serveModern(w http.ResponseWriter, r *http.Request, ep *endpoint, caller *pipeline.Caller, m *Message) {
	if !ep.stateless {
		// A session endpoint speaks the legacy protocol only; discovery
		// says so, which makes a dual-era client fall back to initialize.
		if m.Method == "server/discover" {
			res := map[string]any{"resultType": "complete", "supportedVersions": legacyVersions, "capabilities": map[string]any{},
				"_meta": map[string]json.RawMessage{metaServerInfo: p.cfg.ServerInfo}}
			writeMessage(w, http.StatusOK, resultResponse(m.ID, res))
			return
		}
		writeMessage(w, http.StatusBadRequest, errorResponse(m.ID, CodeUnsupportedVersion, "unsupported protocol version: this endpoint keeps sessions",
			map[string]any{"supported": legacyVersions, "requested": metaString(metaOf(m.Params), metaProtocolVersion)}))
		return
	}
	if e := checkModern(r.Header, m); e != nil {
		p.refuse(r.Context(), ep, caller, m.Method, verdict.Deny(verdict.Core, "request.invalid", e.msg))
		writeMessage(w, e.status, errorResponse(m.ID, e.code, e.msg, e.data))
		return
	}
	sc := &scope{p: p, ep: ep, caller: caller, version: Version20260728, modern: true, reqHeader: r.Header}
	rep := newReply(w)
	rep.status = modernStatus
	rep.post = completeResult
	ctx, end := p.cfg.Observer.StartRequest(r.Context(), m.Method, caller.Agent)
	switch m.Method {
	case "server/discover":
		p.discover(ctx, sc, rep, m)
	case "subscriptions/listen":
		p.listenSubscriptions(ctx, sc, rep, m)
	default:
		p.handleRequest(ctx, sc, rep, m)
	}
	end(rep.outcome())
	rep.finish()
}

// modernConn returns the connection used for 2026 requests to u: a
// stateless 2026 connection when the server supports the revision, else the
// pooled legacy connection (the gateway translates).
func (u *upstream) modernConn(ctx context.Context) (conn, error) {
	u.poolMu.Lock()
	if c, ok := u.pool[Version20260728]; ok && c.alive() {
		u.poolMu.Unlock()
		return c, nil
	}
	legacy := u.legacyOnly
	u.poolMu.Unlock()
	if !legacy && u.http != nil {
		c, err := u.http.discover(ctx)
		if err == nil {
			u.poolMu.Lock()
			u.pool[Version20260728] = c
			u.poolMu.Unlock()
			return c, nil
		}
		if ue := (*upstreamError)(nil); errors.As(err, &ue) && !strings.Contains(err.Error(), "unreachable") {
			u.poolMu.Lock()
			u.legacyOnly = true
			u.poolMu.Unlock()
		} else {
			return nil, err
		}
	}
	return u.shared(ctx, Version20251125)
}

// discover probes a server for protocol 2026-07-28 with server/discover.
func (s *httpServer) discover(ctx context.Context) (*httpConn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	defer cancel()
	c := &httpConn{srv: s, modern: true}
	req := &Message{JSONRPC: "2.0", ID: nextID(), Method: "server/discover", Params: withModernMeta(nil)}
	res, _, err := c.roundTrip(ctx, req, nil)
	if err != nil {
		return nil, err
	}
	if res.Error != nil {
		return nil, &upstreamError{server: s.id, msg: "server/discover refused: " + res.Error.Message}
	}
	var d struct {
		SupportedVersions []string                   `json:"supportedVersions"`
		Capabilities      json.RawMessage            `json:"capabilities"`
		Instructions      string                     `json:"instructions"`
		Meta              map[string]json.RawMessage `json:"_meta"`
	}
	if err := json.Unmarshal(res.Result, &d); err != nil {
		return nil, &upstreamError{server: s.id, msg: "invalid server/discover result", err: err}
	}
	ok := false
	for _, v := range d.SupportedVersions {
		ok = ok || v == Version20260728
	}
	if !ok {
		return nil, &upstreamError{server: s.id, msg: "the server does not support protocol 2026-07-28"}
	}
	c.initRes = &initResult{ProtocolVersion: Version20260728, Capabilities: d.Capabilities, ServerInfo: d.Meta[metaServerInfo], Instructions: d.Instructions, Raw: res.Result}
	return c, nil
}

// discover answers server/discover for a stateless endpoint.
func (p *Proxy) discover(ctx context.Context, sc *scope, rep *reply, m *Message) {
	r := sc.request(m, pipeline.ActionOther, nil, "", "")
	if v := p.cfg.Mediator.Admit(ctx, r); v.Outcome != verdict.Allow {
		rep.respond(deniedResponse(m.ID, r, v))
		return
	}
	var inits []*initResult
	var servers []string
	for _, u := range sc.ep.servers {
		if !sc.caller.MayUse(u.id) {
			continue
		}
		c, err := sc.conn(ctx, u)
		if err != nil {
			p.log.Warn("upstream unavailable for discovery", "server", u.id, "err", err)
			continue
		}
		inits = append(inits, c.init())
		servers = append(servers, u.id)
	}
	if len(inits) == 0 && len(servers) == 0 && p.usableCount(sc) > 0 {
		rep.respond(errorResponse(m.ID, CodeUpstream, "no upstream server is available", nil))
		return
	}
	merged, _ := p.mergeInit(Version20260728, servers, inits)
	var res map[string]any
	_ = json.Unmarshal(merged, &res)
	delete(res, "protocolVersion")
	serverInfo := p.cfg.ServerInfo
	if !sc.ep.namespace && len(inits) == 1 && inits[0].ServerInfo != nil {
		serverInfo = inits[0].ServerInfo
	}
	delete(res, "serverInfo")
	res["resultType"] = "complete"
	res["supportedVersions"] = SupportedVersions
	res["_meta"] = map[string]json.RawMessage{metaServerInfo: serverInfo}
	res["ttlMs"] = 0
	res["cacheScope"] = "private"
	rep.respond(resultResponse(m.ID, res))
}

func (p *Proxy) usableCount(sc *scope) int {
	n := 0
	for _, u := range sc.ep.servers {
		if sc.caller.MayUse(u.id) {
			n++
		}
	}
	return n
}

// paramHeaders computes the Mcp-Param-* headers for a tools/call to a
// tool whose input schema annotates properties with x-mcp-header.
func paramHeaders(schema json.RawMessage, args json.RawMessage) (http.Header, error) {
	bindings := headerBindings(schema, nil)
	if len(bindings) == 0 {
		return nil, nil
	}
	var a map[string]json.RawMessage
	_ = json.Unmarshal(args, &a)
	h := http.Header{}
	for _, b := range bindings {
		v, ok := lookupArg(a, b.path)
		if !ok || string(v) == "null" {
			continue
		}
		s, ok := primitiveHeader(v)
		if !ok {
			return nil, fmt.Errorf("argument %q bound to header %s is not a primitive", strings.Join(b.path, "."), b.header)
		}
		h.Set("Mcp-Param-"+b.header, s)
	}
	return h, nil
}

// checkParamHeaders verifies the agent's Mcp-Param-* headers against the
// body, as a 2026 server must.
func checkParamHeaders(reqHeader http.Header, schema json.RawMessage, args json.RawMessage) error {
	bindings := headerBindings(schema, nil)
	var a map[string]json.RawMessage
	_ = json.Unmarshal(args, &a)
	for _, b := range bindings {
		name := "Mcp-Param-" + b.header
		hv := reqHeader.Get(name)
		v, present := lookupArg(a, b.path)
		if !present || string(v) == "null" {
			if hv != "" {
				return fmt.Errorf("header mismatch: unexpected %s header for an absent parameter", name)
			}
			continue
		}
		if hv == "" {
			return fmt.Errorf("header mismatch: missing %s header", name)
		}
		dec, ok := decodeHeaderValue(strings.TrimSpace(hv))
		if !ok {
			return fmt.Errorf("header mismatch: %s header has invalid base64", name)
		}
		if !primitiveMatches(dec, v) {
			return fmt.Errorf("header mismatch: %s header does not match the body", name)
		}
	}
	return nil
}

type headerBinding struct {
	path   []string
	header string
}

func headerBindings(schema json.RawMessage, prefix []string) []headerBinding {
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if json.Unmarshal(schema, &s) != nil {
		return nil
	}
	var out []headerBinding
	for name, raw := range s.Properties {
		var prop struct {
			Header string `json:"x-mcp-header"`
		}
		_ = json.Unmarshal(raw, &prop)
		path := append(append([]string(nil), prefix...), name)
		if prop.Header != "" {
			out = append(out, headerBinding{path: path, header: prop.Header})
		}
		if len(prefix) < 8 {
			out = append(out, headerBindings(raw, path)...)
		}
	}
	return out
}

func lookupArg(a map[string]json.RawMessage, path []string) (json.RawMessage, bool) {
	for i, k := range path {
		v, ok := a[k]
		if !ok {
			return nil, false
		}
		if i == len(path)-1 {
			return v, true
		}
		a = nil
		if json.Unmarshal(v, &a) != nil {
			return nil, false
		}
	}
	return nil, false
}

func primitiveHeader(v json.RawMessage) (string, bool) {
	switch {
	case len(v) > 0 && v[0] == '"':
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", false
		}
		return encodeHeaderValue(s), true
	case string(v) == "true" || string(v) == "false":
		return string(v), true
	case len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9'):
		return string(v), true
	}
	return "", false
}

func primitiveMatches(header string, v json.RawMessage) bool {
	switch {
	case len(v) > 0 && v[0] == '"':
		var s string
		return json.Unmarshal(v, &s) == nil && s == header
	case string(v) == "true" || string(v) == "false":
		return header == string(v)
	default:
		a, err1 := strconv.ParseFloat(header, 64)
		b, err2 := strconv.ParseFloat(string(v), 64)
		return err1 == nil && err2 == nil && a == b
	}
}

// listenSubscriptions serves subscriptions/listen: one listen stream per
// server that can honour part of the filter, one acknowledgement with the
// union of what was agreed, and every notification relayed with the
// agent's subscription id.
func (p *Proxy) listenSubscriptions(ctx context.Context, sc *scope, rep *reply, m *Message) {
	r := sc.request(m, pipeline.ActionSubscribe, nil, "", "")
	if v := p.cfg.Mediator.Admit(ctx, r); v.Outcome != verdict.Allow {
		rep.respond(deniedResponse(m.ID, r, v))
		return
	}
	prm, err := parseParams(m.Params)
	if err != nil {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params", nil))
		return
	}
	var filter struct {
		Tools     bool     `json:"toolsListChanged"`
		Prompts   bool     `json:"promptsListChanged"`
		Resources bool     `json:"resourcesListChanged"`
		URIs      []string `json:"resourceSubscriptions"`
	}
	_ = json.Unmarshal(prm["notifications"], &filter)
	subID := m.ID

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	acked := false
	var pending []*Message
	agreed := map[string]any{}
	var agreedURIs []string
	emit := func(n *Message) {
		mu.Lock()
		defer mu.Unlock()
		if !acked {
			pending = append(pending, n)
			return
		}
		rep.event(n)
	}
	var wg sync.WaitGroup
	ackWG := sync.WaitGroup{}
	for _, u := range sc.ep.servers {
		if !sc.caller.MayUse(u.id) {
			continue
		}
		var uris []string
		for _, exposed := range filter.URIs {
			if su, target, ok := sc.ep.resolveURI(exposed); ok && su == u {
				uris = append(uris, target)
			}
		}
		if !filter.Tools && !filter.Prompts && !filter.Resources && len(uris) == 0 {
			continue
		}
		c, err := sc.conn(ctx, u)
		if err != nil {
			p.log.Warn("upstream unavailable for subscriptions", "server", u.id, "err", err)
			continue
		}
		if c.init() == nil || c.init().ProtocolVersion < Version20260728 {
			continue // a legacy server has no subscriptions/listen
		}
		q := params{}
		for k, v := range prm {
			q[k] = v
		}
		nf := map[string]any{"toolsListChanged": filter.Tools, "promptsListChanged": filter.Prompts, "resourcesListChanged": filter.Resources}
		if len(uris) > 0 {
			nf["resourceSubscriptions"] = uris
		}
		q["notifications"], _ = json.Marshal(nf)
		up := &Message{JSONRPC: "2.0", ID: m.ID, Method: m.Method, Params: q.raw()}
		wg.Add(1)
		ackWG.Add(1)
		go func() {
			defer wg.Done()
			gotAck := false
			_, err := c.call(ctx, up, &callOpts{long: true, onMsg: func(n *Message) {
				if n.Method == "notifications/subscriptions/acknowledged" && !gotAck {
					gotAck = true
					var a struct {
						Notifications map[string]json.RawMessage `json:"notifications"`
					}
					if np, err := parseParams(n.Params); err == nil {
						_ = json.Unmarshal(np.raw(), &a)
					}
					mu.Lock()
					for k, v := range a.Notifications {
						if k == "resourceSubscriptions" {
							var list []string
							_ = json.Unmarshal(v, &list)
							for _, uri := range list {
								agreedURIs = append(agreedURIs, sc.ep.exposeURI(u.id, uri))
							}
							continue
						}
						var b bool
						if json.Unmarshal(v, &b) == nil && b {
							agreed[k] = true
						}
					}
					mu.Unlock()
					ackWG.Done()
					return
				}
				if !n.IsNotification() {
					return
				}
				out, ok := p.translate(ctx, sc, u, c, n)
				if !ok {
					return
				}
				emit(withSubscriptionID(out, subID))
			}})
			if !gotAck {
				ackWG.Done()
			}
			if err != nil && ctx.Err() == nil {
				p.log.Warn("upstream subscription stream ended", "server", u.id, "err", err)
			}
		}()
	}
	ackWG.Wait()
	mu.Lock()
	if len(agreedURIs) > 0 {
		agreed["resourceSubscriptions"] = agreedURIs
	}
	ack := map[string]any{"_meta": map[string]json.RawMessage{metaSubscriptionID: subID}, "notifications": agreed}
	ackRaw, _ := json.Marshal(ack)
	rep.event(&Message{JSONRPC: "2.0", Method: "notifications/subscriptions/acknowledged", Params: ackRaw})
	acked = true
	for _, n := range pending {
		rep.event(n)
	}
	pending = nil
	mu.Unlock()
	if len(agreed) > 0 {
		<-ctx.Done()
	}
	cancel()
	wg.Wait()
	rep.respond(resultResponse(m.ID, json.RawMessage(`{"resultType":"complete"}`)))
}

// withSubscriptionID sets the agent's subscription id in a notification's
// _meta.
func withSubscriptionID(n *Message, id json.RawMessage) *Message {
	prm, err := parseParams(n.Params)
	if err != nil {
		return n
	}
	var meta map[string]json.RawMessage
	_ = json.Unmarshal(prm["_meta"], &meta)
	if meta == nil {
		meta = map[string]json.RawMessage{}
	}
	meta[metaSubscriptionID] = id
	prm["_meta"], _ = json.Marshal(meta)
	out := *n
	out.Params = prm.raw()
	return &out
}
