package keyword_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/semantic/keyword"
)

func TestFind(t *testing.T) {
	tests := []struct {
		name     string
		keywords []string
		text     string
		want     [][2]int // keyword index, start
	}{
		{"overlapping", []string{"he", "she", "his", "hers"}, "ushers", [][2]int{{1, 1}, {0, 2}, {3, 2}}},
		{"case folded", []string{"ignore"}, "Please IGNORE this", [][2]int{{0, 7}}},
		{"repeated", []string{"aa"}, "aaaa", [][2]int{{0, 0}, {0, 1}, {0, 2}}},
		{"none", []string{"x"}, "abc", nil},
		{"non-ascii text", []string{"key"}, "clé key", [][2]int{{0, 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [][2]int
			keyword.New(tt.keywords).Find(tt.text, func(id, start int) { got = append(got, [2]int{id, start}) })
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// naive finds every occurrence of every keyword, ASCII case folded, in
// the order Find promises: by end, then by keyword index.
func naive(keywords []string, text string) [][2]int {
	lower := func(s string) string { // ASCII only, byte for byte
		b := []byte(s)
		for i, c := range b {
			if c >= 'A' && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
		return string(b)
	}
	lt := lower(text)
	var out [][2]int
	for end := 1; end <= len(text); end++ {
		for id, k := range keywords {
			k = lower(k)
			if k != "" && end >= len(k) && lt[end-len(k):end] == k {
				out = append(out, [2]int{id, end - len(k)})
			}
		}
	}
	return out
}

// multiset counts hits, since Find orders keywords ending at one byte
// by its own rule.
func multiset(h [][2]int) map[[2]int]int {
	m := map[[2]int]int{}
	for _, x := range h {
		m[x]++
	}
	return m
}

func FuzzFind(f *testing.F) {
	f.Add("api_key,key,password,pass,token", "my API_KEY=abc; password: hunter2, passkey token")
	f.Add("he,she,his,hers", "ushers and HIS hers")
	f.Add("aa,a", "aaaa")
	f.Fuzz(func(t *testing.T, list, text string) {
		var keywords []string
		for _, k := range strings.Split(list, ",") {
			if k != "" && len(k) <= 16 {
				keywords = append(keywords, k)
			}
		}
		if len(keywords) == 0 || len(keywords) > 64 || len(text) > 4096 {
			return
		}
		var got [][2]int
		keyword.New(keywords).Find(text, func(id, start int) { got = append(got, [2]int{id, start}) })
		if want := naive(keywords, text); !cmp.Equal(multiset(want), multiset(got)) {
			t.Errorf("keywords %q in %q: got %v, want %v", keywords, text, got, want)
		}
	})
}
