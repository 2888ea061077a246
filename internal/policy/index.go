package policy

import (
	"iter"
	"slices"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/ast"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// The index narrows a decision to the policies whose scope can match the
// request before Cedar evaluates them. It is exact, not a heuristic: in
// Gatehouse's entity model the hierarchy is one level deep (an agent or
// user is in its groups; a tool, resource or prompt is in its server;
// groups, servers and actions have no parents), so "X in E" holds exactly
// when X is E or E is one of X's parents, and evaluating a scope can never
// fail. Skipping a policy whose scope does not match is what Cedar would do
// with it.

type scopeKind uint8

const (
	scopeAll scopeKind = iota
	scopeEq
	scopeIn
	scopeIs
	scopeIsIn
)

// scope is a principal or resource scope in matchable form.
type scope struct {
	kind scopeKind
	typ  types.EntityType
	uid  types.EntityUID
}

func scopeOf(n any) scope {
	switch s := n.(type) {
	case xast.ScopeTypeEq:
		return scope{kind: scopeEq, uid: s.Entity}
	case xast.ScopeTypeIn:
		return scope{kind: scopeIn, uid: s.Entity}
	case xast.ScopeTypeIs:
		return scope{kind: scopeIs, typ: s.Type}
	case xast.ScopeTypeIsIn:
		return scope{kind: scopeIsIn, typ: s.Type, uid: s.Entity}
	}
	return scope{kind: scopeAll}
}

// admits reports whether an entity with the given parents satisfies the
// scope.
func (s scope) admits(uid types.EntityUID, parents []types.EntityUID) bool {
	in := func() bool {
		if uid == s.uid {
			return true
		}
		for _, p := range parents {
			if p == s.uid {
				return true
			}
		}
		return false
	}
	switch s.kind {
	case scopeEq:
		return uid == s.uid
	case scopeIn:
		return in()
	case scopeIs:
		return uid.Type == s.typ
	case scopeIsIn:
		return uid.Type == s.typ && in()
	}
	return true
}

// actionsOf returns the actions an action scope admits. Actions have no
// parents, so "action in A" is "action == A".
func actionsOf(n xast.IsActionScopeNode) []Action {
	var uids []types.EntityUID
	switch s := n.(type) {
	case xast.ScopeTypeEq:
		uids = []types.EntityUID{s.Entity}
	case xast.ScopeTypeIn:
		uids = []types.EntityUID{s.Entity}
	case xast.ScopeTypeInSet:
		uids = s.Entities
	default:
		return Actions
	}
	var out []Action
	for _, u := range uids {
		if u.Type == TypeAction && Action(u.ID).Phase() != 0 {
			out = append(out, Action(u.ID))
		}
	}
	return out
}

// indexed is one class of policies (forbids or permits) split by the
// actions they admit, and within an action by the entity their resource
// scope names.
type indexed map[Action]*actionIndex

type actionIndex struct {
	list policyList
	// any holds the policies whose resource scope names no entity (all,
	// is); byUID those whose scope is == E, in E or is T in E, by E.
	any   []int32
	byUID map[types.EntityUID][]int32
}

func (ix indexed) add(c compiled) {
	a := (*xast.Policy)(c.policy.AST())
	c.principal, c.resource = scopeOf(a.Principal), scopeOf(a.Resource)
	c.needs = needsOf(a)
	// The index checks the scope exactly, so Cedar evaluates only the
	// conditions: the same policy with an unconstrained scope.
	bare := *a
	bare.Principal, bare.Action, bare.Resource = xast.ScopeTypeAll{}, xast.ScopeTypeAll{}, xast.ScopeTypeAll{}
	c.policy = cedar.NewPolicyFromAST((*ast.Policy)(&bare))
	for _, act := range actionsOf(a.Action) {
		ai := ix[act]
		if ai == nil {
			ai = &actionIndex{byUID: map[types.EntityUID][]int32{}}
			ix[act] = ai
		}
		i := int32(len(ai.list))
		ai.list = append(ai.list, c)
		switch c.resource.kind {
		case scopeEq, scopeIn, scopeIsIn:
			ai.byUID[c.resource.uid] = append(ai.byUID[c.resource.uid], i)
		default:
			ai.any = append(ai.any, i)
		}
	}
}

// pick appends to idx, in file order, the indices of the policies whose
// scopes admit the target, and returns it with what they need.
func (ai *actionIndex) pick(idx []int32, t *targeted) ([]int32, need) {
	if ai == nil {
		return idx, 0
	}
	start := len(idx)
	var needs need
	try := func(is []int32) {
		for _, i := range is {
			c := &ai.list[i]
			if c.principal.admits(t.principal, t.pParents) && c.resource.admits(t.resource, t.rParents) {
				idx = append(idx, i)
				needs |= c.needs
			}
		}
	}
	try(ai.any)
	try(ai.byUID[t.resource])
	for _, p := range t.rParents {
		try(ai.byUID[p])
	}
	slices.Sort(idx[start:])
	return idx, needs
}

// picked is the policies of one class whose scopes admit a request; it
// implements cedar.PolicyIterator.
type picked struct {
	list, list2 policyList
	idx, idx2   []int32
}

func (p *picked) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, i := range p.idx {
			if !yield(p.list[i].id, p.list[i].policy) {
				return
			}
		}
		for _, i := range p.idx2 {
			if !yield(p.list2[i].id, p.list2[i].policy) {
				return
			}
		}
	}
}

// need is the parts of the context (and entity store) a policy reads.
type need uint16

const (
	needAll need = 1 << iota // the context as a whole
	needNow
	needSession
	needUser
	needTask
	needTotals
	needFindings
	needArgs
	needPaths
	needToken // tools and lifetime (request_token): always built
	needSource
)

var needByRoot = map[string]need{
	"now": needNow, "session_labels": needSession, "user": needUser, "task": needTask,
	"totals": needTotals, "findings": needFindings, "arguments": needArgs, "paths": needPaths,
	"tools": needToken, "lifetime": needToken, "source": needSource,
}

// needsOf returns what a policy reads from the context. A root it does not
// know, the context used whole, or an entity literal of a user or task
// (which must then be in the store) need everything.
func needsOf(p *xast.Policy) need {
	var n need
	for _, path := range contextPaths(p) {
		root := rootOf(path)
		if b, ok := needByRoot[root]; ok {
			n |= b
		} else {
			n |= needAll
		}
	}
	vars, direct := 0, 0
	visit := func(node xast.IsNode) bool {
		switch node := node.(type) {
		case xast.NodeTypeVariable:
			if node.Name == "context" {
				vars++
			}
		case xast.NodeTypeAccess:
			if v, ok := node.Arg.(xast.NodeTypeVariable); ok && v.Name == "context" {
				direct++
			}
		case xast.NodeTypeHas:
			if v, ok := node.Arg.(xast.NodeTypeVariable); ok && v.Name == "context" {
				direct++
			}
		case xast.NodeValue:
			if uid, ok := node.Value.(types.EntityUID); ok && (uid.Type == TypeUser || uid.Type == TypeTask) {
				n |= needAll
			}
		}
		return true
	}
	for _, c := range p.Conditions {
		xast.Inspect(xast.NewNode(c.Body), visit)
	}
	if vars != direct {
		n |= needAll
	}
	return n
}
