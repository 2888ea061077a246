package audit_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// newLog returns a memory log of n entries with checkpoints at n/2 and n.
func newLog(t *testing.T, n int) (*audit.Memory, note.Verifier, string) {
	t.Helper()
	ctx := context.Background()
	signer, verifier, vkey := audittest.Keys(t)
	m := audit.NewMemory()
	l, err := audit.Open(ctx, audit.Config{Backend: m, Signer: signer, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := l.Append(ctx, audittest.Event("agent", fmt.Sprint("tool", i), fmt.Sprint("c", i), verdict.Allow)); err != nil {
			t.Fatal(err)
		}
		if i+1 == n/2 {
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return m, verifier, vkey
}

// rewrite replaces old by new in an entry's data; with rehash it also
// updates the recorded hash, as a careful attacker would.
func rewrite(e audit.Entry, old, new string, rehash bool) audit.Entry {
	e.Data = bytes.Replace(slices.Clone(e.Data), []byte(old), []byte(new), 1)
	if rehash {
		e.Hash = tlog.RecordHash(e.Data)
	}
	return e
}

func renumber(es []audit.Entry) []audit.Entry {
	for i := range es {
		es[i].Index = int64(i)
	}
	return es
}

func forged(t *testing.T, index int64, prev tlog.Hash) audit.Entry {
	ev := `{"activity_id":99,"category_uid":6,"class_uid":6003,"metadata":{"product":{"vendor_name":"x"},"version":"1.3.0"},"severity_id":1,"status_id":1,"time":1,"type_uid":600399}`
	data := fmt.Sprintf(`{"event":%s,"index":%d,"prev":"%s","v":1}`, ev, index, base64.StdEncoding.EncodeToString(prev[:]))
	return audit.Entry{Index: index, Data: []byte(data), Hash: tlog.RecordHash([]byte(data))}
}

type want struct {
	kind  audit.Kind
	index int64
}

var tamperCases = []struct {
	name string
	edit func(t *testing.T, es []audit.Entry) []audit.Entry
	want []want // located discrepancies (checkpoint kinds excluded)
	// roots says whether the signed roots still match once the tampering
	// is undone logically (reorder, insertion, single deletion).
	roots bool
}{
	{"edit", func(t *testing.T, es []audit.Entry) []audit.Entry {
		es[10] = rewrite(es[10], `"tool10"`, `"toolXX"`, false)
		return es
	}, []want{{audit.Modified, 10}}, false},
	{"edit and rehash", func(t *testing.T, es []audit.Entry) []audit.Entry {
		es[10] = rewrite(es[10], `"tool10"`, `"toolXX"`, true)
		return es
	}, []want{{audit.Modified, 10}}, false},
	{"edit link and rehash", func(t *testing.T, es []audit.Entry) []audit.Entry {
		lf, _ := audit.ParseLeaf(es[10].Data)
		other := tlog.RecordHash([]byte("x"))
		es[10] = rewrite(es[10], base64.StdEncoding.EncodeToString(lf.Prev[:]), base64.StdEncoding.EncodeToString(other[:]), true)
		return es
	}, []want{{audit.Modified, 10}}, false},
	{"edit last and rehash", func(t *testing.T, es []audit.Entry) []audit.Entry {
		es[39] = rewrite(es[39], `"tool39"`, `"toolXX"`, true)
		return es
	}, []want{{audit.Modified, 39}}, false},
	{"edit first", func(t *testing.T, es []audit.Entry) []audit.Entry {
		es[0] = rewrite(es[0], `"tool0"`, `"toolX"`, true)
		return es
	}, []want{{audit.Modified, 0}}, false},
	{"garbage", func(t *testing.T, es []audit.Entry) []audit.Entry {
		es[7].Data = []byte(`not json`)
		return es
	}, []want{{audit.Modified, 7}}, false},
	{"delete", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return slices.Delete(es, 10, 11)
	}, []want{{audit.Deleted, 10}}, true},
	{"delete first", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return es[1:]
	}, []want{{audit.Deleted, 0}}, true},
	{"delete two", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return slices.Delete(es, 10, 12)
	}, []want{{audit.Deleted, 10}, {audit.Deleted, 11}}, false},
	{"delete last", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return es[:39]
	}, []want{{audit.Deleted, 39}}, false},
	{"delete and renumber", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return renumber(slices.Delete(es, 10, 11))
	}, []want{{audit.Deleted, 10}}, true},
	{"insert well-formed", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return renumber(slices.Insert(es, 10, forged(t, 10, es[9].Hash)))
	}, []want{{audit.Inserted, 10}}, true},
	{"insert bad index", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return renumber(slices.Insert(es, 10, forged(t, 999, es[9].Hash)))
	}, []want{{audit.Inserted, 999}}, true},
	{"insert duplicate", func(t *testing.T, es []audit.Entry) []audit.Entry {
		return renumber(slices.Insert(es, 10, es[5]))
	}, []want{{audit.Inserted, 5}}, true},
	{"swap", func(t *testing.T, es []audit.Entry) []audit.Entry {
		es[10], es[11] = es[11], es[10]
		return renumber(es)
	}, []want{{audit.Reordered, 11}}, true},
	{"move", func(t *testing.T, es []audit.Entry) []audit.Entry {
		e := es[10]
		es = slices.Delete(es, 10, 11)
		return renumber(slices.Insert(es, 13, e))
	}, []want{{audit.Reordered, 10}}, true},
	{"move last first", func(t *testing.T, es []audit.Entry) []audit.Entry {
		e := es[39]
		return renumber(slices.Insert(es[:39], 30, e))
	}, []want{{audit.Reordered, 39}}, true},
}

func located(r *audit.Report) []want {
	var got []want
	for _, d := range r.Discrepancies {
		if d.Kind != audit.CheckpointMismatch && d.Kind != audit.BadCheckpoint {
			got = append(got, want{d.Kind, d.Index})
		}
	}
	return got
}

func checkReport(t *testing.T, rep *audit.Report, w []want, roots bool) {
	t.Helper()
	if got := located(rep); !slices.Equal(got, w) {
		t.Errorf("located %v, want %v\nreport: %+v", got, w, rep.Discrepancies)
	}
	mismatch := false
	for _, d := range rep.Discrepancies {
		mismatch = mismatch || d.Kind == audit.CheckpointMismatch
	}
	if roots && (mismatch || len(rep.Verified) != 2) {
		t.Errorf("signed roots: verified %v, mismatch %v; want both verified", rep.Verified, mismatch)
	}
	if !roots && len(rep.Verified) == 2 {
		t.Errorf("both signed roots verified after tampering")
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	ctx := context.Background()
	for _, tc := range tamperCases {
		t.Run(tc.name, func(t *testing.T) {
			m, verifier, vkey := newLog(t, 40)
			// The bundle is exported before tampering with the store, and
			// tampered with the same edit afterwards.
			m.Edit(func(es []audit.Entry) []audit.Entry { return tc.edit(t, es) })
			rep, err := audit.VerifyBackend(ctx, m, m, audit.VerifyOptions{Verifier: verifier})
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, rep, tc.want, tc.roots)

			var b bytes.Buffer
			if err := audit.WriteBundle(ctx, &b, m, m, audit.BundleOptions{Key: vkey, To: 40}); err != nil {
				t.Fatal(err)
			}
			rep, err = audit.VerifyBundle(ctx, &b, verifier, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("bundle report: %v", rep.Discrepancies)
			checkReport(t, rep, tc.want, tc.roots)
		})
	}
}

func TestVerifyIntact(t *testing.T) {
	ctx := context.Background()
	m, verifier, vkey := newLog(t, 1000)
	for _, r := range [][2]int64{{0, 0}, {0, 500}, {1, 999}, {300, 700}, {999, 1000}, {500, 1000}} {
		rep, err := audit.VerifyBackend(ctx, m, m, audit.VerifyOptions{Verifier: verifier, From: r[0], To: r[1]})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Verified) == 0 {
			t.Errorf("backend %v: %+v", r, rep)
		}
		var b bytes.Buffer
		if err := audit.WriteBundle(ctx, &b, m, m, audit.BundleOptions{From: r[0], To: r[1], Key: vkey}); err != nil {
			t.Fatal(err)
		}
		rep, err = audit.VerifyBundle(ctx, bytes.NewReader(b.Bytes()), verifier, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Verified) == 0 {
			t.Errorf("bundle %v: %+v", r, rep)
		}
		// A range bundle with one entry edited fails on the signed root.
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		last := len(lines) - 1
		lines[last] = strings.Replace(lines[last], `"agent"`, `"agenT"`, 1)
		rep, err = audit.VerifyBundle(ctx, strings.NewReader(strings.Join(lines, "\n")), verifier, 0)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() {
			t.Errorf("bundle %v edited: verified", r)
		}
	}
	// Another key does not verify the checkpoints.
	_, other, _ := audittest.Keys(t)
	rep, err := audit.VerifyBackend(ctx, m, m, audit.VerifyOptions{Verifier: other})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Discrepancies[0].Kind != audit.BadCheckpoint {
		t.Errorf("verify with another key: %+v", rep)
	}
}

func TestVerifyUnsignedTail(t *testing.T) {
	ctx := context.Background()
	m, verifier, _ := newLog(t, 20)
	m.Edit(func(es []audit.Entry) []audit.Entry { return append(es, forged(t, 20, es[19].Hash)) })
	rep, err := audit.VerifyBackend(ctx, m, m, audit.VerifyOptions{Verifier: verifier})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unsigned != 1 || len(rep.Verified) != 2 {
		t.Errorf("report %+v: want 1 unsigned entry and both checkpoints verified", rep)
	}
}

// TestCheckpointCanonicalSignature changes a checkpoint signature's
// base64 only in the bits that padding ignores: the decoded signature is
// the same, but the evidence is not the one the log issued.
func TestCheckpointCanonicalSignature(t *testing.T) {
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	l, err := audit.Open(ctx, audit.Config{Backend: audit.NewMemory(), Signer: signer, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(ctx, audittest.Event("agent", "tool", "c", verdict.Allow)); err != nil {
		t.Fatal(err)
	}
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.OpenCheckpoint(cp.Note, verifier); err != nil {
		t.Fatalf("issued checkpoint: %v", err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	msg := string(cp.Note)
	eq := strings.LastIndex(msg, "=\n")
	if eq < 1 || strings.HasSuffix(msg[:eq], "=") {
		t.Fatalf("want a signature with one padding character:\n%s", msg)
	}
	i := strings.IndexByte(alphabet, msg[eq-1])
	forged := msg[:eq-1] + string(alphabet[i^1]) + msg[eq:]
	if sig, _ := base64.StdEncoding.DecodeString(forged[strings.LastIndex(forged, " ")+1 : len(forged)-1]); sig == nil {
		t.Fatal("forged signature does not decode leniently")
	}
	if _, err := audit.OpenCheckpoint([]byte(forged), verifier); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Fatalf("non-canonical signature accepted: %v", err)
	}
}

// TestVerifyRangeLocatesTampering verifies the range [5, 25) of tampered
// logs: every tampering inside the range is reported with its kind and
// index, as when the whole log is verified.
func TestVerifyRangeLocatesTampering(t *testing.T) {
	ctx := context.Background()
	inRange := map[string]bool{"edit": true, "edit and rehash": true, "edit link and rehash": true, "garbage": true,
		"delete": true, "delete two": true, "delete and renumber": true, "insert well-formed": true,
		"insert bad index": true, "insert duplicate": true, "swap": true, "move": true}
	n := 0
	for _, tc := range tamperCases {
		if !inRange[tc.name] {
			continue
		}
		n++
		t.Run(tc.name, func(t *testing.T) {
			m, verifier, _ := newLog(t, 40)
			m.Edit(func(es []audit.Entry) []audit.Entry { return tc.edit(t, es) })
			rep, err := audit.VerifyBackend(ctx, m, m, audit.VerifyOptions{Verifier: verifier, From: 5, To: 25})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatalf("range verification passed: %+v", rep)
			}
			if got := located(rep); !slices.Equal(got, tc.want) {
				t.Errorf("located %v, want %v\nreport: %+v", got, tc.want, rep.Discrepancies)
			}
		})
	}
	if n != len(inRange) {
		t.Fatalf("%d of the %d cases named exist", n, len(inRange))
	}
}
