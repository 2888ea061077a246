package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// FuzzVerifyBundle feeds VerifyBundle (the parser behind gatehouse audit
// verify --bundle, whose input comes from anywhere) with mutations of a
// valid bundle. It must not panic, and a bundle it reports as verified
// must not carry a changed entry under a signed checkpoint: every entry
// below the largest verified tree size is the original, byte for byte.
func FuzzVerifyBundle(f *testing.F) {
	ctx := context.Background()
	signer, verifier, vkey := audittest.Keys(f)
	m := audit.NewMemory()
	l, err := audit.Open(ctx, audit.Config{Backend: m, Signer: signer, CheckpointInterval: -1})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 12 {
		if _, err := l.Append(ctx, audittest.Event("agent", "tool", "c", verdict.Allow)); err != nil {
			f.Fatal(err)
		}
		if i == 5 {
			if _, err := l.Checkpoint(ctx); err != nil {
				f.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		f.Fatal(err)
	}
	es, err := m.Entries(ctx, 0, 12)
	if err != nil {
		f.Fatal(err)
	}
	original := map[int64][]byte{}
	for _, e := range es {
		original[e.Index] = e.Data
	}
	for _, opts := range []audit.BundleOptions{{Key: vkey}, {From: 3, To: 9, Key: vkey}} {
		var b bytes.Buffer
		if err := audit.WriteBundle(ctx, &b, m, m, opts); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
		f.Add(bytes.Replace(b.Bytes(), []byte(`"tool"`), []byte(`"toot"`), 1))
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		slices.Reverse(lines[len(lines)-3:])
		f.Add([]byte(strings.Join(lines, "\n")))
	}
	f.Add([]byte(`{"type":"header","format":"gatehouse-audit-bundle/1"}` + "\n" + `{"type":"entry","index":0,"leaf":{}}`))
	f.Add([]byte("not a bundle"))

	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := audit.VerifyBundle(ctx, bytes.NewReader(data), verifier, 0)
		if err != nil || !rep.OK() || len(rep.Verified) == 0 {
			return
		}
		signed := slices.Max(rep.Verified)
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var line struct {
				Type string          `json:"type"`
				Leaf json.RawMessage `json:"leaf"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil || line.Type != "entry" {
				continue
			}
			lf, err := audit.ParseLeaf(line.Leaf)
			if err != nil {
				t.Fatalf("a bundle with an unreadable entry verified: %s", sc.Bytes())
			}
			if lf.Index < signed && !bytes.Equal(line.Leaf, original[lf.Index]) {
				t.Fatalf("a bundle with a changed entry %d verified (signed size %d):\n%s\noriginal:\n%s", lf.Index, signed, line.Leaf, original[lf.Index])
			}
		}
	})
}
