package semantic

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/internal/semantic/injection"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Metrics are detection figures over a set of labelled rows. Recall and F1
// are nil when the set has no attacks, FPR when it has no benign rows, and
// Precision when nothing was flagged.
type Metrics struct {
	Rows      int      `json:"rows"`
	Attacks   int      `json:"attacks"`
	Benign    int      `json:"benign"`
	TP        int      `json:"tp"`
	FP        int      `json:"fp"`
	TN        int      `json:"tn"`
	FN        int      `json:"fn"`
	Recall    *float64 `json:"recall"`
	FPR       *float64 `json:"fpr"`
	Precision *float64 `json:"precision"`
	F1        *float64 `json:"f1"`
}

// Latency summarises per-row screening time in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// Report is the result of Evaluate.
type Report struct {
	PerCategory map[string]*Metrics `json:"per_category"`
	PerSurface  map[string]*Metrics `json:"per_surface"`
	Overall     *Metrics            `json:"overall"`
	LatencyUS   Latency             `json:"latency_us"`
	// HardNegativeFPR is the false-positive rate on the rows of category
	// "hard_negative" (benign text full of trigger words), kept apart
	// from the benign FPR it is also counted in; nil without such rows.
	HardNegativeFPR *float64 `json:"hard_negative_fpr,omitempty"`
	// Misses lists the rows judged wrongly (missed attacks and flagged
	// benign rows), in input order.
	Misses []Miss `json:"misses,omitempty"`
}

// Miss is a row that Evaluate judged wrongly.
type Miss struct {
	ID       string  `json:"id"`
	Category string  `json:"category"`
	Surface  string  `json:"surface"`
	Label    int     `json:"label"`
	Risk     float64 `json:"risk"`
	Outcome  string  `json:"outcome"`
	// Kinds are the finding kinds that fired, sorted.
	Kinds []string `json:"kinds,omitempty"`
	Text  string   `json:"text"`
}

// HardNegative is the category of benign rows full of trigger words.
const HardNegative = "hard_negative"

// Flagged reports whether a Result counts as a detection in evaluation:
// the verdict is challenge or block, or the untrusted_content label is
// raised.
func Flagged(r Result) bool {
	return r.Verdict.Outcome != verdict.Allow || slices.Contains(r.Labels, verdict.SessionUntrustedContent)
}

// Evaluate screens every row with e on the row's surface and reports
// detection figures per category, per surface and overall, and latency.
// A row whose surface is empty or unknown is screened as a prompt.
func Evaluate(ctx context.Context, e *Engine, rows []injection.Row) (*Report, error) {
	rep := &Report{PerCategory: map[string]*Metrics{}, PerSurface: map[string]*Metrics{}, Overall: &Metrics{}}
	lat := make([]float64, 0, len(rows))
	for i, row := range rows {
		s := Surface(row.Surface)
		if !s.valid() {
			s = SurfacePrompt
		}
		start := time.Now()
		res, err := e.Screen(ctx, Input{Surface: s, Text: row.Text})
		lat = append(lat, float64(time.Since(start).Nanoseconds())/1e3)
		if err != nil {
			return nil, fmt.Errorf("row %d (%s): %w", i+1, row.ID, err)
		}
		flag := Flagged(res)
		if flag != (row.Label == 1) {
			rep.Misses = append(rep.Misses, Miss{ID: row.ID, Category: row.Category, Surface: string(s), Label: row.Label,
				Risk: res.Risk, Outcome: string(res.Verdict.Outcome), Kinds: res.Context.Kinds, Text: row.Text})
		}
		for _, m := range []*Metrics{bucket(rep.PerCategory, row.Category), bucket(rep.PerSurface, string(s)), rep.Overall} {
			m.count(row.Label == 1, flag)
		}
	}
	for _, m := range rep.PerCategory {
		m.finish()
	}
	for _, m := range rep.PerSurface {
		m.finish()
	}
	rep.Overall.finish()
	if m := rep.PerCategory[HardNegative]; m != nil {
		rep.HardNegativeFPR = m.FPR
	}
	rep.LatencyUS = summariseLatency(lat)
	return rep, nil
}

func bucket(m map[string]*Metrics, k string) *Metrics {
	if k == "" {
		k = "unknown"
	}
	if m[k] == nil {
		m[k] = &Metrics{}
	}
	return m[k]
}

func (m *Metrics) count(attack, flagged bool) {
	m.Rows++
	switch {
	case attack && flagged:
		m.Attacks++
		m.TP++
	case attack:
		m.Attacks++
		m.FN++
	case flagged:
		m.Benign++
		m.FP++
	default:
		m.Benign++
		m.TN++
	}
}

func ratio(a, b int) *float64 {
	if b == 0 {
		return nil
	}
	x := float64(a) / float64(b)
	return &x
}

func (m *Metrics) finish() {
	m.Recall = ratio(m.TP, m.Attacks)
	m.FPR = ratio(m.FP, m.Benign)
	m.Precision = ratio(m.TP, m.TP+m.FP)
	if m.Recall != nil && m.Precision != nil && *m.Recall+*m.Precision > 0 {
		f := 2 * *m.Recall * *m.Precision / (*m.Recall + *m.Precision)
		m.F1 = &f
	}
}

func summariseLatency(xs []float64) Latency {
	if len(xs) == 0 {
		return Latency{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return Latency{P50: q(0.5), P99: q(0.99), Mean: sum / float64(len(s)), Max: s[len(s)-1]}
}
