package injection

import (
	"math"
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
)

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

// fnv32 is FNV-1a over b, seeded by a namespace so that hashes are stable
// across runs, processes and machines.
func fnv32(seed uint32, b string) uint32 {
	h := uint32(2166136261) ^ seed
	for i := 0; i < len(b); i++ {
		h ^= uint32(b[i])
		h *= 16777619
	}
	// final avalanche so that low bits mix well
	h ^= h >> 16
	h *= 0x7feb352d
	h ^= h >> 15
	return h
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

// tokens splits lower-cased s into words: maximal runs of letters and
// digits (apostrophes inside a word kept). starts[i] reports whether word i
// opens a sentence-like unit.
func tokens(s string, out []string, starts []bool) ([]string, []bool) {
	out, starts = out[:0], starts[:0]
	start := -1
	atStart := true
	for i, c := range s {
		w := unicode.IsLetter(c) || unicode.IsDigit(c) || (c == '\'' && start >= 0)
		if w {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			out = append(out, strings.TrimRight(s[start:i], "'"))
			starts = append(starts, atStart)
			atStart = false
			start = -1
		}
		if isBoundary(c) {
			atStart = true
		}
	}
	if start >= 0 {
		out = append(out, strings.TrimRight(s[start:], "'"))
		starts = append(starts, atStart)
	}
	return out, starts
}

// featurizer turns text into a feature vector. It is not safe for
// concurrent use; pool one per goroutine.
type featurizer struct {
	words  []string
	starts []bool
	buf    []byte
	dense  [numDense]float32
}

// featurize fills v with the features of s (which should be normalised).
func (f *featurizer) featurize(s string, v *vec) {
	v.reset()
	ls := strings.ToLower(s)
	f.words, f.starts = tokens(ls, f.words, f.starts)
	words := f.words
	// Collapsed text for character n-grams: words joined by one space.
	f.buf = append(f.buf[:0], ' ')
	for _, w := range words {
		f.buf = append(f.buf, w...)
		f.buf = append(f.buf, ' ')
	}
	cs := string(f.buf)
	nChar := 0
	for n := 3; n <= 5; n++ {
		if len(cs) >= n {
			nChar += len(cs) - n + 1
		}
	}
	nWord := 2*len(words) - 1
	total := nChar + max(nWord, 0)
	if total <= 0 {
		total = 1
	}
	x := float32(1 / math.Sqrt(float64(total)))
	for i, w := range words {
		v.add(fnv32(nsWord, w)&hashMask, x)
		if i > 0 {
			v.add(fnv32(nsBigram, words[i-1]+" "+w)&hashMask, x)
		}
	}
	for n := 3; n <= 5; n++ {
		seed := uint32(nsChar + n)
		for i := 0; i+n <= len(cs); i++ {
			v.add(fnv32(seed, cs[i:i+n])&hashMask, x)
		}
	}
	f.structural(ls, words, f.starts)
	for i, d := range f.dense {
		if d != 0 {
			v.add(uint32(hashDim+i), d)
		}
	}
}

// Word classes used by the structural features. They describe the shape of
// an instruction addressed to an AI, not particular attacks.
var (
	secondPerson = set("you", "your", "yours", "yourself", "u", "ur")
	aiRefs       = set("ai", "assistant", "chatbot", "bot", "model", "gpt", "chatgpt", "llm", "claude", "gemini", "copilot", "agent", "system", "openai", "dan")
	metaRefs     = set("instruction", "instructions", "prompt", "prompts", "rules", "guidelines", "directive", "directives", "policy", "policies", "restrictions", "filters", "constraints", "programming", "context", "conversation")
	temporalRefs = set("previous", "prior", "above", "earlier", "preceding", "former", "initial", "original", "foregoing")
	outputRefs   = set("response", "responses", "answer", "answers", "reply", "replies", "output", "respond", "summary", "message")
	roleRefs     = set("pretend", "roleplay", "role", "character", "persona", "act", "simulate", "impersonate", "mode", "jailbreak", "jailbroken", "unrestricted", "unfiltered", "uncensored")
	overrideVerb = set("ignore", "disregard", "forget", "override", "bypass", "skip", "drop", "abandon", "neglect", "overlook")
	imperatives  = set("ignore", "disregard", "forget", "print", "output", "reveal", "show", "tell", "say", "repeat", "write", "send", "email", "forward", "post", "upload", "include", "insert", "add", "append", "embed", "mention", "recommend", "suggest", "promote", "advertise", "translate", "respond", "reply", "answer", "provide", "give", "list", "make", "use", "visit", "click", "go", "open", "navigate", "download", "install", "run", "execute", "call", "invoke", "transfer", "pay", "delete", "remove", "change", "update", "set", "create", "grant", "share", "export", "copy", "summarize", "explain", "describe", "act", "pretend", "imagine", "stop", "start", "begin", "do", "don't", "never", "always", "please", "now", "instead", "from", "display", "encode", "decode", "spell", "inform", "tell", "urge", "direct", "ask", "convince", "modify", "rewrite", "replace", "enhance", "integrate", "incorporate", "ensure", "remember", "note", "attention", "important")
)

func set(ws ...string) map[string]bool {
	m := make(map[string]bool, len(ws))
	for _, w := range ws {
		m[w] = true
	}
	return m
}

// structural computes the dense features: counts of the word classes above,
// normalised by length, plus sentence-level shape (imperative openings,
// imperatives addressed to "you"), URLs, e-mail addresses and case.
func (f *featurizer) structural(ls string, words []string, starts []bool) {
	d := &f.dense
	*d = [numDense]float32{}
	n := float32(len(words))
	if n == 0 {
		return
	}
	var sp, ai, meta, tmp, outp, role, ovr float32
	for _, w := range words {
		switch {
		case secondPerson[w]:
			sp++
		case aiRefs[w]:
			ai++
		case metaRefs[w]:
			meta++
		case temporalRefs[w]:
			tmp++
		case outputRefs[w]:
			outp++
		case roleRefs[w]:
			role++
		case overrideVerb[w]:
			ovr++
		}
	}
	// Sentences opening with an imperative, and those that also address
	// the reader in the second person.
	var sentences, impStart, impYou float32
	sawImp, sawYou := false, false
	flush := func() {
		if sawImp {
			impStart++
			if sawYou {
				impYou++
			}
		}
		sawImp, sawYou = false, false
	}
	for i, w := range words {
		if starts[i] {
			if i > 0 {
				flush()
			}
			sentences++
			sawImp = imperatives[w]
		}
		if secondPerson[w] {
			sawYou = true
		}
	}
	flush()
	if sentences == 0 {
		sentences = 1
	}
	urls := float32(strings.Count(ls, "http://") + strings.Count(ls, "https://") + strings.Count(ls, "www."))
	emails := float32(strings.Count(ls, "@"))
	d[0] = float32(math.Log1p(float64(n))) / 6
	d[1] = min(sp/n*5, 1)
	d[2] = min(ai/n*10, 1)
	d[3] = min(meta/n*10, 1)
	d[4] = min(tmp/n*10, 1)
	d[5] = min(outp/n*10, 1)
	d[6] = min(role/n*10, 1)
	d[7] = min(ovr, 3) / 3
	d[8] = impStart / sentences
	d[9] = impYou / sentences
	d[10] = min(impYou, 3) / 3
	d[11] = min(urls, 3) / 3
	d[12] = min(emails, 3) / 3
	if sp > 0 && (ai > 0 || meta > 0) {
		d[13] = 1
	}
	if ovr > 0 && (meta > 0 || tmp > 0) {
		d[14] = 1
	}
	if outp > 0 && sp > 0 {
		d[15] = 1
	}
}
