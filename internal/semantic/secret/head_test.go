package secret

import (
	"math/rand/v2"
	"regexp"
	"regexp/syntax"
	"strings"
	"testing"
	"unicode/utf8"
)

// randomText draws n pieces from parts.
func randomText(rng *rand.Rand, parts []string, n int) string {
	var b strings.Builder
	for range n {
		b.WriteString(parts[rng.IntN(len(parts))])
	}
	return b.String()
}

// TestHeadAutomatonMatchesRegexp checks the head automaton against Go's
// regexp on bounded expressions without assertions, where the two must
// agree exactly.
func TestHeadAutomatonMatchesRegexp(t *testing.T) {
	exprs := []string{
		`(?i)(?:key|secret|passw(?:or)?d)[ \t\w.-]{0,20}[\s'"]{0,3}(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)[\x60'"\s=]{0,5}(?:[\w.=-]{10}|[a-z0-9][a-z0-9+/]{11})`,
		`ab?c{2,4}(?:d|ef)*?`,
		`(?i)k.{0,3}s`,
		`[^a-c]{1,3}(?:x|y{0,2})z`,
		`(?s:.){2}é|ſ{1,2}`,
	}
	parts := []string{"key", "KEY", "secret", "password", "passwd", " ", "\t", "\n", "=", ":", "::=", "=>", ",", "'", "\"", "`", "abc", "abcdefghijkl", "ab", "c", "cc", "acc", "abccd", "d", "ef", "x", "y", "z", "é", "ſ", "K", "-", ".", "/", "+", "\xff"}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, src := range exprs {
		re, err := syntax.Parse(src, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		// bound the expression as compile does for heads
		if maxLength(re) < 0 {
			re = head(&syntax.Regexp{Op: syntax.OpConcat, Sub: []*syntax.Regexp{re}})
		}
		d := compileHead(re)
		if d == nil {
			t.Fatalf("%s: no automaton", src)
		}
		want := regexp.MustCompile(`^(?:` + re.String() + `)`)
		matched := 0
		for range 3000 {
			text := randomText(rng, parts, 1+rng.IntN(12))
			for p := 0; p < len(text); p++ {
				if !utf8.RuneStart(text[p]) {
					continue
				}
				got, w := d.match(text, p), want.MatchString(text[p:])
				if got != w {
					t.Fatalf("%s at %d of %q: automaton %v, regexp %v", re, p, text, got, w)
				}
				if w {
					matched++
				}
			}
		}
		if matched < 50 {
			t.Errorf("%s: only %d matches; the generator does not exercise it", src, matched)
		}
	}
}

// TestHeadIsNecessary checks, for every rule with a head, that the head
// accepts wherever the rule's expression matches at a keyword, on random
// credential-like text: the pre-check must never lose a finding.
func TestHeadIsNecessary(t *testing.T) {
	s, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	parts := []string{"api", "key", "token", "secret", "password", "auth", "access", "curl", "ops_eyJ", "ey", "EAA", "xoxb-", "xapp-", "fo1_", "t1.", "y0_",
		"_", "-", ".", " ", "\t", "\n", "=", ":", "=>", ",", "'", "\"", "`", "|", "?=", "K", "ſ", "é",
		"abcdefghij", "ABCDEFGHIJKLMNOP", "0123456789", "q7Xz", "==", "/+", "see vault", "none"}
	rng := rand.New(rand.NewPCG(5, 6))
	checked := 0
	for range 20000 {
		text := randomText(rng, parts, 2+rng.IntN(20))
		s.keywords.Find(text, func(id, p int) {
			for _, ri := range s.kwRules[id] {
				r := &s.rules[ri]
				if r.head == nil || r.anchored == nil {
					continue
				}
				var full bool
				if p == 0 {
					full = r.anchored.MatchString(text)
				} else {
					_, w := utf8.DecodeLastRuneInString(text[:p])
					full = r.ctxAnchored.MatchString(text[p-w:])
				}
				if full {
					checked++
					if !r.head.match(text, p) {
						t.Errorf("%s matches at %d of %q but its head rejects it", r.RuleID, p, text)
					}
				}
			}
		})
	}
	t.Logf("%d rule matches checked", checked)
	if checked < 100 {
		t.Errorf("only %d matches checked; the generator no longer exercises the rules", checked)
	}
}
