package gateway

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// openGovernance builds the approval manager from the governance section.
func (g *Gateway) openGovernance(ctx context.Context) error {
	gc := g.cfg.Governance
	st, err := store.NewApprovals(ctx, g.db)
	if err != nil {
		return err
	}
	rules := map[string]approval.Rule{}
	for class, r := range gc.Rules {
		rules[class] = approval.Rule{Quorum: r.Quorum, Approvers: r.Approvers, OwnerMayApprove: r.OwnerMayApprove,
			UserMayApprove: r.UserMayApprove, FreshAuth: r.FreshAuth.Std(), ACR: r.ACR, PendingTTL: r.PendingTTL.Std(),
			GrantTTL: r.GrantTTL.Std(), MaxUses: r.MaxUses, ElevationTTL: r.ElevationTTL.Std()}
	}
	notifiers, err := g.notifiers(gc.Notifications)
	if err != nil {
		return err
	}
	mc := approval.Config{
		Store: st, Audit: g.recorder.log.Append, Notifiers: notifiers, Rules: rules,
		AgentOwner:  g.agentOwner,
		PublicURL:   g.publicURL,
		AuditReader: approval.LogReader(g.recorder.log), VerifierKey: g.recorder.vkey,
		SweepInterval: gc.SweepInterval.Std(), NotifyAttempts: gc.Notifications.Attempts,
		NotifyBackoff: gc.Notifications.Backoff.Std(), NotifyMaxBackoff: gc.Notifications.MaxBackoff.Std(),
		Logger: g.log, Registerer: g.registerer, Now: g.now,
		// gatehouse_approvals_pending counts the store's pending requests
		// (every replica's), recounted after each sweep.
		Pending: g.tel.ApprovalsPending,
	}
	if bg := gc.BreakGlass; bg != nil {
		mc.BreakGlass = approval.BreakGlass{Group: bg.Group, TTL: bg.TTL.Std(), MinJustification: bg.MinJustification}
	}
	if g.approvals, err = approval.New(mc); err != nil {
		return fmt.Errorf("governance: %w", err)
	}
	g.approvers = approval.Directory{}
	for name, a := range gc.Approvers {
		g.approvers[name] = approval.DirectoryEntry{Groups: a.Groups, NonHuman: a.NonHuman}
	}
	return nil
}

// notifiers builds the approval notifiers; their secrets are read from
// files.
func (g *Gateway) notifiers(nc config.Notifications) ([]approval.Notifier, error) {
	var out []approval.Notifier
	for _, w := range nc.Webhooks {
		secret, err := g.cfg.ReadSecret(w.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("governance webhook %s: %w", w.ID, err)
		}
		out = append(out, &approval.Webhook{ID: w.ID, URL: w.URL, Secret: []byte(secret), Events: w.Events, IncludeEvidence: w.IncludeEvidence})
	}
	for _, s := range nc.Slack {
		u, err := g.cfg.ReadSecret(s.URLFile)
		if err != nil {
			return nil, fmt.Errorf("governance slack %s: %w", s.ID, err)
		}
		out = append(out, &approval.Slack{ID: s.ID, URL: u, Events: s.Events})
	}
	return out, nil
}

// agentOwner returns an agent's owner from the registry.
func (g *Gateway) agentOwner(ctx context.Context, agent string) (string, error) {
	a, err := g.agents.Agent(ctx, agent)
	if err != nil {
		return "", err
	}
	return a.Owner, nil
}

// approvalStage is the pipeline's governance stage: it settles the
// challenges of tool calls through the approval manager (see
// pipeline.Resolver).
type approvalStage struct{ g *Gateway }

func (approvalStage) Name() string { return "approval" }

func (approvalStage) Check(context.Context, *pipeline.Request) (verdict.Verdict, error) {
	return verdict.Verdict{}, nil
}

// Resolve asks for (or finds) human approval of a challenged tool call.
// Other challenged requests (prompts, resources) stay refused with
// "approval required": an approval binds a tool call's exact arguments.
func (s approvalStage) Resolve(ctx context.Context, r *pipeline.Request, v verdict.Verdict) (verdict.Verdict, error) {
	g := s.g
	if r.Action != pipeline.ActionCallTool || r.Caller == nil {
		return v, nil
	}
	value, lv := g.exec.limiter.CallValue(r)
	if lv.Outcome == verdict.Block {
		// Above the ceiling (or invalid): refused whatever approval
		// could say, and no one is asked.
		return v.Combine(lv), nil
	}
	c := r.Caller
	ev := approval.Evidence{
		Correlation: r.ID, Agent: c.Agent, Owner: c.Owner, User: c.User, Task: c.Task, AuthMethod: c.Method,
		Server: r.Server, Tool: r.Target, Exposed: r.Exposed, Arguments: r.Arguments, PolicyVersion: r.PolicyVersion,
		Value: value, Obligations: v.Obligations, Reasons: v.Reasons, Labels: r.Labels, SessionLabels: r.SessionLabels,
	}
	if len(ev.Arguments) == 0 {
		ev.Arguments = []byte("{}")
	}
	res, err := g.approvals.Gate(ctx, ev, approval.Use{Correlation: r.ID, Value: value}, g.cfg.Governance.HoldTimeout.Std())
	if err != nil {
		if ctx.Err() != nil {
			g.log.Info("held call cancelled", "correlation_id", r.ID, "agent", c.Agent, "tool", r.Server+"/"+r.Target)
		} else {
			g.log.Error("approval could not be decided; refusing", "correlation_id", r.ID, "err", err)
		}
	}
	switch res.Verdict.Outcome {
	case verdict.Allow:
		out := verdict.Verdict{Outcome: verdict.Allow, Reasons: append(append([]verdict.Reason(nil), v.Reasons...), res.Verdict.Reasons...)}
		for _, o := range v.Obligations {
			if o.Kind != verdict.ObligationApproval {
				out.Obligations = append(out.Obligations, o)
			}
		}
		return out, nil
	case verdict.Challenge:
		out := v.Combine(res.Verdict)
		if res.Approval != nil {
			out.Pending = &verdict.Pending{ID: res.Approval.ID, URL: res.URL, Expires: res.Approval.Expires}
			if p := res.Previous; p != nil {
				out.Pending.Previous, out.Pending.PreviousStatus = p.ID, string(p.Status)
			}
		}
		return out, nil
	}
	// Block: the reasons of the challenge stay on record, the refusal
	// (denied, expired, cancelled, an error) decides.
	out := verdict.Verdict{Outcome: verdict.Block, Reasons: append(append([]verdict.Reason(nil), res.Verdict.Reasons...), v.Reasons...)}
	return out, nil
}

// awaitApproval returns once the approval id is no longer pending.
func (g *Gateway) awaitApproval(ctx context.Context, id string) error {
	_, err := g.approvals.Wait(ctx, id)
	return err
}

// cancelHeld cancels the pending approvals in a lock's scope, so that held
// calls on every replica return.
func (g *Gateway) cancelHeld(ctx context.Context, l lock.Lock) {
	n, err := g.approvals.CancelHeld(ctx, string(l.Scope), l.Target, l.By, "kill switch: "+l.Reason)
	switch {
	case err != nil:
		g.log.Error("cancelling held calls failed", "scope", l.Scope, "target", l.Target, "err", err)
	case n > 0:
		g.log.Warn("kill switch cancelled held calls", "scope", l.Scope, "target", l.Target, "cancelled", n)
	}
}

// governanceRoutes adds the approvals admin API, and agent retirement's
// revocation of grants, to the admin mux.
func (g *Gateway) governanceRoutes(mux *http.ServeMux, agents http.Handler) {
	h := g.approvals.Handler(approval.HandlerConfig{Approver: g.approvers.AdminToken("admin")})
	for _, p := range []string{"/v1/approvals", "/v1/approvals/", "/v1/elevations", "/v1/reviews", "/v1/reviews/"} {
		mux.Handle(p, h)
	}
	mux.HandleFunc("POST /v1/agents/{id}/retire", func(w http.ResponseWriter, r *http.Request) {
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		agents.ServeHTTP(rec, r)
		if rec.status != http.StatusOK {
			return
		}
		id := r.PathValue("id")
		n, err := g.approvals.RevokeAgent(context.WithoutCancel(r.Context()), id, "agent retirement")
		if err != nil {
			g.log.Error("revoking a retired agent's approvals failed", "agent", id, "err", err)
			return
		}
		g.log.Info("agent retired; its approvals and grants are revoked", "agent", id, "revoked", n)
	})
	mux.HandleFunc("GET /v1/agents/review", g.adminAgentsReview)
}

// statusWriter records the status an inner handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// adminAgentsReview serves the agent lifecycle review:
// GET /v1/agents/review?days=30[&format=markdown].
func (g *Gateway) adminAgentsReview(w http.ResponseWriter, r *http.Request) {
	days := 30
	if s := r.URL.Query().Get("days"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 3660 {
			writeJSON(w, http.StatusBadRequest, apiError{"days must be a whole number of days between 1 and 3660"})
			return
		}
		days = n
	}
	rep, err := g.agentsReview(r.Context(), time.Duration(days)*24*time.Hour)
	if err != nil {
		g.log.Error("agent review failed", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{"the review could not be built: " + err.Error()})
		return
	}
	if r.URL.Query().Get("format") == "markdown" {
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = rep.Markdown(w)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// reviewMaxUses bounds the audit records one review reads per agent.
const reviewMaxUses = 200000

// agentsReview builds the lifecycle review from the registry and the
// audit log's allowed tool calls in the window.
func (g *Gateway) agentsReview(ctx context.Context, window time.Duration) (approval.LifecycleReport, error) {
	list, err := g.agents.List(ctx)
	if err != nil {
		return approval.LifecycleReport{}, err
	}
	now := g.now()
	since := now.Add(-window)
	var records []approval.AgentRecord
	var uses []approval.ToolUse
	for _, a := range list {
		rec := approval.AgentRecord{ID: a.ID, Owner: a.Owner, Expires: a.Expires, Disabled: !a.Enabled || a.Status == identity.StatusSuspended || a.Status == identity.StatusRetired}
		if a.Tools != nil {
			rec.Permitted = append(rec.Permitted, a.Tools...)
		} else {
			for _, s := range a.Servers {
				rec.Permitted = append(rec.Permitted, s+"/*")
			}
		}
		records = append(records, rec)
		n := 0
		for from := int64(0); n < reviewMaxUses; {
			recs, err := g.recorder.log.Query(ctx, audit.Filter{Agent: a.ID, Class: audit.ClassAPIActivity, Outcome: "allow", Since: since, From: from, Limit: 1000})
			if err != nil {
				return approval.LifecycleReport{}, err
			}
			uses = append(uses, approval.UsesFromAudit(recs)...)
			n += len(recs)
			if len(recs) < 1000 {
				break
			}
			from = recs[len(recs)-1].Index + 1
		}
	}
	return approval.ReviewAgents(approval.ReviewInput{Agents: records, Uses: uses, Now: now, Window: window}), nil
}

// checkAdminCredential checks an admin credential typed into the approval
// page.
func (g *Gateway) checkAdminCredential(credential string) (string, bool) {
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(credential)), []byte(g.adminToken)) == 1 {
		return "admin", true
	}
	return "", false
}
