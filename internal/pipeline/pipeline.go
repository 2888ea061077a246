// Package pipeline is the gateway's single request pipeline: every agent
// request, whatever its protocol, is described by a Request and passes the
// same ordered stages:
//
//	authenticate → locks → screen input → validate → authorize → approval →
//	limits → record intent → (forward) → screen output → record outcome
//
// Each stage returns a verdict.Verdict; the pipeline combines them (block >
// challenge > allow) and stops at the first block. A stage that fails
// returns an error, which the pipeline turns into a block: no error ever
// becomes an allow.
//
// Write-ahead: when the verdict allows, the intent record is durable before
// Admit returns, so a request is forwarded only after it is on record. The
// outcome is a second record linked by the correlation id.
//
// Information flow: a request's SessionLabels are its session's labels
// (kept by the transport) joined with the labels kept durably for its task,
// or its token, in a FlowStore (see FlowKey), so that a fresh session or a
// stateless endpoint does not start clean. Labels an output raises are
// durable before the agent sees the output; when they cannot be read or
// written the request is refused, or the output withheld.
//
// The stage interfaces are declared here, by their consumer; the composition
// root (internal/gateway) supplies the implementations.
package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Actions, protocol-independent.
const (
	ActionListTools    = "list_tools"
	ActionCallTool     = "call_tool"
	ActionListResource = "list_resources"
	ActionReadResource = "read_resource"
	ActionListPrompts  = "list_prompts"
	ActionGetPrompt    = "get_prompt"
	ActionComplete     = "complete"
	ActionSubscribe    = "subscribe"
	ActionSample       = "sample" // server-initiated
	ActionElicit       = "elicit" // server-initiated
	ActionOther        = "other"
)

// Phases of a decision. At list time an item (a tool, prompt or resource)
// is checked for visibility and its arguments are unknown; at call time the
// request is about to be forwarded. Stages that count or reserve (rate and
// value limits) act only at call time.
const (
	PhaseList = "list"
	PhaseCall = "call"
)

// Caller is the authenticated principal behind a request.
type Caller struct {
	Agent string
	Owner string
	User  string // on whose behalf, when known
	// UserGroups are User's groups, when the token carries them.
	UserGroups []string
	// UserTags are facts about User from the token (tag name → set), for
	// policy's object scoping.
	UserTags map[string][]string
	Task     string
	Method   string // how the agent authenticated
	// TaskPurpose and the window [TaskNotBefore, TaskNotAfter) describe
	// Task when the token carries them (zero: not given).
	TaskPurpose                 string
	TaskNotBefore, TaskNotAfter time.Time
	// TokenID is the jti of the presented token, TokenExpiry its expiry.
	TokenID     string
	TokenExpiry time.Time
	// Servers lists the servers the agent may use (narrowed by the token).
	Servers []string
	// Tools, when not nil, is the token's tool scope ("server/tool" or
	// "server/*"); AgentTools, when not nil, the agent's baseline tools.
	Tools      []string
	AgentTools []string
	// Act is the delegation chain (RFC 8693 act), current actor first.
	Act []string
	// Source is the verified workload identity behind the token,
	// "<trust source>:<subject>" (the audit record's source, and the
	// instance on a stateless endpoint).
	Source string
	// Workload is that identity in parts, for policy's context.source (nil
	// when the caller proved none, as the anonymous agent).
	Workload *Workload
}

// Workload is a verified workload identity: the trust source that
// verified it, its kind ("oidc", "entra", "aws", "kubernetes", "spiffe"),
// the Entra tenant or AWS account ("" for sources without tenants) and the
// canonical subject.
type Workload struct {
	TrustSource, Kind, Tenant, Subject string
}

// MayCall reports whether the caller's token and baseline permit tool on
// server.
func (c *Caller) MayCall(server, tool string) bool {
	in := func(list []string) bool {
		return list == nil || slices.Contains(list, server+"/"+tool) || slices.Contains(list, server+"/*")
	}
	return in(c.Tools) && in(c.AgentTools)
}

// MayUse reports whether the caller may use server.
func (c *Caller) MayUse(server string) bool {
	for _, s := range c.Servers {
		if s == server {
			return true
		}
	}
	return false
}

// Request describes one mediated request.
type Request struct {
	// ID is the correlation id linking every record of the request.
	ID      string
	TraceID string
	Time    time.Time
	// Protocol is "mcp" (later also "llm").
	Protocol string
	// Method is the protocol method ("tools/call").
	Method string
	// Action is the protocol-independent action (ActionCallTool).
	Action string
	// Phase is PhaseList (visibility of a listed item) or PhaseCall.
	Phase  string
	Caller *Caller
	// Session is the gateway's session key (empty when stateless).
	Session  string
	Endpoint string
	// Server is the upstream server the request goes to (empty for a list
	// spanning several servers).
	Server string
	// Target is the tool or prompt name, or the resource URI, as the
	// upstream server knows it.
	Target string
	// Exposed is the name the agent used (namespaced).
	Exposed string
	// Arguments are the call's arguments (tools/call, prompts/get,
	// completion).
	Arguments json.RawMessage
	// Labels are the target tool's risk labels.
	Labels []verdict.Label
	// SessionLabels are the session's information-flow labels.
	SessionLabels []verdict.Label
	// SideEffect is true when the request may change state upstream; its
	// intent record is then durable before forwarding.
	SideEffect bool
	// PolicyVersion is the version of the policy set that decided (set by
	// the policy stage).
	PolicyVersion string
	// Findings summarise the semantic layer's findings on the request's
	// input (set by the semantic stage, read by the policy stage).
	Findings *Findings

	// admitted lists the stages that allowed the request, so that those
	// holding resources for it (reservations, breaker probes) are told how
	// it ended.
	admitted []Stage
}

// Outcome is what happened to a forwarded request.
type Outcome struct {
	// Status is "ok", "tool_error" (the tool reported an error),
	// "error" (a JSON-RPC error from upstream), "upstream_error" (the
	// upstream failed or was unreachable) or "cancelled".
	Status   string
	Error    string
	Result   json.RawMessage
	Duration time.Duration
	// Raise lists the session labels the request raises (information
	// flow), filled by Screen and Complete: the transport adds them to the
	// session.
	Raise []verdict.Label
	// Verdict is the output screening's verdict (recorded with the
	// outcome).
	Verdict verdict.Verdict
	// Findings summarise the semantic findings on the output.
	Findings *Findings
}

// Findings summarise semantic findings for policy: detector scores in
// [0, 1] and the kinds of finding.
type Findings struct {
	Scores map[string]float64
	Kinds  []string
}

// Screener screens what an upstream returned (tool results, resource
// contents, prompts) before the agent sees it. It may replace o.Result
// (redaction) and add to o.Raise (labels). An error blocks.
type Screener interface {
	ScreenOutput(ctx context.Context, r *Request, o *Outcome) (verdict.Verdict, error)
}

// Stage is one check of the pipeline. Check must be safe for concurrent use.
// An error means the stage could not decide; the pipeline blocks.
type Stage interface {
	Name() string
	Check(ctx context.Context, r *Request) (verdict.Verdict, error)
}

// Resolver is a stage that settles a challenge (governance): at call
// time, when the verdict so far challenges, the pipeline calls Resolve
// instead of Check, and its verdict replaces the one so far — Allow when a
// human approved this exact call, Challenge while approval is pending (the
// request is then held and no later stage runs), Block when approval was
// denied, expired or cannot be decided. Resolve may wait (up to a hold
// timeout) and must return when ctx ends. A resolver that lets the request
// through keeps the reasons of the challenge on record.
type Resolver interface {
	Stage
	Resolve(ctx context.Context, r *Request, v verdict.Verdict) (verdict.Verdict, error)
}

// Finisher is implemented by stages that hold something for an admitted
// request (an in-flight reservation, a circuit-breaker probe): Finish is
// called exactly once for every request the stage allowed, with the outcome
// (Status "refused" when a later stage or the recorder refused it).
type Finisher interface {
	Finish(ctx context.Context, r *Request, o *Outcome)
}

// Record is one entry of the durable record of requests.
type Record struct {
	Kind     string // "decision" (refused or held), "intent", "outcome", "list"
	Request  *Request
	Verdict  verdict.Verdict
	Outcome  *Outcome
	Recorded time.Time
}

// Recorder keeps the durable record. Record returns only when the record is
// durable (or has failed); Enqueue hands a record over for the next durable
// batch without waiting. Both must be safe for concurrent use.
type Recorder interface {
	Record(ctx context.Context, rec *Record) error
	Enqueue(rec *Record)
}

// FlowStore keeps information-flow labels beyond one MCP session, by the
// key FlowKey derives from a request. Implementations must be safe for
// concurrent use, also across replicas sharing the store: Labels returns
// every label raised under key (by any replica) whose time has not passed,
// and Raise is durable on return and never shortens a label's time. An
// error means the labels are unknown; the pipeline then refuses.
type FlowStore interface {
	Labels(ctx context.Context, key string) ([]verdict.Label, error)
	Raise(ctx context.Context, key string, labels []verdict.Label, until time.Time) error
}

// DefaultFlowTTL is how long labels raised under a task (or a credential
// without an expiry) are kept after the last raise.
const DefaultFlowTTL = 24 * time.Hour

// FlowKey returns the key under which the information-flow labels of r are
// kept beyond its session, and until when a label raised now is kept:
//
//   - a task-scoped caller: "task:" + the task id, for ttl after now — every
//     session, endpoint and token of the task shares the labels;
//   - otherwise a token with an id (jti): "token:" + agent + ":" + jti,
//     until the token expires (plus a minute of clock skew) — a fresh
//     session opened with the same token does not start clean;
//   - otherwise, on a stateless endpoint (no session): "principal:" +
//     agent, method and verified source, for ttl — every stateless request
//     of that credential shares the labels;
//   - otherwise (a session whose credential has no id) "": the session's
//     own labels are all there is.
func FlowKey(r *Request, now time.Time, ttl time.Duration) (string, time.Time) {
	c := r.Caller
	switch {
	case c == nil:
		return "", time.Time{}
	case c.Task != "":
		return "task:" + c.Task, now.Add(ttl)
	case c.TokenID != "":
		until := c.TokenExpiry.Add(time.Minute)
		if c.TokenExpiry.IsZero() {
			until = now.Add(ttl)
		}
		return "token:" + c.Agent + ":" + c.TokenID, until
	case r.Session == "":
		return "principal:" + c.Agent + ":" + c.Method + ":" + c.Source, now.Add(ttl)
	}
	return "", time.Time{}
}

// Tracer times the stages (a span and a measurement per stage). It must be
// cheap and safe for concurrent use.
type Tracer interface {
	StartStage(ctx context.Context, stage string) (_ context.Context, end func(err error))
}

// Config configures a Pipeline.
type Config struct {
	// Tracer times each stage; nil times nothing.
	Tracer Tracer
	// Stages run in order before forwarding.
	Stages []Stage
	// Recorder keeps the durable record. Required.
	Recorder Recorder
	// Screener screens outputs; nil passes them unscreened.
	Screener Screener
	// Flow keeps information-flow labels per task and token (FlowKey);
	// nil keeps them in sessions only.
	Flow FlowStore
	// FlowTTL is how long task labels are kept after the last raise.
	// Default DefaultFlowTTL.
	FlowTTL time.Duration
	// Failed, if not nil, is called with the name of a control each time
	// the control could not decide and the request (or, for "screen" and
	// "flow" after forwarding, its output) was refused for it: a stage
	// whose Check or Resolve returned an error (the stage's Name),
	// "flow" when the information-flow labels could not be read or
	// recorded, "screen" when the screener failed. Every such failure fails
	// closed. A request whose context has ended (the client went away, the
	// kill switch cancelled it) is not reported. It is called on the
	// request's goroutine and must not block.
	Failed func(control string)
	Logger *slog.Logger
	Now    func() time.Time
}

// Pipeline runs the stages.
type Pipeline struct {
	cfg Config
}

// New returns a pipeline.
func New(cfg Config) (*Pipeline, error) {
	if cfg.Recorder == nil {
		return nil, fmt.Errorf("pipeline: a recorder is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FlowTTL <= 0 {
		cfg.FlowTTL = DefaultFlowTTL
	}
	if cfg.Failed == nil {
		cfg.Failed = func(string) {}
	}
	if cfg.Tracer == nil {
		cfg.Tracer = nopTracer{}
	}
	return &Pipeline{cfg: cfg}, nil
}

// callStage times stage when r is a call (other phases are not timed).
func (p *Pipeline) callStage(ctx context.Context, r *Request, stage string) (context.Context, func(error)) {
	if r.Phase != PhaseCall {
		return nopTracer{}.StartStage(ctx, stage)
	}
	return p.cfg.Tracer.StartStage(ctx, stage)
}

// nopTracer times nothing (Config.Tracer nil).
type nopTracer struct{}

func (nopTracer) StartStage(ctx context.Context, _ string) (context.Context, func(error)) {
	return ctx, func(error) {}
}

// Admit runs the stages for r and, when the verdict allows, records the
// intent durably. Any stage error, and a failure to record the intent,
// blocks.
func (p *Pipeline) Admit(ctx context.Context, r *Request) verdict.Verdict {
	r.Phase = PhaseCall
	v := p.decide(ctx, r)
	if v.Outcome != verdict.Allow {
		p.finish(ctx, r, &Outcome{Status: "refused"})
	}
	kind := "intent"
	if v.Outcome != verdict.Allow {
		kind = "decision"
	}
	rec := &Record{Kind: kind, Request: r, Verdict: v, Recorded: p.cfg.Now()}
	if v.Outcome == verdict.Allow && !r.SideEffect {
		// Reads need no write-ahead: the record is committed with the next
		// batch.
		p.cfg.Recorder.Enqueue(rec)
		return v
	}
	ctx, end := p.cfg.Tracer.StartStage(ctx, "record_intent")
	err := p.cfg.Recorder.Record(ctx, rec)
	end(err)
	if err != nil {
		p.cfg.Logger.Error("recording request failed; refusing it", "correlation_id", r.ID, "err", err)
		if v.Outcome == verdict.Allow {
			p.finish(ctx, r, &Outcome{Status: "refused"})
		}
		return v.Combine(verdict.Deny(verdict.Audit, "audit.unavailable", "the audit log is unavailable; the request was refused"))
	}
	return v
}

// failed reports that control could not decide r (Config.Failed), unless
// r's context ended: a cancelled request is no failing dependency.
func (p *Pipeline) failed(ctx context.Context, control string) {
	if ctx.Err() == nil {
		p.cfg.Failed(control)
	}
}

// finish tells the stages that admitted r how it ended.
func (p *Pipeline) finish(ctx context.Context, r *Request, o *Outcome) {
	stages := r.admitted
	r.admitted = nil
	for _, s := range stages {
		if f, ok := s.(Finisher); ok {
			f.Finish(ctx, r, o)
		}
	}
}

func (p *Pipeline) decide(ctx context.Context, r *Request) verdict.Verdict {
	var v verdict.Verdict
	if r.Caller == nil {
		return verdict.Deny(verdict.Identity, "identity.unauthenticated", "the request is not authenticated")
	}
	if r.Server != "" && !r.Caller.MayUse(r.Server) {
		return verdict.Deny(verdict.Execution, "server.not_allowed", fmt.Sprintf("agent %s may not use server %s", r.Caller.Agent, r.Server))
	}
	if r.Action == ActionCallTool && r.Server != "" && !r.Caller.MayCall(r.Server, r.Target) {
		return verdict.Deny(verdict.Identity, "token.scope", fmt.Sprintf("the token does not permit %s/%s", r.Server, r.Target))
	}
	if err := p.readFlow(ctx, r); err != nil {
		p.cfg.Logger.Error("reading information-flow labels failed; refusing", "correlation_id", r.ID, "err", err)
		p.failed(ctx, "flow")
		return verdict.Deny(verdict.Core, "flow.unavailable", "the task's information-flow labels are unavailable; the request was refused")
	}
	for _, s := range p.cfg.Stages {
		sctx, end := p.callStage(ctx, r, s.Name())
		if rs, ok := s.(Resolver); ok {
			if r.Phase != PhaseCall || v.Outcome != verdict.Challenge {
				end(nil)
				continue
			}
			rv, err := rs.Resolve(sctx, r, v)
			end(err)
			if err != nil && rv.Outcome != verdict.Block {
				p.cfg.Logger.Error("pipeline stage failed; refusing", "stage", s.Name(), "correlation_id", r.ID, "err", err)
				p.failed(ctx, s.Name())
				return v.Combine(verdict.Deny(verdict.Core, "stage.error", "a control could not decide; the request was refused"))
			}
			if rv.Outcome != verdict.Allow {
				return rv
			}
			v = rv
			r.admitted = append(r.admitted, s)
			continue
		}
		sv, err := s.Check(sctx, r)
		end(err)
		if err != nil {
			p.cfg.Logger.Error("pipeline stage failed; refusing", "stage", s.Name(), "correlation_id", r.ID, "err", err)
			p.failed(ctx, s.Name())
			return v.Combine(verdict.Deny(verdict.Core, "stage.error", "a control could not decide; the request was refused"))
		}
		v = v.Combine(sv)
		if sv.Outcome != verdict.Block {
			r.admitted = append(r.admitted, s)
		}
		if v.Outcome == verdict.Block {
			return v
		}
	}
	return v
}

// readFlow joins the labels kept for r's task or token to its session
// labels. Only requests that name a server are decided by policy, so only
// they read.
func (p *Pipeline) readFlow(ctx context.Context, r *Request) error {
	if p.cfg.Flow == nil || r.Server == "" {
		return nil
	}
	key, _ := FlowKey(r, p.cfg.Now(), p.cfg.FlowTTL)
	if key == "" {
		return nil
	}
	ctx, end := p.callStage(ctx, r, "flow")
	ls, err := p.cfg.Flow.Labels(ctx, key)
	end(err)
	if err != nil {
		return err
	}
	r.SessionLabels = joinLabels(r.SessionLabels, ls)
	return nil
}

// raiseFlow makes the labels an output raises durable under r's task or
// token: those the screener raised, and, when the output is released, those
// of the tool's risk labels (as Complete raises them in the session).
func (p *Pipeline) raiseFlow(ctx context.Context, r *Request, o *Outcome, released bool) error {
	if p.cfg.Flow == nil {
		return nil
	}
	ls := o.Raise
	if released && (o.Status == "ok" || o.Status == "tool_error") {
		ls = joinLabels(ls, SessionLabels(r.Labels))
	}
	if len(ls) == 0 {
		return nil
	}
	key, until := FlowKey(r, p.cfg.Now(), p.cfg.FlowTTL)
	if key == "" {
		return nil
	}
	return p.cfg.Flow.Raise(ctx, key, joinLabels(nil, ls), until)
}

// joinLabels returns the union of a and b, without duplicates, in order of
// first appearance.
func joinLabels(a, b []verdict.Label) []verdict.Label {
	out := make([]verdict.Label, 0, len(a)+len(b))
	for _, l := range slices.Concat(a, b) {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

// Complete records the outcome of a forwarded request. It does not wait
// for durability: the intent is already on record.
func (p *Pipeline) Complete(ctx context.Context, r *Request, o *Outcome) {
	p.finish(ctx, r, o)
	if o.Status == "ok" || o.Status == "tool_error" {
		o.Raise = append(o.Raise, SessionLabels(r.Labels)...)
	}
	p.cfg.Recorder.Enqueue(&Record{Kind: "outcome", Request: r, Outcome: o, Verdict: o.Verdict, Recorded: p.cfg.Now()})
}

// Visible reports whether r (a list-time view of one item) may be shown to
// the caller: the same stages run, and only an allow or a challenge shows
// the item (a challenged tool can still be called, subject to approval).
// Nothing is recorded.
func (p *Pipeline) Visible(ctx context.Context, r *Request) bool {
	r.Phase = PhaseList
	v := p.decide(ctx, r)
	p.finish(ctx, r, &Outcome{Status: "listed"})
	return v.Outcome != verdict.Block
}

// Screen screens the output of a forwarded request and makes the
// information-flow labels it raises durable (FlowStore) before the agent
// sees it. The verdict decides whether the agent sees it; any error blocks.
func (p *Pipeline) Screen(ctx context.Context, r *Request, o *Outcome) verdict.Verdict {
	var v verdict.Verdict
	if p.cfg.Screener != nil && len(o.Result) > 0 {
		sctx, end := p.cfg.Tracer.StartStage(ctx, "screen_output")
		var err error
		v, err = p.cfg.Screener.ScreenOutput(sctx, r, o)
		end(err)
		if err != nil {
			p.cfg.Logger.Error("screening the output failed; withholding it", "correlation_id", r.ID, "err", err)
			p.failed(ctx, "screen")
			v = verdict.Deny(verdict.Semantic, "semantic.error", "the output could not be screened")
		}
	}
	if err := p.raiseFlow(ctx, r, o, v.Outcome == verdict.Allow); err != nil {
		p.cfg.Logger.Error("recording information-flow labels failed; withholding the output", "correlation_id", r.ID, "err", err)
		p.failed(ctx, "flow")
		v = v.Combine(verdict.Deny(verdict.Core, "flow.unavailable", "the labels this output raises could not be recorded; it was withheld"))
	}
	o.Verdict = o.Verdict.Combine(v)
	return v
}

// Refuse records a refusal decided outside the stages (by the transport:
// malformed requests, unknown or quarantined tools). The record is
// committed with the next batch.
func (p *Pipeline) Refuse(_ context.Context, r *Request, v verdict.Verdict) {
	p.cfg.Recorder.Enqueue(&Record{Kind: "decision", Request: r, Verdict: v, Recorded: p.cfg.Now()})
}

// SessionLabels returns the session labels that using a tool with the
// given risk labels raises: reads_private → private_data,
// untrusted_content → untrusted_content.
func SessionLabels(toolLabels []verdict.Label) []verdict.Label {
	var out []verdict.Label
	for _, l := range toolLabels {
		switch l {
		case verdict.ReadsPrivate:
			out = append(out, verdict.SessionPrivateData)
		case verdict.UntrustedContent:
			out = append(out, verdict.SessionUntrustedContent)
		}
	}
	return out
}
