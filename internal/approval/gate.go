package approval

import (
	"context"
	"errors"
	"time"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// GateResult is the outcome of Gate for one challenged call.
type GateResult struct {
	// Verdict is Allow when the call may proceed (Grant is set), Challenge
	// while approval is pending (Approval and URL say where), Block
	// otherwise (denied, or an error: fail closed).
	Verdict verdict.Verdict
	// Approval is the call's approval (nil when an elevation covered it).
	Approval *Approval
	// Grant is the grant the call used.
	Grant *Grant
	// URL is the approval page (status URL) of Approval.
	URL string
	// Previous is the earlier approval of the same call when it expired
	// (or was cancelled) undecided and Approval replaces it: the agent is
	// told why it is asked to wait again.
	Previous *Approval
}

// Gate runs the governance step for a call that policy or the semantic
// layer challenged, in the order the gateway needs:
//
//  1. an approved grant for this exact call (its canonical hash) is used
//     (Consume);
//  2. else an elevation in force that covers the call is used
//     (MatchElevation);
//  3. else the call's approval is requested (or the pending one found,
//     Request) and, when wait > 0, awaited up to wait; if it is approved in
//     time the grant is used at once.
//
// use carries the call's correlation id and value. Any error blocks (the
// error is returned too, for logging). ctx ending while waiting (the kill
// switch cancelling the held call) blocks with code approval.cancelled.
func (m *Manager) Gate(ctx context.Context, ev Evidence, use Use, wait time.Duration) (GateResult, error) {
	c := Call{Server: ev.Server, Tool: ev.Tool, Arguments: ev.Arguments, Agent: ev.Agent, User: ev.User, Task: ev.Task, PolicyVersion: ev.PolicyVersion}
	hash, err := c.Hash()
	if err != nil {
		return GateResult{Verdict: Refusal(err)}, err
	}
	allow := func(g Grant, a *Approval) GateResult {
		r := GateResult{Grant: &g, Approval: a}
		r.Verdict = verdict.Verdict{Outcome: verdict.Allow, Reasons: []verdict.Reason{{Layer: verdict.Governance, Code: CodeGranted, Message: "approved: " + g.Approval, Outcome: verdict.Allow}}}
		if a != nil {
			r.URL = m.StatusURL(a.ID)
		}
		return r
	}
	g, used, err := m.consume(ctx, hash, use)
	switch {
	case err == nil:
		return allow(g, &used), nil
	case errors.Is(err, ErrNoGrant), errors.Is(err, ErrApprovalPending), errors.Is(err, ErrDenied), errors.Is(err, ErrExpired),
		errors.Is(err, ErrCancelled), errors.Is(err, ErrGrantUsed), errors.Is(err, ErrGrantExpired), errors.Is(err, ErrGrantRevoked):
		// Fall through to elevations and a (new) request.
	default:
		return GateResult{Verdict: Refusal(err)}, err
	}
	g, err = m.MatchElevation(ctx, c, use)
	if err == nil {
		return allow(g, nil), nil
	}
	if !errors.Is(err, ErrNoGrant) {
		return GateResult{Verdict: Refusal(err)}, err
	}
	prev, perr := m.cfg.Store.Latest(ctx, hash)
	a, err := m.Request(ctx, ev)
	if err != nil {
		return GateResult{Verdict: Refusal(err)}, err
	}
	var previous *Approval
	if perr == nil && prev.ID != a.ID && (prev.Status == Expired || prev.Status == Cancelled) {
		previous = &prev
	}
	if a.Status == Pending && wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		w, werr := m.Wait(wctx, a.ID)
		cancel()
		switch {
		case werr == nil:
			a = w
		case ctx.Err() != nil:
			v := verdict.Deny(verdict.Governance, CodeCancelled, "the held call was cancelled")
			return GateResult{Verdict: v, Approval: &a, URL: m.StatusURL(a.ID)}, ctx.Err()
		case !errors.Is(werr, context.DeadlineExceeded):
			return GateResult{Verdict: Refusal(werr), Approval: &a, URL: m.StatusURL(a.ID)}, werr
		}
	}
	res := GateResult{Approval: &a, URL: m.StatusURL(a.ID), Previous: previous}
	if a.Status == Approved {
		g, err := m.use(ctx, a, use)
		if err != nil {
			res.Verdict = Refusal(err)
			return res, err
		}
		return allow(g, &a), nil
	}
	res.Verdict = a.Verdict()
	return res, nil
}
