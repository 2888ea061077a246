package textnorm

import (
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"
)

// TestMapCompatKeepsNFKC checks that pre-mapping compatibility characters
// to ASCII never changes the NFKC form, also next to combining marks and
// other characters that compose.
func TestMapCompatKeepsNFKC(t *testing.T) {
	ranges := [][2]rune{{0x20, 0x7E}, {0xA0, 0x17F}, {0x300, 0x36F}, {0x2070, 0x209F}, {0x2100, 0x218F}, {0x2460, 0x24FF},
		{0x3000, 0x303F}, {0x3131, 0x318E}, {0xFB00, 0xFB4F}, {0xFF00, 0xFFEF}, {0x1D400, 0x1D7FF}, {0x1F100, 0x1F1FF}, {0x1100, 0x11FF}, {0xAC00, 0xAC40}}
	rng := rand.New(rand.NewPCG(1, 2))
	mapped := 0
	for range 20000 {
		var b strings.Builder
		for range 1 + rng.IntN(10) {
			r := ranges[rng.IntN(len(ranges))]
			b.WriteRune(r[0] + rune(rng.IntN(int(r[1]-r[0]+1))))
		}
		s := b.String()
		m := mapCompat(s)
		if m != s {
			mapped++
		}
		if got, want := norm.NFKC.String(m), norm.NFKC.String(s); got != want {
			t.Fatalf("NFKC(mapCompat(%+q)) = %+q, NFKC = %+q", s, got, want)
		}
	}
	if mapped < 1000 {
		t.Errorf("only %d strings changed; the generator misses the mapped ranges", mapped)
	}
}
