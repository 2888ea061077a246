package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

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
	creq, ents, err := s.schema.cedarRequest(req)
	if err != nil {
		code := CodeError
		var ae *argumentError
		if errors.As(err, &ae) {
			code = CodeInvalidArgument
		}
		return blocked(code, s.version, nil, err.Error())
	}
	fd, fdiag := cedar.Authorize(s.forbids, ents, creq)
	_, cdiag := cedar.Authorize(s.challs, ents, creq)
	pd, pdiag := cedar.Authorize(s.permits, ents, creq)

	var diags, failed []string
	for _, diag := range []cedar.Diagnostic{fdiag, cdiag, pdiag} {
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
	case fd == cedar.Deny && len(fdiag.Reasons) > 0:
		return blocked(CodeForbid, s.version, ids(fdiag.Reasons), diags...)
	case len(failed) > 0:
		return blocked(CodeError, s.version, failed, diags...)
	case pd != cedar.Allow:
		if len(cdiag.Reasons) > 0 {
			diags = append(diags, fmt.Sprintf("challenge policies %v matched, but no policy permits the request", ids(cdiag.Reasons)))
		}
		return blocked(CodeNoPermit, s.version, nil, diags...)
	case len(cdiag.Reasons) > 0:
		d := Decision{Outcome: verdict.Challenge, Version: s.version, Policies: ids(cdiag.Reasons)}
		d.Reasons = []verdict.Reason{{Layer: verdict.Execution, Code: CodeChallenge, Message: msgChallenge, Policies: d.Policies, Outcome: verdict.Challenge}}
		for _, r := range cdiag.Reasons {
			c := s.challs.get(r.PolicyID)
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

func (l policyList) get(id cedar.PolicyID) compiled {
	for _, c := range l {
		if c.id == id {
			return c
		}
	}
	return compiled{}
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

func stringSet[T ~string](ss []T) types.Set {
	vs := make([]types.Value, len(ss))
	for i, s := range ss {
		vs[i] = types.String(s)
	}
	return types.NewSet(vs...)
}

// cedarRequest turns a Request into a Cedar request and its entities.
func (s *Schema) cedarRequest(req Request) (cedar.Request, *entities, error) {
	phase := req.Action.Phase()
	switch {
	case phase == 0:
		return cedar.Request{}, nil, fmt.Errorf("unknown action %q", req.Action)
	case req.Agent.ID == "":
		return cedar.Request{}, nil, errors.New("request has no agent")
	case req.Now.IsZero():
		return cedar.Request{}, nil, errors.New("request has no time")
	}
	ents := &entities{}
	principal := types.NewEntityUID(TypeAgent, types.String(req.Agent.ID))
	ents.add(types.Entity{
		UID:     principal,
		Parents: groups(req.Agent.Groups),
		Attributes: types.NewRecord(types.RecordMap{
			"owner":   types.String(req.Agent.Owner),
			"hosting": types.String(req.Agent.Hosting),
			"groups":  stringSet(req.Agent.Groups),
		}),
	})

	var server types.EntityUID
	if req.Server != "" {
		server = types.NewEntityUID(TypeServer, types.String(req.Server))
		ents.add(types.Entity{UID: server, Attributes: types.NewRecord(types.RecordMap{"name": types.String(req.Server)})})
	}
	var (
		resource types.EntityUID
		typ      types.EntityType
		name     string
		nameAttr = "name"
		tool     *toolType
	)
	switch req.Action {
	case ListTools, CallTool:
		typ, name = TypeTool, req.Tool
		tool = s.tools[ToolID(req.Server, req.Tool)]
	case ListResources, ReadResource:
		typ, name, nameAttr = TypeResource, req.Resource, "uri"
	case ListPrompts, GetPrompt:
		typ, name = TypePrompt, req.Prompt
	case Complete:
		typ, name = TypePrompt, req.Prompt
		if name == "" {
			typ, name, nameAttr = TypeResource, req.Resource, "uri"
		}
	case Sample, Elicit:
		if req.Server == "" {
			return cedar.Request{}, nil, fmt.Errorf("%s request names no server", req.Action)
		}
		resource = server
	}
	if resource.Type == "" {
		if name == "" {
			return cedar.Request{}, nil, fmt.Errorf("%s request names no target", req.Action)
		}
		labels := req.Labels
		if tool != nil && len(tool.labels) > 0 {
			labels = append(slices.Clone(labels), tool.labels...)
		}
		resource = types.NewEntityUID(typ, types.String(ToolID(req.Server, name)))
		var parents types.EntityUIDSet
		if req.Server != "" {
			parents = types.NewEntityUIDSet(server)
		}
		ents.add(types.Entity{UID: resource, Parents: parents, Attributes: types.NewRecord(types.RecordMap{
			types.String(nameAttr): types.String(name),
			"server":               types.String(req.Server),
			"labels":               stringSet(labels),
		})})
	}

	ctx := types.RecordMap{
		"now":            types.NewDatetime(req.Now),
		"session_labels": stringSet(req.SessionLabels),
	}
	if req.User != nil && req.User.ID != "" {
		uid := types.NewEntityUID(TypeUser, types.String(req.User.ID))
		var tags types.RecordMap
		if len(req.User.Tags) > 0 {
			tags = make(types.RecordMap, len(req.User.Tags))
			for k, v := range req.User.Tags {
				tags[types.String(k)] = stringSet(v)
			}
		}
		ents.add(types.Entity{UID: uid, Parents: groups(req.User.Groups), Attributes: types.NewRecord(types.RecordMap{
			"groups": stringSet(req.User.Groups),
		}), Tags: types.NewRecord(tags)})
		ctx["user"] = uid
	}
	if req.Task != nil && req.Task.ID != "" {
		uid := types.NewEntityUID(TypeTask, types.String(req.Task.ID))
		attrs := types.RecordMap{"purpose": types.String(req.Task.Purpose)}
		if !req.Task.NotBefore.IsZero() {
			attrs["not_before"] = types.NewDatetime(req.Task.NotBefore)
		}
		if !req.Task.NotAfter.IsZero() {
			attrs["not_after"] = types.NewDatetime(req.Task.NotAfter)
		}
		ents.add(types.Entity{UID: uid, Attributes: types.NewRecord(attrs)})
		ctx["task"] = uid
	}
	totals := make(types.RecordMap, len(s.totals))
	for _, name := range s.totals {
		d, err := toDecimal(req.Totals[name])
		if err != nil {
			return cedar.Request{}, nil, fmt.Errorf("total %s: %w", name, err)
		}
		totals[types.String(name)] = d
	}
	ctx["totals"] = types.NewRecord(totals)

	if phase == Call {
		f, err := findings(req.Findings)
		if err != nil {
			return cedar.Request{}, nil, err
		}
		ctx["findings"] = f
	}
	if req.Action == CallTool {
		args, paths, err := toolContext(req.Arguments, tool)
		if err != nil {
			return cedar.Request{}, nil, err
		}
		ctx["arguments"], ctx["paths"] = args, paths
	}
	return cedar.Request{
		Principal: principal,
		Action:    types.NewEntityUID(TypeAction, types.String(req.Action)),
		Resource:  resource,
		Context:   types.NewRecord(ctx),
	}, ents, nil
}

func groups(gs []string) types.EntityUIDSet {
	if len(gs) == 0 {
		return types.EntityUIDSet{}
	}
	uids := make([]types.EntityUID, len(gs))
	for i, g := range gs {
		uids[i] = types.NewEntityUID(TypeGroup, types.String(g))
	}
	return types.NewEntityUIDSet(uids...)
}

func findings(f *Findings) (types.Record, error) {
	var kinds []string
	var detectors []string
	maxScore := 0.0
	if f != nil {
		kinds = f.Kinds
		for name, score := range f.Scores {
			if math.IsNaN(score) || score < 0 {
				return types.Record{}, fmt.Errorf("finding score of %s is %v", name, score)
			}
			if score > 0 {
				detectors = append(detectors, name)
			}
			maxScore = max(maxScore, score)
		}
	}
	d, err := toDecimal(maxScore)
	if err != nil {
		return types.Record{}, err
	}
	return types.NewRecord(types.RecordMap{
		"kinds":     stringSet(kinds),
		"detectors": stringSet(detectors),
		"max_score": d,
	}), nil
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
func toolContext(raw json.RawMessage, tool *toolType) (types.Record, types.Record, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return types.Record{}, types.Record{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return types.Record{}, types.Record{}, &argumentError{"arguments are not a JSON object"}
	}
	if dec.More() {
		return types.Record{}, types.Record{}, &argumentError{"arguments have trailing data"}
	}
	var at *argType
	if tool != nil {
		at = tool.args
	}
	args, err := convertRecord(obj, at)
	if err != nil {
		return types.Record{}, types.Record{}, &argumentError{"arguments: " + err.Error()}
	}
	paths := types.RecordMap{}
	addPath := func(name string) error {
		v, ok := obj[name].(string)
		if !ok {
			return nil
		}
		n, err := NormalizePath(v)
		if err != nil {
			return &argumentError{fmt.Sprintf("argument %s: %v", name, err)}
		}
		paths[types.String(name)] = types.String(n)
		return nil
	}
	if tool != nil {
		for _, name := range tool.paths {
			if err := addPath(name); err != nil {
				return types.Record{}, types.Record{}, err
			}
		}
	} else {
		for name := range obj {
			if IsPathArgument(name) {
				if err := addPath(name); err != nil {
					return types.Record{}, types.Record{}, err
				}
			}
		}
	}
	return args.(types.Record), types.NewRecord(paths), nil
}

// convertRecord converts a JSON object. With a record type, only declared
// properties are kept (policy can name no others); without, all are.
func convertRecord(obj map[string]any, t *argType) (types.Value, error) {
	m := make(types.RecordMap, len(obj))
	for k, v := range obj {
		var ft *argType
		if t != nil && t.kind == kRecord {
			f, ok := t.fields[k]
			if !ok {
				continue
			}
			ft = f.t
		}
		cv, err := convert(v, ft)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if cv != nil {
			m[types.String(k)] = cv
		}
	}
	return types.NewRecord(m), nil
}

// convert turns a decoded JSON value into a Cedar value of shape t (nil:
// the value's own shape). A null becomes nil: the attribute is absent. A
// value whose shape differs from t takes its own shape, so a policy that
// relies on the declared type fails at evaluation, which blocks.
func convert(v any, t *argType) (types.Value, error) {
	if v == nil {
		return nil, nil
	}
	if t != nil && t.kind == kJSON {
		if s, ok := v.(string); ok {
			return types.String(s), nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return types.String(b), nil
	}
	switch v := v.(type) {
	case string:
		return types.String(v), nil
	case bool:
		return types.Boolean(v), nil
	case json.Number:
		if t == nil || t.kind != kDecimal {
			if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				return types.Long(i), nil
			}
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, fmt.Errorf("number %s out of range", v)
		}
		return toDecimal(f)
	case []any:
		var et *argType
		if t != nil && t.kind == kSet {
			et = t.elem
		}
		vs := make([]types.Value, 0, len(v))
		for _, e := range v {
			ce, err := convert(e, et)
			if err != nil {
				return nil, err
			}
			if ce != nil {
				vs = append(vs, ce)
			}
		}
		return types.NewSet(vs...), nil
	case map[string]any:
		if t != nil && t.kind != kRecord {
			t = nil
		}
		return convertRecord(v, t)
	}
	return nil, fmt.Errorf("unexpected JSON value %T", v)
}
