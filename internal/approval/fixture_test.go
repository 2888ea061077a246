package approval_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// clock is a settable clock for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// hook is a webhook receiver that records what it gets; the first failFirst
// deliveries get a 503.
type hook struct {
	mu        sync.Mutex
	got       []received
	failFirst int
	calls     int
	srv       *httptest.Server
	notify    chan struct{}
}

type received struct {
	header http.Header
	body   []byte
	event  string
}

func newHook(t testing.TB, failFirst int) *hook {
	h := &hook{failFirst: failFirst, notify: make(chan struct{}, 100)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.calls++
		fail := h.calls <= h.failFirst
		if !fail {
			var m struct {
				Event string `json:"event"`
			}
			_ = json.Unmarshal(body, &m)
			h.got = append(h.got, received{header: r.Header.Clone(), body: body, event: m.Event})
		}
		h.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		h.notify <- struct{}{}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) received() []received {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]received(nil), h.got...)
}

// waitFor waits until a delivery of event arrived.
func (h *hook) waitFor(t testing.TB, event string) received {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, r := range h.received() {
			if r.event == event {
				return r
			}
		}
		select {
		case <-h.notify:
		case <-deadline:
			t.Fatalf("no %s notification arrived", event)
		}
	}
}

// fixture is a Manager over a memory store and a real audit log.
type fixture struct {
	m         *approval.Manager
	st        *approval.Memory
	log       *audit.Log
	backend   *audit.Memory
	clock     *clock
	hook      *hook
	secret    []byte
	verifier  note.Verifier
	vkey      string
	failAudit atomic.Bool
}

func newFixture(t testing.TB, edit func(*approval.Config)) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	signer, verifier, vkey := audittest.Keys(t)
	backend := audit.NewMemory()
	l, err := audit.Open(ctx, audit.Config{Backend: backend, Signer: signer, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: approval.NewMemory(), log: l, backend: backend, verifier: verifier, vkey: vkey,
		clock: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, hook: newHook(t, 0), secret: []byte("hook-secret")}
	cfg := approval.Config{
		Store: f.st,
		Audit: func(ctx context.Context, e *audit.Event) (audit.Receipt, error) {
			if f.failAudit.Load() {
				return audit.Receipt{}, errors.New("audit store down")
			}
			return l.Append(ctx, e)
		},
		Notifiers: []approval.Notifier{&approval.Webhook{ID: "hook", URL: f.hook.srv.URL, Secret: f.secret}},
		Rules: map[string]approval.Rule{
			"financial": {Quorum: 1, PendingTTL: 15 * time.Minute, GrantTTL: 5 * time.Minute},
			"privilege": {Quorum: 2, FreshAuth: 10 * time.Minute, ACR: []string{"mfa"}},
			"default":   {Approvers: []string{"security-reviewers"}},
			"export":    {Approvers: []string{"data-protection"}, ElevationTTL: 2 * time.Hour},
		},
		BreakGlass:     approval.BreakGlass{Group: "oncall"},
		AgentOwner:     func(ctx context.Context, agent string) (string, error) { return "olivia", nil },
		PublicURL:      "https://gw.example/",
		AuditReader:    approval.LogReader(l),
		VerifierKey:    vkey,
		Now:            f.clock.Now,
		PollInterval:   20 * time.Millisecond,
		NotifyBackoff:  time.Millisecond,
		NotifyAttempts: 4,
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := approval.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

// evidence is a held send_money call.
func evidence(args string) approval.Evidence {
	return approval.Evidence{
		Correlation: "call-1", Agent: "payments-agent", Owner: "olivia", User: "ursula", Task: "task-7", AuthMethod: "oidc",
		Server: "bank", Tool: "send_money", Exposed: "bank__send_money", Arguments: json.RawMessage(args),
		PolicyVersion: "pv1", Value: "1500",
		Obligations:   []verdict.Obligation{{Kind: verdict.ObligationApproval, Group: "finance-approvers", Detail: "financial"}},
		Reasons:       []verdict.Reason{{Layer: verdict.Execution, Code: "policy.challenge", Policies: []string{"payments-over-1000"}, Outcome: verdict.Challenge}},
		Labels:        []verdict.Label{verdict.Financial, verdict.ExternalSink},
		SessionLabels: []verdict.Label{verdict.SessionPrivateData},
	}
}

const sendArgs = `{"to": "DE89 3704 0044 0532 0130 00", "amount": 1500.00, "memo": "invoice <42> & co"}`

func human(name string, groups ...string) approval.Approver {
	return approval.Approver{Subject: name, Groups: groups, Method: approval.MethodAdminToken, Operator: "admin", Human: true}
}

// records returns the approval records (entity data) of the audit log for
// approval id, in order.
func (f *fixture) records(t testing.TB, id string) []map[string]any {
	t.Helper()
	rs, err := f.log.Query(context.Background(), audit.Filter{Correlation: id})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, r := range rs {
		if r.Event.Entity == nil {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(r.Event.Entity.Data, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// changes returns the approval's recorded changes, deliveries left out.
func (f *fixture) changes(t testing.TB, id string) []string {
	var out []string
	for _, r := range f.records(t, id) {
		if c := r["change"].(string); c != "delivery" {
			out = append(out, c)
		}
	}
	return out
}

// waitDeliveries waits until approval id has at least n recorded
// deliveries and returns them.
func (f *fixture) waitDeliveries(t testing.TB, id string, n int) []approval.Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, err := f.m.Deliveries(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) >= n {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries of %s recorded, want %d", len(ds), id, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
