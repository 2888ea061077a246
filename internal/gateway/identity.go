package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// openIdentity builds the identity layer: the durable agent registry
// (seeded with the configuration's agents), the signing keys, the trust
// sources, the authenticator and the token endpoint.
func (g *Gateway) openIdentity(ctx context.Context) error {
	cfg := g.cfg
	agents, err := store.NewAgents(ctx, g.db, store.AgentsConfig{Audit: g.auditAgentChange, Now: g.now})
	if err != nil {
		return err
	}
	g.agents = agents
	var seed []*identity.Agent
	for _, a := range cfg.Agents {
		ia, err := configAgent(a)
		if err != nil {
			return err
		}
		seed = append(seed, ia)
	}
	if err := agents.Seed(ctx, seed, identity.ChangeInfo{By: "config", Reason: "registered in the configuration file"}); err != nil {
		return fmt.Errorf("seeding the agent registry: %w", err)
	}

	// Keys: a rotating ring, or the single key of signing_key_file.
	if k := cfg.Identity.Keys; k != nil {
		// A superseded key verifies as long as a token it signed can live:
		// unset, retain is the ring's default or max_token_ttl + clock_skew,
		// whichever is longer.
		retain := k.Retain.Std()
		if retain == 0 {
			retain = max(identity.DefaultRetain, cfg.Identity.MaxTokenTTL.Std()+cfg.Identity.ClockSkew.Std())
		}
		if g.ring, err = identity.NewKeyRing(identity.KeyRingConfig{Dir: cfg.Path(k.Dir), Algorithm: k.Algorithm, PublishDelay: k.PublishDelay.Std(),
			Retain: retain, RotateEvery: k.RotateEvery.Std(), ReloadInterval: k.ReloadInterval.Std(), Now: g.now}); err != nil {
			return err
		}
	} else {
		key, err := identity.LoadOrCreateKey(cfg.Path(cfg.Identity.SigningKeyFile))
		if err != nil {
			return err
		}
		g.ring = identity.KeyRingFromKey(key)
	}
	resources := map[string][]string{}
	var audiences []string
	for _, e := range cfg.Endpoints {
		u := g.publicURL + e.Path
		resources[u] = e.Servers
		audiences = append(audiences, u)
	}
	g.minter = &identity.Minter{Keys: g.ring, Issuer: cfg.Identity.Issuer, Audience: cfg.Identity.Audience, MaxTTL: cfg.Identity.MaxTokenTTL.Std(), Now: g.now}
	g.verifier = &identity.TokenVerifier{Ring: g.ring, Issuer: cfg.Identity.Issuer, Audience: cfg.Identity.Audience, Audiences: audiences,
		Skew: cfg.Identity.ClockSkew.Std(), MaxTTL: cfg.Identity.MaxTokenTTL.Std(), Registry: agents, Now: g.now}

	// The replay cache (DPoP proofs, AWS signed requests, single-use
	// tokens) must exist before the trust sources that use it.
	if g.replay, err = store.NewReplay(ctx, g.db, g.now); err != nil {
		return err
	}

	// Trust sources.
	var vs []identity.Verifier
	var direct []string
	var x509 *identity.SPIFFEVerifier
	for _, ts := range cfg.Identity.TrustSources {
		v, err := g.trustSource(ctx, ts)
		if err != nil {
			return fmt.Errorf("trust source %s: %w", ts.Name, err)
		}
		vs = append(vs, v)
		if ts.Direct {
			direct = append(direct, ts.Name)
		}
		if sv, ok := v.(*identity.SPIFFEVerifier); ok && ts.MTLS {
			x509 = sv
		}
	}
	sources, err := identity.NewSources(vs...)
	if err != nil {
		return err
	}
	var dpop *identity.DPoPVerifier
	if cfg.Identity.DPoP != "off" {
		dpop = &identity.DPoPVerifier{Replay: g.replay, Now: g.now}
	}
	base := g.publicURL
	g.authn = &identity.Authenticator{Tokens: g.verifier, Sources: sources, Direct: direct, X509: x509, Registry: agents, DPoP: dpop,
		// The kill switch is the pipeline's first stage: a locked agent's
		// requests are refused with the lock's reason code, on sessions
		// opened before the lock too. Here it stops token issuance.
		PublicURL: base, Audit: g.auditIdentity, Now: g.now, RequireDPoP: cfg.Identity.DPoP == "required",
		Resource: func(r *http.Request) string { return base + r.URL.Path }}
	if len(vs) > 0 {
		if g.tokens, err = identity.NewTokenService(identity.TokenServiceConfig{Minter: g.minter, Sources: sources, Registry: agents,
			Resources: resources, DefaultTTL: cfg.Identity.DefaultTokenTTL.Std(), TokenURL: base + "/oauth/token", DPoP: dpop,
			RequireDPoP: cfg.Identity.DPoP == "required", Audit: g.auditIdentity, Logger: g.log, Now: g.now, Authorize: g.authorizeToken,
			Locked: func(ctx context.Context, agent string) error {
				return g.lockedPrincipal(ctx, &identity.Principal{Agent: &identity.Agent{ID: agent}})
			}}); err != nil {
			return err
		}
	}
	return nil
}

// configAgent converts a configuration agent for the registry.
func configAgent(a config.Agent) (*identity.Agent, error) {
	ia := &identity.Agent{ID: a.ID, Name: a.Name, Owner: a.Owner, Servers: a.Servers, Enabled: !a.Disabled, Hosting: a.Hosting,
		Groups: a.Groups, Tools: a.Tools, Tenants: a.Tenants, Status: identity.StatusActive}
	if a.Disabled {
		ia.Status = identity.StatusSuspended
	}
	if a.Expires != "" {
		t, err := config.ParseTime(a.Expires)
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", a.ID, err)
		}
		ia.Expires = t
	}
	for _, c := range a.Credentials {
		ia.Credentials = append(ia.Credentials, identity.FederatedCredential{Source: c.Source, Tenant: c.Tenant, Subject: c.Subject})
	}
	return ia, nil
}

// validateTrustSources builds every trust source the way a start does,
// for serve --check, and returns all their errors: unreadable or invalid
// JWKS and SPIFFE bundle files, bad trust domains, options a verifier
// refuses. A SPIFFE source that reads its bundles from the Workload API is
// skipped: checking it means connecting to the agent, which a start does.
func validateTrustSources(cfg *config.File) error {
	g := &Gateway{cfg: cfg, now: time.Now}
	var errs []error
	var vs []identity.Verifier
	for i, ts := range cfg.Identity.TrustSources {
		if ts.Kind == "spiffe" && ts.BundleFile == "" {
			continue
		}
		v, err := g.trustSource(context.Background(), ts)
		if err != nil {
			errs = append(errs, fmt.Errorf("identity.trust_sources[%d] (%s): %w", i, ts.Name, err))
			continue
		}
		vs = append(vs, v)
	}
	if _, err := identity.NewSources(vs...); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// trustSource builds one verifier from its configuration.
func (g *Gateway) trustSource(ctx context.Context, ts config.TrustSource) (identity.Verifier, error) {
	policy := identity.TrustPolicy{Issuer: ts.Issuer, Audience: ts.Audience, Subjects: ts.Subjects, SubjectPrefixes: ts.SubjectPrefixes,
		Algorithms: ts.Algorithms, MaxAge: ts.MaxAge.Std(), Skew: g.cfg.Identity.ClockSkew.Std()}
	var keys identity.KeySource
	if ts.JWKSFile != "" {
		k, err := identity.LoadStaticKeys(g.cfg.Path(ts.JWKSFile))
		if err != nil {
			return nil, err
		}
		keys = k
	}
	switch ts.Kind {
	case "oidc":
		return identity.NewOIDCVerifier(identity.OIDCConfig{Name: ts.Name, Policy: policy, Keys: keys, Users: ts.Users, UserTags: ts.UserTags, Now: g.now})
	case "kubernetes":
		kc := identity.KubernetesConfig{Name: ts.Name, Policy: policy, Keys: keys, Now: g.now}
		if tr := ts.TokenReview; tr != nil {
			kc.TokenReviewURL, kc.ReviewTTL = tr.URL, tr.Cache.Std()
			file := g.cfg.Path(tr.BearerFile)
			kc.TokenReviewBearer = func() (string, error) {
				b, err := os.ReadFile(file)
				return strings.TrimSpace(string(b)), err
			}
		}
		return identity.NewKubernetesVerifier(kc)
	case "entra":
		return identity.NewEntraVerifier(identity.EntraConfig{Name: ts.Name, Tenants: ts.Tenants, Audience: ts.Audience, Versions: ts.Versions,
			Authority: ts.Authority, Users: ts.Users, UserTags: ts.UserTags, Algorithms: ts.Algorithms, MaxAge: ts.MaxAge.Std(), Skew: g.cfg.Identity.ClockSkew.Std(), Keys: keys, Now: g.now})
	case "aws":
		return identity.NewAWSVerifier(identity.AWSConfig{Name: ts.Name, Audience: ts.Audience, AudienceHeader: ts.AudienceHeader, Endpoints: ts.Endpoints,
			Accounts: ts.Accounts, AllowUsers: ts.AllowUsers, MaxAge: ts.MaxAge.Std(), Replay: g.replay, Now: g.now})
	case "spiffe":
		td, err := spiffeid.TrustDomainFromString(ts.TrustDomain)
		if err != nil {
			return nil, err
		}
		var bundles identity.SPIFFEBundles
		if ts.BundleFile != "" {
			b, err := spiffebundle.Load(td, g.cfg.Path(ts.BundleFile))
			if err != nil {
				return nil, fmt.Errorf("loading the SPIFFE bundle: %w", err)
			}
			bundles = b
		} else {
			src, err := workloadapi.NewBundleSource(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(ts.WorkloadAPI)))
			if err != nil {
				return nil, fmt.Errorf("connecting to the SPIFFE Workload API: %w", err)
			}
			g.closers = append(g.closers, src.Close)
			bundles = src
		}
		return identity.NewSPIFFEVerifier(identity.SPIFFEConfig{Name: ts.Name, TrustDomain: ts.TrustDomain, Audience: ts.Audience, IDs: ts.IDs,
			IDPrefixes: ts.IDPrefixes, Algorithms: ts.Algorithms, MaxAge: ts.MaxAge.Std(), Skew: g.cfg.Identity.ClockSkew.Std(), Bundles: bundles, Now: g.now})
	}
	return nil, fmt.Errorf("unknown kind %q", ts.Kind)
}

// lockedPrincipal is the kill switch at authentication: an agent (or its
// user or task) under a lock cannot authenticate or obtain tokens.
func (g *Gateway) lockedPrincipal(_ context.Context, p *identity.Principal) error {
	if g.exec == nil || g.exec.locks == nil || p.Agent == nil {
		return nil
	}
	c := &pipeline.Caller{Agent: p.Agent.ID, User: p.User, Task: p.Task}
	for _, l := range g.exec.locks.Active() {
		if l.BarsCaller(c) {
			return fmt.Errorf("%s lock on %q", l.Scope, l.Target)
		}
	}
	return nil
}

// authorizeToken is the token service's policy check. The registry (the
// agent is active, unexpired and its credential registered), the agent's
// baseline (the scope) and the kill switch were checked before; with a
// policy directory, the Cedar action request_token must then allow a token
// reaching each of its servers — any other outcome refuses the exchange
// (a token cannot wait for approval). Deciding fails closed.
func (g *Gateway) authorizeToken(ctx context.Context, r *identity.ExchangeRequest) (*identity.Grant, error) {
	if g.exec == nil || g.exec.policy == nil {
		return nil, nil
	}
	a := r.Agent
	req := policy.Request{Action: policy.RequestToken, Agent: policy.Agent{ID: a.ID, Owner: a.Owner, Hosting: a.Hosting, Groups: a.Groups},
		TokenLifetime: r.TTL, Now: g.now()}
	caller := &pipeline.Caller{Agent: a.ID, Task: r.Task}
	if u := r.User; u != nil {
		caller.User = u.Issuer + "#" + u.Subject
		req.User = &policy.User{ID: caller.User, Groups: u.Groups, Tags: u.Tags}
	}
	if r.Task != "" {
		req.Task = &policy.Task{ID: r.Task, Purpose: r.TaskPurpose, NotBefore: r.TaskNotBefore, NotAfter: r.TaskNotAfter}
	}
	if w := r.Workload; w != nil {
		// The workload credential being exchanged: the token's source.
		req.Source = &policy.Source{TrustSource: w.Source, Kind: w.Kind, Tenant: w.Tenant, Subject: w.Subject}
		caller.Source = w.Source + ":" + w.Subject
		caller.Workload = &pipeline.Workload{TrustSource: w.Source, Kind: w.Kind, Tenant: w.Tenant, Subject: w.Subject}
	}
	if len(g.exec.totals) > 0 {
		req.Totals = make(map[string]float64, len(g.exec.totals))
		pr := &pipeline.Request{Caller: caller}
		for _, t := range g.exec.totals {
			v, err := t.view.Used(ctx, pr)
			if err != nil {
				return nil, err
			}
			req.Totals[t.name] = v
		}
	}
	for _, srv := range r.Servers {
		req.Server, req.TokenTools = srv, nil
		for _, t := range r.Tools {
			if strings.HasPrefix(t, srv+"/") {
				req.TokenTools = append(req.TokenTools, t)
			}
		}
		d := g.exec.policy.Decide(req)
		if d.Outcome != verdict.Allow {
			if len(d.Diagnostics) > 0 {
				g.log.Warn("token policy could not decide", "agent", a.ID, "server", srv, "diagnostics", d.Diagnostics)
			}
			return nil, fmt.Errorf("%s for a token reaching server %s (policies %s, version %s)", d.Code(), srv, strings.Join(d.Policies, ", "), d.Version)
		}
	}
	return nil, nil
}

// auditIdentity records authentications and token exchanges.
func (g *Gateway) auditIdentity(ctx context.Context, e identity.Event) error {
	s := identitySubject(ctx, e)
	v := verdict.Verdict{}
	if !e.Success {
		v = verdict.Deny(verdict.Identity, "identity."+e.Code, e.Code)
	}
	var ev *audit.Event
	if e.Type == "token.exchange" && e.Success {
		privs := make([]string, 0, len(e.Servers)+len(e.Tools))
		for _, sv := range e.Servers {
			privs = append(privs, "server:"+sv)
		}
		for _, t := range e.Tools {
			privs = append(privs, "tool:"+t)
		}
		ev = audit.AuthorizeSession(s, privs, v)
	} else {
		issuer, method := "", e.Method
		if e.Workload != nil {
			issuer = e.Workload.Issuer
		}
		detail := e.Code
		if e.Code == identity.CodePolicy && e.Detail != "" {
			// Which policies refused the token (internal detail: the agent
			// is told only policy_denied).
			detail = e.Detail
		}
		ev = audit.Authentication(s, audit.Auth{Issuer: issuer, Method: method, Failed: !e.Success, Detail: detail}, v)
	}
	u := ev.Unmapped
	for _, a := range e.Act {
		u.Act = append(u.Act, a.Subject)
	}
	if e.TokenID != "" {
		u.TokenID = e.TokenID
	}
	if w := e.Workload; w != nil && !w.User && len(w.Attributes) > 0 {
		u.Workload = maps.Clone(w.Attributes)
	}
	if e.Success || e.Type == "token.exchange" {
		// Issued tokens must be on record before they are handed out.
		_, err := g.recorder.log.Append(ctx, ev)
		return err
	}
	g.recorder.enqueueEvent(ev)
	return nil
}

// auditAgentChange records a registry change (its failure refuses the
// change).
func (g *Gateway) auditAgentChange(ctx context.Context, c identity.AgentChange) error {
	act := map[string]int{"agent.create": audit.EntityCreate, "agent.update": audit.EntityUpdate, "agent.suspend": audit.EntitySuspend,
		"agent.resume": audit.EntityResume, "agent.retire": audit.EntityDisable}[c.Action]
	if act == 0 {
		act = audit.ActivityOther
	}
	var data json.RawMessage
	if c.After != nil {
		data, _ = json.Marshal(c.After)
	}
	id := ""
	switch {
	case c.After != nil:
		id = c.After.ID
	case c.Before != nil:
		id = c.Before.ID
	}
	comment := c.Action + ": " + c.Reason
	if c.Failed {
		comment = c.Action + " not applied: " + c.Error
	}
	ev := audit.EntityManagement(audit.Subject{User: c.By}, act, audit.Entity{Type: "agent", UID: id, Name: id, Data: data}, comment)
	if c.Failed {
		markFailed(ev, "agent.not_applied")
	}
	_, err := g.recorder.log.Append(ctx, ev)
	return err
}

// authenticate is the MCP proxy's Authenticator.
func (g *Gateway) authenticate(r *http.Request) (*pipeline.Caller, error) {
	if r.Header.Get("Authorization") == "" && g.cfg.Identity.AnonymousAgent != "" {
		a, err := g.agents.Agent(r.Context(), g.cfg.Identity.AnonymousAgent)
		if err != nil || !a.Enabled {
			return nil, &identity.Error{Code: identity.CodeAgentDisabled, Message: "the anonymous agent is not available"}
		}
		return &pipeline.Caller{Agent: a.ID, Owner: a.Owner, Servers: a.Servers, Method: "anonymous"}, nil
	}
	p, err := g.authn.Authenticate(r.Context(), r)
	if err != nil {
		return nil, err
	}
	c := &pipeline.Caller{Agent: p.Agent.ID, Owner: p.Agent.Owner, User: p.User, Task: p.Task, Method: p.Method, TokenID: p.TokenID,
		TokenExpiry: p.Expiry, Tools: p.Tools, AgentTools: p.Agent.Tools,
		TaskPurpose: p.TaskPurpose, TaskNotBefore: p.TaskNotBefore, TaskNotAfter: p.TaskNotAfter, UserGroups: p.UserGroups, UserTags: p.UserTags}
	for _, s := range p.Agent.Servers {
		if p.MayUseServer(s) {
			c.Servers = append(c.Servers, s)
		}
	}
	for _, a := range p.Act {
		c.Act = append(c.Act, a.Subject)
	}
	if w := p.Source; w != nil {
		// A gateway token's recorded workload, or the workload credential
		// itself when presented directly.
		c.Source = w.TrustSource + ":" + w.Subject
		c.Workload = &pipeline.Workload{TrustSource: w.TrustSource, Kind: w.Kind, Tenant: w.Tenant, Subject: w.Subject}
	}
	return c, nil
}

// singleUse is the stage that consumes the presented gateway token on a
// call to a tool with a single-use label (identity.single_use_labels): a
// replayed token cannot repeat such a call (jti replay protection for
// side-effecting calls). Only gateway tokens, which carry a jti and a short
// lifetime, can be spent; a workload credential presented directly (or an
// anonymous caller) is refused for such tools and must exchange it for a
// task token first.
type singleUse struct {
	labels []verdict.Label
	cache  identity.ReplayCache
}

func (s singleUse) Name() string { return "single_use" }

func (s singleUse) Check(ctx context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	if r.Phase != pipeline.PhaseCall || r.Caller == nil {
		return verdict.Verdict{}, nil
	}
	hit := false
	for _, l := range r.Labels {
		hit = hit || slices.Contains(s.labels, l)
	}
	if !hit {
		return verdict.Verdict{}, nil
	}
	c := r.Caller
	if c.Method != "gatehouse-jwt" || c.TokenID == "" {
		return verdict.Deny(verdict.Identity, "identity.task_token_required",
			"this tool needs a single-use gateway token: exchange the workload credential at the token endpoint"), nil
	}
	until := c.TokenExpiry
	if until.IsZero() {
		until = time.Now().Add(24 * time.Hour)
	}
	err := s.cache.Use(ctx, "jti:"+c.TokenID, until.Add(time.Minute))
	if errors.Is(err, identity.ErrReplay) {
		return verdict.Deny(verdict.Identity, "identity.token_replayed", "this token was already used for a single-use call"), nil
	}
	return verdict.Verdict{}, err
}

// identityRoutes mounts the token endpoint and the metadata documents on
// the agent listener.
func (g *Gateway) identityRoutes(mux *http.ServeMux) {
	base := g.publicURL
	if g.tokens != nil {
		mux.Handle("POST /oauth/token", g.traced("token_exchange", g.tokens))
	}
	mux.Handle("GET /.well-known/jwks.json", g.ring)
	mux.Handle("GET /.well-known/oauth-authorization-server", identity.NewAuthServerMetadata(g.cfg.Identity.Issuer, base, g.cfg.Identity.DPoP != "off"))
	// Metadata exists for the protected resources, the MCP endpoints: a
	// document for any other path would name a resource whose tokens the
	// gateway refuses (invalid_target).
	endpoints := map[string]string{} // metadata path → endpoint path
	for _, e := range g.cfg.Endpoints {
		endpoints[identity.ResourceMetadataURL("", e.Path)] = e.Path
	}
	meta := func(w http.ResponseWriter, r *http.Request) {
		path, ok := endpoints[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		identity.ResourceMetadata{Resource: base + path, AuthorizationServers: []string{g.cfg.Identity.Issuer}, JWKSURI: base + "/.well-known/jwks.json",
			DPoPBoundRequired: g.cfg.Identity.DPoP == "required"}.ServeHTTP(w, r)
	}
	mux.HandleFunc("GET /.well-known/oauth-protected-resource/", meta)
	mux.HandleFunc("GET /.well-known/oauth-protected-resource", meta)
}
