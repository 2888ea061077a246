package gateway

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

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/limits"
	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// execution holds the execution layer's components.
type execution struct {
	locks    *lock.Manager
	limiter  *limits.Limiter
	breakers *limits.Breakers
	policy   *policy.Engine // nil without policy.dir
	tools    *toolSchemas
	// totals are the running totals policy reads (policy.totals).
	totals []policyTotal
}

// limitsConfig translates the limits section into the limits package's
// configuration. Every problem is reported at once by limits.New.
func limitsConfig(cfg *config.File) (limits.Config, limits.BreakerConfig, error) {
	var lc limits.Config
	var errs []error
	for i, r := range cfg.Limits.Rates {
		n, per, err := limits.ParseRate(r.Rate)
		if err != nil {
			errs = append(errs, fmt.Errorf("limits.rates[%d].rate: %w", i, err))
		}
		rate := limits.Rate{Name: r.Name, Agent: r.Agent, Server: r.Server, Tool: r.Tool, Actions: r.Actions, Limit: n, Interval: per, Burst: r.Burst}
		for _, d := range r.Per {
			rate.Per = append(rate.Per, limits.Dimension(d))
		}
		lc.Rates = append(lc.Rates, rate)
	}
	for _, c := range cfg.Limits.Concurrency {
		lc.Concurrency = append(lc.Concurrency, limits.Concurrency{Server: c.Server, Tool: c.Tool, Max: c.Max})
	}
	for i, v := range cfg.Limits.Values {
		fm, err := limits.ParseFailMode(v.FailMode)
		if err != nil {
			errs = append(errs, fmt.Errorf("limits.values[%d].fail_mode: %w", i, err))
		}
		val := limits.Value{Name: v.Name, Server: v.Server, Tool: v.Tool, Argument: v.Argument, Decimals: v.Decimals,
			Unit: v.Unit, UnitArgument: v.UnitArgument, Ceiling: v.Ceiling, FailMode: fm}
		for _, t := range v.Totals {
			val.Totals = append(val.Totals, limits.Total{Name: t.Name, Per: limits.Dimension(t.Per), Window: t.Window.Std(), Limit: t.Limit})
		}
		lc.Values = append(lc.Values, val)
	}
	lc.ConcurrencyRetry = cfg.Limits.ConcurrencyRetry.Std()
	lc.MaxHold = cfg.Limits.MaxHold.Std()
	bs := func(b config.Breaker) limits.BreakerSettings {
		return limits.BreakerSettings{Off: b.Off, Failures: b.Failures, Open: b.Open.Std(), Probes: b.Probes, Interval: b.Interval.Std(), Slow: b.Slow.Std()}
	}
	bc := limits.BreakerConfig{Server: bs(cfg.Limits.Breakers.Server), Tool: bs(cfg.Limits.Breakers.Tool)}
	if len(cfg.Limits.Breakers.Overrides) > 0 {
		bc.Overrides = map[string]limits.BreakerSettings{}
		for k, b := range cfg.Limits.Breakers.Overrides {
			bc.Overrides[k] = bs(b)
		}
	}
	return lc, bc, errors.Join(errs...)
}

// Validate checks what config.Load cannot: that the limits, breakers,
// policies and semantic settings of cfg build. It reads the policy
// directories and the semantic remotes' secret files but opens no store or
// listener and loads no classifier (serve --check).
func Validate(cfg *config.File) error {
	var errs []error
	if err := validateTrustSources(cfg); err != nil {
		errs = append(errs, err)
	}
	if !cfg.Semantic.Disabled {
		if _, err := SemanticConfig(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	lc, bc, err := limitsConfig(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	lc.Ledger = limits.NewMemoryLedger()
	if l, err := limits.New(lc); err != nil {
		errs = append(errs, err)
	} else if _, err := policyTotals(cfg, l); err != nil {
		errs = append(errs, err)
	}
	if _, err := limits.NewBreakers(bc); err != nil {
		errs = append(errs, err)
	}
	schema, err := newToolSchemas(cfg).schema()
	if err != nil {
		errs = append(errs, err)
	}
	for _, dir := range []string{cfg.Policy.Dir, cfg.Policy.ShadowDir} {
		if dir == "" {
			continue
		}
		if _, err := policy.Load(cfg.Path(dir), schema); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// policyTotal is a running total policy reads as context.totals.<name>.
type policyTotal struct {
	name string
	view *limits.TotalView
}

// policyTotals resolves policy.totals against the limiter's value rules;
// the error names every entry that names no total, or several.
func policyTotals(cfg *config.File, l *limits.Limiter) ([]policyTotal, error) {
	var out []policyTotal
	var errs []error
	for i, t := range cfg.Policy.Totals {
		v, err := l.View(limits.TotalRef{Value: t.Value, Per: limits.Dimension(t.Per), Window: t.Window.Std()})
		if err != nil {
			errs = append(errs, fmt.Errorf("policy.totals[%d] (%s): %w", i, t.Name, err))
			continue
		}
		out = append(out, policyTotal{name: t.Name, view: v})
	}
	return out, errors.Join(errs...)
}

// openExecution builds the execution layer's stages: locks, policy,
// limits, breakers (in that order, after authentication).
func (g *Gateway) openExecution(ctx context.Context) ([]pipeline.Stage, error) {
	cfg := g.cfg
	x := &execution{tools: newToolSchemas(cfg)}
	g.exec = x

	lockStore, err := store.NewLocks(ctx, g.db)
	if err != nil {
		return nil, err
	}
	fm, err := lock.ParseFailMode(cfg.Locks.FailMode)
	if err != nil {
		return nil, fmt.Errorf("locks.fail_mode: %w", err)
	}
	if x.locks, err = lock.New(ctx, lock.Config{Store: lockStore, Audit: g.auditLockChange, PollInterval: cfg.Locks.PollInterval.Std(),
		MaxStale: cfg.Locks.MaxStale.Std(), FailMode: fm, Registerer: g.registerer, Logger: g.log, Now: g.now}); err != nil {
		return nil, err
	}

	lc, bc, err := limitsConfig(cfg)
	if err != nil {
		return nil, err
	}
	if len(lc.Values) > 0 {
		ledger, err := store.NewTotals(ctx, g.db)
		if err != nil {
			return nil, err
		}
		lc.Ledger = ledger
		lc.AsyncSettle = true
	}
	lc.Registerer, lc.Logger, lc.Now = g.registerer, g.log, g.now
	if x.limiter, err = limits.New(lc); err != nil {
		return nil, err
	}
	bc.Registerer, bc.Logger = g.registerer, g.log
	if x.breakers, err = limits.NewBreakers(bc); err != nil {
		return nil, err
	}

	stages := []pipeline.Stage{x.locks}
	if g.semantic != nil {
		stages = append(stages, semanticStage{semanticScreen{e: g.semantic, t: g.tel, failed: g.controlFailed}})
	}
	if cfg.Policy.Dir != "" {
		schema, err := x.tools.schema()
		if err != nil {
			return nil, err
		}
		x.policy = policy.NewEngine(policy.Config{Schema: schema, Logger: g.log, OnShadow: g.recordShadow})
		if err := x.policy.Reload(cfg.Path(cfg.Policy.Dir)); err != nil {
			return nil, err
		}
		if cfg.Policy.ShadowDir != "" {
			files, err := policy.ReadDir(cfg.Path(cfg.Policy.ShadowDir))
			if err != nil {
				return nil, err
			}
			if err := x.policy.SetShadow(files); err != nil {
				return nil, fmt.Errorf("shadow policies: %w", err)
			}
		}
		if x.totals, err = policyTotals(cfg, x.limiter); err != nil {
			return nil, err
		}
		stages = append(stages, &policyStage{e: x.policy, agents: g.agentInfo, totals: x.totals, now: g.now})
	}
	// Governance settles challenges before single-use tokens are spent and
	// before limits reserve anything: a held call consumes nothing.
	stages = append(stages, approvalStage{g: g})
	if len(cfg.Identity.SingleUseLabels) > 0 {
		su := singleUse{cache: g.replay}
		for _, l := range cfg.Identity.SingleUseLabels {
			su.labels = append(su.labels, verdict.Label(l))
		}
		stages = append(stages, su)
	}
	stages = append(stages, x.limiter, x.breakers)
	return stages, nil
}

// runExecution runs the execution layer's background work until ctx ends.
func (x *execution) run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = x.locks.Run(ctx) }()
	go func() { defer wg.Done(); _ = x.limiter.Run(ctx) }()
	wg.Wait()
	return nil
}

// agentMeta is what the policy needs of an agent beyond the token.
type agentMeta struct {
	Hosting string
	Groups  []string
}

// agentInfo reads the agent's hosting pattern and groups from the registry
// (agents of the configuration file are in it too, seeded at start). An
// error means the policy cannot decide.
func (g *Gateway) agentInfo(ctx context.Context, id string) (agentMeta, error) {
	a, err := g.agents.Agent(ctx, id)
	if err != nil {
		return agentMeta{}, fmt.Errorf("reading agent %s from the registry: %w", id, err)
	}
	return agentMeta{Hosting: a.Hosting, Groups: a.Groups}, nil
}

// policyStage is the Cedar authorization stage.
type policyStage struct {
	e      *policy.Engine
	agents func(ctx context.Context, id string) (agentMeta, error)
	// totals are read from the limits ledger for every decision.
	totals []policyTotal
	now    func() time.Time
}

func (s *policyStage) Name() string { return "policy" }

// actions maps pipeline actions to Cedar actions, by phase.
var (
	callActions = map[string]policy.Action{
		pipeline.ActionCallTool: policy.CallTool, pipeline.ActionReadResource: policy.ReadResource, pipeline.ActionGetPrompt: policy.GetPrompt,
		pipeline.ActionComplete: policy.Complete, pipeline.ActionSample: policy.Sample, pipeline.ActionElicit: policy.Elicit,
		pipeline.ActionSubscribe: policy.ReadResource,
	}
	listActions = map[string]policy.Action{
		pipeline.ActionCallTool: policy.ListTools, pipeline.ActionReadResource: policy.ListResources, pipeline.ActionGetPrompt: policy.ListPrompts,
	}
)

// Check implements pipeline.Stage. Requests that name no target (lists as
// a whole, initialize, ping) are not policy decisions: their items are.
func (s *policyStage) Check(ctx context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	var act policy.Action
	var ok bool
	if r.Phase == pipeline.PhaseList {
		act, ok = listActions[r.Action]
	} else {
		act, ok = callActions[r.Action]
	}
	if !ok || r.Server == "" {
		return verdict.Verdict{}, nil
	}
	a, err := s.agents(ctx, r.Caller.Agent)
	if err != nil {
		return verdict.Verdict{}, err
	}
	req := policy.Request{Action: act, Agent: policy.Agent{ID: r.Caller.Agent, Owner: r.Caller.Owner, Hosting: a.Hosting, Groups: a.Groups},
		Server: r.Server, Labels: r.Labels, SessionLabels: r.SessionLabels, Now: s.now()}
	if r.Caller.User != "" {
		req.User = &policy.User{ID: r.Caller.User, Groups: r.Caller.UserGroups, Tags: r.Caller.UserTags}
	}
	if c := r.Caller; c.Task != "" {
		req.Task = &policy.Task{ID: c.Task, Purpose: c.TaskPurpose, NotBefore: c.TaskNotBefore, NotAfter: c.TaskNotAfter}
	}
	if w := r.Caller.Workload; w != nil {
		req.Source = &policy.Source{TrustSource: w.TrustSource, Kind: w.Kind, Tenant: w.Tenant, Subject: w.Subject}
	}
	if len(s.totals) > 0 {
		req.Totals = make(map[string]float64, len(s.totals))
		for _, t := range s.totals {
			if req.Totals[t.name], err = t.view.Used(ctx, r); err != nil {
				return verdict.Verdict{}, err
			}
		}
	}
	if r.Findings != nil && r.Phase == pipeline.PhaseCall {
		req.Findings = &policy.Findings{Scores: r.Findings.Scores, Kinds: r.Findings.Kinds}
	}
	switch act {
	case policy.CallTool, policy.ListTools:
		req.Tool = r.Target
		req.Arguments = r.Arguments
		if len(req.Arguments) == 0 {
			req.Arguments = json.RawMessage(`{}`)
		}
	case policy.ReadResource, policy.ListResources:
		req.Resource = r.Target
	case policy.GetPrompt, policy.ListPrompts:
		req.Prompt = r.Target
	case policy.Complete:
		if strings.Contains(r.Target, "://") {
			req.Resource = r.Target
		} else {
			req.Prompt = r.Target
		}
	}
	d := s.e.Decide(req)
	r.PolicyVersion = d.Version
	return d.Verdict(), nil
}

// toolSchemas tracks the upstream tools' input schemas and the operator's
// tool configuration, for the policy schema.
type toolSchemas struct {
	mu    sync.Mutex
	cfg   map[string]map[string]config.Tool // server → tool → config
	known map[string]map[string]json.RawMessage
	// totals are the names of policy.totals (context.totals).
	totals []string
}

func newToolSchemas(cfg *config.File) *toolSchemas {
	t := &toolSchemas{cfg: map[string]map[string]config.Tool{}, known: map[string]map[string]json.RawMessage{}}
	for _, s := range cfg.Servers {
		t.cfg[s.ID] = s.Tools
	}
	for _, pt := range cfg.Policy.Totals {
		t.totals = append(t.totals, pt.Name)
	}
	return t
}

// labels returns a tool's risk labels: the operator's, else those derived
// from its MCP annotations.
func (t *toolSchemas) labels(server, tool string, annotations json.RawMessage) []verdict.Label {
	if tc, ok := t.cfg[server][tool]; ok && len(tc.Labels) > 0 {
		out := make([]verdict.Label, len(tc.Labels))
		for i, l := range tc.Labels {
			out[i] = verdict.Label(l)
		}
		return out
	}
	var a policy.Annotations
	if len(annotations) > 0 && json.Unmarshal(annotations, &a) != nil {
		return policy.DefaultLabels(nil)
	}
	return policy.DefaultLabels(&a)
}

// observe records a server's tool schemas; it reports whether anything
// changed.
func (t *toolSchemas) observe(server, tool string, schema json.RawMessage) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.known[server]
	if m == nil {
		m = map[string]json.RawMessage{}
		t.known[server] = m
	}
	if old, ok := m[tool]; ok && string(old) == string(schema) {
		return false
	}
	m[tool] = schema
	return true
}

// schema builds the Cedar schema of the tools seen so far.
func (t *toolSchemas) schema() (*policy.Schema, error) {
	t.mu.Lock()
	var tools []policy.ToolSchema
	for server, m := range t.known {
		for name, sch := range m {
			ts := policy.ToolSchema{Server: server, Name: name, InputSchema: sch}
			if tc, ok := t.cfg[server][name]; ok {
				ts.PathArgs = tc.PathArgs
				for _, l := range tc.Labels {
					ts.Labels = append(ts.Labels, verdict.Label(l))
				}
			}
			tools = append(tools, ts)
		}
	}
	t.mu.Unlock()
	sort.Slice(tools, func(i, j int) bool {
		return tools[i].Server+"/"+tools[i].Name < tools[j].Server+"/"+tools[j].Name
	})
	return policy.SchemaFor(tools, policy.SchemaOptions{Totals: t.totals})
}

// toolsSeen is the MCP proxy's hook: a server presented tool definitions.
// The policy schema follows, so argument conditions are typed by the
// tools' real input schemas.
func (g *Gateway) toolsSeen(server, tool string, inputSchema json.RawMessage) {
	x := g.exec
	if x == nil || !x.tools.observe(server, tool, inputSchema) || x.policy == nil {
		return
	}
	s, err := x.tools.schema()
	if err != nil {
		g.log.Error("building the policy schema failed; keeping the previous one", "server", server, "tool", tool, "err", err)
		return
	}
	if err := x.policy.SetSchema(s); err != nil {
		g.log.Error("the policies do not validate against the tools' new schemas; keeping the previous schema", "server", server, "tool", tool, "err", err)
	}
}

// markFailed marks an administrative event whose change was refused or not
// applied as an OCSF failure (EntityManagement records success), so that a
// search on status_id finds it; detail is a stable code.
func markFailed(ev *audit.Event, detail string) {
	ev.StatusID, ev.Status, ev.StatusDetail = audit.StatusFailure, "Failure", detail
}

// auditLockChange records a kill-switch change (fail closed: the change is
// refused when its record cannot be made).
func (g *Gateway) auditLockChange(ctx context.Context, c lock.Change) error {
	act := audit.EntityCreate
	if c.Action == "unlock" {
		act = audit.EntityDelete
	}
	data, _ := json.Marshal(map[string]any{"scope": c.Lock.Scope, "target": c.Lock.Target, "reason": c.Lock.Reason,
		"expires": c.Lock.Expires, "failed": c.Failed, "error": c.Error})
	ev := audit.EntityManagement(audit.Subject{User: c.By}, act,
		audit.Entity{Type: "lock", UID: string(c.Lock.Scope) + ":" + c.Lock.Target, Name: c.Action, Data: data}, c.Lock.Reason)
	if c.Failed {
		markFailed(ev, "lock."+c.Action+"_not_applied")
	}
	_, err := g.recorder.log.Append(ctx, ev)
	return err
}

// recordShadow records a difference between the enforced and the shadow
// policy sets.
func (g *Gateway) recordShadow(req policy.Request, enforced, shadow policy.Decision) {
	data, _ := json.Marshal(map[string]any{"request": map[string]any{"action": req.Action, "agent": req.Agent.ID, "server": req.Server,
		"tool": req.Tool, "resource": req.Resource, "prompt": req.Prompt}, "enforced": enforced, "shadow": shadow})
	ev := audit.EntityManagement(audit.Subject{Agent: req.Agent.ID}, audit.ActivityOther,
		audit.Entity{Type: "policy_shadow", UID: shadow.Version, Version: enforced.Version, Data: data},
		fmt.Sprintf("shadow policy set decides %s where the enforced set decides %s", shadow.Outcome, enforced.Outcome))
	g.recorder.enqueueEvent(ev)
}

// cancelOnLock cancels in-flight and held requests that a new lock
// matches.
func (g *Gateway) cancelOnLock(l lock.Lock) {
	n := g.proxy.Cancel(func(r *pipeline.Request) bool { return l.Matches(r) })
	if n > 0 {
		g.log.Warn("kill switch cancelled requests in flight", "scope", l.Scope, "target", l.Target, "cancelled", n)
	}
}

// policyRoutes adds the policy admin API.
func (g *Gateway) policyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/policy/reload", func(w http.ResponseWriter, r *http.Request) {
		if g.exec == nil || g.exec.policy == nil {
			writeJSON(w, http.StatusConflict, apiError{"no policy directory is configured"})
			return
		}
		if err := g.reloadPolicies(r.Context(), r.URL.Query().Get("by")); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, apiError{err.Error()})
			return
		}
		out := map[string]string{"version": g.exec.policy.Current().Version()}
		if sh := g.exec.policy.Shadow(); sh != nil {
			out["shadow_version"] = sh.Version()
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]any{"enabled": g.exec != nil && g.exec.policy != nil}
		if g.exec != nil && g.exec.policy != nil {
			if s := g.exec.policy.Current(); s != nil {
				out["version"] = s.Version()
			}
			if s := g.exec.policy.Shadow(); s != nil {
				out["shadow_version"] = s.Version()
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// reloadPolicies reloads the enforced set from policy.dir and, when
// policy.shadow_dir is set, the shadow set from there (SIGHUP and the admin
// API). Each set is swapped in only if it loads, whatever the other does;
// the error names every set refused, with file and line. The attempt is
// audited.
func (g *Gateway) reloadPolicies(ctx context.Context, by string) error {
	err := g.exec.policy.Reload(g.cfg.Path(g.cfg.Policy.Dir))
	if dir := g.cfg.Policy.ShadowDir; dir != "" {
		files, serr := policy.ReadDir(g.cfg.Path(dir))
		if serr == nil {
			serr = g.exec.policy.SetShadow(files)
		}
		if serr != nil {
			err = errors.Join(err, fmt.Errorf("shadow policies: %w", serr))
		}
	}
	if err != nil {
		g.log.Error("policy reload refused; the refused sets stay as they were", "by", by, "err", err)
	}
	g.recordPolicyReload(ctx, by, err)
	return err
}

// recordPolicyReload records a policy reload attempt.
func (g *Gateway) recordPolicyReload(ctx context.Context, by string, err error) {
	version := ""
	if s := g.exec.policy.Current(); s != nil {
		version = s.Version()
	}
	comment := "policy set reloaded"
	if err != nil {
		comment = "policy reload refused: " + err.Error()
	}
	ev := audit.EntityManagement(audit.Subject{User: by}, audit.EntityUpdate, audit.Entity{Type: "policy", UID: "policy-set", Version: version}, comment)
	if err != nil {
		markFailed(ev, "policy.reload_refused")
	}
	if _, aerr := g.recorder.log.Append(ctx, ev); aerr != nil {
		g.log.Error("recording a policy reload failed", "err", aerr)
	}
}
