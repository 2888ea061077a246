package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// Annotation keys Gatehouse reads. Others are allowed and ignored.
const (
	// AnnotationID names a policy: @id("trifecta"). Without it a policy's
	// id is "file.cedar:LINE".
	AnnotationID = "id"
	// AnnotationChallenge turns a forbid into a challenge that the named
	// approver group can lift: @challenge("finance-approvers").
	AnnotationChallenge = "challenge"
	// AnnotationRisk names the risk class of a challenge, passed to the
	// governance layer as the approval obligation's Detail: @risk("financial").
	AnnotationRisk = "risk"
)

// File is one policy file: its name (as errors and default ids show it)
// and its contents.
type File struct {
	Name string
	Data []byte
}

// Problem is one thing wrong with a policy set.
type Problem struct {
	File   string // file name as given to LoadFiles, or the path under Load's dir
	Line   int    // 1-based; 0 when unknown
	Column int    // 1-based; 0 when unknown
	Policy string // policy id, when the problem is in one policy
	Msg    string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Line, p.Column)
	}
	b.WriteString(": ")
	if p.Policy != "" {
		fmt.Fprintf(&b, "policy %s: ", p.Policy)
	}
	b.WriteString(p.Msg)
	return b.String()
}

// LoadError lists every problem found while loading a policy set. A set
// with any problem is not loaded.
type LoadError struct {
	Problems []Problem
}

func (e *LoadError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// PolicyInfo describes one loaded policy.
type PolicyInfo struct {
	ID        string `json:"id"`
	Effect    string `json:"effect"` // "permit", "forbid" or "challenge"
	Challenge string `json:"challenge,omitempty"`
	Risk      string `json:"risk,omitempty"`
	File      string `json:"file"`
	Line      int    `json:"line"`
}

// Set is an immutable, validated policy set together with the schema it was
// validated against. Its Decide method is safe for concurrent use.
type Set struct {
	version    string
	files      []File
	schema     *Schema
	infos      []PolicyInfo
	forbids    indexed // forbids, @challenge or not
	permits    indexed
	challenges map[cedar.PolicyID]compiled
	all        [2]policyList // forbids and permits, unindexed
	noIndex    bool          // tests: evaluate all policies, as plain Cedar does
	warnings   []string
}

type compiled struct {
	id        cedar.PolicyID
	policy    *cedar.Policy
	challenge string
	risk      string

	principal, resource scope // set by indexed.add
	needs               need
}

type policyList []compiled

func (l policyList) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, c := range l {
			if !yield(c.id, c.policy) {
				return
			}
		}
	}
}

// Version identifies the set's contents: a hash of its file names and
// bytes, so the same files always give the same version.
func (s *Set) Version() string { return s.version }

// Policies describes the set's policies in file order.
func (s *Set) Policies() []PolicyInfo { return slices.Clone(s.infos) }

// Warnings are things worth an operator's attention that do not stop the
// set from loading, such as policies whose argument conditions could not be
// type-checked because the schema does not know the tool.
func (s *Set) Warnings() []string { return slices.Clone(s.warnings) }

// Schema returns the schema the set was validated against.
func (s *Set) Schema() *Schema { return s.schema }

// Files returns the set's source files.
func (s *Set) Files() []File { return slices.Clone(s.files) }

// Load reads every *.cedar file directly in dir (sorted by name) and
// returns the validated set. Problems name the file as dir/name.
func Load(dir string, schema *Schema) (*Set, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return LoadFiles(files, schema)
}

// ReadDir reads every *.cedar file directly in dir, sorted by name, with
// names dir/name. It fails when there is none: an empty policy directory
// is a mistake, not a deny-all.
func ReadDir(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading policy directory: %w", err)
	}
	var files []File
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".cedar") {
			continue
		}
		name := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading policy file: %w", err)
		}
		files = append(files, File{Name: name, Data: b})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .cedar files in %s", dir)
	}
	return files, nil
}

var parseErrorRE = regexp.MustCompile(`^(?:parser error: )?parse error at <input>:(\d+):(\d+) (.*)$`)

// LoadFiles parses, checks and validates files as one policy set. The
// error, a *LoadError, lists every problem: syntax errors with file, line
// and column; duplicate ids; misused annotations; and schema violations,
// including policies that read something their phase cannot see.
func LoadFiles(files []File, schema *Schema) (*Set, error) {
	schema = schema.orEmpty()
	files = slices.Clone(files)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })

	s := &Set{files: files, schema: schema, permits: indexed{}, forbids: indexed{}, challenges: map[cedar.PolicyID]compiled{}}
	var problems []Problem
	seen := map[string]Problem{}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(f.Name), len(f.Data))
		h.Write(f.Data)

		list, err := cedar.NewPolicyListFromBytes(f.Name, f.Data)
		if err != nil {
			p := Problem{File: f.Name, Msg: err.Error()}
			if m := parseErrorRE.FindStringSubmatch(err.Error()); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Column, _ = strconv.Atoi(m[2])
				p.Msg = "syntax error: " + m[3]
			}
			problems = append(problems, p)
			continue
		}
		for _, pol := range list {
			pos := pol.Position()
			ann := pol.Annotations()
			id := string(ann[AnnotationID])
			if _, has := ann[AnnotationID]; !has {
				id = fmt.Sprintf("%s:%d", filepath.Base(f.Name), pos.Line)
			}
			prob := func(msg string) Problem {
				return Problem{File: f.Name, Line: pos.Line, Column: pos.Column, Policy: id, Msg: msg}
			}
			if id == "" {
				problems = append(problems, prob("empty @id"))
				continue
			}
			if prev, dup := seen[id]; dup {
				problems = append(problems, prob(fmt.Sprintf("duplicate id: also used at %s:%d", prev.File, prev.Line)))
				continue
			}
			seen[id] = prob("")
			c := compiled{id: cedar.PolicyID(id), policy: pol, risk: string(ann[AnnotationRisk])}
			info := PolicyInfo{ID: id, File: filepath.Base(f.Name), Line: pos.Line, Risk: c.risk}
			group, isChallenge := ann[AnnotationChallenge]
			switch {
			case isChallenge && pol.Effect() == cedar.Permit:
				problems = append(problems, prob("@challenge applies to forbid policies only: write the challenge as a forbid that the approver group can lift"))
				continue
			case isChallenge && strings.TrimSpace(string(group)) == "":
				problems = append(problems, prob("@challenge needs an approver group: @challenge(\"group\")"))
				continue
			case isChallenge:
				c.challenge = string(group)
				info.Effect, info.Challenge = "challenge", c.challenge
				s.challenges[c.id] = c
				s.forbids.add(c)
				s.all[0] = append(s.all[0], c)
			case pol.Effect() == cedar.Permit:
				info.Effect = "permit"
				s.permits.add(c)
				s.all[1] = append(s.all[1], c)
			default:
				info.Effect = "forbid"
				s.forbids.add(c)
				s.all[0] = append(s.all[0], c)
			}
			s.infos = append(s.infos, info)
			for _, msg := range schema.check(id, pol, &s.warnings) {
				problems = append(problems, prob(msg))
			}
		}
	}
	if len(problems) > 0 {
		return nil, &LoadError{Problems: problems}
	}
	s.version = hex.EncodeToString(h.Sum(nil))[:16]
	return s, nil
}

// callOnly are the context attributes that exist only in the call phase;
// toolOnly, only for call_tool; tokenOnly, only for request_token.
var (
	callOnly  = []string{"arguments", "paths", "findings"}
	toolOnly  = []string{"arguments", "paths"}
	tokenOnly = []string{"tools", "lifetime"}
)

// check validates one policy against the schema and returns its problems.
func (s *Schema) check(id string, pol *cedar.Policy, warnings *[]string) []string {
	a := (*xast.Policy)(pol.AST())
	paths := contextPaths(a)
	if !slices.ContainsFunc(paths, func(p string) bool { return slices.Contains(toolOnly, rootOf(p)) }) {
		return explain(s.base.Policy(id, a), "", paths, false)
	}
	tools := s.toolsFor(a.Resource)
	if len(tools) == 0 {
		// No tool the policy can apply to is known: type-check everything
		// but the tool-specific context, which is checked when the tool's
		// schema arrives (Engine.SetSchema).
		*warnings = append(*warnings, fmt.Sprintf("policy %s: no tool it applies to is in the schema; its argument conditions are not type-checked", id))
		return explain(s.base.Policy(id, a), "", paths, true)
	}
	var out []string
	seen := map[string]bool{}
	for _, t := range tools {
		for _, msg := range explain(s.variants[t].Policy(id, a), t, paths, false) {
			if !seen[msg] {
				seen[msg] = true
				out = append(out, msg)
			}
		}
	}
	return out
}

func rootOf(path string) string {
	root, _, _ := strings.Cut(path, ".")
	return root
}

var (
	contextAttrRE = regexp.MustCompile("^attribute `([^`]+)` in context for " + regexp.QuoteMeta(Namespace) + `::Action::"([a-z_]+)" not found$`)
	optionalRE    = regexp.MustCompile("^unable to guarantee safety of access to optional attribute `([^`]+)` in context for " + regexp.QuoteMeta(Namespace) + `::Action::"([a-z_]+)"$`)
)

// explain turns validator errors into messages an operator can act on:
// full context paths instead of leaf names, phase violations said as such,
// one message per attribute rather than one per action. With
// skipToolContext it drops problems with call_tool's arguments and paths.
func explain(err error, tool string, ctxPaths []string, skipToolContext bool) []string {
	if err == nil {
		return nil
	}
	errs := []error{err}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		errs = joined.Unwrap()
	}
	type key struct{ kind, attr string }
	var order []key
	actions := map[key][]string{}
	var out []string
	for _, e := range errs {
		msg := e.Error()
		if i := strings.Index(msg, "`, "); strings.HasPrefix(msg, "for policy `") && i > 0 {
			msg = msg[i+3:]
		}
		m := contextAttrRE.FindStringSubmatch(msg)
		optional := false
		if m == nil {
			m, optional = optionalRE.FindStringSubmatch(msg), true
		}
		if m == nil {
			if tool != "" && (strings.Contains(msg, "`arguments") || strings.Contains(msg, "`paths")) {
				msg += " (checking against tool " + tool + ")"
			}
			out = append(out, msg)
			continue
		}
		attr, action := fullPath(m[1], ctxPaths), Action(m[2])
		root := rootOf(attr)
		if skipToolContext && action == CallTool && slices.Contains(toolOnly, root) {
			continue
		}
		var kind string
		switch {
		case optional:
			kind = "optional"
		case action.Phase() == List && slices.Contains(callOnly, root):
			kind = "list"
		case action.Phase() == Token && slices.Contains(callOnly, root):
			kind = "token"
		case action != RequestToken && slices.Contains(tokenOnly, root):
			kind = "not-token"
		case action != CallTool && slices.Contains(toolOnly, root):
			kind = "not-tool"
		case action == CallTool && slices.Contains(toolOnly, root) && tool != "":
			kind = "tool"
		default:
			kind = "unknown"
		}
		k := key{kind, attr}
		if _, ok := actions[k]; !ok {
			order = append(order, k)
		}
		if !slices.Contains(actions[k], string(action)) {
			actions[k] = append(actions[k], string(action))
		}
	}
	for _, k := range order {
		acts := actions[k]
		sort.Strings(acts)
		list := strings.Join(acts, ", ")
		word := "action"
		if len(acts) > 1 {
			word = "actions"
		}
		parent, leaf := "context", k.attr
		if i := strings.LastIndex(k.attr, "."); i >= 0 {
			parent, leaf = "context."+k.attr[:i], k.attr[i+1:]
		}
		var msg string
		switch k.kind {
		case "optional":
			msg = fmt.Sprintf("reads context.%s, which may be absent (%s %s); test `%s has %s` first", k.attr, word, list, parent, leaf)
		case "list":
			msg = fmt.Sprintf("refers to context.%s, which the list phase (%s %s) cannot see; "+
				"scope the policy to call-phase actions, e.g. action == %s::Action::\"call_tool\"", k.attr, word, list, Namespace)
		case "token":
			msg = fmt.Sprintf("refers to context.%s, which token issuance (action %s) cannot see; "+
				"scope the policy to call-phase actions, e.g. action == %s::Action::\"call_tool\"", k.attr, list, Namespace)
		case "not-token":
			msg = fmt.Sprintf("refers to context.%s, which only token issuance has (not %s %s); "+
				"scope the policy to action == %s::Action::\"request_token\"", k.attr, word, list, Namespace)
		case "not-tool":
			msg = fmt.Sprintf("refers to context.%s, which %s %s %s not have (only call_tool does); "+
				"scope the policy to action == %s::Action::\"call_tool\"", k.attr, word, list, map[bool]string{true: "do", false: "does"}[len(acts) > 1], Namespace)
		case "tool":
			msg = fmt.Sprintf("refers to context.%s, which tool %s's input schema does not declare; "+
				"scope the policy to the tools that have it or test `%s has %s` first", k.attr, tool, parent, leaf)
		default:
			msg = fmt.Sprintf("refers to context.%s, which the schema does not declare (%s %s)", k.attr, word, list)
		}
		if tool != "" && k.kind == "optional" && slices.Contains(toolOnly, rootOf(k.attr)) {
			msg += " (checking against tool " + tool + ")"
		}
		out = append(out, msg)
	}
	return out
}

// fullPath returns the context path (from contextPaths) whose last element
// is attr, preferring attr itself; the validator names only the last
// element of a missing attribute.
func fullPath(attr string, paths []string) string {
	if strings.Contains(attr, ".") || slices.Contains(paths, attr) {
		return attr
	}
	for _, p := range paths {
		if strings.HasSuffix(p, "."+attr) {
			return p
		}
	}
	return attr
}

// contextPaths returns every attribute path a policy reads from context
// ("arguments.amount", "session_labels"), by access or by has, sorted.
func contextPaths(p *xast.Policy) []string {
	var out []string
	var path func(n xast.IsNode) (string, bool)
	path = func(n xast.IsNode) (string, bool) {
		var so xast.StrOpNode
		switch n := n.(type) {
		case xast.NodeTypeVariable:
			return "", n.Name == "context"
		case xast.NodeTypeAccess:
			so = n.StrOpNode
		case xast.NodeTypeHas:
			so = n.StrOpNode
		default:
			return "", false
		}
		base, ok := path(so.Arg)
		if !ok {
			return "", false
		}
		if base == "" {
			return string(so.Value), true
		}
		return base + "." + string(so.Value), true
	}
	visit := func(n xast.IsNode) bool {
		if p, ok := path(n); ok && p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
		return true
	}
	for _, c := range p.Conditions {
		xast.Inspect(xast.NewNode(c.Body), visit)
	}
	sort.Strings(out)
	return out
}

// toolsFor returns the ids of the schema's tools a resource scope admits,
// sorted.
func (s *Schema) toolsFor(scope xast.IsResourceScopeNode) []string {
	var match func(t *toolType, id string) bool
	inEntity := func(uid types.EntityUID) func(*toolType, string) bool {
		switch uid.Type {
		case TypeTool:
			return func(_ *toolType, id string) bool { return id == string(uid.ID) }
		case TypeServer:
			return func(t *toolType, _ string) bool { return t.server == string(uid.ID) }
		}
		return func(*toolType, string) bool { return false }
	}
	switch sc := scope.(type) {
	case xast.ScopeTypeEq:
		match = inEntity(sc.Entity)
		if sc.Entity.Type != TypeTool {
			match = func(*toolType, string) bool { return false }
		}
	case xast.ScopeTypeIn:
		match = inEntity(sc.Entity)
	case xast.ScopeTypeIsIn:
		match = inEntity(sc.Entity)
	default:
		match = func(*toolType, string) bool { return true }
	}
	var ids []string
	for id, t := range s.tools {
		if match(t, id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// errNoSet is the diagnostic of a decision taken before any set loaded.
var errNoSet = errors.New("no policy set loaded")
