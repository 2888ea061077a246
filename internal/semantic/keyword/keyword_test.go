package keyword_test

import (
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
