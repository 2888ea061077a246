package audit

import (
	"encoding/base64"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// FuzzChain checks that verification's fast reading of a leaf's chain
// fields accepts exactly the leaves ParseLeaf accepts, with the same index
// and link.
func FuzzChain(f *testing.F) {
	prev := tlog.RecordHash([]byte("x"))
	p := base64.StdEncoding.EncodeToString(prev[:])
	for _, s := range []string{
		string(leaf([]byte(`{"a":1,"b":[true,null,"s"]}`), 42, prev)),
		string(leaf([]byte(`{"index":1,"prev":"x"}`), 0, prev)),
		string(leaf([]byte(`null`), 9223372036854775807, prev)),
		`{"event":{},"index":01,"prev":"` + p + `","v":1}`,
		`{"event":{},"index":-1,"prev":"` + p + `","v":1}`,
		`{"event":{,"index":1,"prev":"` + p + `","v":1}`,
		`{"event":{},"index":1,"prev":"` + p + `","v":2}`,
		`{"event":{}, "index":1,"prev":"` + p + `","v":1}`,
		`{"event":{},"index":1,"index":2,"prev":"` + p + `","v":1}`,
		`{"Event":{},"Index":1,"prev":"` + p + `","v":1}`,
		`{"event":{},"index":1,"prev":"` + p[:43] + `A","v":1}`,
		`{"event":{},"index":1e3,"prev":"` + p + `","v":1}`,
		`{"event":"","index":1,"prev":"` + p + `","v":1} `,
		`{"event":{},"index":1,"prev":"` + p + `","v":1}trailing`,
		`{"event":{},"extra":1,"index":1,"prev":"` + p + `","v":1}`,
		`not json`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		seq, link, err := chain(data)
		lf, perr := ParseLeaf(data)
		if (err == nil) != (perr == nil) {
			t.Fatalf("chain error %v, ParseLeaf error %v for %q", err, perr, data)
		}
		if err == nil && (seq != lf.Index || link != lf.Prev) {
			t.Fatalf("chain = %d, %v; ParseLeaf = %d, %v for %q", seq, link, lf.Index, lf.Prev, data)
		}
	})
}

// TestChainFastPath checks that the leaves the log writes take the fast
// path (a regression here would only cost time, which no other test sees).
func TestChainFastPath(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	prev := tlog.RecordHash([]byte("x"))
	for i, ev := range []string{`{"a":1}`, `{"unmapped":{"index":3,"prev":"y"}}`, `[]`} {
		data := leaf([]byte(ev), int64(i*1000003), prev)
		allocs := testing.AllocsPerRun(10, func() {
			if _, _, err := chain(data); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("chain(%s) allocates %v times: it went through ParseLeaf", data, allocs)
		}
	}
}
