package injection

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// linear is a logistic-regression scorer over the feature space.
type linear struct {
	w []float32 // len dim
	b float32
}

// Model is a trained classifier: a document model that scores the whole
// text, a segment model that scores each sentence-like unit (so that one
// instruction hidden in a long document is not diluted), and a combiner.
// A Model is immutable and safe for concurrent use.
type Model struct {
	doc, seg linear
	// comb weighs the document logit, the top segment logit and the gap
	// between the top segment and the mean segment (a shift of register
	// inside the text); [3] is the bias. There is one combiner per
	// context: comb[Prompt] for text from a principal (prompts, tool
	// arguments), comb[Data] for data (tool results, documents), because a
	// stray question is a user's task in a prompt but an injected task in
	// a document.
	comb [2][4]float32
	// pw holds a loaded model's quantised hashed weights, the document
	// and the segment model's side by side (pw[i] = {doc, seg}), and qs
	// their scales: 512 KB where two float32 arrays take 2 MB, and one
	// cache line serves both models' look-ups of a feature. A model being
	// trained has none and scores with doc.w and seg.w.
	pw []packedWeight
	qs [2]float32
}

// packedWeight is one hashed feature's quantised weights: {doc, seg}.
type packedWeight [2]int8

// Score is the classifier's view of one text.
type Score struct {
	// Probability is the combined probability that the text carries a
	// prompt injection or jailbreak.
	Probability float64
	// Doc is the document model's probability.
	Doc float64
	// Segment is the highest segment-model probability, and SegStart,
	// SegEnd the byte span of that segment in the scored text.
	Segment          float64
	SegStart, SegEnd int
}

type scratch struct {
	f featurizer
	a analysis
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// Context says where a text comes from.
type Context int

// The contexts.
const (
	// Prompt is text written by the agent's principal: prompts, tool
	// arguments, sampling requests.
	Prompt Context = iota
	// Data is content the agent reads: tool results, documents.
	Data
)

// Score scores text, which should already be normalised (see textnorm),
// as coming from ctx.
func (m *Model) Score(text string, ctx Context) Score {
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	dl, sl, gap, span := m.logits(s, text)
	c := m.comb[ctx&1]
	z := float64(c[0]*dl + c[1]*sl + c[2]*gap + c[3])
	return Score{
		Probability: sigmoid(z),
		Doc:         sigmoid(float64(dl)),
		Segment:     sigmoid(float64(sl)),
		SegStart:    span.Start,
		SegEnd:      span.End,
	}
}

func dot(w []float32, ids []uint32) float32 {
	var z float32
	for _, i := range ids {
		z += w[i]
	}
	return z
}

func dotDense(w []float32, d *[numDense]float32) float32 {
	var z float32
	for k, x := range d {
		z += w[hashDim+k] * x
	}
	return z
}

// logits returns the document logit, the top segment logit, the gap between
// the top and the mean segment logit, and the top segment's span. The text
// is featurised once; each feature is looked up in both models.
func (m *Model) logits(s *scratch, text string) (doc, top, gap float32, span Segment) {
	a := &s.a
	s.f.analyse(text, a)
	if len(a.segs) == 0 {
		return m.doc.b, m.seg.b, 0, Segment{}
	}
	var docDot float32
	if m.pw == nil {
		docDot = dot(m.doc.w, a.idx)
	}
	top = float32(math.Inf(-1))
	var sum float32
	var docSum int32
	for i, g := range a.segs {
		ids := a.idx[a.off[i]:a.off[i+1]]
		var segDot float32
		if m.pw != nil {
			// the quantised weights summed exactly as integers, then
			// scaled once
			var ds, ss int32
			for _, j := range ids {
				p := m.pw[j&hashMask]
				ds += int32(p[0])
				ss += int32(p[1])
			}
			docSum += ds
			segDot = float32(ss) * m.qs[1]
		} else {
			segDot = dot(m.seg.w, ids)
		}
		z := m.seg.b + segDot*scale(len(ids)) + dotDense(m.seg.w, &a.segDense[i])
		sum += z
		if z > top {
			top, span = z, g
		}
	}
	if m.pw != nil {
		docDot = float32(docSum) * m.qs[0]
	}
	doc = m.doc.b + docDot*scale(len(a.idx)) + dotDense(m.doc.w, &a.docDense)
	if len(a.segs) == 1 {
		return doc, top, 0, span
	}
	return doc, top, top - sum/float32(len(a.segs)), span
}

// Serialisation: gzip of magic, dim, numDense, comb, then for each linear
// model its bias, a scale and dim int8 weights (w = q * scale).
var magic = [8]byte{'G', 'H', 'I', 'N', 'J', 0, 0, 2}

// MarshalBinary encodes m in the compact weight file format. Weights are
// quantised to 8 bits; the shipped model is always the quantised one.
func (m *Model) MarshalBinary() ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	hdr := struct {
		Magic         [8]byte
		Dim, NumDense uint32
		Comb          [2][4]float32
	}{magic, dim, numDense, m.comb}
	if err := binary.Write(zw, binary.LittleEndian, hdr); err != nil {
		return nil, err
	}
	for _, l := range []*linear{&m.doc, &m.seg} {
		var mx float32
		for _, x := range l.w {
			mx = max(mx, float32(math.Abs(float64(x))))
		}
		scale := mx / 127
		if scale == 0 {
			scale = 1
		}
		q := make([]int8, len(l.w))
		for i, x := range l.w {
			q[i] = int8(math.Round(float64(x / scale)))
		}
		if err := binary.Write(zw, binary.LittleEndian, [2]float32{l.b, scale}); err != nil {
			return nil, err
		}
		if err := binary.Write(zw, binary.LittleEndian, q); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrFormat reports a weight file that is not in the expected format.
var ErrFormat = errors.New("injection: bad weight file")

// Load decodes a weight file written by MarshalBinary.
func Load(data []byte) (*Model, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	var hdr struct {
		Magic         [8]byte
		Dim, NumDense uint32
		Comb          [2][4]float32
	}
	if err := binary.Read(zr, binary.LittleEndian, &hdr); err != nil {
		return nil, fmt.Errorf("%w: reading header: %w", ErrFormat, err)
	}
	if hdr.Magic != magic || hdr.Dim != dim || hdr.NumDense != numDense {
		return nil, fmt.Errorf("%w: header mismatch (dim %d, dense %d)", ErrFormat, hdr.Dim, hdr.NumDense)
	}
	m := &Model{comb: hdr.Comb}
	q := make([]int8, dim)
	m.pw = make([]packedWeight, hashDim)
	for k, l := range []*linear{&m.doc, &m.seg} {
		var bs [2]float32
		if err := binary.Read(zr, binary.LittleEndian, &bs); err != nil {
			return nil, fmt.Errorf("%w: reading weights: %w", ErrFormat, err)
		}
		if err := binary.Read(zr, binary.LittleEndian, q); err != nil {
			return nil, fmt.Errorf("%w: reading weights: %w", ErrFormat, err)
		}
		l.b = bs[0]
		l.w = make([]float32, dim)
		for i, x := range q {
			l.w[i] = float32(x) * bs[1]
		}
		for i, x := range q[:hashDim] {
			m.pw[i][k] = x
		}
		m.qs[k] = bs[1]
	}
	if _, err := zr.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data", ErrFormat)
	}
	return m, nil
}

//go:embed weights.bin
var embedded []byte

var (
	defaultOnce  sync.Once
	defaultModel *Model
	defaultErr   error
)

// Default returns the model shipped with the binary (weights.bin, trained
// by `gatehouse semantic train`; see docs/model-card.md).
func Default() (*Model, error) {
	defaultOnce.Do(func() { defaultModel, defaultErr = Load(embedded) })
	return defaultModel, defaultErr
}
