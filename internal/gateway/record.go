package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// recorder turns pipeline records into OCSF events in the tamper-evident
// audit log (it implements pipeline.Recorder).
type recorder struct {
	log     *audit.Log
	backend *store.AuditLog
	// vkey is the checkpoints' verifier key (signed-note format).
	vkey      string
	logger    *slog.Logger
	queue     chan *pipeline.Record
	wg        sync.WaitGroup
	exporters []*audit.Exporter
	closing   chan struct{}
	files     []*os.File
	// spillDir holds events the store could not take before shutdown
	// (keep), appended at the next start (appendSpilled).
	spillDir string

	mu      sync.Mutex
	intents map[string]audit.Receipt // correlation id → intent receipt
}

// asyncWorkers is the number of goroutines committing enqueued records;
// their concurrent appends are what the log batches into one commit.
const asyncWorkers = 128

func openRecorder(ctx context.Context, g *Gateway) (*recorder, error) {
	ac := g.cfg.Audit
	signer, vkey, err := loadOrCreateNoteKey(g.cfg.Path(ac.KeyFile), ac.Origin)
	if err != nil {
		return nil, err
	}
	salt, err := loadOrCreateSecret(g.cfg.Path(ac.SaltFile))
	if err != nil {
		return nil, err
	}
	mode, err := audit.ParseMode(ac.Privacy)
	if err != nil {
		return nil, err
	}
	backend, err := store.OpenAuditLog(ctx, g.db)
	if err != nil {
		return nil, err
	}
	// On SQLite, a batch is durable once written to the audit journal and
	// reaches SQLite in the background (store.AuditLog.UseJournal); with
	// the journal off, a journal an earlier start left is replayed first.
	if ac.Journal == nil || *ac.Journal {
		err = backend.UseJournal(ctx, g.log)
	} else {
		err = backend.RetireJournal(ctx)
	}
	if err != nil {
		return nil, err
	}
	cfg := audit.Config{Backend: backend, Signer: signer, Logger: g.log, Now: g.now, Privacy: mode, Salt: salt,
		CheckpointInterval: ac.CheckpointInterval.Std(), Registerer: g.registerer}
	if ac.CheckpointDir != "" {
		cfg.CheckpointSinks = append(cfg.CheckpointSinks, audit.FileSink{Dir: g.cfg.Path(ac.CheckpointDir)})
	}
	if ac.CheckpointWebhook != "" {
		h, err := readHeaderFiles(g.cfg, ac.CheckpointWebhookHeaderFiles)
		if err != nil {
			return nil, err
		}
		cfg.CheckpointSinks = append(cfg.CheckpointSinks, audit.WebhookSink{URL: ac.CheckpointWebhook, Header: h, Logger: g.log})
	}
	l, err := audit.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r := &recorder{log: l, logger: g.log, queue: make(chan *pipeline.Record, 4096), intents: map[string]audit.Receipt{}, backend: backend, closing: make(chan struct{}), vkey: vkey,
		spillDir: filepath.Join(g.cfg.Path(g.cfg.DataDir), "audit-spill")}
	if err := r.appendSpilled(ctx); err != nil {
		l.Close()
		return nil, err
	}
	for _, e := range ac.Export {
		x := &audit.Exporter{Backend: backend, Cursors: backend, Name: e.Name, Logger: g.log}
		switch {
		case e.File != "":
			f, err := os.OpenFile(g.cfg.Path(e.File), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				l.Close()
				return nil, fmt.Errorf("opening audit export %s: %w", e.Name, err)
			}
			r.files = append(r.files, f)
			x.Sink = audit.WriterSink{W: f}
		case e.Stdout:
			x.Sink = audit.WriterSink{W: os.Stdout}
		default:
			h, err := readHeaderFiles(g.cfg, e.HeaderFiles)
			if err != nil {
				l.Close()
				return nil, err
			}
			x.Sink = audit.HTTPSink{URL: e.URL, Header: h}
		}
		r.exporters = append(r.exporters, x)
	}
	for range asyncWorkers {
		r.wg.Add(1)
		go r.worker()
	}
	return r, nil
}

// worker commits enqueued records. A record that cannot be committed is
// retried with backoff until it is, so a store outage delays records but
// does not drop them; meanwhile the queue fills and Enqueue blocks
// (back-pressure on the requests that produce records).
func (r *recorder) worker() {
	defer r.wg.Done()
	for rec := range r.queue {
		r.commit(rec)
	}
}

func (r *recorder) commit(rec *pipeline.Record) {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := r.append(context.Background(), rec, true)
		if err == nil {
			return
		}
		if errors.Is(err, audit.ErrClosed) {
			r.logger.Error("audit record not committed: the log is closed", "kind", rec.Kind, "correlation_id", rec.Request.ID)
			return
		}
		if attempt == 1 {
			r.logger.Error("audit record not committed yet; retrying", "kind", rec.Kind, "correlation_id", rec.Request.ID, "err", err)
		}
		select {
		case <-r.closing:
			r.keep(r.event(rec), err)
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// keep writes an event the store could not take before shutdown (cause)
// to a file of its own in the spill directory, synced, so that the next
// start appends it to the log (appendSpilled): records of calls that were
// answered are not lost with the process.
func (r *recorder) keep(ev *audit.Event, cause error) {
	b, err := json.Marshal(ev)
	if err == nil {
		err = os.MkdirAll(r.spillDir, 0o700)
	}
	if err == nil {
		err = audit.WriteFileSync(filepath.Join(r.spillDir, fmt.Sprintf("%020d-%s.json", time.Now().UnixNano(), newCorrelationID()[:8])), b)
	}
	if err != nil {
		r.logger.Error("audit event lost: the store is unavailable at shutdown and the spill file could not be written",
			"class", ev.ClassName, "correlation_id", ev.Metadata.CorrelationUID, "err", cause, "spill_err", err)
		return
	}
	r.logger.Warn("audit event kept in the spill directory: the store is unavailable at shutdown; the next start appends it",
		"class", ev.ClassName, "correlation_id", ev.Metadata.CorrelationUID, "dir", r.spillDir, "err", cause)
}

// appendSpilled appends the events that an earlier shutdown kept in the
// spill directory, oldest first, removing each file once its event is
// durable. An event that cannot be appended stops the start: the file
// stays for the next one.
func (r *recorder) appendSpilled(ctx context.Context) error {
	entries, err := os.ReadDir(r.spillDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the audit spill directory: %w", err)
	}
	n := 0
	for _, e := range entries { // ReadDir sorts by name: by time kept
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(r.spillDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading spilled audit event %s: %w", path, err)
		}
		var ev audit.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			return fmt.Errorf("spilled audit event %s: %w", path, err)
		}
		if _, err := r.log.Append(ctx, &ev); err != nil {
			return fmt.Errorf("appending spilled audit event %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("removing spilled audit event %s: %w", path, err)
		}
		n++
	}
	if n > 0 {
		r.logger.Warn("appended audit events kept at an earlier shutdown", "events", n, "dir", r.spillDir)
	}
	return nil
}

// Record implements pipeline.Recorder: it returns once the record is
// durable.
func (r *recorder) Record(ctx context.Context, rec *pipeline.Record) error {
	return r.append(ctx, rec, false)
}

// append records rec; lazy records may wait to share a later commit.
func (r *recorder) append(ctx context.Context, rec *pipeline.Record, lazy bool) error {
	ev := r.event(rec)
	appendFn := r.log.Append
	if lazy {
		appendFn = r.log.AppendLazy
	}
	rcpt, err := appendFn(ctx, ev)
	if err != nil {
		return err
	}
	if rec.Kind == "intent" && !lazy {
		// Only write-ahead intents are linked by index from their outcome
		// (a lazy intent may commit after its outcome is built).
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
	close(r.closing)
	close(r.queue)
	r.wg.Wait()
	err := r.log.Close()
	for _, f := range r.files {
		err = errors.Join(err, f.Close())
	}
	return err
}

// runExporters streams the log to the configured sinks until ctx ends.
func (r *recorder) runExporters(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, x := range r.exporters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := x.Run(ctx); err != nil && ctx.Err() == nil {
				r.logger.Error("audit exporter stopped", "export", x.Name, "err", err)
			}
		}()
	}
	wg.Wait()
	return nil
}

// loadOrCreateSecret reads a secret file, creating 32 random bytes (hex,
// mode 0600) when it is missing.
func loadOrCreateSecret(path string) ([]byte, error) {
	tok, err := loadOrCreateToken(path)
	if err != nil {
		return nil, fmt.Errorf("audit salt: %w", err)
	}
	return []byte(tok), nil
}

func readHeaderFiles(cfg interface {
	ReadSecret(string) (string, error)
}, files map[string]string) (http.Header, error) {
	if len(files) == 0 {
		return nil, nil
	}
	h := http.Header{}
	for name, file := range files {
		v, err := cfg.ReadSecret(file)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", name, err)
		}
		h.Set(name, v)
	}
	return h, nil
}

func (r *recorder) event(rec *pipeline.Record) *audit.Event {
	q := rec.Request
	s := audit.Subject{Correlation: q.ID, TraceID: q.TraceID, Instance: instanceOf(q)}
	if q.Caller != nil {
		s.Agent, s.User, s.Task = q.Caller.Agent, q.Caller.User, q.Caller.Task
	}
	c := audit.Call{
		Operation:     q.Method,
		Server:        q.Server,
		Tool:          q.Target,
		Labels:        q.Labels,
		SessionLabels: q.SessionLabels,
		Arguments:     q.Arguments,
	}
	for _, reason := range rec.Verdict.Reasons {
		for _, p := range reason.Policies {
			pol := audit.Policy{ID: p}
			if reason.Layer == verdict.Execution && strings.HasPrefix(reason.Code, "policy.") {
				pol.Version = q.PolicyVersion
			}
			c.Policies = append(c.Policies, pol)
		}
	}
	if f := q.Findings; f != nil {
		c.Findings = &audit.Findings{Kinds: f.Kinds, Scores: f.Scores}
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
			if f := o.Findings; f != nil {
				c.Findings = &audit.Findings{Kinds: f.Kinds, Scores: f.Scores}
			}
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
	if q.Caller != nil {
		ev.Unmapped.Act, ev.Unmapped.Source = q.Caller.Act, q.Caller.Source
		if w := q.Caller.Workload; w != nil {
			ev.Unmapped.SourceIdentity = &audit.SourceIdentity{TrustSource: w.TrustSource, Kind: w.Kind, Tenant: w.Tenant, Subject: w.Subject}
		}
	}
	if !rec.Recorded.IsZero() {
		ev.Time = rec.Recorded.UnixMilli()
	}
	return ev
}

// enqueueEvent commits an event with a coming batch, retrying until it
// is durable (state changes that must not delay their caller).
func (r *recorder) enqueueEvent(ev *audit.Event) {
	go func() {
		backoff := 50 * time.Millisecond
		for {
			_, err := r.log.Append(context.Background(), ev)
			if err == nil || errors.Is(err, audit.ErrClosed) {
				if err != nil {
					r.logger.Error("audit event not committed: the log is closed", "class", ev.ClassName)
				}
				return
			}
			select {
			case <-r.closing:
				r.keep(ev, err)
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}()
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
// .pub file with the verifier key next to it) when missing. It returns the
// signer and its verifier key.
func loadOrCreateNoteKey(path, name string) (note.Signer, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		skey, vkey, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			return nil, "", err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, "", err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return loadOrCreateNoteKey(path, name)
		}
		if err != nil {
			return nil, "", fmt.Errorf("writing audit key: %w", err)
		}
		_, werr := f.WriteString(skey + "\n")
		serr := f.Sync()
		cerr := f.Close()
		if err := errors.Join(werr, serr, cerr); err != nil {
			return nil, "", fmt.Errorf("writing audit key: %w", err)
		}
		if err := os.WriteFile(path+".pub", []byte(vkey+"\n"), 0o644); err != nil {
			return nil, "", fmt.Errorf("writing audit verifier key: %w", err)
		}
		s, err := note.NewSigner(skey)
		return s, vkey, err
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading audit key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("parsing audit key %s: %w", path, err)
	}
	vkey, err := verifierKey(skey)
	if err != nil {
		return nil, "", fmt.Errorf("parsing audit key %s: %w", path, err)
	}
	return s, vkey, nil
}

// verifierKey derives the verifier key of an Ed25519 signed-note private
// key ("PRIVATE+KEY+name+hash+base64(0x01 || seed)").
func verifierKey(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("not a signed-note private key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an Ed25519 signed-note private key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

var _ pipeline.Recorder = (*recorder)(nil)

// auditRoutes adds the audit API to the admin mux.
func (g *Gateway) auditRoutes(mux *http.ServeMux) {
	g.proofRoutes(mux)
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
