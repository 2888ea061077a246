package secret

import (
	"encoding/binary"
	"regexp/syntax"
	"slices"
	"unicode"
	"unicode/utf8"
)

// The head check. Go's regexp package has no DFA: it backtracks, and on
// gitleaks' counted repetitions ([\w.-]{0,20} and the like) trying a rule
// at one keyword costs microseconds, so text dense with keywords (JSON
// whose field names say key, password, auth) scanned at a few MB/s. The
// head of a rule is a bounded opening of its expression (see head in
// secret.go); it is compiled here into a small deterministic automaton
// over bytes, built once, that reads a few dozen bytes from a keyword and
// says whether the rule can match there at all. Only where it can does
// the scanner run the regexp. Empty-width assertions (\b, ^, $) are taken
// as always true, which only widens what the head accepts, so the check
// stays a necessary condition: it never rejects a place where the rule
// matches.

// maxHeadStates bounds the automaton of one head; a head that needs more
// is not used.
const maxHeadStates = 4096

// headDFA is a deterministic automaton for a head expression. It is
// immutable after compileHead and safe for concurrent use.
type headDFA struct {
	nfa    []nstate
	eps    [][]int32 // each NFA state's closure (see epsilon)
	start  int32
	states []dstate
}

// nstate is a state of the Thompson automaton the DFA is built from:
// either a character test (with one successor) or a fork (epsilon
// successors); the state numbered match accepts.
type nstate struct {
	char  bool
	ascii [2]uint64 // char: the ASCII characters accepted
	other []rune    // char: ranges (pairs) of other runes accepted
	out   []int32   // successors
}

// dstate is a DFA state: the set of NFA character states it stands for,
// whether it accepts, and its transitions on ASCII bytes (-1: no match).
type dstate struct {
	set    []int32
	accept bool
	next   [utf8.RuneSelf]int16
}

const nMatch = 0 // the accepting NFA state

// compileHead builds the automaton of re, or returns nil when re contains
// an unbounded repetition or the automaton would be too large.
func compileHead(re *syntax.Regexp) *headDFA {
	d := &headDFA{nfa: []nstate{{}}}
	start, ok := d.compile(re, nMatch)
	if !ok {
		return nil
	}
	d.start = start
	d.eps = make([][]int32, len(d.nfa))
	for i := range d.nfa {
		d.eps[i] = d.epsilon(int32(i), map[int32]bool{}, nil)
	}
	if !d.determinise() {
		return nil
	}
	return d
}

func (d *headDFA) add(s nstate) int32 {
	d.nfa = append(d.nfa, s)
	return int32(len(d.nfa) - 1)
}

// charState returns a character test for runes (pairs of inclusive
// ranges), continuing at next.
func (d *headDFA) charState(ranges []rune, next int32) int32 {
	s := nstate{char: true, out: []int32{next}}
	for i := 0; i+1 < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		for c := lo; c <= hi && c < utf8.RuneSelf; c++ {
			s.ascii[c>>6] |= 1 << (c & 63)
		}
		if hi >= utf8.RuneSelf {
			s.other = append(s.other, max(lo, utf8.RuneSelf), hi)
		}
	}
	return d.add(s)
}

// compile adds the states of re, continuing at next, and returns its
// entry state.
func (d *headDFA) compile(re *syntax.Regexp, next int32) (int32, bool) {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return next, true // assertions: taken as true (a superset)
	case syntax.OpLiteral:
		for i := len(re.Rune) - 1; i >= 0; i-- {
			c := re.Rune[i]
			rs := []rune{c, c}
			if re.Flags&syntax.FoldCase != 0 {
				for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
					rs = append(rs, f, f)
				}
			}
			next = d.charState(rs, next)
		}
		return next, true
	case syntax.OpCharClass:
		return d.charState(re.Rune, next), true
	case syntax.OpAnyCharNotNL:
		return d.charState([]rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune}, next), true
	case syntax.OpAnyChar:
		return d.charState([]rune{0, unicode.MaxRune}, next), true
	case syntax.OpCapture:
		return d.compile(re.Sub[0], next)
	case syntax.OpConcat:
		for i := len(re.Sub) - 1; i >= 0; i-- {
			var ok bool
			if next, ok = d.compile(re.Sub[i], next); !ok {
				return 0, false
			}
		}
		return next, true
	case syntax.OpAlternate:
		fork := nstate{}
		for _, s := range re.Sub {
			e, ok := d.compile(s, next)
			if !ok {
				return 0, false
			}
			fork.out = append(fork.out, e)
		}
		return d.add(fork), true
	case syntax.OpQuest:
		e, ok := d.compile(re.Sub[0], next)
		if !ok {
			return 0, false
		}
		return d.add(nstate{out: []int32{e, next}}), true
	case syntax.OpRepeat:
		if re.Max < 0 || re.Max > 256 {
			return 0, false
		}
		// x{n,m} = x…x (n times) then (x(x(…)?)?)? (m-n times)
		cur := next
		for range re.Max - re.Min {
			e, ok := d.compile(re.Sub[0], cur)
			if !ok {
				return 0, false
			}
			cur = d.add(nstate{out: []int32{e, next}})
		}
		for range re.Min {
			var ok bool
			if cur, ok = d.compile(re.Sub[0], cur); !ok {
				return 0, false
			}
		}
		return cur, true
	}
	return 0, false // unbounded repetition
}

// closure returns the character states and the match state reachable from
// states through forks, sorted and without repeats.
func (d *headDFA) closure(states []int32) []int32 {
	var out []int32
	for _, s := range states {
		out = append(out, d.eps[s]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// epsilon returns the character states and the match state reachable from
// s through forks.
func (d *headDFA) epsilon(s int32, seen map[int32]bool, out []int32) []int32 {
	if seen[s] {
		return out
	}
	seen[s] = true
	if s == nMatch || d.nfa[s].char {
		return append(out, s)
	}
	for _, o := range d.nfa[s].out {
		out = d.epsilon(o, seen, out)
	}
	return out
}

// step returns the closure of the successors of the states in set that
// accept c.
func (d *headDFA) step(set []int32, c rune) []int32 {
	var next []int32
	for _, s := range set {
		if s != nMatch && d.nfa[s].accepts(c) {
			next = append(next, d.nfa[s].out[0])
		}
	}
	return d.closure(next)
}

func (s *nstate) accepts(c rune) bool {
	if c < utf8.RuneSelf {
		return s.ascii[c>>6]&(1<<(c&63)) != 0
	}
	for i := 0; i+1 < len(s.other); i += 2 {
		if c >= s.other[i] && c <= s.other[i+1] {
			return true
		}
	}
	return false
}

func setKey(set []int32) string {
	b := make([]byte, 0, 4*len(set))
	for _, s := range set {
		b = append(b, byte(s), byte(s>>8), byte(s>>16), byte(s>>24))
	}
	return string(b)
}

// determinise builds the DFA's states and their ASCII transitions by
// subset construction; it fails when there would be more than
// maxHeadStates states.
func (d *headDFA) determinise() bool {
	ids := map[string]int16{}
	var queue []int16
	state := func(set []int32) (int16, bool) {
		if len(set) == 0 {
			return -1, true
		}
		k := setKey(set)
		if id, ok := ids[k]; ok {
			return id, true
		}
		if len(d.states) >= maxHeadStates {
			return 0, false
		}
		id := int16(len(d.states))
		ids[k] = id
		d.states = append(d.states, dstate{set: set, accept: set[0] == nMatch})
		queue = append(queue, id)
		return id, true
	}
	if _, ok := state(d.closure([]int32{d.start})); !ok {
		return false
	}
	// ASCII bytes that every character state treats alike share their
	// transitions: compute one per class
	classOf := map[string]int{}
	var reps []rune
	var class [utf8.RuneSelf]int
	for c := rune(0); c < utf8.RuneSelf; c++ {
		var sig []byte // the character states that accept c
		for i := range d.nfa {
			if d.nfa[i].char && d.nfa[i].accepts(c) {
				sig = binary.AppendUvarint(sig, uint64(i))
			}
		}
		k, ok := classOf[string(sig)]
		if !ok {
			k = len(reps)
			classOf[string(sig)] = k
			reps = append(reps, c)
		}
		class[c] = k
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if d.states[id].accept {
			continue // matching stops here
		}
		var byClass []int16
		for _, c := range reps {
			n, ok := state(d.step(d.states[id].set, c))
			if !ok {
				return false
			}
			byClass = append(byClass, n)
		}
		for c := range d.states[id].next {
			d.states[id].next[c] = byClass[class[c]]
		}
	}
	return true
}

// match reports whether the head can match text starting at byte p. Text
// that is not ASCII is followed through the NFA from where the DFA got to.
func (d *headDFA) match(text string, p int) bool {
	s := &d.states[0]
	for i := p; ; {
		if s.accept {
			return true
		}
		if i >= len(text) {
			return false
		}
		c := text[i]
		if c >= utf8.RuneSelf {
			return d.matchNFA(s.set, text[i:])
		}
		n := s.next[c]
		if n < 0 {
			return false
		}
		s = &d.states[n]
		i++
	}
}

func (d *headDFA) matchNFA(set []int32, text string) bool {
	for _, c := range text {
		if set = d.step(set, c); len(set) == 0 {
			return false
		}
		if set[0] == nMatch {
			return true
		}
	}
	return false
}
