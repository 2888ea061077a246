package injection

// Segment is a span of a text that the segment model scores on its own.
type Segment struct{ Start, End int }

// Segmentation limits, in bytes.
const (
	minSegment = 24
	maxSegment = 400
)

// segments splits s into sentence-like units: at sentence punctuation
// followed by a space, line breaks, and table or field separators. Short
// pieces are merged with the next one; long ones are cut at a space. The
// segments cover s in order.
func segments(s string, out []Segment) []Segment {
	out = out[:0]
	start := 0
	emit := func(end int) {
		for end-start > maxSegment {
			cut := start + maxSegment
			for k := cut; k > start+maxSegment/2; k-- {
				if s[k] == ' ' {
					cut = k
					break
				}
			}
			for cut < end && s[cut]&0xC0 == 0x80 { // keep runes whole
				cut++
			}
			out = append(out, Segment{start, cut})
			start = cut
		}
		if end > start {
			out = append(out, Segment{start, end})
		}
		start = end
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		boundary := false
		switch c {
		case '\n', '|', '\r':
			boundary = true
		case '.', '!', '?':
			boundary = i+1 == len(s) || s[i+1] == ' ' || s[i+1] == '"' || s[i+1] == '\''
		}
		if boundary && i+1-start >= minSegment {
			emit(i + 1)
		}
	}
	emit(len(s))
	return out
}
