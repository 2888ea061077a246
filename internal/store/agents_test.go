package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/store"
)

type changeLog struct {
	mu      sync.Mutex
	changes []identity.AgentChange
	fail    error
}

func (l *changeLog) audit(_ context.Context, c identity.AgentChange) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	l.changes = append(l.changes, c)
	return nil
}

func (l *changeLog) last() identity.AgentChange {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changes[len(l.changes)-1]
}

func TestAgentsContract(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			log := &changeLog{}
			reg, err := store.NewAgents(ctx, db, store.AgentsConfig{Audit: log.audit})
			if err != nil {
				t.Fatal(err)
			}
			by := identity.ChangeInfo{By: "alice@example.com", Reason: "onboarding"}
			cred := identity.FederatedCredential{Source: "contoso", Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", Subject: "b5f1c0f6-6a3c-4bb3-8f5e-6c1d1e3f2a10"}
			a := &identity.Agent{ID: "billing-bot", Name: "Billing bot", Owner: "alice@example.com", Hosting: identity.HostingAzure,
				Servers: []string{"bank"}, Tools: []string{"bank/balance"}, Credentials: []identity.FederatedCredential{cred},
				Groups:  []string{"finance", "Payments Team"},
				Tenants: []string{cred.Tenant}, Expires: time.Now().Add(90 * 24 * time.Hour).UTC().Truncate(time.Second)}
			got, err := reg.Create(ctx, a, by)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != identity.StatusActive || !got.Enabled || got.Version == 0 {
				t.Fatalf("created = %+v", got)
			}
			if c := log.last(); c.Action != "agent.create" || c.By != by.By || c.Before != nil || c.After.ID != "billing-bot" {
				t.Errorf("audit = %+v", c)
			}
			byCred, err := reg.AgentByCredential(ctx, cred.Source, cred.Tenant, cred.Subject)
			if err != nil || byCred.ID != "billing-bot" || !byCred.Expires.Equal(a.Expires) || strings.Join(byCred.Groups, ",") != "finance,Payments Team" {
				t.Fatalf("by credential: %+v, %v", byCred, err)
			}
			if _, err := reg.AgentByCredential(ctx, cred.Source, "other-tenant", cred.Subject); !errors.Is(err, identity.ErrNoAgent) {
				t.Errorf("credential in another tenant: %v", err)
			}
			if _, err := reg.Create(ctx, a, by); !errors.Is(err, identity.ErrAgentExists) {
				t.Errorf("duplicate id: %v", err)
			}
			thief := &identity.Agent{ID: "thief", Credentials: []identity.FederatedCredential{cred}}
			if _, err := reg.Create(ctx, thief, by); !errors.Is(err, identity.ErrCredentialTaken) {
				t.Errorf("credential of another agent: %v", err)
			}
			if _, err := reg.Agent(ctx, "thief"); !errors.Is(err, identity.ErrNoAgent) {
				t.Errorf("a refused create left an agent behind: %v", err)
			}
			if _, err := reg.Create(ctx, &identity.Agent{ID: "Bad ID"}, by); !errors.As(err, new(*identity.ValidationError)) {
				t.Errorf("invalid id: %v", err)
			}
			for _, groups := range [][]string{{""}, {"a", "a"}, {"line\nbreak"}} {
				if _, err := reg.Create(ctx, &identity.Agent{ID: "grouped", Groups: groups}, by); !errors.As(err, new(*identity.ValidationError)) {
					t.Errorf("groups %q: %v", groups, err)
				}
			}
			if _, err := reg.Create(ctx, &identity.Agent{ID: "anon"}, identity.ChangeInfo{}); err == nil {
				t.Error("change without an actor accepted")
			}

			// Update with optimistic concurrency.
			upd := *got
			upd.Name = "Billing agent"
			got2, err := reg.Update(ctx, &upd, by)
			if err != nil || got2.Name != "Billing agent" || got2.Version <= got.Version {
				t.Fatalf("update: %+v, %v", got2, err)
			}
			if _, err := reg.Update(ctx, &upd, by); !errors.Is(err, identity.ErrVersionConflict) {
				t.Errorf("stale update: %v", err)
			}

			// Suspend: refused at once; resume; the audit failing aborts.
			if _, err := reg.SetStatus(ctx, "billing-bot", identity.StatusSuspended, identity.ChangeInfo{By: "soc", Reason: "incident 7"}); err != nil {
				t.Fatal(err)
			}
			s, _ := reg.Agent(ctx, "billing-bot")
			if identity.ErrorCode(s.Usable(time.Now())) != identity.CodeAgentDisabled {
				t.Errorf("suspended agent usable: %+v", s)
			}
			if c := log.last(); c.Action != "agent.suspend" || c.Reason != "incident 7" || c.Before.Status != identity.StatusActive {
				t.Errorf("audit = %+v", c)
			}
			log.mu.Lock()
			log.fail = errors.New("audit log unavailable")
			log.mu.Unlock()
			if _, err := reg.SetStatus(ctx, "billing-bot", identity.StatusActive, by); err == nil {
				t.Error("change applied without an audit record")
			}
			if s, _ := reg.Agent(ctx, "billing-bot"); s.Status != identity.StatusSuspended {
				t.Errorf("status after failed audit = %s", s.Status)
			}
			log.mu.Lock()
			log.fail = nil
			log.mu.Unlock()
			if r, err := reg.SetStatus(ctx, "billing-bot", identity.StatusActive, by); err != nil || r.Usable(time.Now()) != nil {
				t.Fatalf("resume: %+v, %v", r, err)
			}
			if _, err := reg.SetStatus(ctx, "ghost", identity.StatusSuspended, by); !errors.Is(err, identity.ErrNoAgent) {
				t.Errorf("suspend unknown: %v", err)
			}
			// Retire releases the credentials and is final.
			if _, err := reg.SetStatus(ctx, "billing-bot", identity.StatusRetired, by); err != nil {
				t.Fatal(err)
			}
			if _, err := reg.SetStatus(ctx, "billing-bot", identity.StatusActive, by); !errors.Is(err, identity.ErrRetired) {
				t.Errorf("resume retired: %v", err)
			}
			if _, err := reg.AgentByCredential(ctx, cred.Source, cred.Tenant, cred.Subject); !errors.Is(err, identity.ErrNoAgent) {
				t.Errorf("retired agent's credential still maps: %v", err)
			}
			if _, err := reg.Create(ctx, &identity.Agent{ID: "successor", Credentials: []identity.FederatedCredential{cred}}, by); err != nil {
				t.Errorf("reusing a retired agent's credential: %v", err)
			}
			// Seed leaves stored agents alone and honours disabled config agents.
			if err := reg.Seed(ctx, []*identity.Agent{{ID: "billing-bot", Enabled: true}, {ID: "cfg-off", Enabled: false}}, identity.ChangeInfo{By: "config"}); err != nil {
				t.Fatal(err)
			}
			list, err := reg.List(ctx)
			if err != nil || len(list) != 3 {
				t.Fatalf("list = %d, %v", len(list), err)
			}
			if b, _ := reg.Agent(ctx, "billing-bot"); b.Status != identity.StatusRetired {
				t.Errorf("seed overwrote a stored agent: %s", b.Status)
			}
			if c, _ := reg.Agent(ctx, "cfg-off"); c.Status != identity.StatusSuspended {
				t.Errorf("disabled config agent seeded as %s", c.Status)
			}
		})
	}
}

// TestAgentsSuspensionAcrossReplicas: a suspension committed through one
// replica is seen by another replica sharing the database within 1 s.
func TestAgentsSuspensionAcrossReplicas(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			log := &changeLog{}
			r1, err := store.NewAgents(ctx, db, store.AgentsConfig{Audit: log.audit})
			if err != nil {
				t.Fatal(err)
			}
			r2, err := store.NewAgents(ctx, db, store.AgentsConfig{Audit: log.audit})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { _ = r2.Watch(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			if _, err := r1.Create(ctx, &identity.Agent{ID: "bot", Servers: []string{"bank"}}, identity.ChangeInfo{By: "t"}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, time.Second, func() bool { a, err := r2.Agent(ctx, "bot"); return err == nil && a.Usable(time.Now()) == nil })
			start := time.Now()
			if _, err := r1.SetStatus(ctx, "bot", identity.StatusSuspended, identity.ChangeInfo{By: "soc"}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, time.Second, func() bool { a, err := r2.Agent(ctx, "bot"); return err == nil && a.Usable(time.Now()) != nil })
			t.Logf("suspension seen by the other replica after %v", time.Since(start))
		})
	}
}

// TestAgentsFailClosedWhenStale: a replica that cannot refresh stops
// answering.
func TestAgentsFailClosedWhenStale(t *testing.T) {
	db := testDBs(t)["sqlite"]
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	reg, err := store.NewAgents(context.Background(), db, store.AgentsConfig{Audit: (&changeLog{}).audit, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Create(context.Background(), &identity.Agent{ID: "bot"}, identity.ChangeInfo{By: "t"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(6 * time.Second)
	mu.Unlock()
	if _, err := reg.Agent(context.Background(), "bot"); err == nil || errors.Is(err, identity.ErrNoAgent) {
		t.Errorf("stale registry answered: %v", err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAgentsAdminAPI drives identity.AdminHandler over the durable store.
func TestAgentsAdminAPI(t *testing.T) {
	db := testDBs(t)["sqlite"]
	log := &changeLog{}
	reg, err := store.NewAgents(context.Background(), db, store.AgentsConfig{Audit: log.audit})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(identity.AdminHandler(reg))
	defer srv.Close()
	do := func(method, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	for _, tt := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/v1/agents", `{"id":"bot","owner":"alice","servers":["bank"],"credentials":[{"source":"k8s","subject":"system:serviceaccount:agents:bot"}],"by":"alice"}`, 201},
		{"POST", "/v1/agents", `{"id":"bot","by":"alice"}`, 409},
		{"POST", "/v1/agents", `{"id":"BAD","by":"alice"}`, 400},
		{"POST", "/v1/agents", `{"id":"x","by":"alice","surprise":1}`, 400},
		{"POST", "/v1/agents", `{"id":"nobody"}`, 400},
		{"GET", "/v1/agents/bot", ``, 200},
		{"GET", "/v1/agents/ghost", ``, 404},
		{"POST", "/v1/agents/bot/suspend", `{"by":"soc","reason":"incident"}`, 200},
		{"PUT", "/v1/agents/bot", `{"id":"bot","name":"Bot","servers":["bank"],"version":1,"by":"alice"}`, 409},
		{"PUT", "/v1/agents/other", `{"id":"bot","by":"alice"}`, 400},
		{"POST", "/v1/agents/bot/retire", `{"by":"alice"}`, 200},
		{"POST", "/v1/agents/bot/resume", `{"by":"alice"}`, 409},
	} {
		if status, body := do(tt.method, tt.path, tt.body); status != tt.status {
			t.Errorf("%s %s: %d %v, want %d", tt.method, tt.path, status, body, tt.status)
		}
	}
	_, got := do("GET", "/v1/agents/bot", "")
	if got["status"] != "retired" {
		t.Errorf("status = %v", got["status"])
	}
	if n := len(log.changes); n != 3 {
		t.Errorf("%d audited changes, want 3", n)
	}
}

func TestReplayContract(t *testing.T) {
	for name, db := range testDBs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now()
			var mu sync.Mutex
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			r, err := store.NewReplay(ctx, db, clock)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Use(ctx, "a", now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if err := r.Use(ctx, "a", now.Add(time.Minute)); !errors.Is(err, identity.ErrReplay) {
				t.Fatalf("replay: %v", err)
			}
			// Of concurrent uses of one id, exactly one succeeds.
			var wg sync.WaitGroup
			var ok atomic.Int32
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if r.Use(ctx, "race", now.Add(time.Minute)) == nil {
						ok.Add(1)
					}
				}()
			}
			wg.Wait()
			if ok.Load() != 1 {
				t.Errorf("%d concurrent uses succeeded", ok.Load())
			}
			mu.Lock()
			now = now.Add(2 * time.Minute)
			mu.Unlock()
			if err := r.Use(ctx, "a", now.Add(time.Minute)); err != nil {
				t.Errorf("reuse after expiry: %v", err)
			}
		})
	}
}

var (
	_ identity.AgentStore  = (*store.Agents)(nil)
	_ identity.ReplayCache = (*store.Replay)(nil)
)
