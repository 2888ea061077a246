package injection

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode"

	"github.com/gatehouse/gatehouse/internal/semantic/textnorm"
)

// Row is one labelled example in the data-set format shared with the
// evaluation command: one JSON object per line.
type Row struct {
	ID       string `json:"id"`
	Text     string `json:"text"`
	Label    int    `json:"label"` // 1 = attack, 0 = benign
	Category string `json:"category"`
	Surface  string `json:"surface"`
	Source   string `json:"source"`
}

// ReadRows reads JSON-lines rows from r. Blank lines are skipped; any other
// malformed line is an error that names its line number.
func ReadRows(r io.Reader) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var row Row
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if row.Label != 0 && row.Label != 1 {
			return nil, fmt.Errorf("line %d: label %d is neither 0 nor 1", n, row.Label)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	return rows, nil
}

// TrainOptions tunes training. The zero value is the documented default.
type TrainOptions struct {
	// Seed fixes shuffling and augmentation; default 1.
	Seed uint64
	// Epochs of AdaGrad SGD; default 12.
	Epochs int
	// Folds for the out-of-fold predictions that fit the combiner;
	// default 5.
	Folds int
	// Augment is how many synthetic indirect injections are made from each
	// short attack instruction by planting it in a benign document;
	// default 3, negative disables.
	Augment int
	// Ensemble is how many models, trained with different seeds, are
	// averaged; default 3.
	Ensemble int
	// Logger receives progress; nil discards.
	Logger *slog.Logger
}

func (o TrainOptions) withDefaults() TrainOptions {
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Epochs == 0 {
		o.Epochs = 12
	}
	if o.Folds == 0 {
		o.Folds = 5
	}
	if o.Augment == 0 {
		o.Augment = 3
	}
	if o.Ensemble <= 0 {
		o.Ensemble = 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Training hyper-parameters.
const (
	learningRate = 0.15
	l2           = 2e-6
	maxInstr     = 600 // attack rows at most this long count as instructions
	synthCount   = 200 // synthetic instructions (see synth.go)
)

// example is one featurised training example.
type example struct {
	v      vec
	y      float32
	weight float32
}

// stem groups rows that come from the same source item: BIPIA-style ids
// "...-clean" and "...-inj-<pos>" share a stem.
func stem(id string) string {
	if i := strings.LastIndex(id, "-inj-"); i >= 0 {
		return id[:i]
	}
	return strings.TrimSuffix(id, "-clean")
}

// inserted returns the text that was inserted into clean to give attacked.
// When the insertion borders on characters equal to its own first or last
// ones, several alignments explain the difference equally well (the
// common prefix eats the first letter of the instruction, say); the one
// whose edges fall on separators (blanks, line breaks, table bars) is
// taken, and the separators are trimmed. When attacked is not clean with
// one insertion, the differing middle is widened to word boundaries.
func inserted(clean, attacked string) string {
	n := len(attacked) - len(clean)
	p := 0
	for p < len(clean) && p < len(attacked) && clean[p] == attacked[p] {
		p++
	}
	s := 0
	for s < len(clean) && s < len(attacked) && clean[len(clean)-1-s] == attacked[len(attacked)-1-s] {
		s++
	}
	if n > 0 && len(clean)-s <= p {
		// every k in [len(clean)-s, p] is an insertion point
		best, bestScore := p, -1
		for k := p; k >= len(clean)-s; k-- {
			score := 0
			if k == 0 || isSeparator(attacked[k-1]) || isSeparator(attacked[k]) {
				score++
			}
			if e := k + n; e == len(attacked) || isSeparator(attacked[e]) || isSeparator(attacked[e-1]) {
				score++
			}
			if score > bestScore {
				best, bestScore = k, score
			}
		}
		return strings.Trim(attacked[best:best+n], " \t\r\n|")
	}
	p = min(p, len(clean), len(attacked))
	s = min(s, len(clean)-p, len(attacked)-p)
	// widen to word boundaries
	for p > 0 && attacked[p-1] != ' ' && attacked[p-1] != '\n' {
		p--
	}
	end := len(attacked) - s
	for end < len(attacked) && attacked[end] != ' ' && attacked[end] != '\n' {
		end++
	}
	return strings.TrimSpace(attacked[p:end])
}

func isSeparator(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '|':
		return true
	}
	return false
}

// corpus is the training material derived from rows.
type corpus struct {
	docs    []labelled // whole texts
	segPos  []string   // attack instructions (segment positives)
	segNeg  []string   // benign segments
	carrier []string   // benign documents that instructions can be planted in
}

type labelled struct {
	text string
	y    float32
}

func buildCorpus(rows []Row, rng *rand.Rand, augment int) corpus {
	var c corpus
	norm := func(s string) string { return textnorm.Normalize(s).Text }
	clean := map[string]string{}
	for _, r := range rows {
		if r.Label == 0 && strings.HasSuffix(r.ID, "-clean") {
			clean[stem(r.ID)] = norm(r.Text)
		}
	}
	var seg []Segment
	var instructions, direct, prompts []string
	for _, r := range rows {
		t := norm(r.Text)
		c.docs = append(c.docs, labelled{t, float32(r.Label)})
		if r.Category == "direct" && len(t) <= maxInstr {
			direct = append(direct, t)
		}
		if r.Label == 0 && r.Category == "benign" && RowContext(r) == Prompt && len(t) <= maxInstr {
			prompts = append(prompts, t)
		}
		switch {
		case r.Source == derivedSource:
			// its instruction is already a segment positive
		case r.Label == 0:
			seg = segments(t, seg)
			for _, g := range seg {
				c.segNeg = append(c.segNeg, t[g.Start:g.End])
			}
			if r.Surface == "document" || r.Surface == "tool_output" {
				c.carrier = append(c.carrier, t)
			}
		case r.Category == "indirect" || r.Category == "direct":
			if cl, ok := clean[stem(r.ID)]; ok {
				if ins := inserted(cl, t); ins != "" {
					c.segPos = append(c.segPos, ins)
					instructions = append(instructions, ins)
				}
			} else if len(t) <= maxInstr {
				c.segPos = append(c.segPos, t)
				instructions = append(instructions, t)
			}
		case r.Category == "jailbreak" && len(t) <= maxInstr:
			c.segPos = append(c.segPos, t)
		}
	}
	if augment > 0 && len(c.carrier) > 0 {
		syn := synthetic(rng, synthCount)
		c.segPos = append(c.segPos, syn...)
		instructions = append(instructions, syn...)
		for _, ins := range instructions {
			for range augment {
				doc := c.carrier[rng.IntN(len(c.carrier))]
				c.docs = append(c.docs, labelled{plant(doc, ins, rng), 1})
			}
		}
	}
	// Direct injections ride along with a request as often as they come
	// alone: join each to a benign prompt, before or after it.
	if augment > 0 && len(prompts) > 0 {
		for _, d := range direct {
			p := prompts[rng.IntN(len(prompts))]
			if rng.IntN(2) == 0 {
				c.docs = append(c.docs, labelled{p + " " + d, 1})
			} else {
				c.docs = append(c.docs, labelled{d + " " + p, 1})
			}
		}
	}
	return c
}

// plant inserts instruction into doc at the start, the end or a segment
// boundary in between, as an attacker planting text in data would.
func plant(doc, instruction string, rng *rand.Rand) string {
	seg := segments(doc, nil)
	at := 0
	switch k := rng.IntN(3); {
	case k == 0 || len(seg) == 0:
		at = 0
	case k == 1:
		at = len(doc)
	default:
		at = seg[rng.IntN(len(seg))].End
	}
	return doc[:at] + " " + instruction + " " + doc[at:]
}

// fit trains a linear model on the examples with AdaGrad SGD and L2.
func fit(ctx context.Context, exs []example, epochs int, seed uint64) (linear, error) {
	w := make([]float64, dim)
	g2 := make([]float64, dim)
	var b, gb float64
	order := make([]int, len(exs))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for ep := 0; ep < epochs; ep++ {
		if err := ctx.Err(); err != nil {
			return linear{}, err
		}
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			e := &exs[k]
			z := b
			for j, i := range e.v.idx {
				z += w[i] * float64(e.v.val[j])
			}
			g := (sigmoid(z) - float64(e.y)) * float64(e.weight)
			for j, i := range e.v.idx {
				gi := g*float64(e.v.val[j]) + l2*w[i]
				g2[i] += gi * gi
				w[i] -= learningRate * gi / (math.Sqrt(g2[i]) + 1e-8)
			}
			gb += g * g
			b -= learningRate * g / (math.Sqrt(gb) + 1e-8)
		}
	}
	l := linear{w: make([]float32, dim), b: float32(b)}
	for i, x := range w {
		l.w[i] = float32(x)
	}
	return l, nil
}

// examples featurises texts with labels, weighting the classes equally.
// Documents use the document vector; segments are featurised as a single
// segment each, as the scorer sees them.
func examples(texts []string, ys []float32, docs bool) []example {
	var f featurizer
	var a analysis
	exs := make([]example, len(texts))
	var pos float32
	for _, y := range ys {
		pos += y
	}
	neg := float32(len(ys)) - pos
	for i, t := range texts {
		if docs {
			f.analyse(t, &a)
			a.docVec(&exs[i].v)
		} else {
			var c counts
			a.idx, c = f.span(strings.ToLower(t), a.idx[:0])
			a.off = append(a.off[:0], 0, len(a.idx))
			a.segDense = append(a.segDense[:0], c.dense())
			a.segVec(0, &exs[i].v)
		}
		exs[i].v.idx = slices.Clone(exs[i].v.idx)
		exs[i].v.val = slices.Clone(exs[i].v.val)
		exs[i].y = ys[i]
		switch {
		case ys[i] == 1 && pos > 0:
			exs[i].weight = float32(len(ys)) / (2 * pos)
		case neg > 0:
			exs[i].weight = float32(len(ys)) / (2 * neg)
		}
	}
	return exs
}

// trainBase fits the document and segment models on rows: Ensemble
// times with different seeds (different shuffles and different planted
// augmentations), averaging the weights. For linear models this averages
// the logits, which lowers the variance that one random augmentation
// brings.
func trainBase(ctx context.Context, rows []Row, o TrainOptions) (*Model, error) {
	var avg *Model
	for k := range o.Ensemble {
		oo := o
		oo.Seed = o.Seed + uint64(k)*1000
		m, err := trainOne(ctx, rows, oo)
		if err != nil {
			return nil, err
		}
		if avg == nil {
			avg = m
			continue
		}
		for _, p := range [][2]*linear{{&avg.doc, &m.doc}, {&avg.seg, &m.seg}} {
			for i, x := range p[1].w {
				p[0].w[i] += x
			}
			p[0].b += p[1].b
		}
	}
	n := float32(o.Ensemble)
	for _, l := range []*linear{&avg.doc, &avg.seg} {
		for i := range l.w {
			l.w[i] /= n
		}
		l.b /= n
	}
	return avg, nil
}

// trainOne fits one document and one segment model.
func trainOne(ctx context.Context, rows []Row, o TrainOptions) (*Model, error) {
	rng := rand.New(rand.NewPCG(o.Seed, 0xa06))
	c := buildCorpus(rows, rng, o.Augment)
	var texts []string
	var ys []float32
	for _, d := range c.docs {
		texts = append(texts, d.text)
		ys = append(ys, d.y)
	}
	doc, err := fit(ctx, examples(texts, ys, true), o.Epochs, o.Seed)
	if err != nil {
		return nil, err
	}
	texts, ys = texts[:0], ys[:0]
	for _, t := range c.segPos {
		texts = append(texts, t)
		ys = append(ys, 1)
	}
	for _, t := range c.segNeg {
		texts = append(texts, t)
		ys = append(ys, 0)
	}
	seg, err := fit(ctx, examples(texts, ys, false), o.Epochs, o.Seed+1)
	if err != nil {
		return nil, err
	}
	o.Logger.Info("trained base models", "docs", len(c.docs), "seg_pos", len(c.segPos), "seg_neg", len(c.segNeg))
	return &Model{doc: doc, seg: seg, comb: [2][4]float32{{1, 1, 0, 0}, {1, 1, 0, 0}}}, nil
}

// derivedSource is the source of the rows that derivedDirect makes.
const derivedSource = "derived: instruction from an attacked document, as a prompt"

// derivedDirect returns a prompt row for each distinct instruction
// recovered from an attacked document (see inserted) that speaks of the
// assistant's own output — "your response", "your code": typed by a user,
// the same instruction is a direct injection. Instructions without
// "your" are left out: an off-task request planted in a document ("What is
// the capital of Brazil?") is an ordinary question when a user asks it.
// The rows take the attacked document's id with the suffix "-inj-direct",
// so they share its cross-validation fold.
func derivedDirect(rows []Row) []Row {
	clean := map[string]string{}
	for _, r := range rows {
		if r.Label == 0 && strings.HasSuffix(r.ID, "-clean") {
			clean[stem(r.ID)] = r.Text
		}
	}
	seen := map[string]bool{}
	var out []Row
	for _, r := range rows {
		cl, ok := clean[stem(r.ID)]
		if r.Label != 1 || !ok {
			continue
		}
		ins := inserted(cl, r.Text)
		if ins == "" || seen[ins] || !addressesOutput(ins) {
			continue
		}
		seen[ins] = true
		out = append(out, Row{ID: stem(r.ID) + "-inj-direct", Text: ins, Label: 1, Category: "direct", Surface: "prompt", Source: derivedSource})
	}
	return out
}

// addressesOutput reports whether s contains the word "your".
func addressesOutput(s string) bool {
	for _, w := range strings.FieldsFunc(strings.ToLower(s), func(c rune) bool { return !unicode.IsLetter(c) && c != '\'' }) {
		if w == "your" {
			return true
		}
	}
	return false
}

// RowContext is the context of a row by its surface: document,
// tool_output and prompt_result are data; anything else is a prompt.
func RowContext(r Row) Context {
	switch r.Surface {
	case "document", "tool_output", "prompt_result":
		return Data
	}
	return Prompt
}

// OOF is one out-of-fold prediction made during cross-validation.
type OOF struct {
	Row   Row
	Score float64
}

// folds assigns each row to a fold by its group, so that rows that share
// material never fall on different sides: an attacked document and its
// clean twin share a stem, and documents attacked with the same
// instruction (sources reuse their attack lists) share that instruction.
func folds(rows []Row, k int, seed uint64) []int {
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		p, ok := parent[x]
		if !ok || p == x {
			parent[x] = x
			return x
		}
		r := find(p)
		parent[x] = r
		return r
	}
	union := func(a, b string) {
		ra, rb := find(a), find(b)
		if ra != rb {
			parent[max(ra, rb)] = min(ra, rb)
		}
	}
	clean := map[string]string{}
	for _, r := range rows {
		find("s:" + stem(r.ID))
		if r.Label == 0 && strings.HasSuffix(r.ID, "-clean") {
			clean[stem(r.ID)] = textnorm.Normalize(r.Text).Text
		}
	}
	for _, r := range rows {
		if r.Label != 1 {
			continue
		}
		ins := textnorm.Normalize(r.Text).Text
		if cl, ok := clean[stem(r.ID)]; ok {
			ins = inserted(cl, ins)
		}
		if ins != "" {
			union("s:"+stem(r.ID), "i:"+strings.ToLower(ins))
		}
	}
	var names []string
	seen := map[string]bool{}
	for x := range parent {
		if r := find(x); strings.HasPrefix(x, "s:") && !seen[r] {
			seen[r] = true
			names = append(names, r)
		}
	}
	slices.Sort(names)
	rng := rand.New(rand.NewPCG(seed, 0xf01d))
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	group := map[string]int{}
	for i, n := range names {
		group[n] = i % k
	}
	out := make([]int, len(rows))
	for i, r := range rows {
		out[i] = group[find("s:"+stem(r.ID))]
	}
	return out
}

// crossLogits trains on k-1 folds and records the base logits of the
// held-out fold, for every fold.
func crossLogits(ctx context.Context, rows []Row, o TrainOptions) ([][3]float32, error) {
	fold := folds(rows, o.Folds, o.Seed)
	out := make([][3]float32, len(rows))
	s := new(scratch)
	for f := 0; f < o.Folds; f++ {
		var tr []Row
		for i, r := range rows {
			if fold[i] != f {
				tr = append(tr, r)
			}
		}
		m, err := trainBase(ctx, tr, o)
		if err != nil {
			return nil, err
		}
		m, err = quantised(m)
		if err != nil {
			return nil, err
		}
		for i, r := range rows {
			if fold[i] == f {
				dl, sl, gap, _ := m.logits(s, textnorm.Normalize(r.Text).Text)
				out[i] = [3]float32{dl, sl, gap}
			}
		}
		o.Logger.Info("fold done", "fold", f+1, "of", o.Folds)
	}
	return out, nil
}

// fitCombiner fits the combiner by class-balanced logistic regression on
// out-of-fold logits.
func fitCombiner(xs [][3]float32, ys []float32) [4]float32 {
	var pos float32
	for _, y := range ys {
		pos += y
	}
	n := float32(len(ys))
	wp, wn := n/(2*max(pos, 1)), n/(2*max(n-pos, 1))
	var c [4]float64
	c[0], c[1] = 0.5, 0.5
	for it := 0; it < 3000; it++ {
		var g [4]float64
		for i, x := range xs {
			z := c[0]*float64(x[0]) + c[1]*float64(x[1]) + c[2]*float64(x[2]) + c[3]
			e := sigmoid(z) - float64(ys[i])
			if ys[i] == 1 {
				e *= float64(wp)
			} else {
				e *= float64(wn)
			}
			g[0] += e * float64(x[0])
			g[1] += e * float64(x[1])
			g[2] += e * float64(x[2])
			g[3] += e
		}
		for j := range c {
			c[j] -= 0.05 * (g[j]/float64(len(xs)) + 1e-3*c[j]*float64(min(j, 2)/2))
		}
	}
	return [4]float32{float32(c[0]), float32(c[1]), float32(c[2]), float32(c[3])}
}

func quantised(m *Model) (*Model, error) {
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return Load(b)
}

// Train trains a model on rows. The result depends only on rows (in their
// order) and opts: training is deterministic for a fixed seed. The
// returned model is the quantised one that MarshalBinary ships. It also
// returns the out-of-fold scores used to fit the combiner, which give an
// honest cross-validation estimate on the training rows.
func Train(ctx context.Context, rows []Row, opts TrainOptions) (*Model, []OOF, error) {
	o := opts.withDefaults()
	if len(rows) == 0 {
		return nil, nil, fmt.Errorf("no training rows")
	}
	rows = append(slices.Clip(rows), derivedDirect(rows)...)
	xs, err := crossLogits(ctx, rows, o)
	if err != nil {
		return nil, nil, err
	}
	ys := make([]float32, len(rows))
	for i, r := range rows {
		ys[i] = float32(r.Label)
	}
	var comb [2][4]float32
	for c := range comb {
		var cx [][3]float32
		var cy []float32
		for i, r := range rows {
			if RowContext(r) == Context(c) {
				cx = append(cx, xs[i])
				cy = append(cy, ys[i])
			}
		}
		if len(cx) == 0 {
			cx, cy = xs, ys
		}
		comb[c] = fitCombiner(cx, cy)
	}
	oof := make([]OOF, len(rows))
	for i, r := range rows {
		x := xs[i]
		c := comb[RowContext(r)]
		z := float64(c[0]*x[0] + c[1]*x[1] + c[2]*x[2] + c[3])
		oof[i] = OOF{Row: r, Score: sigmoid(z)}
	}
	m, err := trainBase(ctx, rows, o)
	if err != nil {
		return nil, nil, err
	}
	m.comb = comb
	m, err = quantised(m)
	if err != nil {
		return nil, nil, err
	}
	o.Logger.Info("trained model", "rows", len(rows), "combiner", fmt.Sprint(comb))
	return m, oof, nil
}
