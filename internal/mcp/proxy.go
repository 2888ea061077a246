// Package mcp is the gateway's MCP mediation proxy. Agents talk MCP over
// Streamable HTTP to the proxy; the proxy talks to upstream MCP servers over
// Streamable HTTP or stdio. Every agent request passes the mediation
// pipeline (the Mediator) before it reaches a server.
//
// The proxy works at the JSON-RPC message level: it decodes only what it
// mediates (method, the target name or URI, arguments, list items) and
// forwards every other member unchanged, so protocol features it does not
// inspect still pass through faithfully. docs/mcp.md explains why this
// package does not build on the go-sdk's typed server.
//
// Model:
//   - An endpoint (a URL path) aggregates one or more upstream servers.
//     With namespacing (the default), names are qualified by server id; see
//     names.go.
//   - In session mode each agent session holds one upstream connection per
//     server, created when the agent initializes, so per-session state on
//     the servers (log level, subscriptions, roots, sampling) stays with the
//     agent that created it. In stateless mode requests share pooled
//     connections.
//   - Request ids are replaced on every upstream connection and restored on
//     the way back; server-to-client requests get ids of the gateway's own,
//     so no two agents or servers can confuse each other's messages.
//
// Invariants: any mediation error refuses the request; every refused
// request gets a protocol-correct error; no message from an agent reaches a
// server that the Mediator did not admit.
package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Mediator decides on agent requests. The gateway's pipeline implements it.
type Mediator interface {
	// Admit decides whether r may be forwarded; when it allows a
	// side-effecting request, the intent is on record before it returns.
	Admit(ctx context.Context, r *pipeline.Request) verdict.Verdict
	// Complete records the outcome of an admitted request.
	Complete(ctx context.Context, r *pipeline.Request, o *pipeline.Outcome)
	// Visible decides whether a listed item is shown to the caller.
	Visible(ctx context.Context, r *pipeline.Request) bool
	// Refuse records a refusal the proxy decided itself (malformed
	// request, unknown tool, quarantined tool, unavailable server).
	Refuse(ctx context.Context, r *pipeline.Request, v verdict.Verdict)
	// Screen screens an upstream's answer before the agent sees it; it may
	// rewrite o.Result and add session labels to o.Raise.
	Screen(ctx context.Context, r *pipeline.Request, o *pipeline.Outcome) verdict.Verdict
}

// Observer receives the proxy's telemetry: a span and a measurement per
// request and per upstream call, and the number of live sessions.
// Implementations must be cheap and safe for concurrent use.
type Observer interface {
	// StartRequest starts the span of an agent request; end is called
	// with "allow", "challenge", "block" or "error".
	StartRequest(ctx context.Context, method, agent string) (_ context.Context, end func(outcome string))
	// StartUpstream starts the span of a call to an upstream server.
	StartUpstream(ctx context.Context, server, method string) (_ context.Context, end func(err error))
	// SessionsChanged is told when a session starts (+1) or ends (-1).
	SessionsChanged(delta int)
}

// Authenticator resolves the caller of an HTTP request. Errors that
// implement AuthError are shown to the agent with their public code.
type Authenticator func(r *http.Request) (*pipeline.Caller, error)

// AuthError is an authentication failure with a public code and message.
type AuthError interface {
	error
	PublicCode() string
	PublicMessage() string
}

// ServerConfig describes an upstream server.
type ServerConfig struct {
	ID string
	// URL of a Streamable HTTP server, or Command of a stdio server.
	URL     string
	Headers http.Header
	Command []string
	Dir     string
	Env     map[string]string
	// Timeout bounds one request (default 60s); ConnectTimeout bounds
	// session setup (default 10s).
	Timeout        time.Duration
	ConnectTimeout time.Duration
	// Labels returns the risk labels of a tool from its annotations (and
	// the operator's configuration). Nil means no labels.
	Labels func(tool string, annotations json.RawMessage) []verdict.Label
}

// EndpointConfig describes an endpoint.
type EndpointConfig struct {
	Path      string
	Servers   []string
	Namespace bool
	Stateless bool
}

// Config configures the proxy. Zero values mean the documented defaults.
type Config struct {
	Endpoints []EndpointConfig
	Servers   []ServerConfig
	Mediator  Mediator      // required
	Auth      Authenticator // required
	// Pins keeps tool pins; nil turns pinning off.
	Pins PinStore
	// MaxBodyBytes caps an agent's request body (default 4 MiB).
	MaxBodyBytes int64
	// MaxSessions caps concurrent sessions (default 10000).
	MaxSessions int
	// SessionIdle closes sessions idle this long (default 30m).
	SessionIdle time.Duration
	// ResourceMetadata is the RFC 9728 well-known metadata URL of the host
	// (https://host/.well-known/oauth-protected-resource). A 401 announces
	// it in WWW-Authenticate followed by the endpoint's path, the metadata
	// URL of the resource the agent asked for (RFC 9728 §3.1); "" announces
	// none.
	ResourceMetadata string
	// Challenge, when set, returns the WWW-Authenticate value of a 401 from
	// the Authenticator's error and the endpoint's metadata URL. Nil means
	// a Bearer challenge with error="invalid_token".
	Challenge func(err error, resourceMetadata string) string
	// AllowedOrigins lists Origin values accepted besides same-origin
	// requests (DNS-rebinding protection).
	AllowedOrigins []string
	// ServerInfo names the gateway in aggregated initialize results.
	ServerInfo json.RawMessage
	// HTTPClient talks to HTTP upstreams (default: a tuned client).
	HTTPClient *http.Client
	// InjectHeaders adds headers (trace context) to upstream requests.
	InjectHeaders func(ctx context.Context, h http.Header)
	// Observer receives telemetry; nil records none.
	Observer Observer
	// Instructions, when set, returns text appended to a new session's
	// initialize instructions (the semantic layer's canary).
	Instructions func(session string) string
	// OnTool, when set, is told of every tool definition a server presents
	// for the first time or changed (for the policy schema).
	OnTool func(server, tool string, inputSchema json.RawMessage)
	// AwaitApproval, when set, returns once the approval id is decided (or
	// ctx ends); a session that was pointed at the approval page with a
	// URL-mode elicitation is then sent notifications/elicitation/complete.
	AwaitApproval func(ctx context.Context, id string) error
	Logger        *slog.Logger
	Now           func() time.Time
}

// Proxy is the MCP mediation proxy.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	endpoints map[string]*endpoint
	servers   map[string]*upstream
	catalog   *catalog
	sessions  *sessionTable

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// inflight holds the admitted requests being forwarded, for the kill
	// switch.
	inflightMu sync.Mutex
	inflight   map[*pipeline.Request]context.CancelFunc
}

// upstream is one configured upstream server.
type upstream struct {
	id     string
	http   *httpServer
	stdio  *stdioServer
	labels func(tool string, annotations json.RawMessage) []verdict.Label

	// pool holds shared connections for stateless endpoints, by protocol
	// version.
	poolMu sync.Mutex
	pool   map[string]conn
	// legacyOnly records that the server does not speak 2026-07-28.
	legacyOnly bool
}

type endpoint struct {
	path      string
	servers   []*upstream
	byID      map[string]*upstream
	namespace bool
	stateless bool
}

// New builds a proxy. It does not contact any server.
func New(cfg Config) (*Proxy, error) {
	if cfg.Mediator == nil || cfg.Auth == nil {
		return nil, errors.New("mcp: Mediator and Auth are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 4 << 20
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 10000
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	if cfg.ServerInfo == nil {
		cfg.ServerInfo = json.RawMessage(`{"name":"gatehouse","title":"Gatehouse MCP gateway","version":"0.1.0"}`)
	}
	if cfg.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 1024
		tr.MaxIdleConnsPerHost = 512
		tr.IdleConnTimeout = 90 * time.Second
		cfg.HTTPClient = &http.Client{
			Transport: tr,
			// Never follow redirects: the upstream URL is what the operator
			// configured, and credentials must not travel elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, endpoints: map[string]*endpoint{}, servers: map[string]*upstream{}, catalog: newCatalog(),
		inflight: map[*pipeline.Request]context.CancelFunc{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for _, s := range cfg.Servers {
		if _, dup := p.servers[s.ID]; dup {
			return nil, fmt.Errorf("mcp: duplicate server %q", s.ID)
		}
		timeout, connect := s.Timeout, s.ConnectTimeout
		if timeout <= 0 {
			timeout = 60 * time.Second
		}
		if connect <= 0 {
			connect = 10 * time.Second
		}
		u := &upstream{id: s.ID, labels: s.Labels, pool: map[string]conn{}}
		switch {
		case s.URL != "" && len(s.Command) == 0:
			u.http = &httpServer{id: s.ID, url: s.URL, headers: s.Headers.Clone(), client: cfg.HTTPClient,
				timeout: timeout, connectTimeout: connect, logger: cfg.Logger, inject: cfg.InjectHeaders}
		case s.URL == "" && len(s.Command) > 0:
			u.stdio = &stdioServer{id: s.ID, argv: s.Command, dir: s.Dir, env: envList(s.Env),
				timeout: timeout, connectTimeout: connect, logger: cfg.Logger}
		default:
			return nil, fmt.Errorf("mcp: server %q needs exactly one of URL and Command", s.ID)
		}
		p.servers[s.ID] = u
	}
	for _, e := range cfg.Endpoints {
		ep := &endpoint{path: e.Path, namespace: e.Namespace, stateless: e.Stateless, byID: map[string]*upstream{}}
		for _, id := range e.Servers {
			u, ok := p.servers[id]
			if !ok {
				return nil, fmt.Errorf("mcp: endpoint %s: unknown server %q", e.Path, id)
			}
			ep.servers = append(ep.servers, u)
			ep.byID[id] = u
		}
		if len(ep.servers) == 0 {
			return nil, fmt.Errorf("mcp: endpoint %s has no servers", e.Path)
		}
		if !ep.namespace && len(ep.servers) != 1 {
			return nil, fmt.Errorf("mcp: endpoint %s: namespacing off needs exactly one server", e.Path)
		}
		p.endpoints[e.Path] = ep
	}
	p.sessions = newSessionTable(cfg.MaxSessions)
	p.wg.Add(1)
	go p.reapIdle()
	return p, nil
}

// Paths returns the endpoint paths, for routing.
func (p *Proxy) Paths() []string {
	out := make([]string, 0, len(p.endpoints))
	for path := range p.endpoints {
		out = append(out, path)
	}
	return out
}

// Close ends every session and upstream connection.
func (p *Proxy) Close() {
	p.cancel()
	for _, s := range p.sessions.all() {
		p.endSession(s)
	}
	for _, u := range p.servers {
		u.poolMu.Lock()
		for _, c := range u.pool {
			c.close()
		}
		u.pool = map[string]conn{}
		u.poolMu.Unlock()
	}
	p.wg.Wait()
}

func (p *Proxy) reapIdle() {
	defer p.wg.Done()
	t := time.NewTicker(min(p.cfg.SessionIdle/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			cutoff := p.cfg.Now().Add(-p.cfg.SessionIdle)
			for _, s := range p.sessions.all() {
				if s.idleSince().Before(cutoff) {
					p.log.Info("closing idle session", "agent", s.caller.Agent, "session", s.key)
					p.endSession(s)
				}
			}
		}
	}
}

// dial opens a connection to u with the given initialize params.
func (u *upstream) dial(ctx context.Context, initParams json.RawMessage) (conn, error) {
	if u.http != nil {
		return u.http.dial(ctx, initParams)
	}
	return u.stdio.dial(ctx, initParams)
}

// shared returns the pooled connection for version, dialing when needed.
func (u *upstream) shared(ctx context.Context, version string) (conn, error) {
	u.poolMu.Lock()
	defer u.poolMu.Unlock()
	if c, ok := u.pool[version]; ok && c.alive() {
		return c, nil
	}
	params, _ := json.Marshal(map[string]any{
		"protocolVersion": version,
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": "gatehouse", "version": "0.1.0"},
	})
	c, err := u.dial(ctx, params)
	if err != nil {
		return nil, err
	}
	u.pool[version] = c
	return c, nil
}

// track registers an admitted request as in flight until the returned
// function is called; cancel ends it early.
func (p *Proxy) track(r *pipeline.Request, cancel context.CancelFunc) func() {
	p.inflightMu.Lock()
	p.inflight[r] = cancel
	p.inflightMu.Unlock()
	return func() {
		p.inflightMu.Lock()
		delete(p.inflight, r)
		p.inflightMu.Unlock()
	}
}

// Cancel cancels every request in flight that match selects (the kill
// switch) and returns how many it cancelled.
func (p *Proxy) Cancel(match func(*pipeline.Request) bool) int {
	p.inflightMu.Lock()
	var cancels []context.CancelFunc
	for r, c := range p.inflight {
		if match(r) {
			cancels = append(cancels, c)
		}
	}
	p.inflightMu.Unlock()
	for _, c := range cancels {
		c()
	}
	return len(cancels)
}

// Sessions returns the number of live sessions.
func (p *Proxy) Sessions() int { return p.sessions.Len() }

type noObserver struct{}

func (noObserver) StartRequest(ctx context.Context, _, _ string) (context.Context, func(string)) {
	return ctx, func(string) {}
}

func (noObserver) StartUpstream(ctx context.Context, _, _ string) (context.Context, func(error)) {
	return ctx, func(error) {}
}

func (noObserver) SessionsChanged(int) {}
