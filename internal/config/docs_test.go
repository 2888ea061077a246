package config_test

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/config"
)

// TestDocsCoverEveryKey keeps docs/config.md the complete reference: every
// key of the configuration file (every yaml tag reachable from File) must be
// named in backquotes in the section of docs/config.md for its top-level key
// ("## `identity`", ...; keys without a section of their own belong under
// "## Top level"). Only the last element of a key path is looked for, since
// the reference names nested keys in several ways (`identity.keys` lists
// `dir`, `algorithm`, ...; `token_review {url, bearer_file, cache}`).
func TestDocsCoverEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := docSections(string(b))
	top, ok := sections["Top level"]
	if !ok {
		t.Fatal(`docs/config.md has no "## Top level" section`)
	}
	var paths [][]string
	collectKeys(reflect.TypeFor[config.File](), nil, &paths)
	if len(paths) < 100 {
		t.Fatalf("found only %d keys: the walk of config.File is broken", len(paths))
	}
	for _, p := range paths {
		words, ok := sections[p[0]]
		if ok && len(p) == 1 {
			continue // the section's heading names it
		}
		if !ok {
			words = top
		}
		if leaf := p[len(p)-1]; !words[leaf] {
			t.Errorf("docs/config.md does not name %s (no `%s` in its section)", strings.Join(p, "."), leaf)
		}
	}
}

var (
	sectionRe  = regexp.MustCompile("(?m)^## (?:`([a-z_]+)`|(.+))$")
	backtickRe = regexp.MustCompile("`[^`\n]+`")
	wordRe     = regexp.MustCompile(`[a-z0-9_]+`)
)

// docSections maps each "## " section of the document to the words written
// in backquotes in it.
func docSections(doc string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	locs := sectionRe.FindAllStringSubmatchIndex(doc, -1)
	for i, l := range locs {
		var name string
		if l[2] >= 0 {
			name = doc[l[2]:l[3]] // a "## `key`" heading
		} else {
			name = doc[l[4]:l[5]]
		}
		end := len(doc)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		words := map[string]bool{}
		for _, span := range backtickRe.FindAllString(doc[l[1]:end], -1) {
			for _, w := range wordRe.FindAllString(span, -1) {
				words[w] = true
			}
		}
		out[name] = words
	}
	return out
}

// collectKeys appends the key path of every yaml-tagged field reachable
// from t: through structs, pointers, slices and map values.
func collectKeys(t reflect.Type, prefix []string, out *[][]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		p := append(append([]string(nil), prefix...), name)
		*out = append(*out, p)
		collectKeys(f.Type, p, out)
	}
}
