package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// FixtureTime is the request time of a fixture case that names none.
var FixtureTime = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// FixtureFile is one fixture file (*.test.yaml, *.test.yml or *.test.json
// beside the policies): tools for the schema, optional extra policies, and
// cases. See docs/policy.md for the format.
type FixtureFile struct {
	// Name is the file's path (set by ReadFixtures).
	Name string `yaml:"-"`
	// Tools are added to the schema the policies are validated against.
	Tools []FixtureTool `yaml:"tools"`
	// Totals are declared running totals (SchemaOptions.Totals).
	Totals []string `yaml:"totals"`
	// Policies is Cedar text added to the directory's policies for this
	// file's cases only (for example a permit that lets guardrails be
	// exercised).
	Policies string `yaml:"policies"`
	// Defaults is a request that every case's request is merged over (top
	// level keys of the case replace those of the defaults).
	Defaults map[string]any `yaml:"defaults"`
	Cases    []FixtureCase  `yaml:"cases"`
}

// FixtureTool declares one tool. Its labels are Labels when given, else
// DefaultLabels(Annotations) when annotations are given, else none.
type FixtureTool struct {
	Server      string         `yaml:"server"`
	Name        string         `yaml:"name"`
	Labels      []string       `yaml:"labels"`
	Annotations *Annotations   `yaml:"annotations"`
	InputSchema map[string]any `yaml:"input_schema"`
	PathArgs    []string       `yaml:"path_args"`
}

// FixtureCase is one request and the decision expected for it.
type FixtureCase struct {
	Name    string         `yaml:"name"`
	Request map[string]any `yaml:"request"`
	// Expect is "allow", "challenge" or "block".
	Expect string `yaml:"expect"`
	// Code, when set, is the expected reason code (policy.forbid, ...).
	Code string `yaml:"code"`
	// Policies, when set, are the expected deciding policy ids (any order;
	// an empty list expects none).
	Policies *[]string `yaml:"policies"`
	// Group, when set, is an expected approver group.
	Group string `yaml:"group"`
}

// FixtureResult is the outcome of one case.
type FixtureResult struct {
	File, Case string
	Pass       bool
	Want, Got  string   // one-line summaries
	Problems   []string // what differs, or why the case could not run
}

// FixtureReport is the outcome of a fixture run.
type FixtureReport struct {
	Results        []FixtureResult
	Passed, Failed int
}

// Print writes failures with a readable diff, then one line per passing
// case when verbose, then the closing "N passed, N failed" line.
func (r *FixtureReport) Print(w io.Writer, verbose bool) {
	for _, res := range r.Results {
		if res.Pass {
			if verbose {
				fmt.Fprintf(w, "ok    %s: %s\n", res.File, res.Case)
			}
			continue
		}
		fmt.Fprintf(w, "FAIL  %s: %s\n", res.File, res.Case)
		for _, p := range res.Problems {
			fmt.Fprintf(w, "      %s\n", p)
		}
		if res.Want != "" || res.Got != "" {
			fmt.Fprintf(w, "      want: %s\n      got:  %s\n", res.Want, res.Got)
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", r.Passed, r.Failed)
}

// ReadFixtures reads every fixture file directly in dir, sorted by name.
func ReadFixtures(dir string) ([]*FixtureFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading fixtures: %w", err)
	}
	var out []*FixtureFile
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !(strings.HasSuffix(n, ".test.yaml") || strings.HasSuffix(n, ".test.yml") || strings.HasSuffix(n, ".test.json")) {
			continue
		}
		f, err := ReadFixture(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// ReadFixture reads and strictly decodes one fixture file.
func ReadFixture(name string) (*FixtureFile, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading fixture: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	f := &FixtureFile{}
	if err := dec.Decode(f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decoding fixture %s: %w", name, err)
	}
	f.Name = name
	return f, nil
}

// FixtureSchema builds the schema declared by fixture files' tools and
// totals, plus extra tools (from a tools file, say).
func FixtureSchema(files []*FixtureFile, extra ...FixtureTool) (*Schema, error) {
	var tools []ToolSchema
	var totals []string
	add := func(where string, t FixtureTool) error {
		ts, err := t.schema()
		if err != nil {
			return fmt.Errorf("%s: tool %s: %w", where, ToolID(t.Server, t.Name), err)
		}
		tools = append(tools, ts)
		return nil
	}
	for _, f := range files {
		for _, t := range f.Tools {
			if err := add(f.Name, t); err != nil {
				return nil, err
			}
		}
		for _, n := range f.Totals {
			if !slices.Contains(totals, n) {
				totals = append(totals, n)
			}
		}
	}
	for _, t := range extra {
		if err := add("tools", t); err != nil {
			return nil, err
		}
	}
	return SchemaFor(tools, SchemaOptions{Totals: totals})
}

func (t FixtureTool) schema() (ToolSchema, error) {
	ts := ToolSchema{Server: t.Server, Name: t.Name, PathArgs: t.PathArgs}
	switch {
	case t.Labels != nil:
		for _, l := range t.Labels {
			if !slices.Contains(verdict.ToolLabels, verdict.Label(l)) {
				return ts, fmt.Errorf("unknown label %q", l)
			}
			ts.Labels = append(ts.Labels, verdict.Label(l))
		}
	case t.Annotations != nil:
		ts.Labels = DefaultLabels(t.Annotations)
	}
	if t.InputSchema != nil {
		b, err := json.Marshal(jsonable(t.InputSchema))
		if err != nil {
			return ts, fmt.Errorf("input schema: %w", err)
		}
		ts.InputSchema = b
	}
	return ts, nil
}

// RunFixtures loads the policies in dir and runs every fixture file in it.
// An error means the run could not start (unreadable directory, a policy
// set or fixture that does not load); failing cases are in the report.
func RunFixtures(dir string) (*FixtureReport, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fixtures, err := ReadFixtures(dir)
	if err != nil {
		return nil, err
	}
	if len(fixtures) == 0 {
		return nil, fmt.Errorf("no fixture files (*.test.yaml) in %s", dir)
	}
	schema, err := FixtureSchema(fixtures)
	if err != nil {
		return nil, err
	}
	rep := &FixtureReport{}
	for _, fx := range fixtures {
		set := files
		if strings.TrimSpace(fx.Policies) != "" {
			set = append(slices.Clone(files), File{Name: fx.Name + "#policies", Data: []byte(fx.Policies)})
		}
		ps, err := LoadFiles(set, schema)
		if err != nil {
			return nil, fmt.Errorf("loading policies for %s:\n%w", fx.Name, err)
		}
		for i, c := range fx.Cases {
			res := FixtureResult{File: filepath.Base(fx.Name), Case: c.Name}
			if res.Case == "" {
				res.Case = fmt.Sprintf("case %d", i+1)
			}
			res.Problems = runCase(ps, fx.Defaults, c, &res)
			res.Pass = len(res.Problems) == 0
			if res.Pass {
				rep.Passed++
			} else {
				rep.Failed++
			}
			rep.Results = append(rep.Results, res)
		}
	}
	return rep, nil
}

// FixtureRequest builds a case's request: the case's request merged over
// the defaults, decoded as a Request (the JSON form the audit store keeps),
// with FixtureTime when it names no time.
func FixtureRequest(defaults, req map[string]any) (Request, error) {
	m := map[string]any{"now": FixtureTime.Format(time.RFC3339)}
	for k, v := range defaults {
		m[k] = v
	}
	for k, v := range req {
		m[k] = v
	}
	b, err := json.Marshal(jsonable(m))
	if err != nil {
		return Request{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Request
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("decoding request: %w", err)
	}
	return r, nil
}

func runCase(ps *Set, defaults map[string]any, c FixtureCase, res *FixtureResult) []string {
	want, err := verdict.ParseOutcome(c.Expect)
	if err != nil || c.Expect == "" {
		return []string{fmt.Sprintf("expect must be allow, challenge or block, not %q", c.Expect)}
	}
	req, err := FixtureRequest(defaults, c.Request)
	if err != nil {
		return []string{err.Error()}
	}
	d := ps.Decide(req)
	res.Got = summarize(d.Outcome.String(), d.Code(), d.Policies, groupsOf(d))
	var wantPolicies []string
	if c.Policies != nil {
		wantPolicies = *c.Policies
	}
	var wantGroups []string
	if c.Group != "" {
		wantGroups = []string{c.Group}
	}
	res.Want = summarize(want.String(), c.Code, wantPolicies, wantGroups)

	var probs []string
	if d.Outcome != want {
		probs = append(probs, fmt.Sprintf("outcome: want %s, got %s", want, d.Outcome))
	}
	if c.Code != "" && c.Code != d.Code() {
		probs = append(probs, fmt.Sprintf("code: want %s, got %s", c.Code, d.Code()))
	}
	if c.Policies != nil {
		w, g := slices.Clone(wantPolicies), slices.Clone(d.Policies)
		sort.Strings(w)
		sort.Strings(g)
		if !slices.Equal(w, g) {
			probs = append(probs, fmt.Sprintf("policies: want %v, got %v", w, g))
		}
	}
	if c.Group != "" && !slices.Contains(groupsOf(d), c.Group) {
		probs = append(probs, fmt.Sprintf("approver group: want %s, got %v", c.Group, groupsOf(d)))
	}
	if len(probs) > 0 {
		for _, diag := range d.Diagnostics {
			probs = append(probs, "diagnostic: "+diag)
		}
	}
	return probs
}

func groupsOf(d Decision) []string {
	var gs []string
	for _, o := range d.Obligations {
		if o.Kind == verdict.ObligationApproval {
			gs = append(gs, o.Group)
		}
	}
	return gs
}

func summarize(outcome, code string, policies, groups []string) string {
	s := outcome
	if code != "" {
		s += " (" + code + ")"
	}
	if len(policies) > 0 {
		s += " by " + strings.Join(policies, ", ")
	}
	if len(groups) > 0 {
		s += "; approvers " + strings.Join(groups, ", ")
	}
	return s
}

// jsonable converts YAML-decoded values (which may hold map[any]any and
// time.Time) into values encoding/json marshals as the YAML meant.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = jsonable(e)
		}
		return m
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = jsonable(e)
		}
		return s
	case time.Time:
		return v.Format(time.RFC3339Nano)
	}
	return v
}
