package injection

import (
	"math"
	"slices"
	"strings"
	"unicode"
)

// Feature space: hashed sparse features in [0, hashDim) followed by
// numDense structural features.
const (
	hashBits = 18
	hashDim  = 1 << hashBits
	hashMask = hashDim - 1
	numDense = 16
	dim      = hashDim + numDense
)

// Namespaces keep features of different kinds apart in the hash space.
const (
	nsWord   = 0x9E3779B1
	nsBigram = 0x85EBCA77
	nsChar   = 0xC2B2AE3D
	// charSalt times n is mixed into a character n-gram's hash (n+1 bytes
	// long) so that n-grams of different lengths differ.
	charSalt = 0x27d4eb2f
)

const (
	fnvOffset = 2166136261
	fnvPrime  = 16777619
)

// mix is a final avalanche so that the low bits of a hash mix well.
func mix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x7feb352d
	h ^= h >> 15
	h *= 0x846ca68b
	h ^= h >> 16
	return h
}

// fnv32 is FNV-1a over b, seeded by a namespace, so that hashes are stable
// across runs, processes and machines.
func fnv32(seed uint32, b string) uint32 {
	h := uint32(fnvOffset) ^ seed
	for i := 0; i < len(b); i++ {
		h ^= uint32(b[i])
		h *= fnvPrime
	}
	return h
}

// vec is a sparse feature vector; indices may repeat (their values add).
type vec struct {
	idx []uint32
	val []float32
}

func (v *vec) reset() { v.idx, v.val = v.idx[:0], v.val[:0] }

func (v *vec) add(i uint32, x float32) {
	v.idx = append(v.idx, i)
	v.val = append(v.val, x)
}

// isBoundary reports characters that end a sentence-like unit: sentence
// punctuation, line breaks, table cell separators and field separators.
func isBoundary(c rune) bool {
	switch c {
	case '.', '!', '?', '\n', '|', ':', ';', '\r':
		return true
	}
	return false
}

// counts are the raw structural counts of a span of text; they add up
// over segments to give the document's.
type counts struct {
	words, second, ai, meta, temporal, output, role, override float32
	sentences, impStart, impYou                               float32
	urls, emails                                              float32
}

func (c *counts) addAll(o *counts) {
	c.words += o.words
	c.second += o.second
	c.ai += o.ai
	c.meta += o.meta
	c.temporal += o.temporal
	c.output += o.output
	c.role += o.role
	c.override += o.override
	c.sentences += o.sentences
	c.impStart += o.impStart
	c.impYou += o.impYou
	c.urls += o.urls
	c.emails += o.emails
}

// Word classes used by the structural features. They describe the shape
// of an instruction addressed to an AI, not particular attacks.
const (
	clSecond = 1 << iota
	clAI
	clMeta
	clTemporal
	clOutput
	clRole
	clOverride
	clImperative
)

var wordClass = func() map[string]uint16 {
	m := map[string]uint16{}
	add := func(cl uint16, ws ...string) {
		for _, w := range ws {
			m[w] |= cl
		}
	}
	add(clSecond, "you", "your", "yours", "yourself", "u", "ur")
	add(clAI, "ai", "assistant", "chatbot", "bot", "model", "gpt", "chatgpt", "llm", "claude", "gemini", "copilot", "agent", "system", "openai", "dan")
	add(clMeta, "instruction", "instructions", "prompt", "prompts", "rules", "guidelines", "directive", "directives", "policy", "policies", "restrictions", "filters", "constraints", "programming", "context", "conversation")
	add(clTemporal, "previous", "prior", "above", "earlier", "preceding", "former", "initial", "original", "foregoing")
	add(clOutput, "response", "responses", "answer", "answers", "reply", "replies", "output", "respond", "summary", "message")
	add(clRole, "pretend", "roleplay", "role", "character", "persona", "act", "simulate", "impersonate", "mode", "jailbreak", "jailbroken", "unrestricted", "unfiltered", "uncensored")
	add(clOverride, "ignore", "disregard", "forget", "override", "bypass", "skip", "drop", "abandon", "neglect", "overlook")
	add(clImperative, "ignore", "disregard", "forget", "print", "output", "reveal", "show", "tell", "say", "repeat", "write", "send", "email", "forward", "post", "upload", "include", "insert", "add", "append", "embed", "mention", "recommend", "suggest", "promote", "advertise", "translate", "respond", "reply", "answer", "provide", "give", "list", "make", "use", "visit", "click", "go", "open", "navigate", "download", "install", "run", "execute", "call", "invoke", "transfer", "pay", "delete", "remove", "change", "update", "set", "create", "grant", "share", "export", "copy", "summarize", "explain", "describe", "act", "pretend", "imagine", "stop", "start", "begin", "do", "don't", "never", "always", "please", "now", "instead", "from", "display", "encode", "decode", "spell", "inform", "urge", "direct", "ask", "convince", "modify", "rewrite", "replace", "enhance", "integrate", "incorporate", "ensure", "remember", "note", "attention", "important")
	return m
}()

// featurizer turns text into feature vectors. It is not safe for
// concurrent use; pool one per goroutine.
type featurizer struct {
	words []string
	buf   []byte
}

// span featurises one segment (lower-cased, normalised text): it appends
// the hashed features' indices to idx and returns them with the span's
// structural counts.
func (f *featurizer) span(ls string, idx []uint32) ([]uint32, counts) {
	var c counts
	f.words = f.words[:0]
	start := -1
	atStart := true
	sawImp, sawYou := false, false
	flush := func() {
		if sawImp {
			c.impStart++
			if sawYou {
				c.impYou++
			}
		}
		sawImp, sawYou = false, false
	}
	var prev uint32
	word := func(w string) {
		cl := wordClass[w]
		if atStart {
			if len(f.words) > 0 {
				flush()
			}
			c.sentences++
			sawImp = cl&clImperative != 0
			atStart = false
		}
		if cl&clSecond != 0 {
			sawYou = true
			c.second++
		}
		switch {
		case cl&clAI != 0:
			c.ai++
		case cl&clMeta != 0:
			c.meta++
		case cl&clTemporal != 0:
			c.temporal++
		case cl&clOutput != 0:
			c.output++
		case cl&clRole != 0:
			c.role++
		case cl&clOverride != 0:
			c.override++
		}
		h := fnv32(nsWord, w)
		idx = append(idx, mix(h)&hashMask)
		if len(f.words) > 0 {
			idx = append(idx, mix(prev*0x01000193^h^nsBigram)&hashMask)
		}
		prev = h
		f.words = append(f.words, w)
	}
	for i, r := range ls {
		w := unicode.IsLetter(r) || unicode.IsDigit(r) || (r == '\'' && start >= 0)
		if w {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			word(strings.TrimRight(ls[start:i], "'"))
			start = -1
		}
		if isBoundary(r) {
			atStart = true
		}
	}
	if start >= 0 {
		word(strings.TrimRight(ls[start:], "'"))
	}
	flush()
	c.words = float32(len(f.words))
	c.urls = float32(strings.Count(ls, "http://") + strings.Count(ls, "https://") + strings.Count(ls, "www."))
	c.emails = float32(strings.Count(ls, "@"))
	// Character 3- to 5-grams over the words joined by single spaces,
	// hashed incrementally from each position.
	f.buf = append(f.buf[:0], ' ')
	for _, w := range f.words {
		f.buf = append(f.buf, w...)
		f.buf = append(f.buf, ' ')
	}
	b := f.buf
	idx = slices.Grow(idx, 3*len(b))
	i := 0
	for ; i+5 <= len(b); i++ {
		// the loop below, unrolled where all three n-grams fit
		g := b[i : i+5 : i+5]
		h := ((uint32(fnvOffset)^nsChar^uint32(g[0]))*fnvPrime ^ uint32(g[1])) * fnvPrime
		h = (h ^ uint32(g[2])) * fnvPrime
		idx = append(idx, mix(h^2*charSalt)&hashMask)
		h = (h ^ uint32(g[3])) * fnvPrime
		idx = append(idx, mix(h^3*charSalt)&hashMask)
		h = (h ^ uint32(g[4])) * fnvPrime
		idx = append(idx, mix(h^4*charSalt)&hashMask)
	}
	for ; i+3 <= len(b); i++ {
		h := uint32(fnvOffset) ^ nsChar
		for k := 0; k < 5 && i+k < len(b); k++ {
			h ^= uint32(b[i+k])
			h *= fnvPrime
			if k >= 2 {
				idx = append(idx, mix(h^uint32(k)*charSalt)&hashMask)
			}
		}
	}
	return idx, c
}

// dense computes the structural features from counts: the word classes
// normalised by length, sentence shape (imperative openings, imperatives
// addressed to "you"), URLs and e-mail addresses, and co-occurrences.
func (c *counts) dense() [numDense]float32 {
	var d [numDense]float32
	n := c.words
	if n == 0 {
		return d
	}
	s := max(c.sentences, 1)
	d[0] = float32(math.Log1p(float64(n))) / 6
	d[1] = min(c.second/n*5, 1)
	d[2] = min(c.ai/n*10, 1)
	d[3] = min(c.meta/n*10, 1)
	d[4] = min(c.temporal/n*10, 1)
	d[5] = min(c.output/n*10, 1)
	d[6] = min(c.role/n*10, 1)
	d[7] = min(c.override, 3) / 3
	d[8] = c.impStart / s
	d[9] = c.impYou / s
	d[10] = min(c.impYou, 3) / 3
	d[11] = min(c.urls, 3) / 3
	d[12] = min(c.emails, 3) / 3
	if c.second > 0 && (c.ai > 0 || c.meta > 0) {
		d[13] = 1
	}
	if c.override > 0 && (c.meta > 0 || c.temporal > 0) {
		d[14] = 1
	}
	if c.output > 0 && c.second > 0 {
		d[15] = 1
	}
	return d
}

// analysis is a text featurised once: the hashed indices of every segment
// (segment i owns idx[off[i]:off[i+1]]), each segment's structural
// features, and the document's.
type analysis struct {
	segs     []Segment
	idx      []uint32
	off      []int
	segDense [][numDense]float32
	docDense [numDense]float32
}

// analyse featurises text (normalised) segment by segment. The document's
// hashed features are the union of its segments'; its structural features
// come from the summed counts.
func (f *featurizer) analyse(text string, a *analysis) {
	a.segs = segments(text, a.segs)
	a.idx = a.idx[:0]
	a.off = append(a.off[:0], 0)
	a.segDense = a.segDense[:0]
	var total counts
	ls := strings.ToLower(text)
	if len(ls) != len(text) {
		// lower-casing changed lengths (rare scripts): segment the
		// lower-cased text instead so offsets stay consistent
		a.segs = segments(ls, a.segs)
	}
	for _, g := range a.segs {
		var c counts
		a.idx, c = f.span(ls[g.Start:g.End], a.idx)
		a.off = append(a.off, len(a.idx))
		a.segDense = append(a.segDense, c.dense())
		total.addAll(&c)
	}
	a.docDense = total.dense()
}

// scale is the value of each hashed feature in a vector of n of them:
// 1/sqrt(n), but never more than 1/sqrt(minFeatures), so that a short text
// cannot reach a confident score from a handful of common n-grams.
func scale(n int) float32 {
	if n == 0 {
		return 0
	}
	return float32(1 / math.Sqrt(float64(max(n, minFeatures))))
}

// minFeatures is the floor of the normalisation count in scale.
const minFeatures = 64

// docVec returns the document vector of an analysis.
func (a *analysis) docVec(v *vec) {
	v.reset()
	x := scale(len(a.idx))
	for _, i := range a.idx {
		v.add(i, x)
	}
	for k, d := range a.docDense {
		if d != 0 {
			v.add(uint32(hashDim+k), d)
		}
	}
}

// segVec returns segment i's vector.
func (a *analysis) segVec(i int, v *vec) {
	v.reset()
	ids := a.idx[a.off[i]:a.off[i+1]]
	x := scale(len(ids))
	for _, j := range ids {
		v.add(j, x)
	}
	for k, d := range a.segDense[i] {
		if d != 0 {
			v.add(uint32(hashDim+k), d)
		}
	}
}
