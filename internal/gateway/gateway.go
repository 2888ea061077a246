// Package gateway is the composition root: it turns a validated
// configuration file into running components — store, identity, audit log,
// pipeline, MCP proxy — and serves them on the MCP and admin listeners.
// It is the only package that imports every other one.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/mcp"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/semantic"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/telemetry"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Version is the gateway's version, reported in server info and metrics.
var Version = "0.1.0"

// Options are run-time choices that are not part of the configuration file.
type Options struct {
	Logger *slog.Logger
	// ExtraServers lets the demo add in-process servers' handlers; nil in
	// production.
	Now func() time.Time
}

// Gateway is a running gateway.
type Gateway struct {
	cfg      *config.File
	log      *slog.Logger
	now      func() time.Time
	db       *store.DB
	pins     *store.Pins
	agents   *store.Agents
	ring     *identity.KeyRing
	minter   *identity.Minter
	verifier *identity.TokenVerifier
	authn    *identity.Authenticator
	tokens   *identity.TokenService
	replay   *store.Replay
	recorder *recorder
	exec     *execution
	semantic *semantic.Engine
	tel      *telemetry.T
	// publicURL is the agent listener's external base URL.
	publicURL string
	// metricsToken is the optional scrape credential of /metrics.
	metricsToken string
	// registerer receives every component's metrics.
	registerer prometheus.Registerer
	// controlFailed counts a request a control could not decide
	// (gatehouse_control_failures_total).
	controlFailed func(control, failMode string)
	pipeline      *pipeline.Pipeline
	proxy         *mcp.Proxy
	// approvals runs the governance workflow; approvers are the people
	// who may decide with the admin credential.
	approvals *approval.Manager
	approvers approval.Directory

	adminToken string
	mcpLn      net.Listener
	adminLn    net.Listener
	mcpSrv     *http.Server
	adminSrv   *http.Server
	closers    []func() error
}

// New opens every component and binds the listeners; Run serves.
func New(ctx context.Context, cfg *config.File, opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Gateway{cfg: cfg, log: opts.Logger, now: opts.Now}
	if err := g.open(ctx, opts); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// open builds the components; on error, Close releases what was opened.
func (g *Gateway) open(ctx context.Context, opts Options) (err error) {
	cfg := g.cfg
	if cfg.Identity.AnonymousAgent != "" {
		g.log.Warn("identity.anonymous_agent is set: unauthenticated requests act as this agent; use only for local conformance runs",
			"agent", cfg.Identity.AnonymousAgent)
	}
	if err := g.openTelemetry(); err != nil {
		return err
	}
	g.log = slog.New(telemetry.LogHandler(g.log.Handler()))
	// Listeners are bound first, so that a public URL derived from a
	// listen address with port 0 names the port actually bound.
	if g.mcpLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	if g.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Admin.Listen, err)
	}
	g.publicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	if _, port, _ := net.SplitHostPort(cfg.Listen); port == "0" && strings.HasSuffix(g.publicURL, cfg.Listen) {
		g.publicURL = strings.TrimSuffix(g.publicURL, cfg.Listen) + g.mcpLn.Addr().String()
	}
	dataDir := cfg.Path(cfg.DataDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}

	dsn := filepath.Join(dataDir, "gatehouse.db")
	if cfg.Store.DSNFile != "" {
		if dsn, err = cfg.ReadSecret(cfg.Store.DSNFile); err != nil {
			return err
		}
	}
	if g.db, err = store.Open(ctx, dsn); err != nil {
		return err
	}
	g.closers = append(g.closers, g.db.Close)
	if g.pins, err = store.NewPins(ctx, g.db, opts.Now); err != nil {
		return err
	}

	if g.adminToken, err = loadOrCreateToken(cfg.Path(cfg.Admin.TokenFile)); err != nil {
		return err
	}

	// Audit and pipeline.
	if g.recorder, err = openRecorder(ctx, g); err != nil {
		return err
	}
	g.closers = append(g.closers, g.recorder.Close)
	if err := g.openIdentity(ctx); err != nil {
		return err
	}
	if g.semantic, err = g.openSemantic(); err != nil {
		return err
	}
	if err := g.openGovernance(ctx); err != nil {
		return err
	}
	stages, err := g.openExecution(ctx)
	if err != nil {
		return err
	}
	pc := pipeline.Config{Stages: stages, Recorder: g.recorder, Logger: g.log, Now: opts.Now, Tracer: observer{g.tel}, Failed: func(control string) { g.controlFailed(control, "closed") }}
	if g.semantic != nil {
		pc.Screener = screener{semanticScreen{e: g.semantic, t: g.tel, failed: g.controlFailed}}
	}
	if cfg.Policy.Dir != "" {
		// Information-flow labels matter to policy: with policies they are
		// kept per task and token, beyond the session (pipeline.FlowKey).
		flowDB := g.db
		if g.db.Dialect == store.SQLite {
			// Labels live in a file of their own: every audit commit
			// changes gatehouse.db, which makes SQLite drop a reader's
			// page cache, so reading a task's labels on every call from
			// it meant reading pages cold. flow.db changes only when a
			// label is raised.
			if flowDB, err = store.Open(ctx, filepath.Join(filepath.Dir(g.db.Path), "flow.db")); err != nil {
				return err
			}
			g.closers = append(g.closers, flowDB.Close)
		}
		flow, err := store.NewFlow(ctx, flowDB, opts.Now)
		if err != nil {
			return err
		}
		if flowDB != g.db {
			if err := flow.Adopt(ctx, g.db); err != nil {
				return err
			}
		}
		pc.Flow = flow
	}
	if g.pipeline, err = pipeline.New(pc); err != nil {
		return err
	}

	// MCP proxy.
	pcfg := mcp.Config{
		Mediator:         measured{p: g.pipeline, t: g.tel},
		Observer:         observer{g.tel},
		InjectHeaders:    g.tel.Inject,
		Auth:             g.authenticateTraced,
		MaxBodyBytes:     cfg.Limits.MaxBodyBytes,
		MaxSessions:      cfg.Limits.MaxSessions,
		SessionIdle:      cfg.Limits.SessionIdleTimeout.Std(),
		ResourceMetadata: identity.ResourceMetadataURL(g.publicURL, ""),
		Challenge:        identity.Challenge,
		Logger:           g.log,
		Now:              opts.Now,
		OnTool:           g.toolsSeen,
		AwaitApproval:    g.awaitApproval,
	}
	pcfg.Instructions = g.sessionInstructions()
	if cfg.Pinning.Mode == "enforce" {
		pcfg.Pins = g.pins
	}
	for _, s := range cfg.Servers {
		sc := mcp.ServerConfig{ID: s.ID, URL: s.URL, Command: s.Command, Timeout: s.Timeout.Std(), ConnectTimeout: s.ConnectTimeout.Std(),
			Labels: func(tool string, annotations json.RawMessage) []verdict.Label {
				return g.exec.tools.labels(s.ID, tool, annotations)
			}}
		if s.Dir != "" {
			sc.Dir = cfg.Path(s.Dir)
		}
		if len(s.HeaderFiles) > 0 {
			sc.Headers = http.Header{}
			for h, file := range s.HeaderFiles {
				v, err := cfg.ReadSecret(file)
				if err != nil {
					return fmt.Errorf("server %s: header %s: %w", s.ID, h, err)
				}
				sc.Headers.Set(h, v)
			}
		}
		if len(s.Env)+len(s.EnvFiles) > 0 {
			sc.Env = map[string]string{}
			for k, v := range s.Env {
				sc.Env[k] = v
			}
			for k, file := range s.EnvFiles {
				v, err := cfg.ReadSecret(file)
				if err != nil {
					return fmt.Errorf("server %s: env %s: %w", s.ID, k, err)
				}
				sc.Env[k] = v
			}
		}
		pcfg.Servers = append(pcfg.Servers, sc)
	}
	for _, e := range cfg.Endpoints {
		pcfg.Endpoints = append(pcfg.Endpoints, mcp.EndpointConfig{Path: e.Path, Servers: e.Servers, Namespace: *e.Namespace, Stateless: e.Stateless})
	}
	if g.proxy, err = mcp.New(pcfg); err != nil {
		return err
	}

	g.mcpSrv = &http.Server{Handler: g.tel.Middleware("mcp", g.recoverer("mcp", g.mcpHandler())), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		// Client certificates are requested, not required: an agent may
		// authenticate with an X.509-SVID, which the identity layer
		// verifies against its SPIFFE trust bundle.
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}}
	g.adminSrv = &http.Server{Handler: g.tel.Middleware("admin", g.recoverer("admin", g.adminHandler())), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)}
	return nil
}

// Run serves until ctx ends, then shuts down gracefully.
func (g *Gateway) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	serve := func(srv *http.Server, ln net.Listener, tls bool) func() error {
		return func() error {
			var err error
			if tls {
				err = srv.ServeTLS(ln, g.cfg.Path(g.cfg.TLS.CertFile), g.cfg.Path(g.cfg.TLS.KeyFile))
			} else {
				err = srv.Serve(ln)
			}
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		}
	}
	eg.Go(serve(g.mcpSrv, g.mcpLn, g.cfg.TLS != nil))
	eg.Go(serve(g.adminSrv, g.adminLn, false))
	eg.Go(func() error { return g.recorder.runExporters(ctx) })
	eg.Go(func() error { return g.exec.run(ctx) })
	eg.Go(func() error {
		if err := g.agents.Watch(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("agent registry watch stopped", "err", err)
		}
		return nil
	})
	eg.Go(func() error { _ = g.ring.Run(ctx); return nil })
	eg.Go(func() error { _ = g.approvals.Run(ctx); return nil })
	unsubscribe := g.exec.locks.Subscribe(func(l lock.Lock) {
		g.cancelOnLock(l)
		go g.cancelHeld(context.WithoutCancel(ctx), l)
	})
	defer unsubscribe()
	if g.exec.policy != nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		eg.Go(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-hup:
					_ = g.reloadPolicies(ctx, "SIGHUP")
				}
			}
		})
	}
	eg.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.proxy.Close()
		err := errors.Join(g.mcpSrv.Shutdown(sctx), g.adminSrv.Shutdown(sctx))
		return err
	})
	g.log.Info("gateway serving", "mcp", g.MCPURL(""), "admin", g.AdminURL())
	return eg.Wait()
}

// Close releases what New opened (Run's shutdown closes the servers).
func (g *Gateway) Close() error {
	if g.proxy != nil {
		g.proxy.Close()
	}
	for _, ln := range []net.Listener{g.mcpLn, g.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
	var errs []error
	for i := len(g.closers) - 1; i >= 0; i-- {
		errs = append(errs, g.closers[i]())
	}
	g.closers = nil
	return errors.Join(errs...)
}

// MCPURL returns the URL of an endpoint path on the MCP listener ("" for
// the first endpoint).
func (g *Gateway) MCPURL(path string) string {
	if path == "" && len(g.cfg.Endpoints) > 0 {
		path = g.cfg.Endpoints[0].Path
	}
	scheme := "http"
	if g.cfg.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + g.mcpLn.Addr().String() + path
}

// AdminURL returns the base URL of the admin API.
func (g *Gateway) AdminURL() string { return "http://" + g.adminLn.Addr().String() }

// AdminToken returns the admin credential.
func (g *Gateway) AdminToken() string { return g.adminToken }

// Minter returns the token minter.
func (g *Gateway) Minter() *identity.Minter { return g.minter }

// checkAdmin authenticates an admin API request.
func (g *Gateway) checkAdmin(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(g.adminToken)) == 1
}

// loadOrCreateToken reads the admin credential, creating a random one
// (mode 0600) when the file is missing.
func loadOrCreateToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return "", fmt.Errorf("admin token in %s is shorter than 16 characters", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return loadOrCreateToken(path)
	}
	if err != nil {
		return "", fmt.Errorf("writing admin token: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(tok + "\n"); err != nil {
		return "", err
	}
	return tok, f.Sync()
}
