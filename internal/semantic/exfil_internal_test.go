package semantic

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMarkdownTargetsMatchesExpressions compares markdownTargets with the
// regular expressions it replaces, on random markdown-like text.
func TestMarkdownTargetsMatchesExpressions(t *testing.T) {
	imageRe := regexp.MustCompile(`!\[[^\]\n]{0,200}\]\(\s*<?([^\s)>]+)`)
	linkRe := regexp.MustCompile(`(?:^|[^!])\[[^\]\n]{0,200}\]\(\s*<?([^\s)>]+)`)
	type target struct {
		Start, End int
		Image      bool
	}
	reference := func(text string) []target {
		seen := map[int]bool{}
		var out []target
		for _, m := range imageRe.FindAllStringSubmatchIndex(text, -1) {
			seen[m[2]] = true
			out = append(out, target{m[2], m[3], true})
		}
		for _, m := range linkRe.FindAllStringSubmatchIndex(text, -1) {
			if !seen[m[2]] {
				out = append(out, target{m[2], m[3], false})
			}
		}
		return out
	}
	parts := []string{"[", "]", "(", ")", "](", "![", "!", " ", "\n", "\t", "<", ">", "x", "text ", "https://h.example/p?q=1", "é", "\xff", "\x80", "\xe2\x82", strings.Repeat("a", 97), strings.Repeat("é", 60)}
	rng := rand.New(rand.NewPCG(11, 12))
	found := 0
	for range 20000 {
		var b strings.Builder
		for range 1 + rng.IntN(16) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		text := b.String()
		var got []target
		markdownTargets(text, func(a, b int, image bool) { got = append(got, target{a, b, image}) })
		want := reference(text)
		// the reference lists images first
		var gi, gl []target
		for _, g := range got {
			if g.Image {
				gi = append(gi, g)
			} else {
				gl = append(gl, g)
			}
		}
		if diff := cmp.Diff(want, append(gi, gl...)); diff != "" {
			t.Fatalf("%q: (-expressions +markdownTargets)\n%s", text, diff)
		}
		found += len(want)
	}
	if found < 1000 {
		t.Errorf("only %d targets; the generator does not exercise the scanner", found)
	}
}
