package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
	"golang.org/x/mod/sumdb/note"
)

func TestExporterHTTPBackPressure(t *testing.T) {
	ctx := context.Background()
	m, _, _ := newLog(t, 25)
	var mu sync.Mutex
	var got []string
	fails := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		got = append(got, strings.Split(strings.TrimSpace(string(b)), "\n")...)
	}))
	defer srv.Close()
	x := &audit.Exporter{Backend: m, Cursors: m, Sink: audit.HTTPSink{URL: srv.URL}, Batch: 10, MinBackoff: time.Millisecond}
	total := 0
	for {
		n, err := x.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	if total != 25 || len(got) != 25 {
		t.Fatalf("exported %d, received %d; want 25", total, len(got))
	}
	for i, l := range got {
		if !strings.Contains(l, `"tool":"tool`+strconv.Itoa(i)+`"`) || !strings.HasPrefix(l, `{"activity_id"`) {
			t.Fatalf("line %d out of order or not an event: %s", i, l)
		}
	}
	if c, _ := m.Cursor(ctx, "export"); c != 24 {
		t.Errorf("cursor = %d, want 24", c)
	}
}

func TestExporterResumesFromCursor(t *testing.T) {
	ctx := context.Background()
	m, _, _ := newLog(t, 12)
	path := filepath.Join(t.TempDir(), "events.jsonl")
	for round := range 2 {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		x := &audit.Exporter{Backend: m, Cursors: m, Sink: audit.WriterSink{W: f}, Batch: 5}
		if _, err := x.Step(ctx); err != nil { // one batch, then "restart"
			t.Fatal(err)
		}
		if round == 1 {
			for {
				n, err := x.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
		}
		f.Close()
	}
	b, _ := os.ReadFile(path)
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		n++
	}
	if n != 12 {
		t.Fatalf("%d lines exported across a restart, want 12 (no loss, no duplicates)", n)
	}
}

func TestCheckpointSinks(t *testing.T) {
	ctx := context.Background()
	signer, verifier, _ := audittest.Keys(t)
	dir := t.TempDir()
	var mu sync.Mutex
	var posted []string
	fails := 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		b, _ := io.ReadAll(r.Body)
		posted = append(posted, string(b))
	}))
	defer srv.Close()
	m := audit.NewMemory()
	l, err := audit.Open(ctx, audit.Config{Backend: m, Signer: signer, CheckpointInterval: -1,
		CheckpointSinks: []audit.CheckpointSink{audit.FileSink{Dir: dir}, audit.WebhookSink{URL: srv.URL, MinBackoff: time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.Append(ctx, audittest.Event("a", "t", "c", verdict.Allow))
	}
	c, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // waits for the sinks
	b, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil || !bytes.Equal(b, c.Note) {
		t.Fatalf("file sink: %v %q", err, b)
	}
	if _, err := note.Open(b, note.VerifierList(verifier)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(posted) != 1 || posted[0] != string(c.Note) {
		t.Fatalf("webhook received %q", posted)
	}
}
