// Package keyword finds many keywords in a text in one pass: an
// Aho–Corasick automaton over ASCII-case-folded bytes. Offsets are valid in
// the original text, because folding never changes lengths. A Set is
// immutable after New and safe for concurrent use.
package keyword

// Set is a compiled set of keywords.
type Set struct {
	class  [256]uint8 // byte -> alphabet class; 0 = no keyword uses it
	nclass int
	// delta maps state*nclass + class to the next state, premultiplied by
	// nclass, with hasOut set when keywords end there: the scan loop
	// then needs no multiplication, and looks at out only on a hit.
	delta []int32
	// rootStay[c] is set when byte c, read in the root state, leads back
	// to it with nothing found: Find skips runs of such bytes without the
	// table's dependent loads.
	rootStay [256]bool
	out      [][]int32 // state -> keyword ids ending here (after fail links)
	lengths  []int     // keyword id -> length
}

func fold(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// New compiles keywords; matching ignores ASCII case.
func New(keywords []string) *Set {
	m := &Set{lengths: make([]int, len(keywords))}
	m.nclass = 1
	for _, k := range keywords {
		for i := 0; i < len(k); i++ {
			c := fold(k[i])
			if m.class[c] == 0 {
				m.class[c] = uint8(m.nclass)
				m.nclass++
			}
		}
	}
	for c := 'A'; c <= 'Z'; c++ {
		m.class[c] = m.class[c+'a'-'A']
	}
	// trie
	type node struct {
		next map[uint8]int32
		out  []int32
	}
	nodes := []node{{next: map[uint8]int32{}}}
	for id, k := range keywords {
		m.lengths[id] = len(k)
		s := int32(0)
		for i := 0; i < len(k); i++ {
			c := m.class[fold(k[i])]
			n, ok := nodes[s].next[c]
			if !ok {
				n = int32(len(nodes))
				nodes = append(nodes, node{next: map[uint8]int32{}})
				nodes[s].next[c] = n
			}
			s = n
		}
		nodes[s].out = append(nodes[s].out, int32(id))
	}
	// breadth-first fail links, filling the dense transition table
	m.delta = make([]int32, len(nodes)*m.nclass)
	m.out = make([][]int32, len(nodes))
	fail := make([]int32, len(nodes))
	queue := []int32{}
	for c := 0; c < m.nclass; c++ {
		if n, ok := nodes[0].next[uint8(c)]; ok && c != 0 {
			m.delta[c] = n
			queue = append(queue, n)
		}
	}
	m.out[0] = nodes[0].out
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		m.out[s] = append(append([]int32(nil), nodes[s].out...), m.out[fail[s]]...)
		for c := 0; c < m.nclass; c++ {
			f := m.delta[int(fail[s])*m.nclass+c]
			if n, ok := nodes[s].next[uint8(c)]; ok && c != 0 {
				fail[n] = f
				m.delta[int(s)*m.nclass+c] = n
				queue = append(queue, n)
			} else {
				m.delta[int(s)*m.nclass+c] = f
			}
		}
	}
	if len(m.out[0]) == 0 {
		for c := range 256 {
			m.rootStay[c] = m.delta[m.class[c]] == 0
		}
	}
	// premultiply and flag, now that the fail links are built
	for i, n := range m.delta {
		v := n * int32(m.nclass)
		if len(m.out[n]) > 0 {
			v |= hasOut
		}
		m.delta[i] = v
	}
	return m
}

// hasOut flags a delta entry whose state ends keywords.
const hasOut = -1 << 31

// Find calls hit with the index (in the slice given to New) and the start
// offset of every occurrence of every keyword, in order of their ends.
func (m *Set) Find(s string, hit func(id int, start int)) {
	off := int32(0) // the state times nclass
	for i := 0; i < len(s); i++ {
		if off == 0 {
			for i < len(s) && m.rootStay[s[i]] {
				i++
			}
			if i == len(s) {
				return
			}
		}
		v := m.delta[off+int32(m.class[s[i]])]
		off = v &^ hasOut
		if v < 0 {
			for _, id := range m.out[off/int32(m.nclass)] {
				hit(int(id), i+1-m.lengths[id])
			}
		}
	}
}
