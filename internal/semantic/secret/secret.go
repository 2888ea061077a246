// Package secret finds credentials in text with gitleaks' rule set
// (github.com/zricethezav/gitleaks/v8, its default gitleaks.toml: rules,
// keywords, entropy thresholds, allow-lists and stop-words).
//
// The rules are gitleaks'; the matching loop is this package's own, built
// for a gateway's latency budget: one Aho–Corasick pass over the text finds
// rule keywords, and a rule's expression runs only where its keyword
// occurs. Most gitleaks rules have the shape PREFIX? KEYWORD REST, where
// PREFIX is an optional bounded run of one character class; for those the
// scanner matches KEYWORD REST anchored at each keyword occurrence and
// widens the match backwards over PREFIX, which gives the same matches as
// running the whole expression over the text at a fraction of the cost.
// Other rules run on a window around each keyword occurrence, or on the
// whole text when their match length is unbounded.
//
// Differences from the gitleaks CLI, by design: inline "gitleaks:allow"
// comments are not honoured (an attacker controls the text); rules and
// allow-lists that depend on a file path or commit never apply (there is
// none); composite rules (required auxiliary findings) are skipped; and
// recursive decoding of encoded segments is not done here (the semantic
// engine decodes payloads itself).
//
// A Scanner is immutable after New and safe for concurrent use.
package secret

import (
	"fmt"
	"math"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/viper"

	"github.com/gatehouse/gatehouse/internal/semantic/keyword"
	"github.com/zricethezav/gitleaks/v8/config"
)

// Match is one secret found in a text.
type Match struct {
	// RuleID is the gitleaks rule that matched, such as "github-pat".
	RuleID string
	// Description is the rule's description.
	Description string
	// Start and End are byte offsets of the secret in the text.
	Start, End int
	// Entropy is the Shannon entropy of the secret.
	Entropy float64
}

// Scanner scans text for secrets.
type Scanner struct {
	rules    []rule
	kwRules  [][]int // keyword id -> rule indices
	keywords *keyword.Set
	global   []*config.Allowlist
	always   []int // rules without keywords
}

type rule struct {
	config.Rule
	// anchored matches the rule's expression minus its optional prefix at
	// the start of the input; ctxAnchored does so after one rune of left
	// context (for \b at the keyword). nil when the rule has no such shape.
	anchored, ctxAnchored *regexp.Regexp
	// quick and ctxQuick are the same with counted repetitions relaxed to
	// unbounded ones: a superset that compiles to a far smaller program,
	// used to reject a keyword occurrence cheaply.
	quick, ctxQuick *regexp.Regexp
	// quickWindow bounds the input of the pre-check (0: no bound); see
	// endsAtText.
	quickWindow int
	// head is an automaton for a bounded opening of the expression (see
	// head and head.go): every match of the rule at a keyword starts with
	// a match of head there, so a keyword occurrence where head fails is
	// rejected after a few dozen bytes, before quick runs Go's
	// backtracking matcher over a longer window. nil when the rule has no
	// such opening.
	head      *headDFA
	prefix    *syntax.Regexp // the stripped prefix class
	prefixMax int
	maxLen    int // maximum match length in bytes; -1 if unbounded
}

var (
	defaultOnce sync.Once
	defaultScan *Scanner
	defaultErr  error
)

// Default returns a Scanner for gitleaks' default rules, built once.
func Default() (*Scanner, error) {
	defaultOnce.Do(func() { defaultScan, defaultErr = New(config.DefaultConfig) })
	return defaultScan, defaultErr
}

// New builds a Scanner from a gitleaks TOML configuration.
func New(toml string) (*Scanner, error) {
	v := viper.New()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader(toml)); err != nil {
		return nil, fmt.Errorf("reading gitleaks config: %w", err)
	}
	var vc config.ViperConfig
	if err := v.Unmarshal(&vc); err != nil {
		return nil, fmt.Errorf("decoding gitleaks config: %w", err)
	}
	cfg, err := vc.Translate()
	if err != nil {
		return nil, fmt.Errorf("translating gitleaks config: %w", err)
	}
	s := &Scanner{global: cfg.Allowlists}
	ids := make([]string, 0, len(cfg.Rules))
	for id := range cfg.Rules {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	kwIndex := map[string]int{}
	var kws []string
	for _, id := range ids {
		r := cfg.Rules[id]
		if r.Regex == nil || r.Path != nil || r.SkipReport || len(r.RequiredRules) > 0 {
			continue // path rules need a file name; composite rules are not supported
		}
		cr, err := compile(r)
		if err != nil {
			return nil, fmt.Errorf("rule %s: %w", id, err)
		}
		i := len(s.rules)
		s.rules = append(s.rules, cr)
		if len(r.Keywords) == 0 {
			s.always = append(s.always, i)
			continue
		}
		for _, k := range r.Keywords {
			k = strings.ToLower(k)
			ki, ok := kwIndex[k]
			if !ok {
				ki = len(kws)
				kwIndex[k] = ki
				kws = append(kws, k)
				s.kwRules = append(s.kwRules, nil)
			}
			s.kwRules[ki] = append(s.kwRules[ki], i)
		}
	}
	s.keywords = keyword.New(kws)
	return s, nil
}

// Rules returns the number of rules loaded.
func (s *Scanner) Rules() int { return len(s.rules) }

func compile(r config.Rule) (rule, error) {
	cr := rule{Rule: r, maxLen: -1}
	re, err := syntax.Parse(r.Regex.String(), syntax.Perl)
	if err != nil {
		return cr, err
	}
	if n := maxLength(re); n >= 0 {
		cr.maxLen = n
	}
	// Strip a leading optional character-class run and check that what is
	// left starts with the rule's keywords.
	core := re
	if re.Op == syntax.OpConcat && len(re.Sub) > 1 {
		first := re.Sub[0]
		if (first.Op == syntax.OpRepeat || first.Op == syntax.OpStar) && first.Min == 0 && len(first.Sub) == 1 && first.Sub[0].Op == syntax.OpCharClass {
			cr.prefix = first.Sub[0]
			cr.prefixMax = first.Max
			if first.Op == syntax.OpStar {
				cr.prefixMax = -1
			}
			core = &syntax.Regexp{Op: syntax.OpConcat, Flags: re.Flags, Sub: re.Sub[1:]}
		}
	}
	if !startsWithKeyword(core, r.Keywords) {
		cr.prefix = nil
		return cr, nil
	}
	if cr.prefix != nil && cr.prefixMax < 0 {
		cr.prefix = nil
		return cr, nil
	}
	src := core.String()
	if cr.anchored, err = regexp.Compile(`^(?:` + src + `)`); err != nil {
		return cr, err
	}
	if cr.ctxAnchored, err = regexp.Compile(`^(?s:.)(?:` + src + `)`); err != nil {
		return cr, err
	}
	switch {
	case cr.maxLen >= 0:
		cr.quickWindow = cr.maxLen + 1
	case endsAtText(core):
		cr.quickWindow = quickWindow
		if w := truncationWindow(core); w > 0 && w < quickWindow {
			cr.quickWindow = w
		}
	}
	if h := head(core); h != nil {
		if n := maxLength(h); cr.maxLen < 0 || n < cr.maxLen {
			cr.head = compileHead(h)
		}
	}
	if rel := relax(core); rel != nil {
		q := rel.String()
		if cr.quick, err = regexp.Compile(`^(?:` + q + `)`); err != nil {
			return cr, err
		}
		if cr.ctxQuick, err = regexp.Compile(`^(?s:.)(?:` + q + `)`); err != nil {
			return cr, err
		}
	}
	return cr, nil
}

// quickWindow bounds the pre-check's input for unbounded rules that may end
// at the end of the text: cut there, such a rule still matches the window
// whenever it matches the text, and a short input keeps Go's backtracking
// matcher cheap.
const quickWindow = 512

// endsAtText reports whether re is a concatenation whose last element may
// match the empty string at the end of the text (gitleaks' usual
// terminator "(?:[\x60'\"\s;]|\\[nr]|$)").
func endsAtText(re *syntax.Regexp) bool {
	if re.Op != syntax.OpConcat || len(re.Sub) == 0 {
		return false
	}
	last := re.Sub[len(re.Sub)-1]
	for last.Op == syntax.OpCapture {
		last = last.Sub[0]
	}
	switch last.Op {
	case syntax.OpEndText, syntax.OpEndLine:
		return true
	case syntax.OpAlternate:
		for _, s := range last.Sub {
			if s.Op == syntax.OpEndText || s.Op == syntax.OpEndLine {
				return true
			}
		}
	}
	return false
}

// truncationWindow returns a window length for the pre-check of a rule
// that may end at the end of the text, or 0. The rule must be a
// concatenation PREFIX... SECRET TAIL... where SECRET is the last element
// with an unbounded or wide repetition, every PREFIX element has a bounded
// length and every TAIL element can match the empty string. A window of
// max(PREFIX) + the longest minimum of SECRET's alternatives + 1 bytes then
// holds, for any real match, a prefix that the relaxed expression accepts
// at the window's end; so the cut loses no match.
func truncationWindow(re *syntax.Regexp) int {
	if re.Op != syntax.OpConcat {
		return 0
	}
	subs := re.Sub
	j := -1
	for i, s := range subs {
		if maxLength(s) < 0 || relax(s) != nil {
			j = i
		}
	}
	if j < 0 {
		return 0
	}
	w := 0
	for _, s := range subs[:j] {
		n := maxLength(s)
		if n < 0 {
			return 0
		}
		w += n
	}
	for _, s := range subs[j+1:] {
		if minLength(s) != 0 {
			return 0
		}
	}
	sec := subs[j]
	for sec.Op == syntax.OpCapture {
		sec = sec.Sub[0]
	}
	m := minLength(sec)
	if sec.Op == syntax.OpAlternate {
		for _, a := range sec.Sub {
			m = max(m, minLength(a))
		}
	}
	if m < 0 {
		return 0
	}
	return w + m*utf8.UTFMax + 1
}

// minLength returns the minimum length in runes of a match of re (an
// underestimate of bytes), or -1 for operators it does not know.
func minLength(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 0
	case syntax.OpLiteral:
		return len(re.Rune)
	case syntax.OpCharClass, syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		return 1
	case syntax.OpCapture, syntax.OpPlus:
		return minLength(re.Sub[0])
	case syntax.OpStar, syntax.OpQuest:
		return 0
	case syntax.OpRepeat:
		n := minLength(re.Sub[0])
		if n < 0 {
			return -1
		}
		return n * re.Min
	case syntax.OpConcat:
		t := 0
		for _, s := range re.Sub {
			n := minLength(s)
			if n < 0 {
				return -1
			}
			t += n
		}
		return t
	case syntax.OpAlternate:
		m := -1
		for _, s := range re.Sub {
			n := minLength(s)
			if n < 0 {
				return -1
			}
			if m < 0 || n < m {
				m = n
			}
		}
		return max(m, 0)
	}
	return -1
}

// relax returns a copy of re whose wide counted repetitions x{n,m} become
// x{n,}, or nil when re has none. Every match of re is a match of the
// result, so the result is a sound pre-check.
func relax(re *syntax.Regexp) *syntax.Regexp {
	changed := false
	var walk func(*syntax.Regexp) *syntax.Regexp
	walk = func(r *syntax.Regexp) *syntax.Regexp {
		c := *r
		if len(r.Sub) > 0 {
			c.Sub = make([]*syntax.Regexp, len(r.Sub))
			for i, s := range r.Sub {
				c.Sub[i] = walk(s)
			}
		}
		if c.Op == syntax.OpRepeat && c.Max > c.Min+3 {
			c.Max = -1
			changed = true
		}
		return &c
	}
	out := walk(re)
	if !changed {
		return nil
	}
	return out
}

// head returns a bounded expression that matches an opening of every
// match of re, or nil when it cannot make one that is shorter than re.
// Elements of a concatenation are kept while their length is bounded; the
// first unbounded one is cut to its shortest form (x{n,m} and x{n,}
// become x{n}, x* and x? vanish, x+ becomes x, an alternation cuts each
// branch) and the rest is dropped. Any string that re matches begins
// with a string that the result matches, so the result is a sound
// necessary condition, and it needs only a short window.
func head(re *syntax.Regexp) *syntax.Regexp {
	if re.Op != syntax.OpConcat {
		return nil
	}
	for i, s := range re.Sub {
		if maxLength(s) >= 0 {
			continue
		}
		sub := make([]*syntax.Regexp, 0, i+1)
		sub = append(sub, re.Sub[:i]...)
		if c := shortest(s); c != nil {
			sub = append(sub, c)
		}
		return &syntax.Regexp{Op: syntax.OpConcat, Flags: re.Flags, Sub: sub}
	}
	return nil
}

// shortest returns an expression of bounded length that matches an opening
// of every match of re, cutting repetitions to their minimum (x{n,m} and
// x{n,} become x{n}, x* and x? vanish, x+ becomes x, an alternation cuts
// each branch), or nil for the empty expression.
func shortest(re *syntax.Regexp) *syntax.Regexp {
	switch re.Op {
	case syntax.OpCapture:
		return shortest(re.Sub[0])
	case syntax.OpStar, syntax.OpQuest:
		return nil
	case syntax.OpPlus:
		return shortest(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min == 0 {
			return nil
		}
		if maxLength(re.Sub[0]) >= 0 {
			return &syntax.Regexp{Op: syntax.OpRepeat, Flags: re.Flags, Min: re.Min, Max: re.Min, Sub: re.Sub}
		}
		return shortest(re.Sub[0])
	case syntax.OpConcat:
		if h := head(re); h != nil {
			return h
		}
		return re // bounded
	case syntax.OpAlternate:
		alt := &syntax.Regexp{Op: syntax.OpAlternate, Flags: re.Flags}
		for _, s := range re.Sub {
			c := shortest(s)
			if c == nil {
				return nil // a branch may match the empty string
			}
			alt.Sub = append(alt.Sub, c)
		}
		return alt
	}
	if maxLength(re) >= 0 {
		return re
	}
	return nil
}

// startsWithKeyword reports whether every match of re begins with one of
// keywords (compared case-insensitively): re must open, after empty-width
// assertions and capture groups, with literals or an alternation of
// literals each of which starts with a keyword.
func startsWithKeyword(re *syntax.Regexp, keywords []string) bool {
	if len(keywords) == 0 {
		return false
	}
	lits, ok := leadingLiterals(re)
	if !ok || len(lits) == 0 {
		return false
	}
	for _, l := range lits {
		found := false
		for _, k := range keywords {
			if strings.HasPrefix(strings.ToLower(l), strings.ToLower(k)) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// leadingLiterals returns a set of literal strings such that every match
// of re starts with one of them (compared case-insensitively), when re
// starts with such a finite set. full reports that the set is exactly the
// language of re, so that a concatenation may extend it.
func leadingLiterals(re *syntax.Regexp) (lits []string, ok bool) {
	lits, _, ok = literalSet(re)
	return lits, ok
}

const maxLiteralSet = 64

func literalSet(re *syntax.Regexp) (lits []string, full, ok bool) {
	switch re.Op {
	case syntax.OpEmptyMatch:
		return []string{""}, true, true
	case syntax.OpLiteral:
		return []string{string(re.Rune)}, true, true
	case syntax.OpCapture:
		return literalSet(re.Sub[0])
	case syntax.OpQuest:
		l, f, ok := literalSet(re.Sub[0])
		if !ok || !f {
			return nil, false, false
		}
		return append(l, ""), true, true
	case syntax.OpCharClass:
		n := 0
		for i := 0; i+1 < len(re.Rune); i += 2 {
			n += int(re.Rune[i+1]-re.Rune[i]) + 1
		}
		if n == 0 || n > 4 {
			return nil, false, false
		}
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for c := re.Rune[i]; c <= re.Rune[i+1]; c++ {
				lits = append(lits, string(c))
			}
		}
		return lits, true, true
	case syntax.OpAlternate:
		full = true
		for _, sub := range re.Sub {
			l, f, ok := literalSet(sub)
			if !ok {
				return nil, false, false
			}
			full = full && f
			lits = append(lits, l...)
		}
		return lits, full, len(lits) <= maxLiteralSet
	case syntax.OpConcat:
		acc := []string{""}
		consumed := false
		for _, sub := range re.Sub {
			switch sub.Op {
			case syntax.OpWordBoundary, syntax.OpBeginLine, syntax.OpBeginText:
				if !consumed {
					continue
				}
			}
			l, f, ok := literalSet(sub)
			if !ok {
				return acc, false, consumed
			}
			next := make([]string, 0, len(acc)*len(l))
			for _, p := range acc {
				for _, x := range l {
					next = append(next, p+x)
				}
			}
			if len(next) > maxLiteralSet {
				return acc, false, consumed
			}
			acc, consumed = next, true
			if !f {
				return acc, false, true
			}
		}
		return acc, true, consumed
	}
	return nil, false, false
}

// maxLength returns the maximum length in bytes of a match of re, or -1.
func maxLength(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 0
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			w := utf8.RuneLen(r)
			if re.Flags&syntax.FoldCase != 0 {
				// folded forms can be longer (k and the Kelvin sign)
				for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
					w = max(w, utf8.RuneLen(f))
				}
			}
			n += w
		}
		return n
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return 0
		}
		return max(utf8.RuneLen(re.Rune[len(re.Rune)-1]), 1)
	case syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		return utf8.UTFMax
	case syntax.OpCapture:
		return maxLength(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus:
		return -1
	case syntax.OpQuest:
		return maxLength(re.Sub[0])
	case syntax.OpRepeat:
		if re.Max < 0 {
			return -1
		}
		n := maxLength(re.Sub[0])
		if n < 0 {
			return -1
		}
		return n * re.Max
	case syntax.OpConcat:
		t := 0
		for _, s := range re.Sub {
			n := maxLength(s)
			if n < 0 {
				return -1
			}
			t += n
		}
		return t
	case syntax.OpAlternate:
		t := 0
		for _, s := range re.Sub {
			n := maxLength(s)
			if n < 0 {
				return -1
			}
			t = max(t, n)
		}
		return t
	}
	return -1
}

// Scan returns the secrets in text, in order of position.
func (s *Scanner) Scan(text string) []Match {
	type hit struct{ rule, start int32 }
	var hits []hit
	s.keywords.Find(text, func(id, start int) {
		for _, r := range s.kwRules[id] {
			hits = append(hits, hit{int32(r), int32(start)})
		}
	})
	var out []Match
	if len(hits) == 0 && len(s.always) == 0 {
		return nil
	}
	// Group the keyword occurrences by rule (a counting sort: text dense
	// with keywords has thousands of hits, and comparison sorting them
	// cost a quarter of the scan); within a rule they stay in the order
	// found, which is by end and almost always by start.
	first := make([]int32, len(s.rules)+1)
	for _, h := range hits {
		first[h.rule+1]++
	}
	for r := 1; r < len(first); r++ {
		first[r] += first[r-1]
	}
	starts := make([]int, len(hits))
	next := slices.Clone(first[:len(s.rules)])
	for _, h := range hits {
		starts[next[h.rule]] = int(h.start)
		next[h.rule]++
	}
	var lines lineIndex
	for r := range s.rules {
		st := starts[first[r]:first[r+1]]
		if len(st) == 0 {
			continue
		}
		if !slices.IsSorted(st) {
			slices.Sort(st)
		}
		st = slices.Compact(st)
		out = s.scanRule(&s.rules[r], text, st, &lines, out)
	}
	for _, r := range s.always {
		out = s.scanRule(&s.rules[r], text, nil, &lines, out)
	}
	out = dropShadowedGeneric(out)
	slices.SortFunc(out, func(a, b Match) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return strings.Compare(a.RuleID, b.RuleID)
	})
	return out
}

// dropShadowedGeneric drops a finding of a generic rule when a specific
// rule found a secret that contains it, as gitleaks does.
func dropShadowedGeneric(ms []Match) []Match {
	var out []Match
	for _, m := range ms {
		shadowed := false
		if strings.Contains(m.RuleID, "generic") {
			for _, o := range ms {
				if !strings.Contains(o.RuleID, "generic") && o.Start <= m.Start && m.End <= o.End {
					shadowed = true
					break
				}
			}
		}
		if !shadowed {
			out = append(out, m)
		}
	}
	return out
}

// scanRule finds the matches of r in text given the offsets of its
// keyword occurrences (nil: scan everything).
func (s *Scanner) scanRule(r *rule, text string, starts []int, lines *lineIndex, out []Match) []Match {
	switch {
	case r.anchored != nil && starts != nil:
		end := -1 // end of the last match; keyword hits inside it are skipped
		for _, p := range starts {
			if p < end {
				continue
			}
			var loc []int
			off := p
			limit := len(text)
			if r.maxLen >= 0 {
				limit = min(len(text), p+r.maxLen+1)
			}
			if r.head != nil && !r.head.match(text[:limit], p) {
				continue
			}
			if r.quick != nil {
				qlimit := limit
				if r.quickWindow > 0 {
					qlimit = min(limit, p+r.quickWindow)
				}
				var ok bool
				if p == 0 {
					ok = r.quick.MatchString(text[:qlimit])
				} else {
					_, w := utf8.DecodeLastRuneInString(text[:p])
					ok = r.ctxQuick.MatchString(text[p-w : qlimit])
				}
				if !ok {
					continue
				}
			}
			if p == 0 {
				loc = r.anchored.FindStringSubmatchIndex(text[:limit])
			} else {
				_, w := utf8.DecodeLastRuneInString(text[:p])
				off = p - w
				loc = r.ctxAnchored.FindStringSubmatchIndex(text[off:limit])
				if loc != nil {
					loc[0] = w // the context rune is not part of the match
				}
			}
			if loc == nil {
				continue
			}
			for k := range loc {
				if loc[k] >= 0 {
					loc[k] += off
				}
			}
			// widen over the optional prefix, as the leftmost match would
			if r.prefix != nil {
				k := 0
				for loc[0] > 0 && k < r.prefixMax {
					c, w := utf8.DecodeLastRuneInString(text[:loc[0]])
					if !classMatches(r.prefix, c) {
						break
					}
					loc[0] -= w
					k++
				}
			}
			end = loc[1]
			if m, ok := s.accept(r, text, loc, lines); ok {
				out = append(out, m)
			}
		}
	case r.maxLen >= 0 && starts != nil:
		// window around each keyword occurrence
		lastEnd := 0
		for _, p := range starts {
			lo := max(lastEnd, p-r.maxLen)
			hi := min(len(text), p+r.maxLen+1)
			if lo >= hi {
				continue
			}
			for _, loc := range r.Regex.FindAllStringSubmatchIndex(text[lo:hi], -1) {
				for k := range loc {
					if loc[k] >= 0 {
						loc[k] += lo
					}
				}
				if loc[0] > p || loc[1] < p {
					continue // belongs to another occurrence's window
				}
				if loc[1] > lastEnd {
					lastEnd = loc[1]
				}
				if m, ok := s.accept(r, text, loc, lines); ok {
					out = append(out, m)
				}
			}
		}
	default:
		for _, loc := range r.Regex.FindAllStringSubmatchIndex(text, -1) {
			if m, ok := s.accept(r, text, loc, lines); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

func classMatches(class *syntax.Regexp, c rune) bool {
	rs := class.Rune
	for i := 0; i+1 < len(rs); i += 2 {
		if c >= rs[i] && c <= rs[i+1] {
			return true
		}
	}
	return false
}

// accept applies gitleaks' post-match checks: secret group, entropy and
// allow-lists (global, then the rule's).
func (s *Scanner) accept(r *rule, text string, loc []int, lines *lineIndex) (Match, bool) {
	ms, me := loc[0], loc[1]
	for me > ms && text[me-1] == '\n' {
		me--
	}
	for ms < me && text[ms] == '\n' {
		ms++
	}
	ss, se := ms, me
	if len(loc) > 2 {
		if g := r.SecretGroup; g > 0 {
			if 2*g+1 >= len(loc) || loc[2*g] < 0 {
				return Match{}, false
			}
			ss, se = loc[2*g], loc[2*g+1]
		} else {
			for g := 1; 2*g+1 < len(loc); g++ {
				if loc[2*g] >= 0 && loc[2*g+1] > loc[2*g] {
					ss, se = loc[2*g], loc[2*g+1]
					break
				}
			}
		}
	}
	secret := text[ss:se]
	e := entropy(secret)
	if r.Entropy != 0 && e <= r.Entropy {
		return Match{}, false
	}
	match := text[ms:me]
	for _, lists := range [][]*config.Allowlist{s.global, r.Allowlists} {
		for _, a := range lists {
			if allowed(a, secret, match, func() string { return lines.line(text, ms, me) }) {
				return Match{}, false
			}
		}
	}
	return Match{RuleID: r.RuleID, Description: r.Description, Start: ss, End: se, Entropy: e}, true
}

func allowed(a *config.Allowlist, secret, match string, line func() string) bool {
	target := secret
	switch a.RegexTarget {
	case "match":
		target = match
	case "line":
		target = line()
	}
	regexOK := a.RegexAllowed(target)
	stopOK, _ := a.ContainsStopWord(secret)
	if a.MatchCondition == config.AllowlistMatchAnd {
		// Commit and path conditions can never hold for gateway text.
		if len(a.Commits) > 0 || len(a.Paths) > 0 {
			return false
		}
		checks := 0
		if len(a.Regexes) > 0 {
			if !regexOK {
				return false
			}
			checks++
		}
		if len(a.StopWords) > 0 {
			if !stopOK {
				return false
			}
			checks++
		}
		return checks > 0
	}
	return regexOK || stopOK
}

// lineIndex finds the line around a match lazily.
type lineIndex struct{}

func (lineIndex) line(text string, start, end int) string {
	ls := strings.LastIndexByte(text[:start], '\n') + 1
	le := strings.IndexByte(text[end:], '\n')
	if le < 0 {
		le = len(text)
	} else {
		le += end
	}
	return text[ls:le]
}

// entropy is the Shannon entropy of s as gitleaks computes it.
func entropy(s string) float64 {
	if s == "" {
		return 0
	}
	// Like gitleaks: count characters, divide by the length in bytes.
	var ascii [128]int
	var other map[rune]int
	for _, c := range s {
		if c < 128 {
			ascii[c]++
			continue
		}
		if other == nil {
			other = map[rune]int{}
		}
		other[c]++
	}
	n := float64(len(s))
	e := 0.0
	add := func(c int) {
		if c > 0 {
			p := float64(c) / n
			e -= p * math.Log2(p)
		}
	}
	for _, c := range ascii {
		add(c)
	}
	for _, c := range other {
		add(c)
	}
	return e
}
