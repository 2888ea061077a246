package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// scope is what one request is handled within: the endpoint, the caller,
// and the session (nil on stateless endpoints).
type scope struct {
	p       *Proxy
	ep      *endpoint
	caller  *pipeline.Caller
	sess    *session
	version string
	// modern marks a protocol 2026-07-28 request (stateless, per-request
	// _meta, standard headers).
	modern bool
	// paramHeaders are the Mcp-Param-* headers computed for the upstream
	// request.
	paramHeaders http.Header
	// reqHeader are the agent's HTTP request headers (2026 requests).
	reqHeader http.Header
}

// conn returns the connection to server for this scope, dialing when
// needed (a session re-dials a connection that died).
func (sc *scope) conn(ctx context.Context, u *upstream) (conn, error) {
	if sc.modern {
		return u.modernConn(ctx)
	}
	if sc.sess == nil {
		return u.shared(ctx, sc.version)
	}
	s := sc.sess
	s.mu.Lock()
	c, ok := s.conns[u.id]
	s.mu.Unlock()
	if ok && c.alive() {
		return c, nil
	}
	nc, err := u.dial(ctx, s.initParams)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if cur, ok := s.conns[u.id]; ok && cur.alive() {
		s.mu.Unlock()
		nc.close()
		return cur, nil
	}
	s.conns[u.id] = nc
	listening := s.listening
	s.mu.Unlock()
	if ok {
		c.close()
	}
	if listening {
		sc.p.listenTo(s, u.id, nc)
	}
	return nc, nil
}

func (sc *scope) sessionKey() string {
	if sc.sess == nil {
		return ""
	}
	return sc.sess.key
}

func (sc *scope) labels() []verdict.Label {
	if sc.sess == nil {
		return nil
	}
	return sc.sess.labelList()
}

// request builds the pipeline description of a request.
func (sc *scope) request(m *Message, action string, u *upstream, target, exposed string) *pipeline.Request {
	r := &pipeline.Request{
		ID: newCorrelationID(), Time: sc.p.cfg.Now(), Protocol: "mcp", Method: m.Method, Action: action,
		Caller: sc.caller, Session: sc.sessionKey(), Endpoint: sc.ep.path, Target: target, Exposed: exposed,
		SessionLabels: sc.labels(),
	}
	if u != nil {
		r.Server = u.id
	}
	return r
}

// initialize opens a session: it initializes every server the caller may
// use with the agent's own parameters and answers with the merged result.
func (p *Proxy) initialize(w http.ResponseWriter, r *http.Request, ep *endpoint, caller *pipeline.Caller, m *Message) {
	prm, err := parseParams(m.Params)
	if err != nil {
		writeMessage(w, http.StatusOK, errorResponse(m.ID, CodeInvalidParams, "invalid initialize params", nil))
		return
	}
	requested, _ := prm.str("protocolVersion")
	version := legacyVersion(requested)
	prm.setStr("protocolVersion", version)
	initParams := prm.raw()

	req := &pipeline.Request{ID: newCorrelationID(), Time: p.cfg.Now(), Protocol: "mcp", Method: "initialize", Action: pipeline.ActionOther, Caller: caller, Endpoint: ep.path}
	if v := p.cfg.Mediator.Admit(r.Context(), req); v.Outcome != verdict.Allow {
		writeMessage(w, http.StatusOK, deniedResponse(m.ID, req, v))
		return
	}

	ctx, cancel := context.WithCancel(p.ctx)
	s := &session{key: newSessionKey(), ep: ep, caller: caller, initParams: initParams, ctx: ctx, cancel: cancel,
		conns: map[string]conn{}, labels: map[verdict.Label]bool{}, s2c: map[string]*s2cRequest{}, standalone: newQueue(512)}
	s.touch(p.cfg.Now())

	type dialed struct {
		u   *upstream
		c   conn
		err error
	}
	var usable []*upstream
	for _, u := range ep.servers {
		if caller.MayUse(u.id) {
			usable = append(usable, u)
		}
	}
	results := make([]dialed, len(usable))
	var wg sync.WaitGroup
	for i, u := range usable {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := u.dial(r.Context(), initParams)
			results[i] = dialed{u, c, err}
		}()
	}
	wg.Wait()
	var inits []*initResult
	var servers []string
	for _, d := range results {
		if d.err != nil {
			p.log.Warn("upstream initialization failed", "server", d.u.id, "agent", caller.Agent, "err", d.err)
			p.cfg.Mediator.Refuse(r.Context(), &pipeline.Request{ID: req.ID, Time: p.cfg.Now(), Protocol: "mcp", Method: "initialize",
				Action: pipeline.ActionOther, Caller: caller, Endpoint: ep.path, Server: d.u.id},
				verdict.Deny(verdict.Core, "upstream.unavailable", publicUpstreamMessage(d.err)))
			continue
		}
		s.conns[d.u.id] = d.c
		inits = append(inits, d.c.init())
		servers = append(servers, d.u.id)
	}
	if len(inits) == 0 && len(usable) > 0 {
		cancel()
		writeMessage(w, http.StatusOK, errorResponse(m.ID, CodeUpstream, "no upstream server is available", nil))
		return
	}
	var result json.RawMessage
	if !ep.namespace && len(inits) == 1 {
		result = inits[0].Raw
		s.version = inits[0].ProtocolVersion
	} else {
		result, s.version = p.mergeInit(version, servers, inits)
	}
	if p.cfg.Instructions != nil {
		if extra := p.cfg.Instructions(s.key); extra != "" {
			result = appendInstructions(result, extra)
		}
	}
	if p.sessions.add(s) {
		p.cfg.Observer.SessionsChanged(1)
	} else {
		for _, c := range s.conns {
			c.close()
		}
		cancel()
		writeMessage(w, http.StatusServiceUnavailable, errorResponse(m.ID, CodeInternalError, "too many sessions", nil))
		return
	}
	w.Header().Set("Mcp-Session-Id", s.key)
	writeMessage(w, http.StatusOK, resultResponse(m.ID, result))
}

// legacyVersion is the revision negotiated for an initialize that asks
// for v: v itself when the gateway speaks it with sessions, else the newest
// legacy revision (2026-07-28 has no initialize).
func legacyVersion(v string) string {
	for _, l := range legacyVersions {
		if v == l {
			return v
		}
	}
	return legacyVersions[0]
}

// initializeStateless answers initialize on a stateless endpoint: the
// merged result of the pooled connections, and no session.
func (p *Proxy) initializeStateless(w http.ResponseWriter, r *http.Request, sc *scope, m *Message) {
	prm, err := parseParams(m.Params)
	if err != nil {
		writeMessage(w, http.StatusOK, errorResponse(m.ID, CodeInvalidParams, "invalid initialize params", nil))
		return
	}
	requested, _ := prm.str("protocolVersion")
	sc.version = legacyVersion(requested)
	req := sc.request(m, pipeline.ActionOther, nil, "", "")
	if v := p.cfg.Mediator.Admit(r.Context(), req); v.Outcome != verdict.Allow {
		writeMessage(w, http.StatusOK, deniedResponse(m.ID, req, v))
		return
	}
	var inits []*initResult
	var servers []string
	for _, u := range sc.ep.servers {
		if !sc.caller.MayUse(u.id) {
			continue
		}
		c, err := u.shared(r.Context(), sc.version)
		if err != nil {
			p.log.Warn("upstream initialization failed", "server", u.id, "err", err)
			continue
		}
		inits = append(inits, c.init())
		servers = append(servers, u.id)
	}
	if len(inits) == 0 && p.usableCount(sc) > 0 {
		writeMessage(w, http.StatusOK, errorResponse(m.ID, CodeUpstream, "no upstream server is available", nil))
		return
	}
	var result json.RawMessage
	if !sc.ep.namespace && len(inits) == 1 {
		result = inits[0].Raw
	} else {
		result, _ = p.mergeInit(sc.version, servers, inits)
	}
	writeMessage(w, http.StatusOK, resultResponse(m.ID, result))
}

// mergeInit builds the initialize result of an aggregating endpoint.
func (p *Proxy) mergeInit(version string, servers []string, inits []*initResult) (json.RawMessage, string) {
	caps := map[string]map[string]any{}
	var instr []string
	for i, ir := range inits {
		if ir.ProtocolVersion < version {
			version = ir.ProtocolVersion
		}
		var c map[string]json.RawMessage
		_ = json.Unmarshal(ir.Capabilities, &c)
		for name, raw := range c {
			var sub map[string]any
			_ = json.Unmarshal(raw, &sub)
			m := caps[name]
			if m == nil {
				m = map[string]any{}
				caps[name] = m
			}
			for k, v := range sub {
				if b, ok := v.(bool); ok {
					prev, _ := m[k].(bool)
					m[k] = prev || b
				} else if _, ok := m[k]; !ok {
					m[k] = v
				}
			}
		}
		if ir.Instructions != "" {
			instr = append(instr, fmt.Sprintf("## Server %q (tools and prompts prefixed %q)\n%s", servers[i], servers[i]+nameSep, ir.Instructions))
		}
	}
	res := map[string]any{
		"protocolVersion": version,
		"capabilities":    caps,
		"serverInfo":      p.cfg.ServerInfo,
	}
	if len(instr) > 0 {
		res["instructions"] = strings.Join(instr, "\n\n")
	}
	b, _ := json.Marshal(res)
	return b, version
}

// handleRequest routes one request of the agent.
func (p *Proxy) handleRequest(ctx context.Context, sc *scope, rep *reply, m *Message) {
	var cancel context.CancelFunc
	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	if sc.sess != nil {
		sc.sess.trackCall(m.ID, cancel)
		defer sc.sess.untrackCall(m.ID)
	}
	switch m.Method {
	case "ping":
		rep.respond(resultResponse(m.ID, json.RawMessage(`{}`)))
	case "initialize":
		rep.respond(errorResponse(m.ID, CodeInvalidRequest, "the session is already initialized", nil))
	case "tools/list":
		p.list(ctx, sc, rep, m, toolsList)
	case "prompts/list":
		p.list(ctx, sc, rep, m, promptsList)
	case "resources/list":
		p.list(ctx, sc, rep, m, resourcesList)
	case "resources/templates/list":
		p.list(ctx, sc, rep, m, templatesList)
	case "tools/call":
		p.callTool(ctx, sc, rep, m)
	case "prompts/get":
		p.routeByName(ctx, sc, rep, m, pipeline.ActionGetPrompt)
	case "resources/read":
		p.routeByURI(ctx, sc, rep, m, pipeline.ActionReadResource)
	case "resources/subscribe", "resources/unsubscribe":
		p.routeByURI(ctx, sc, rep, m, pipeline.ActionSubscribe)
	case "completion/complete":
		p.complete(ctx, sc, rep, m)
	case "logging/setLevel":
		p.setLevel(ctx, sc, rep, m)
	default:
		p.refuse(ctx, sc.ep, sc.caller, m.Method, verdict.Deny(verdict.Core, "method.unknown", "method not found"))
		rep.respond(errorResponse(m.ID, CodeMethodNotFound, "method not found: "+m.Method, nil))
	}
}

// deniedResponse is the agent's answer to a refused or held request. It
// says "denied by policy" (never "not found") with the reason's code, the
// deciding policies and a short public explanation:
//
//	denied by policy: policy.forbid (share-only-notes)
//	approval required: policy.challenge (payments-over-1000)
func deniedResponse(id json.RawMessage, r *pipeline.Request, v verdict.Verdict) *Message {
	code, msg := deniedMessage(v)
	return errorResponse(id, code, msg, deniedData(r, v))
}

// deniedData is the error data of a refusal.
func deniedData(r *pipeline.Request, v verdict.Verdict) map[string]any {
	reason := v.First()
	data := map[string]any{"reason": reason.Code, "layer": reason.Layer, "correlationId": r.ID}
	if len(reason.Policies) > 0 {
		data["policies"] = reason.Policies
	}
	if reason.RetryAfter > 0 {
		data["retryAfter"] = reason.RetryAfter
	}
	var groups []string
	for _, o := range v.Obligations {
		if o.Kind == verdict.ObligationApproval && o.Group != "" {
			groups = append(groups, o.Group)
		}
	}
	if len(groups) > 0 {
		data["approvers"] = groups
	}
	if pd := v.Pending; pd != nil {
		info := map[string]any{"id": pd.ID, "status": "pending", "statusUrl": pd.URL}
		if !pd.Expires.IsZero() {
			info["expires"] = pd.Expires.UTC()
		}
		if pd.Previous != "" {
			info["previous"] = map[string]string{"id": pd.Previous, "status": pd.PreviousStatus}
		}
		data["approval"] = info
		data["approvalId"], data["statusUrl"] = pd.ID, pd.URL
	}
	return data
}

// deniedMessage is the error code and message of a refusal.
func deniedMessage(v verdict.Verdict) (int, string) {
	reason := v.First()
	msg := "denied by policy"
	code := CodeDenied
	switch {
	case v.Outcome == verdict.Challenge:
		msg, code = "approval required", CodeApprovalRequired
	case reason.Layer != verdict.Execution && reason.Layer != "":
		msg = "denied by " + string(reason.Layer) + " control"
	}
	msg += ": " + reason.Code
	if len(reason.Policies) > 0 {
		msg += " (" + strings.Join(reason.Policies, ", ") + ")"
	}
	if d := reason.Message; d != "" && !strings.HasPrefix(d, "denied by") && !strings.HasPrefix(d, "approval required") {
		msg += ": " + d
	}
	return code, msg
}

func publicUpstreamMessage(err error) string {
	var ue *upstreamError
	if errors.As(err, &ue) {
		return fmt.Sprintf("upstream server %s: %s", ue.server, ue.msg)
	}
	if errors.Is(err, context.Canceled) {
		return "request cancelled"
	}
	return "upstream server failed"
}

// forwardAdmitted forwards an admitted request, cancelable by the kill
// switch while in flight.
func (p *Proxy) forwardAdmitted(ctx context.Context, sc *scope, rep *reply, u *upstream, m *Message, r *pipeline.Request) (*Message, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer p.track(r, cancel)()
	return p.forward(ctx, sc, rep, u, m)
}

// forward sends m to u over the scope's connection, relaying related
// messages to the agent, and returns the response.
func (p *Proxy) forward(ctx context.Context, sc *scope, rep *reply, u *upstream, m *Message) (*Message, error) {
	ctx, end := p.cfg.Observer.StartUpstream(ctx, u.id, m.Method)
	res, err := p.forwardConn(ctx, sc, rep, u, m)
	end(err)
	return res, err
}

func (p *Proxy) forwardConn(ctx context.Context, sc *scope, rep *reply, u *upstream, m *Message) (*Message, error) {
	c, err := sc.conn(ctx, u)
	if err != nil {
		return nil, err
	}
	if sc.modern && (c.init() == nil || c.init().ProtocolVersion < Version20260728) {
		legacy := *m
		legacy.Params = withoutModernMeta(m.Params)
		m = &legacy
	}
	return c.call(ctx, m, &callOpts{
		onMsg:    func(rel *Message) { p.relay(ctx, sc, rep, u, c, rel) },
		onStream: rep.preferStream,
		headers:  sc.paramHeaders,
		long:     m.Method == "subscriptions/listen",
	})
}

// upstreamFailure answers the agent when forwarding failed and records the
// outcome.
func (p *Proxy) upstreamFailure(ctx context.Context, rep *reply, id json.RawMessage, r *pipeline.Request, err error, started time.Time) {
	status := "upstream_error"
	if errors.Is(err, context.Canceled) {
		status = "cancelled"
	}
	msg := publicUpstreamMessage(err)
	p.log.Warn("upstream request failed", "server", r.Server, "method", r.Method, "correlation_id", r.ID, "err", err)
	p.cfg.Mediator.Complete(ctx, r, &pipeline.Outcome{Status: status, Error: msg, Duration: time.Since(started)})
	rep.respond(errorResponse(id, CodeUpstream, msg, map[string]string{"correlationId": r.ID}))
}

func (p *Proxy) callTool(ctx context.Context, sc *scope, rep *reply, m *Message) {
	prm, err := parseParams(m.Params)
	name, ok := prm.str("name")
	if err != nil || !ok || name == "" {
		p.refuse(ctx, sc.ep, sc.caller, m.Method, verdict.Deny(verdict.Core, "request.invalid_params", "tools/call needs a name"))
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params: tools/call needs a name", nil))
		return
	}
	u, tool, ok := sc.ep.resolveName(name)
	if !ok {
		r := sc.request(m, pipeline.ActionCallTool, nil, name, name)
		p.cfg.Mediator.Refuse(ctx, r, verdict.Deny(verdict.Core, "tool.unknown", "unknown tool"))
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "unknown tool: "+name, nil))
		return
	}
	r := sc.request(m, pipeline.ActionCallTool, u, tool, name)
	r.Arguments = prm["arguments"]
	r.SideEffect = true
	if sc.caller.MayUse(u.id) {
		info, err := p.toolInfo(ctx, sc, u, tool)
		switch {
		case err != nil:
			p.cfg.Mediator.Refuse(ctx, r, verdict.Deny(verdict.Core, "upstream.unavailable", publicUpstreamMessage(err)))
			rep.respond(errorResponse(m.ID, CodeUpstream, publicUpstreamMessage(err), map[string]string{"correlationId": r.ID}))
			return
		case info == nil:
			p.cfg.Mediator.Refuse(ctx, r, verdict.Deny(verdict.Core, "tool.unknown", "unknown tool"))
			rep.respond(errorResponse(m.ID, CodeInvalidParams, "unknown tool: "+name, nil))
			return
		case info.Quarantined:
			v := verdict.Deny(verdict.Core, "tool.quarantined", "the tool's definition changed and awaits operator approval")
			p.cfg.Mediator.Refuse(ctx, r, v)
			rep.respond(deniedResponse(m.ID, r, v))
			return
		}
		if u.labels != nil {
			r.Labels = u.labels(tool, info.Annotations)
		}
		r.SideEffect = !readOnly(info.Annotations)
		if err := info.validateArgs(r.Arguments); err != nil {
			code := "arguments.invalid"
			if errors.Is(err, errSchema) {
				code = "tool.invalid_schema"
			}
			p.cfg.Mediator.Refuse(ctx, r, verdict.Deny(verdict.Execution, code, err.Error()))
			rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid arguments: "+err.Error(), map[string]string{"reason": code, "correlationId": r.ID}))
			return
		}
		if sc.modern {
			if err := checkParamHeaders(sc.reqHeader, info.InputSchema, r.Arguments); err != nil {
				p.cfg.Mediator.Refuse(ctx, r, verdict.Deny(verdict.Core, "request.header_mismatch", err.Error()))
				rep.respond(errorResponse(m.ID, CodeHeaderMismatch, err.Error(), nil))
				return
			}
			h, err := paramHeaders(info.InputSchema, r.Arguments)
			if err != nil {
				rep.respond(errorResponse(m.ID, CodeInvalidParams, err.Error(), nil))
				return
			}
			sc.paramHeaders = h
		}
	}
	v := p.admit(ctx, r)
	if v.Outcome != verdict.Allow {
		rep.respond(p.refusal(sc, rep, m, r, v))
		return
	}
	up := *m
	changed := sc.modern && withoutApprovalState(prm)
	if sc.ep.namespace {
		prm.setStr("name", tool)
		changed = true
	}
	if changed {
		up.Params = prm.raw()
	}
	started := time.Now()
	res, err := p.forwardAdmitted(ctx, sc, rep, u, &up, r)
	if err != nil {
		p.upstreamFailure(ctx, rep, m.ID, r, err, started)
		return
	}
	o := &pipeline.Outcome{Status: "ok", Duration: time.Since(started), Result: res.Result}
	if res.Error != nil {
		o.Status, o.Error = "error", res.Error.Message
	} else if isToolError(res.Result) {
		o.Status = "tool_error"
	}
	p.finishCall(ctx, sc, rep, m, r, o, res)
}

// finishCall screens an upstream's answer, records the outcome, raises
// the session's labels and answers the agent: with the (possibly
// redacted) result, or with a refusal when screening withholds it.
func (p *Proxy) finishCall(ctx context.Context, sc *scope, rep *reply, m *Message, r *pipeline.Request, o *pipeline.Outcome, res *Message) {
	if res.Error == nil {
		if v := p.cfg.Mediator.Screen(ctx, r, o); v.Outcome != verdict.Allow {
			o.Status = "withheld"
			res = deniedResponse(m.ID, r, v)
		} else if string(o.Result) != string(res.Result) {
			out := *res
			out.Result = o.Result
			res = &out
		}
	}
	p.cfg.Mediator.Complete(ctx, r, o)
	if sc.sess != nil && len(o.Raise) > 0 {
		sc.sess.addLabels(o.Raise...)
	}
	rep.respond(res)
}

func isToolError(result json.RawMessage) bool {
	var r struct {
		IsError bool `json:"isError"`
	}
	return json.Unmarshal(result, &r) == nil && r.IsError
}

func readOnly(annotations json.RawMessage) bool {
	var a struct {
		ReadOnly bool `json:"readOnlyHint"`
	}
	return json.Unmarshal(annotations, &a) == nil && a.ReadOnly
}

// toolInfo returns what the gateway knows of a tool, listing the server's
// tools when the tool has not been seen yet. It returns nil, nil for a
// tool the server does not have.
func (p *Proxy) toolInfo(ctx context.Context, sc *scope, u *upstream, tool string) (*toolInfo, error) {
	if t, ok := p.catalog.get(u.id, tool); ok {
		return t, nil
	}
	cursor := ""
	for page := 0; page < 100; page++ {
		req := &Message{JSONRPC: "2.0", ID: nextID(), Method: "tools/list"}
		if cursor != "" {
			req.Params, _ = json.Marshal(map[string]string{"cursor": cursor})
		}
		c, err := sc.conn(ctx, u)
		if err != nil {
			return nil, err
		}
		res, err := c.call(ctx, req, nil)
		if err != nil {
			return nil, err
		}
		if res.Error != nil {
			return nil, &upstreamError{server: u.id, msg: "tools/list failed: " + res.Error.Message}
		}
		var page struct {
			Tools      []json.RawMessage `json:"tools"`
			NextCursor string            `json:"nextCursor"`
		}
		if err := json.Unmarshal(res.Result, &page); err != nil {
			return nil, &upstreamError{server: u.id, msg: "invalid tools/list result", err: err}
		}
		for _, raw := range page.Tools {
			if _, err := p.observeTool(ctx, u, raw); err != nil {
				return nil, err
			}
		}
		if t, ok := p.catalog.get(u.id, tool); ok {
			return t, nil
		}
		if page.NextCursor == "" {
			return nil, nil
		}
		cursor = page.NextCursor
	}
	return nil, nil
}

// observeTool records a tool definition a server presented: it updates the
// catalog and, with pinning on, the pin.
func (p *Proxy) observeTool(ctx context.Context, u *upstream, raw json.RawMessage) (*toolInfo, error) {
	var head struct {
		Name        string          `json:"name"`
		Annotations json.RawMessage `json:"annotations"`
		InputSchema json.RawMessage `json:"inputSchema"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.Name == "" {
		return nil, nil // not a tool: dropped from the list
	}
	def, hash, err := canonicalDef(raw)
	if err != nil {
		return nil, nil
	}
	if t, ok := p.catalog.get(u.id, head.Name); ok && t.Hash == hash {
		return t, nil
	}
	info := &toolInfo{Name: head.Name, Hash: hash, Raw: raw, Annotations: head.Annotations, InputSchema: head.InputSchema}
	if p.cfg.OnTool != nil {
		p.cfg.OnTool(u.id, head.Name, head.InputSchema)
	}
	if p.cfg.Pins != nil {
		st, err := p.cfg.Pins.Observe(ctx, u.id, head.Name, hash, def)
		if err != nil {
			// Fail closed: a tool whose pin cannot be checked is not shown.
			return nil, fmt.Errorf("checking the pin of %s/%s: %w", u.id, head.Name, err)
		}
		info.Quarantined = st.Quarantined()
		if info.Quarantined {
			p.log.Warn("tool definition changed; tool quarantined", "server", u.id, "tool", head.Name, "approved", st.Approved, "seen", st.Seen)
		}
	}
	p.catalog.put(u.id, info)
	return info, nil
}

// Requarantine updates the catalog after an operator approved a pin.
func (p *Proxy) PinApproved(server, tool string) { p.catalog.setQuarantine(server, tool, false) }

// listKind describes one of the list methods.
type listKind struct {
	method string
	items  string // result member holding the items
	key    string // member naming an item ("name", "uri", "uriTemplate")
	action string
	byURI  bool
}

var (
	toolsList     = listKind{"tools/list", "tools", "name", pipeline.ActionListTools, false}
	promptsList   = listKind{"prompts/list", "prompts", "name", pipeline.ActionListPrompts, false}
	resourcesList = listKind{"resources/list", "resources", "uri", pipeline.ActionListResource, true}
	templatesList = listKind{"resources/templates/list", "resourceTemplates", "uriTemplate", pipeline.ActionListResource, true}
)

// list answers a list method. On an aggregating endpoint the gateway's
// cursor walks the servers in order, one server's page at a time; items the
// caller may not see (unusable server, policy, quarantine) are left out.
func (p *Proxy) list(ctx context.Context, sc *scope, rep *reply, m *Message, k listKind) {
	prm, err := parseParams(m.Params)
	if err != nil {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params", nil))
		return
	}
	r := sc.request(m, k.action, nil, "", "")
	if v := p.cfg.Mediator.Admit(ctx, r); v.Outcome == verdict.Block {
		rep.respond(deniedResponse(m.ID, r, v))
		return
	}
	start, upCursor := 0, ""
	if cur, ok := prm.str("cursor"); ok && sc.ep.namespace {
		lc, ok := decodeCursor(cur)
		if !ok || lc.Server >= len(sc.ep.servers) {
			rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid cursor", nil))
			return
		}
		start, upCursor = lc.Server, lc.Cursor
	}
	// Servers are walked in order and their items concatenated, so that a
	// client that ignores cursors still sees every server's first page; a
	// server that pages ends the answer with a cursor into that server.
	var merged map[string]any
	var items []json.RawMessage
	for i := start; i < len(sc.ep.servers); i, upCursor = i+1, "" {
		u := sc.ep.servers[i]
		if !sc.caller.MayUse(u.id) {
			continue
		}
		up := &Message{JSONRPC: "2.0", ID: m.ID, Method: m.Method}
		if sc.ep.namespace {
			q := params{}
			for key, v := range prm {
				if key != "cursor" {
					q[key] = v
				}
			}
			if upCursor != "" {
				q.setStr("cursor", upCursor)
			}
			if len(q) > 0 {
				up.Params = q.raw()
			}
		} else {
			up.Params = m.Params
		}
		res, err := p.forward(ctx, sc, rep, u, up)
		if err != nil || res.Error != nil {
			if !sc.ep.namespace {
				if err != nil {
					rep.respond(errorResponse(m.ID, CodeUpstream, publicUpstreamMessage(err), nil))
				} else {
					rep.respond(res)
				}
				return
			}
			// One failing server must not hide the others' items.
			p.log.Warn("listing failed on one server", "server", u.id, "method", m.Method, "err", err)
			continue
		}
		out, kept, err := p.filterList(ctx, sc, u, res.Result, k, m)
		if err != nil {
			rep.respond(errorResponse(m.ID, CodeInternalError, "internal error checking tool pins", nil))
			return
		}
		if !sc.ep.namespace {
			out[k.items] = kept
			b, _ := json.Marshal(out)
			rep.respond(resultResponse(m.ID, json.RawMessage(b)))
			return
		}
		if merged == nil {
			merged = out
		}
		items = append(items, kept...)
		if nc, _ := out["nextCursor"].(string); nc != "" {
			merged["nextCursor"] = encodeCursor(listCursor{Server: i, Cursor: nc})
			break
		}
		delete(merged, "nextCursor")
	}
	if merged == nil {
		merged = map[string]any{}
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	merged[k.items] = items
	b, _ := json.Marshal(merged)
	rep.respond(resultResponse(m.ID, json.RawMessage(b)))
}

// filterList renames and filters the items of one server's list result.
func (p *Proxy) filterList(ctx context.Context, sc *scope, u *upstream, result json.RawMessage, k listKind, m *Message) (map[string]any, []json.RawMessage, error) {
	var res map[string]json.RawMessage
	if err := json.Unmarshal(result, &res); err != nil {
		return nil, nil, fmt.Errorf("invalid list result: %w", err)
	}
	var items []json.RawMessage
	_ = json.Unmarshal(res[k.items], &items)
	kept := make([]json.RawMessage, 0, len(items))
	for _, raw := range items {
		var item map[string]json.RawMessage
		if json.Unmarshal(raw, &item) != nil {
			continue
		}
		var name string
		if json.Unmarshal(item[k.key], &name) != nil || name == "" {
			continue
		}
		r := sc.request(m, itemAction(k), u, name, "")
		if k.method == "tools/list" {
			info, err := p.observeTool(ctx, u, raw)
			if err != nil {
				return nil, nil, err
			}
			if info == nil || info.Quarantined {
				continue
			}
			if u.labels != nil {
				r.Labels = u.labels(name, info.Annotations)
			}
		}
		var exposed string
		if k.byURI {
			exposed = sc.ep.exposeURI(u.id, name)
		} else {
			exposed = sc.ep.exposeName(u.id, name)
		}
		r.Exposed = exposed
		if !p.cfg.Mediator.Visible(ctx, r) {
			continue
		}
		if exposed != name {
			b, _ := json.Marshal(exposed)
			item[k.key] = b
			raw, _ = json.Marshal(item)
		}
		kept = append(kept, raw)
	}
	out := make(map[string]any, len(res))
	for key, v := range res {
		out[key] = v
	}
	delete(out, k.items)
	if nc, ok := res["nextCursor"]; ok {
		var s string
		_ = json.Unmarshal(nc, &s)
		out["nextCursor"] = s
	}
	return out, kept, nil
}

// itemAction is the action a listed item is checked for at list time.
func itemAction(k listKind) string {
	switch k.method {
	case "tools/list":
		return pipeline.ActionCallTool
	case "prompts/list":
		return pipeline.ActionGetPrompt
	}
	return pipeline.ActionReadResource
}

// routeByName forwards a request naming a prompt.
func (p *Proxy) routeByName(ctx context.Context, sc *scope, rep *reply, m *Message, action string) {
	prm, err := parseParams(m.Params)
	name, ok := prm.str("name")
	if err != nil || !ok {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params: name is required", nil))
		return
	}
	u, target, ok := sc.ep.resolveName(name)
	if !ok {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "unknown prompt: "+name, nil))
		return
	}
	r := sc.request(m, action, u, target, name)
	r.Arguments = prm["arguments"]
	if sc.ep.namespace {
		prm.setStr("name", target)
	}
	p.admitAndForward(ctx, sc, rep, m, u, r, prm, nil)
}

// routeByURI forwards a request naming a resource URI.
func (p *Proxy) routeByURI(ctx context.Context, sc *scope, rep *reply, m *Message, action string) {
	prm, err := parseParams(m.Params)
	uri, ok := prm.str("uri")
	if err != nil || !ok {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params: uri is required", nil))
		return
	}
	u, target, ok := sc.ep.resolveURI(uri)
	if !ok {
		rep.respond(errorResponse(m.ID, CodeResourceNotFound, "resource not found", map[string]string{"uri": uri}))
		return
	}
	r := sc.request(m, action, u, target, uri)
	if sc.ep.namespace {
		prm.setStr("uri", target)
	}
	var fix func(json.RawMessage) json.RawMessage
	if m.Method == "resources/read" && sc.ep.namespace {
		fix = func(res json.RawMessage) json.RawMessage { return rewriteContentsURIs(res, sc.ep, u.id) }
	}
	p.admitAndForward(ctx, sc, rep, m, u, r, prm, fix)
}

// complete forwards completion/complete, routed by its ref.
func (p *Proxy) complete(ctx context.Context, sc *scope, rep *reply, m *Message) {
	prm, err := parseParams(m.Params)
	if err != nil {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params", nil))
		return
	}
	var ref map[string]json.RawMessage
	if json.Unmarshal(prm["ref"], &ref) != nil {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params: ref is required", nil))
		return
	}
	var typ, name string
	_ = json.Unmarshal(ref["type"], &typ)
	var u *upstream
	var target string
	var ok bool
	switch typ {
	case "ref/prompt":
		_ = json.Unmarshal(ref["name"], &name)
		u, target, ok = sc.ep.resolveName(name)
		if ok {
			ref["name"], _ = json.Marshal(target)
		}
	case "ref/resource":
		_ = json.Unmarshal(ref["uri"], &name)
		u, target, ok = sc.ep.resolveURI(name)
		if ok {
			ref["uri"], _ = json.Marshal(target)
		}
	}
	if !ok {
		rep.respond(errorResponse(m.ID, CodeInvalidParams, "invalid params: unknown completion reference", nil))
		return
	}
	r := sc.request(m, pipeline.ActionComplete, u, target, name)
	r.Arguments = prm["argument"]
	prm["ref"], _ = json.Marshal(ref)
	p.admitAndForward(ctx, sc, rep, m, u, r, prm, nil)
}

func (p *Proxy) admitAndForward(ctx context.Context, sc *scope, rep *reply, m *Message, u *upstream, r *pipeline.Request, prm params, fix func(json.RawMessage) json.RawMessage) {
	v := p.cfg.Mediator.Admit(ctx, r)
	if v.Outcome != verdict.Allow {
		rep.respond(deniedResponse(m.ID, r, v))
		return
	}
	up := *m
	up.Params = prm.raw()
	started := time.Now()
	res, err := p.forwardAdmitted(ctx, sc, rep, u, &up, r)
	if err != nil {
		p.upstreamFailure(ctx, rep, m.ID, r, err, started)
		return
	}
	if res.Error == nil && fix != nil {
		out := *res
		out.Result = fix(res.Result)
		res = &out
	}
	o := &pipeline.Outcome{Status: "ok", Duration: time.Since(started), Result: res.Result}
	if res.Error != nil {
		o.Status, o.Error = "error", res.Error.Message
	}
	p.finishCall(ctx, sc, rep, m, r, o, res)
}

// rewriteContentsURIs namespaces the uri of each item of a resources/read
// result.
func rewriteContentsURIs(result json.RawMessage, ep *endpoint, server string) json.RawMessage {
	var res map[string]json.RawMessage
	if json.Unmarshal(result, &res) != nil {
		return result
	}
	var contents []map[string]json.RawMessage
	if json.Unmarshal(res["contents"], &contents) != nil {
		return result
	}
	for _, c := range contents {
		var uri string
		if json.Unmarshal(c["uri"], &uri) == nil && uri != "" {
			c["uri"], _ = json.Marshal(ep.exposeURI(server, uri))
		}
	}
	res["contents"], _ = json.Marshal(contents)
	b, _ := json.Marshal(res)
	return b
}

// setLevel sends logging/setLevel to every usable server that logs.
func (p *Proxy) setLevel(ctx context.Context, sc *scope, rep *reply, m *Message) {
	r := sc.request(m, pipeline.ActionOther, nil, "", "")
	if v := p.cfg.Mediator.Admit(ctx, r); v.Outcome != verdict.Allow {
		rep.respond(deniedResponse(m.ID, r, v))
		return
	}
	var firstErr *Message
	for _, u := range sc.ep.servers {
		if !sc.caller.MayUse(u.id) {
			continue
		}
		c, err := sc.conn(ctx, u)
		if err != nil || !hasCapability(c.init(), "logging") {
			continue
		}
		res, err := c.call(ctx, &Message{JSONRPC: "2.0", ID: m.ID, Method: m.Method, Params: m.Params}, nil)
		if err == nil && res.Error != nil && firstErr == nil {
			firstErr = res
		}
	}
	if firstErr != nil && !sc.ep.namespace {
		rep.respond(firstErr)
		return
	}
	rep.respond(resultResponse(m.ID, json.RawMessage(`{}`)))
}

func hasCapability(ir *initResult, name string) bool {
	if ir == nil {
		return false
	}
	var caps map[string]json.RawMessage
	if json.Unmarshal(ir.Capabilities, &caps) != nil {
		return false
	}
	_, ok := caps[name]
	return ok
}

// relay passes a message a server sent during a request on to the agent,
// on the request's own stream.
func (p *Proxy) relay(ctx context.Context, sc *scope, rep *reply, u *upstream, c conn, m *Message) {
	out, ok := p.translate(ctx, sc, u, c, m)
	if !ok {
		return
	}
	if !rep.event(out) && sc.sess != nil {
		// The request already finished: use the standalone stream.
		sc.sess.standalone.push(out)
	}
}

// translate maps a server-to-agent message into the agent's view: names
// namespaced, server-to-client requests mediated and given the gateway's
// ids. It reports false when the message must not reach the agent.
func (p *Proxy) translate(ctx context.Context, sc *scope, u *upstream, c conn, m *Message) (*Message, bool) {
	switch {
	case m.IsRequest():
		if m.Method == "ping" {
			_ = c.send(ctx, resultResponse(m.ID, json.RawMessage(`{}`)))
			return nil, false
		}
		if sc.sess == nil {
			_ = c.send(ctx, errorResponse(m.ID, CodeMethodNotFound, "the client cannot receive requests on a stateless endpoint", nil))
			return nil, false
		}
		action := pipeline.ActionOther
		switch m.Method {
		case "sampling/createMessage":
			action = pipeline.ActionSample
		case "elicitation/create":
			action = pipeline.ActionElicit
		}
		r := sc.request(m, action, u, m.Method, m.Method)
		r.Arguments = m.Params
		if v := p.cfg.Mediator.Admit(ctx, r); v.Outcome != verdict.Allow {
			_ = c.send(ctx, deniedResponse(m.ID, r, v))
			return nil, false
		}
		id := sc.sess.registerS2C(&s2cRequest{server: u.id, conn: c, upstream: m.ID, req: r})
		out := *m
		out.ID = id
		return &out, true
	case m.IsNotification():
		switch m.Method {
		case "notifications/resources/updated":
			if prm, err := parseParams(m.Params); err == nil && sc.ep.namespace {
				if uri, ok := prm.str("uri"); ok {
					prm.setStr("uri", sc.ep.exposeURI(u.id, uri))
					out := *m
					out.Params = prm.raw()
					return &out, true
				}
			}
		case "notifications/tools/list_changed":
			// Definitions will be checked against their pins when listed.
		case "notifications/cancelled":
			// The server cancels one of its own requests to the agent.
			if sc.sess != nil {
				if prm, err := parseParams(m.Params); err == nil {
					if id, ok := sc.sess.findS2C(c, prm["requestId"]); ok {
						prm["requestId"] = id
						out := *m
						out.Params = prm.raw()
						return &out, true
					}
				}
			}
			return nil, false
		}
		return m, true
	}
	return nil, false
}

// handleNotification handles a notification from the agent.
func (p *Proxy) handleNotification(ctx context.Context, sc *scope, m *Message) {
	switch m.Method {
	case "notifications/initialized":
		// Each upstream was sent its own when its connection was set up.
	case "notifications/cancelled":
		if sc.sess != nil {
			if prm, err := parseParams(m.Params); err == nil {
				sc.sess.cancelCall(prm["requestId"])
			}
		}
	case "notifications/roots/list_changed":
		if sc.sess == nil {
			return
		}
		sc.sess.mu.Lock()
		conns := make([]conn, 0, len(sc.sess.conns))
		for _, c := range sc.sess.conns {
			conns = append(conns, c)
		}
		sc.sess.mu.Unlock()
		for _, c := range conns {
			_ = c.send(ctx, m)
		}
	default:
		p.log.Debug("dropping notification from agent", "method", m.Method)
	}
}

// handleClientResponse passes the agent's answer to a server-to-client
// request back to the server that asked.
func (p *Proxy) handleClientResponse(ctx context.Context, sc *scope, m *Message) {
	if sc.sess == nil {
		return
	}
	req, ok := sc.sess.takeS2C(m.ID)
	if !ok {
		p.log.Debug("dropping response to an unknown request", "agent", sc.caller.Agent)
		return
	}
	out := *m
	out.ID = req.upstream
	if err := req.conn.send(ctx, &out); err != nil {
		p.log.Warn("delivering the agent's response upstream failed", "server", req.server, "err", err)
	}
}

// startListeners opens the servers' standalone streams for s (once).
func (p *Proxy) startListeners(s *session) {
	s.mu.Lock()
	conns := make(map[string]conn, len(s.conns))
	for id, c := range s.conns {
		conns[id] = c
	}
	s.mu.Unlock()
	ids := make([]string, 0, len(conns))
	for id := range conns {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p.listenTo(s, id, conns[id])
	}
}

// listenTo relays one connection's standalone stream into the session's
// queue for as long as the session lives. It starts at most once per
// connection.
func (p *Proxy) listenTo(s *session, server string, c conn) {
	if !s.markListening(c) {
		return
	}
	u := p.servers[server]
	sc := &scope{p: p, ep: s.ep, caller: s.caller, sess: s, version: s.version}
	go func() {
		err := c.listen(s.ctx, func(m *Message) {
			out, ok := p.translate(s.ctx, sc, u, c, m)
			if !ok {
				return
			}
			if !s.standalone.push(out) && out.IsRequest() {
				_ = c.send(s.ctx, errorResponse(m.ID, CodeInternalError, "the agent's stream is full", nil))
			}
		})
		if err != nil && !errors.Is(err, errNoStream) && s.ctx.Err() == nil {
			p.log.Debug("upstream standalone stream ended", "server", server, "err", err)
		}
	}()
}

// appendInstructions adds text to an initialize result's instructions.
func appendInstructions(result json.RawMessage, extra string) json.RawMessage {
	var res map[string]json.RawMessage
	if json.Unmarshal(result, &res) != nil {
		return result
	}
	var cur string
	_ = json.Unmarshal(res["instructions"], &cur)
	if cur != "" {
		cur += "\n\n"
	}
	res["instructions"], _ = json.Marshal(cur + extra)
	b, err := json.Marshal(res)
	if err != nil {
		return result
	}
	return b
}
