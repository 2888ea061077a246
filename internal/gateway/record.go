package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/store"
)

// AuditKeyName is the note name (the log's origin) of the audit log's
// checkpoint signing key.
const AuditKeyName = "gatehouse.local/audit"

// recorder turns pipeline records into OCSF events in the tamper-evident
// audit log (it implements pipeline.Recorder).
type recorder struct {
	log    *audit.Log
	logger *slog.Logger
	queue  chan *pipeline.Record
	wg     sync.WaitGroup

	mu      sync.Mutex
	intents map[string]audit.Receipt // correlation id → intent receipt
}

// asyncWorkers is the number of goroutines committing enqueued records;
// their concurrent appends are what the log batches into one commit.
const asyncWorkers = 32

func openRecorder(ctx context.Context, g *Gateway) (*recorder, error) {
	signer, err := loadOrCreateNoteKey(g.cfg.Path(filepath.Join(g.cfg.DataDir, "keys", "audit.key")), AuditKeyName)
	if err != nil {
		return nil, err
	}
	backend, err := store.OpenAuditLog(ctx, g.db)
	if err != nil {
		return nil, err
	}
	l, err := audit.Open(ctx, audit.Config{Backend: backend, Signer: signer, Logger: g.log, Now: g.now})
	if err != nil {
		return nil, err
	}
	r := &recorder{log: l, logger: g.log, queue: make(chan *pipeline.Record, 4096), intents: map[string]audit.Receipt{}}
	for range asyncWorkers {
		r.wg.Add(1)
		go r.worker()
	}
	return r, nil
}

func (r *recorder) worker() {
	defer r.wg.Done()
	for rec := range r.queue {
		if err := r.Record(context.Background(), rec); err != nil {
			r.logger.Error("audit record lost", "kind", rec.Kind, "correlation_id", rec.Request.ID, "err", err)
		}
	}
}

// Record implements pipeline.Recorder: it returns once the record is
// durable.
func (r *recorder) Record(ctx context.Context, rec *pipeline.Record) error {
	ev := r.event(rec)
	rcpt, err := r.log.Append(ctx, ev)
	if err != nil {
		return err
	}
	if rec.Kind == "intent" {
		r.mu.Lock()
		r.intents[rec.Request.ID] = rcpt
		r.mu.Unlock()
	}
	return nil
}

// Enqueue implements pipeline.Recorder: the record is committed with a
// coming batch. A full queue blocks (back-pressure), it never drops.
func (r *recorder) Enqueue(rec *pipeline.Record) { r.queue <- rec }

// Close drains the queue and closes the log (issuing a last checkpoint).
func (r *recorder) Close() error {
	close(r.queue)
	r.wg.Wait()
	return r.log.Close()
}

func (r *recorder) event(rec *pipeline.Record) *audit.Event {
	q := rec.Request
	s := audit.Subject{Correlation: q.ID, TraceID: q.TraceID}
	if q.Caller != nil {
		s.Agent, s.User, s.Task = q.Caller.Agent, q.Caller.User, q.Caller.Task
	}
	c := audit.Call{
		Operation: q.Method,
		Server:    q.Server,
		Tool:      q.Target,
		Labels:    q.Labels,
		Arguments: q.Arguments,
	}
	for _, reason := range rec.Verdict.Reasons {
		for _, p := range reason.Policies {
			c.Policies = append(c.Policies, audit.Policy{ID: p})
		}
	}
	switch rec.Kind {
	case "intent":
		c.Phase = audit.PhaseIntent
	case "outcome":
		c.Phase = audit.PhaseOutcome
		r.mu.Lock()
		if rc, ok := r.intents[q.ID]; ok {
			c.Intent = &rc
			delete(r.intents, q.ID)
		}
		r.mu.Unlock()
		if o := rec.Outcome; o != nil {
			c.Result = o.Result
			if o.Status != "ok" && o.Status != "tool_error" {
				c.Failed, c.Error = true, o.Status+": "+o.Error
			}
		}
	default:
		c.Phase = audit.PhaseDecide
	}
	if strings.HasSuffix(q.Method, "/list") {
		c.Phase = audit.PhaseList
	}
	ev := audit.APIActivity(s, c, rec.Verdict)
	if !rec.Recorded.IsZero() {
		ev.Time = rec.Recorded.UnixMilli()
	}
	return ev
}

// pinApproved records an operator's approval of a tool definition.
func (r *recorder) pinApproved(ctx context.Context, server, tool, hash, by string) {
	ev := audit.EntityManagement(audit.Subject{User: by}, audit.EntityUpdate,
		audit.Entity{Type: "tool_pin", UID: server + "/" + tool, Name: tool, Data: json.RawMessage(fmt.Sprintf(`{"approved_hash":%q}`, hash))},
		"tool definition approved")
	if _, err := r.log.Append(ctx, ev); err != nil {
		r.logger.Error("recording a pin approval failed", "server", server, "tool", tool, "err", err)
	}
}

// loadOrCreateNoteKey reads a signed-note private key, creating it (and a
// .pub file with the verifier key next to it) when missing.
func loadOrCreateNoteKey(path, name string) (note.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		skey, vkey, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return loadOrCreateNoteKey(path, name)
		}
		if err != nil {
			return nil, fmt.Errorf("writing audit key: %w", err)
		}
		_, werr := f.WriteString(skey + "\n")
		serr := f.Sync()
		cerr := f.Close()
		if err := errors.Join(werr, serr, cerr); err != nil {
			return nil, fmt.Errorf("writing audit key: %w", err)
		}
		if err := os.WriteFile(path+".pub", []byte(vkey+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("writing audit verifier key: %w", err)
		}
		return note.NewSigner(skey)
	}
	if err != nil {
		return nil, fmt.Errorf("reading audit key: %w", err)
	}
	s, err := note.NewSigner(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("parsing audit key %s: %w", path, err)
	}
	return s, nil
}

var _ pipeline.Recorder = (*recorder)(nil)

// auditRoutes adds the audit API to the admin mux.
func (g *Gateway) auditRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/audit/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		c, err := g.recorder.log.Checkpoint(r.Context())
		if err != nil {
			writeJSON(w, 500, apiError{err.Error()})
			return
		}
		writeJSON(w, 200, map[string]any{"size": c.Size, "note": string(c.Note)})
	})
	mux.HandleFunc("GET /v1/audit/events", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := audit.Filter{Agent: q.Get("agent"), Tool: q.Get("tool"), Outcome: q.Get("verdict"), Correlation: q.Get("correlation")}
		if s := q.Get("since"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				writeJSON(w, 400, apiError{"since must be a duration such as 24h"})
				return
			}
			f.Since = g.now().Add(-d)
		}
		recs, err := g.recorder.log.Query(r.Context(), f)
		if err != nil {
			writeJSON(w, 500, apiError{err.Error()})
			return
		}
		writeJSON(w, 200, recs)
	})
}
