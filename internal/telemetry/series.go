package telemetry

import (
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// other replaces a label value that is not kept.
const other = "other"

// maxLabelLen is the longest label value kept as is.
const maxLabelLen = 128

// series is a metric vector's children, bounded: the first max label
// combinations are kept as given; past that, a new combination has its
// collapsible labels replaced by "other" (so the vector grows at most by
// the combinations of its fixed-set labels). Lookups of known combinations
// take a read lock and do not allocate.
type series[C any] struct {
	name     string
	with     func(...string) C
	collapse []bool // per label: replaced by "other" on overflow
	max      int
	overflow prometheus.Counter

	mu sync.RWMutex
	m  map[string]C // key: label values, each followed by 0xff
}

func newSeries[C any](name string, with func(...string) C, collapse []bool, max int, overflow *prometheus.CounterVec) *series[C] {
	return &series[C]{name: name, with: with, collapse: collapse, max: max,
		overflow: overflow.WithLabelValues(name), m: map[string]C{}}
}

// get returns the child for the label values lvs (len(lvs) equals the
// vector's label count).
func (s *series[C]) get(lvs ...string) C {
	var buf [192]byte
	k := appendKey(buf[:0], lvs)
	s.mu.RLock()
	c, ok := s.m[string(k)]
	s.mu.RUnlock()
	if ok {
		return c
	}
	return s.slow(k, lvs)
}

func appendKey(b []byte, lvs []string) []byte {
	for _, v := range lvs {
		b = append(b, v...)
		b = append(b, 0xff) // never in valid UTF-8
	}
	return b
}

// slow resolves a combination not seen as given: it cleans the values,
// collapses them when the vector is full, and creates the child. Only
// inserts take the write lock, so a stream of new values past the bound
// costs read locks.
func (s *series[C]) slow(raw []byte, lvs []string) C {
	vals := make([]string, len(lvs))
	cleaned := false
	for i, v := range lvs {
		vals[i] = cleanLabel(v)
		cleaned = cleaned || vals[i] != v
	}
	key := raw
	if cleaned {
		key = appendKey(nil, vals)
	}
	s.mu.RLock()
	c, ok := s.m[string(key)]
	full := len(s.m) >= s.max
	s.mu.RUnlock()
	if ok {
		return c
	}
	collapsed := false
	collapse := func() {
		s.overflow.Inc()
		for i := range vals {
			if s.collapse[i] {
				vals[i] = other
			}
		}
		key = appendKey(nil, vals)
		collapsed = true
	}
	if full {
		collapse()
		s.mu.RLock()
		c, ok := s.m[string(key)]
		s.mu.RUnlock()
		if ok {
			return c
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.m[string(key)]; ok {
		return c
	}
	if !collapsed && len(s.m) >= s.max {
		collapse()
		if c, ok := s.m[string(key)]; ok {
			return c
		}
	}
	c = s.with(vals...)
	s.m[string(key)] = c
	return c
}

// cleanLabel returns v, or "other" when v is not valid UTF-8 or too long.
func cleanLabel(v string) string {
	if len(v) > maxLabelLen || !utf8.ValidString(v) {
		return other
	}
	return v
}

// oneOf maps v onto a fixed set: v itself when it is in set, else "other".
type oneOf map[string]string

func newOneOf(vs ...string) oneOf {
	m := make(oneOf, len(vs))
	for _, v := range vs {
		m[v] = v
	}
	return m
}

func (o oneOf) get(v string) string {
	if s, ok := o[v]; ok {
		return s
	}
	return other
}
