package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Decide evaluates req under the set. It never fails: every problem with
// the request or during evaluation is a Block with the problem in
// Diagnostics.
//
// Combining: a matching forbid blocks (policy.forbid); any evaluation error
// blocks (policy.error); otherwise, with at least one matching permit, a
// matching @challenge forbid challenges (policy.challenge) and no
// challenge allows (policy.permit); with no matching permit the request is
// blocked (policy.no_permit), whatever challenges matched.
func (s *Set) Decide(req Request) Decision {
	// The evaluation's working state comes from a pool: Cedar keeps no
	// reference to it after Authorize, and the Decision copies what it needs.
	ev := evaluations.Get().(*evaluation)
	defer func() {
		sc := ev.scratch
		*ev = evaluation{scratch: sc}
		evaluations.Put(ev)
	}()
	var err error
	ev.t, err = s.schema.target(req)
	if err != nil {
		return blocked(CodeError, s.version, nil, err.Error())
	}
	t, pk := &ev.t, &ev.pk
	idx := ev.idx[:0]
	var needs need
	for i, ix := range [2]indexed{s.forbids, s.permits} {
		start := len(idx)
		if s.noIndex {
			pk[i].list = s.all[i]
			for j := range s.all[i] {
				idx = append(idx, int32(j))
			}
			needs = needAll
		} else if ai := ix[req.Action]; ai != nil {
			pk[i].list = ai.list
			var n need
			idx, n = ai.pick(idx, t)
			needs |= n
		}
		pk[i].idx = idx[start:len(idx):len(idx)]
	}
	creq, err := s.schema.cedarRequest(req, t, needs, &ev.scratch)
	if err != nil {
		code := CodeError
		var ae *argumentError
		if errors.As(err, &ae) {
			code = CodeInvalidArgument
		}
		return blocked(code, s.version, nil, err.Error())
	}
	// One evaluation over forbids and permits together answers the common
	// case: Cedar reports the matching forbids if any, else the permits.
	// Only when a forbid matched are the permits evaluated on their own.
	both := &ev.both
	*both = picked{list: pk[0].list, idx: pk[0].idx, list2: pk[1].list, idx2: pk[1].idx}
	decision, fdiag := cedar.Authorize(both, &t.ents, creq)
	pd, pdiag := decision, cedar.Diagnostic{Reasons: fdiag.Reasons}
	if decision == cedar.Deny && len(fdiag.Reasons) > 0 {
		pdiag.Reasons = nil
		pd, pdiag = cedar.Authorize(&pk[1], &t.ents, creq)
		pdiag.Errors = nil // already in fdiag
	} else {
		fdiag.Reasons = nil
	}
	var hard, challenges []cedar.DiagnosticReason
	for _, r := range fdiag.Reasons {
		if _, ok := s.challenges[r.PolicyID]; ok {
			challenges = append(challenges, r)
		} else {
			hard = append(hard, r)
		}
	}

	var diags, failed []string
	for _, diag := range []cedar.Diagnostic{fdiag, pdiag} {
		for _, e := range diag.Errors {
			failed = append(failed, string(e.PolicyID))
			diags = append(diags, fmt.Sprintf("policy %s (%s:%d): %s", e.PolicyID, e.Position.Filename, e.Position.Line, e.Message))
		}
	}
	ids := func(rs []cedar.DiagnosticReason) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = string(r.PolicyID)
		}
		return out
	}
	switch {
	case len(hard) > 0:
		return blocked(CodeForbid, s.version, ids(hard), diags...)
	case len(failed) > 0:
		return blocked(CodeError, s.version, failed, diags...)
	case pd != cedar.Allow:
		if len(challenges) > 0 {
			diags = append(diags, fmt.Sprintf("challenge policies %v matched, but no policy permits the request", ids(challenges)))
		}
		return blocked(CodeNoPermit, s.version, nil, diags...)
	case len(challenges) > 0:
		d := Decision{Outcome: verdict.Challenge, Version: s.version, Policies: ids(challenges)}
		d.Reasons = []verdict.Reason{{Layer: verdict.Execution, Code: CodeChallenge, Message: msgChallenge, Policies: d.Policies, Outcome: verdict.Challenge}}
		for _, r := range challenges {
			c := s.challenges[r.PolicyID]
			o := verdict.Obligation{Kind: verdict.ObligationApproval, Group: c.challenge, Detail: c.risk}
			if !slices.Contains(d.Obligations, o) {
				d.Obligations = append(d.Obligations, o)
			}
		}
		return d
	}
	d := Decision{Outcome: verdict.Allow, Version: s.version, Policies: ids(pdiag.Reasons)}
	d.Reasons = []verdict.Reason{{Layer: verdict.Execution, Code: CodePermit, Policies: d.Policies, Outcome: verdict.Allow}}
	return d
}

var evaluations = sync.Pool{New: func() any { return new(evaluation) }}

// evaluation is the working state of one decision.
type evaluation struct {
	t    targeted
	pk   [2]picked
	both picked
	idx  [32]int32
	// Scratch maps for building records: NewRecord copies its map, so
	// these are cleared and reused from one decision to the next.
	scratch scratch
}

type scratch struct {
	ctx, totals, findings, args, paths, source types.RecordMap
	strs                                       map[string]string
}

// get returns *m, empty, allocating it on first use.
func get[K comparable, V any](m *map[K]V) map[K]V {
	if *m == nil {
		*m = make(map[K]V, 8)
	} else {
		clear(*m)
	}
	return *m
}

// argumentError marks a request whose arguments cannot be put in context.
type argumentError struct{ msg string }

func (e *argumentError) Error() string { return e.msg }

// entities is the per-request entity store: a handful of entities, found
// by linear search.
type entities struct {
	list [6]types.Entity
	n    int
}

func (e *entities) add(ent types.Entity) { e.list[e.n] = ent; e.n++ }

func (e *entities) Get(uid types.EntityUID) (types.Entity, bool) {
	for i := range e.n {
		if e.list[i].UID == uid {
			return e.list[i], true
		}
	}
	return types.Entity{}, false
}

var (
	emptySet              = types.NewSet()
	emptySetV types.Value = emptySet
)

func stringSet[T ~string](ss []T) types.Set {
	if len(ss) == 0 {
		return emptySet
	}
	vs := make([]types.Value, len(ss))
	for i, s := range ss {
		vs[i] = types.String(s)
	}
	return types.NewSet(vs...)
}

// targeted is a request's principal and resource in Cedar form, with
// their parents for the index, and the entity store being built.
type targeted struct {
	ents                entities
	principal, resource types.EntityUID
	pParents, rParents  []types.EntityUID
	tool                *toolType
}

// target validates a request and builds its principal and resource.
func (s *Schema) target(req Request) (targeted, error) {
	var t targeted
	switch {
	case req.Action.Phase() == 0:
		return t, fmt.Errorf("unknown action %q", req.Action)
	case req.Agent.ID == "":
		return t, errors.New("request has no agent")
	case req.Now.IsZero():
		return t, errors.New("request has no time")
	}
	agent, pParents := s.cache.agent(&req.Agent)
	t.principal, t.pParents = agent.UID, pParents
	t.ents.add(agent)

	var (
		typ      types.EntityType
		name     string
		nameAttr = "name"
	)
	switch req.Action {
	case ListTools, CallTool:
		typ, name = TypeTool, req.Tool
		t.tool = s.tools[ToolID(req.Server, req.Tool)]
	case ListResources, ReadResource:
		typ, name, nameAttr = TypeResource, req.Resource, "uri"
	case ListPrompts, GetPrompt:
		typ, name = TypePrompt, req.Prompt
	case Complete:
		typ, name = TypePrompt, req.Prompt
		if name == "" {
			typ, name, nameAttr = TypeResource, req.Resource, "uri"
		}
	case Sample, Elicit, RequestToken:
		if req.Server == "" {
			return t, fmt.Errorf("%s request names no server", req.Action)
		}
		srv := serverEntity(req.Server)
		t.ents.add(srv)
		t.resource = srv.UID
		return t, nil
	}
	if name == "" {
		return t, fmt.Errorf("%s request names no target", req.Action)
	}
	var extra []verdict.Label
	if t.tool != nil {
		extra = t.tool.labels
	}
	ent, srv, parents := s.cache.target(typ, req.Server, name, nameAttr, req.Labels, extra)
	t.ents.add(ent)
	if req.Server != "" {
		t.ents.add(srv)
	}
	t.resource, t.rParents = ent.UID, parents
	return t, nil
}

// cedarRequest builds the Cedar request: the context holds what the
// candidate policies read (needs), and the user and task entities join the
// store when they are read.
func (s *Schema) cedarRequest(req Request, t *targeted, needs need, sc *scratch) (cedar.Request, error) {
	ctx := get(&sc.ctx)
	if needs&(needAll|needNow) != 0 {
		ctx["now"] = types.NewDatetime(req.Now)
	}
	if needs&(needAll|needSession) != 0 {
		ctx["session_labels"] = labelSet(req.SessionLabels)
	}
	if needs&(needAll|needUser) != 0 && req.User != nil && req.User.ID != "" {
		ent, uid := s.cache.user(req.User)
		t.ents.add(ent)
		ctx["user"] = uid
	}
	if needs&(needAll|needTask) != 0 && req.Task != nil && req.Task.ID != "" {
		ent, uid := s.cache.task(req.Task)
		t.ents.add(ent)
		ctx["task"] = uid
	}
	if needs&(needAll|needSource) != 0 && req.Source != nil && (req.Source.TrustSource != "" || req.Source.Subject != "") {
		ctx["source"] = source(req.Source, sc)
	}
	if needs&(needAll|needTotals) != 0 {
		totals := get(&sc.totals)
		for _, name := range s.totals {
			d, err := toDecimal(req.Totals[name])
			if err != nil {
				return cedar.Request{}, fmt.Errorf("total %s: %w", name, err)
			}
			totals[types.String(name)] = d
		}
		ctx["totals"] = types.NewRecord(totals)
	}
	if req.Action.Phase() == Call && needs&(needAll|needFindings) != 0 {
		f, err := findings(req.Findings, sc)
		if err != nil {
			return cedar.Request{}, err
		}
		ctx["findings"] = f
	}
	if req.Action == RequestToken {
		if req.TokenLifetime < 0 {
			return cedar.Request{}, fmt.Errorf("token lifetime %v is negative", req.TokenLifetime)
		}
		ctx["tools"] = stringSet(req.TokenTools)
		ctx["lifetime"] = types.Long(req.TokenLifetime / time.Second)
	}
	if req.Action == CallTool && needs&(needAll|needArgs|needPaths) != 0 {
		wantPaths := needs&(needAll|needPaths) != 0
		args, paths, err := toolContext(req.Arguments, t.tool, wantPaths, sc)
		if err != nil {
			return cedar.Request{}, err
		}
		if needs&(needAll|needArgs) != 0 {
			ctx["arguments"] = args
		}
		if wantPaths {
			ctx["paths"] = paths
		}
	}
	return cedar.Request{
		Principal: t.principal,
		Action:    types.NewEntityUID(TypeAction, types.String(req.Action)),
		Resource:  t.resource,
		Context:   types.NewRecord(ctx),
	}, nil
}

func groupUIDs(gs []string) []types.EntityUID {
	if len(gs) == 0 {
		return nil
	}
	uids := make([]types.EntityUID, len(gs))
	for i, g := range gs {
		uids[i] = types.NewEntityUID(TypeGroup, types.String(g))
	}
	return uids
}

// source is context.source: tenant only when the source has one (it is
// optional in the schema, so policies test it with has).
func source(src *Source, sc *scratch) types.Record {
	m := get(&sc.source)
	m["trust_source"], m["kind"], m["subject"] = types.String(src.TrustSource), types.String(src.Kind), types.String(src.Subject)
	if src.Tenant != "" {
		m["tenant"] = types.String(src.Tenant)
	}
	return types.NewRecord(m)
}

var noFindings = types.NewRecord(types.RecordMap{
	"kinds":     emptySet,
	"detectors": emptySet,
	"max_score": types.Decimal{},
})

func findings(f *Findings, sc *scratch) (types.Record, error) {
	if f == nil {
		return noFindings, nil
	}
	var detectors []types.Value
	maxScore := 0.0
	for name, score := range f.Scores {
		if math.IsNaN(score) || score < 0 {
			return types.Record{}, fmt.Errorf("finding score of %s is %v", name, score)
		}
		if score >= FiredScore {
			detectors = append(detectors, types.String(name))
		}
		maxScore = max(maxScore, score)
	}
	d, err := toDecimal(maxScore)
	if err != nil {
		return types.Record{}, err
	}
	kv, dv := emptySetV, emptySetV
	if len(f.Kinds) > 0 {
		kv = stringSet(f.Kinds)
	}
	if len(detectors) > 0 {
		dv = types.NewSet(detectors...)
	}
	m := get(&sc.findings)
	m["kinds"], m["detectors"], m["max_score"] = kv, dv, d
	return types.NewRecord(m), nil
}

// toDecimal rounds f to Cedar's four decimal places.
func toDecimal(f float64) (types.Decimal, error) {
	r := math.Round(f * 1e4)
	if math.IsNaN(r) || r >= math.MaxInt64 || r <= math.MinInt64 {
		return types.Decimal{}, fmt.Errorf("%v does not fit a Cedar decimal", f)
	}
	return types.NewDecimal(int64(r), -4)
}

// toolContext converts a tool call's JSON arguments to context.arguments,
// typed by the tool's schema when known, and context.paths, the
// normalised copies of its path-like string arguments.
func toolContext(raw json.RawMessage, tool *toolType, wantPaths bool, sc *scratch) (types.Record, types.Record, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return types.Record{}, types.Record{}, nil
	}
	var at *argType
	var strs map[string]string
	if tool != nil {
		at = tool.args
		if wantPaths && len(tool.paths) > 0 {
			strs = get(&sc.strs)
		}
	} else if wantPaths {
		strs = get(&sc.strs)
	}
	args, err := decodeArgs(raw, at, strs, get(&sc.args))
	if err != nil {
		return types.Record{}, types.Record{}, &argumentError{"arguments: " + err.Error()}
	}
	if len(strs) == 0 {
		return args, types.Record{}, nil
	}
	paths := get(&sc.paths)
	for name, v := range strs {
		if tool != nil && !slices.Contains(tool.paths, name) || tool == nil && !IsPathArgument(name) {
			continue
		}
		n, err := NormalizePath(v)
		if err != nil {
			return types.Record{}, types.Record{}, &argumentError{fmt.Sprintf("argument %s: %v", name, err)}
		}
		paths[types.String(name)] = types.String(n)
	}
	return args, types.NewRecord(paths), nil
}
