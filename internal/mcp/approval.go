package mcp

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// A call held for human approval is answered, at once or after the hold
// timeout, with a protocol-correct "approval pending" result that carries
// the approval's id and status URL:
//
//   - protocol 2026-07-28: a result of type input_required (multi
//     round-trip request) whose requestState names the approval; when the
//     client declared URL-mode elicitation, the first answer also carries
//     an elicitation/create input request pointing at the approval page.
//     The client's retry (requestState echoed) is the same call: the
//     gateway matches it by its canonical hash and strips its own state
//     before forwarding. What the client answers is never approval
//     evidence — only an approver's decision is.
//   - 2025-11-25 sessions whose client declared URL-mode elicitation: the
//     URLElicitationRequiredError (-32042) pointing at the approval page;
//     once the approval is decided the session is sent
//     notifications/elicitation/complete, and the client retries.
//   - otherwise: the JSON-RPC error CodeApprovalRequired with the approval
//     id and status URL in its data.

// approvalStatePrefix marks a requestState the gateway issued; approvalInput
// is the key of its input request.
const (
	approvalStatePrefix = "gatehouse-approval:"
	approvalInput       = "gatehouse.approval"
	metaApproval        = "gatehouse.dev/approval"
)

// admit runs the pipeline for r. A call held for approval can be cancelled
// by the kill switch while it waits, as a call in flight can.
func (p *Proxy) admit(ctx context.Context, r *pipeline.Request) verdict.Verdict {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer p.track(r, cancel)()
	return p.cfg.Mediator.Admit(ctx, r)
}

// refusal answers a request the pipeline did not allow: "approval pending"
// for a held call, else a denial.
func (p *Proxy) refusal(sc *scope, rep *reply, m *Message, r *pipeline.Request, v verdict.Verdict) *Message {
	if v.Outcome != verdict.Challenge || v.Pending == nil {
		return deniedResponse(m.ID, r, v)
	}
	pd := v.Pending
	reason := v.First()
	msg := "This call needs human approval (" + reason.Code
	if len(reason.Policies) > 0 {
		msg += ": " + strings.Join(reason.Policies, ", ")
	}
	msg += "). Approval " + pd.ID + " is pending; open the link to follow it. The identical call proceeds once it is approved."
	if pd.Previous != "" {
		msg += " (The earlier request " + pd.Previous + " for this call ended " + pd.PreviousStatus + " without a decision.)"
	}
	elicitation := map[string]any{"mode": "url", "elicitationId": pd.ID, "url": pd.URL, "message": msg}
	switch {
	case sc.modern:
		rep.markHeld()
		res := map[string]any{"resultType": "input_required", "requestState": approvalStatePrefix + pd.ID,
			"_meta": map[string]any{metaApproval: deniedData(r, v)}}
		prm, _ := parseParams(m.Params)
		retry := false
		if st, ok := prm.str("requestState"); ok && st == approvalStatePrefix+pd.ID {
			retry = true
		}
		if !retry && pd.URL != "" && urlElicitation(metaOf(m.Params)[metaClientCaps]) {
			res["inputRequests"] = map[string]any{approvalInput: map[string]any{"method": "elicitation/create", "params": elicitation}}
		}
		b, err := json.Marshal(res)
		if err != nil {
			return deniedResponse(m.ID, r, v)
		}
		return &Message{JSONRPC: "2.0", ID: m.ID, Result: b}
	case sc.sess != nil && pd.URL != "" && sc.version >= Version20251125 && sc.sess.urlElicitation():
		p.watchApproval(sc.sess, pd.ID)
		data := deniedData(r, v)
		data["elicitations"] = []any{elicitation}
		return errorResponse(m.ID, CodeURLElicitationRequired, "URL elicitation required: "+msg, data)
	}
	return deniedResponse(m.ID, r, v)
}

// withoutApprovalState removes the gateway's own requestState and input
// response from a 2026-07-28 retry, so the upstream sees the agent's call
// as it would without the gateway. It reports whether it changed prm.
func withoutApprovalState(prm params) bool {
	changed := false
	if st, ok := prm.str("requestState"); ok && strings.HasPrefix(st, approvalStatePrefix) {
		delete(prm, "requestState")
		changed = true
	}
	if raw, ok := prm["inputResponses"]; ok {
		var resp map[string]json.RawMessage
		if json.Unmarshal(raw, &resp) == nil {
			if _, ours := resp[approvalInput]; ours {
				delete(resp, approvalInput)
				changed = true
				if len(resp) == 0 {
					delete(prm, "inputResponses")
				} else if b, err := json.Marshal(resp); err == nil {
					prm["inputResponses"] = b
				}
			}
		}
	}
	return changed
}

// urlElicitation reports whether client capabilities declare URL-mode
// elicitation ({"elicitation": {"url": {}}}).
func urlElicitation(caps json.RawMessage) bool {
	var c struct {
		Elicitation *struct {
			URL json.RawMessage `json:"url"`
		} `json:"elicitation"`
	}
	if json.Unmarshal(caps, &c) != nil || c.Elicitation == nil {
		return false
	}
	return len(c.Elicitation.URL) > 0 && string(c.Elicitation.URL) != "null"
}

// urlElicitation reports whether the session's client declared URL-mode
// elicitation at initialize.
func (s *session) urlElicitation() bool {
	var init struct {
		Capabilities json.RawMessage `json:"capabilities"`
	}
	if json.Unmarshal(s.initParams, &init) != nil {
		return false
	}
	return urlElicitation(init.Capabilities)
}

// watchApproval sends the session notifications/elicitation/complete once
// the approval id is decided (one watcher per session and approval).
func (p *Proxy) watchApproval(s *session, id string) {
	if p.cfg.AwaitApproval == nil {
		return
	}
	s.mu.Lock()
	if s.watching == nil {
		s.watching = map[string]bool{}
	}
	if s.watching[id] {
		s.mu.Unlock()
		return
	}
	s.watching[id] = true
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.watching, id)
			s.mu.Unlock()
		}()
		if err := p.cfg.AwaitApproval(s.ctx, id); err != nil {
			return
		}
		prm, _ := json.Marshal(map[string]string{"elicitationId": id})
		s.standalone.push(&Message{JSONRPC: "2.0", Method: "notifications/elicitation/complete", Params: prm})
	}()
}
