package pipeline_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/pipeline/flowtest"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// fakeRecorder keeps records in memory; failSync makes Record fail.
type fakeRecorder struct {
	mu       sync.Mutex
	sync     []string
	async    []string
	failSync bool
}

func (f *fakeRecorder) Record(_ context.Context, rec *pipeline.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSync {
		return errors.New("store down")
	}
	f.sync = append(f.sync, rec.Kind+":"+rec.Verdict.Outcome.String())
	return nil
}

func (f *fakeRecorder) Enqueue(rec *pipeline.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.async = append(f.async, rec.Kind+":"+rec.Verdict.Outcome.String())
}

// stage returns a fixed verdict or error and counts Finish calls.
type stage struct {
	name     string
	v        verdict.Verdict
	err      error
	finished []string
	mu       sync.Mutex
}

func (s *stage) Name() string { return s.name }
func (s *stage) Check(context.Context, *pipeline.Request) (verdict.Verdict, error) {
	return s.v, s.err
}
func (s *stage) Finish(_ context.Context, _ *pipeline.Request, o *pipeline.Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finished = append(s.finished, o.Status)
}

func caller() *pipeline.Caller {
	return &pipeline.Caller{Agent: "a", Servers: []string{"bank"}}
}

func TestAdmit(t *testing.T) {
	allow := verdict.Verdict{}
	challenge := verdict.Challenged(verdict.Execution, "policy.challenge", "", "finance")
	block := verdict.Deny(verdict.Execution, "policy.forbid", "")
	tests := []struct {
		name       string
		stages     []*stage
		req        pipeline.Request
		failSync   bool
		want       verdict.Outcome
		code       string
		sync       []string
		async      []string
		finishedBy []int // indexes of stages that must have been told "refused"
	}{
		{"allow, side effect: durable intent", []*stage{{name: "s1", v: allow}}, pipeline.Request{Server: "bank", SideEffect: true},
			false, verdict.Allow, "", []string{"intent:allow"}, nil, nil},
		{"allow, read: enqueued", []*stage{{name: "s1", v: allow}}, pipeline.Request{Server: "bank"},
			false, verdict.Allow, "", nil, []string{"intent:allow"}, nil},
		{"block wins over challenge, later stages skipped", []*stage{{name: "s1", v: challenge}, {name: "s2", v: block}, {name: "s3", v: allow}},
			pipeline.Request{Server: "bank"}, false, verdict.Block, "policy.forbid", []string{"decision:block"}, nil, []int{0}},
		{"challenge", []*stage{{name: "s1", v: allow}, {name: "s2", v: challenge}}, pipeline.Request{Server: "bank"},
			false, verdict.Challenge, "policy.challenge", []string{"decision:challenge"}, nil, []int{0, 1}},
		{"stage error blocks", []*stage{{name: "s1", v: allow}, {name: "s2", err: errors.New("boom")}}, pipeline.Request{Server: "bank"},
			false, verdict.Block, "stage.error", []string{"decision:block"}, nil, []int{0}},
		{"server not allowed", []*stage{{name: "s1", v: allow}}, pipeline.Request{Server: "other"},
			false, verdict.Block, "server.not_allowed", []string{"decision:block"}, nil, nil},
		{"intent not durable blocks", []*stage{{name: "s1", v: allow}}, pipeline.Request{Server: "bank", SideEffect: true},
			true, verdict.Block, "audit.unavailable", nil, nil, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &fakeRecorder{failSync: tt.failSync}
			var stages []pipeline.Stage
			for _, s := range tt.stages {
				stages = append(stages, s)
			}
			p, err := pipeline.New(pipeline.Config{Stages: stages, Recorder: rec})
			if err != nil {
				t.Fatal(err)
			}
			r := tt.req
			r.Caller = caller()
			v := p.Admit(context.Background(), &r)
			if v.Outcome != tt.want {
				t.Fatalf("outcome = %v, want %v (%+v)", v.Outcome, tt.want, v)
			}
			if tt.code != "" && v.First().Code != tt.code {
				t.Errorf("code = %q, want %q", v.First().Code, tt.code)
			}
			if diff := cmp.Diff(tt.sync, rec.sync); diff != "" {
				t.Errorf("durable records (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.async, rec.async); diff != "" {
				t.Errorf("enqueued records (-want +got):\n%s", diff)
			}
			for _, i := range tt.finishedBy {
				if len(tt.stages[i].finished) != 1 || tt.stages[i].finished[0] != "refused" {
					t.Errorf("stage %s finished with %v, want [refused]", tt.stages[i].name, tt.stages[i].finished)
				}
			}
		})
	}
}

func TestCompleteFinishesAndRaisesLabels(t *testing.T) {
	rec := &fakeRecorder{}
	s := &stage{name: "limits"}
	p, _ := pipeline.New(pipeline.Config{Stages: []pipeline.Stage{s}, Recorder: rec})
	r := &pipeline.Request{Caller: caller(), Server: "bank", Labels: []verdict.Label{verdict.ReadsPrivate, verdict.UntrustedContent, verdict.Financial}}
	if v := p.Admit(context.Background(), r); v.Outcome != verdict.Allow {
		t.Fatal(v)
	}
	o := &pipeline.Outcome{Status: "ok"}
	p.Complete(context.Background(), r, o)
	if diff := cmp.Diff([]string{"ok"}, s.finished); diff != "" {
		t.Errorf("finish (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]verdict.Label{verdict.SessionPrivateData, verdict.SessionUntrustedContent}, o.Raise); diff != "" {
		t.Errorf("raised labels (-want +got):\n%s", diff)
	}
	// A second Complete does not finish twice.
	p.Complete(context.Background(), r, &pipeline.Outcome{Status: "ok"})
	if len(s.finished) != 1 {
		t.Errorf("finished %d times", len(s.finished))
	}
	// List-time visibility does not leave holds behind.
	lr := &pipeline.Request{Caller: caller(), Server: "bank"}
	if !p.Visible(context.Background(), lr) || len(s.finished) != 2 || s.finished[1] != "listed" {
		t.Errorf("visible: finished %v", s.finished)
	}
}

func TestUnauthenticatedIsBlocked(t *testing.T) {
	p, _ := pipeline.New(pipeline.Config{Recorder: &fakeRecorder{}})
	if v := p.Admit(context.Background(), &pipeline.Request{Server: "bank"}); v.Outcome != verdict.Block {
		t.Errorf("no caller: %v", v)
	}
}

func TestFlowKey(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	exp := now.Add(5 * time.Minute)
	tests := []struct {
		name    string
		caller  *pipeline.Caller
		session string
		key     string
		until   time.Time
	}{
		{"task", &pipeline.Caller{Agent: "a", Task: "t1", TokenID: "j1", TokenExpiry: exp}, "s", "task:t1", now.Add(24 * time.Hour)},
		{"token in a session", &pipeline.Caller{Agent: "a", TokenID: "j1", TokenExpiry: exp}, "s", "token:a:j1", exp.Add(time.Minute)},
		{"stateless token", &pipeline.Caller{Agent: "a", TokenID: "j1", TokenExpiry: exp}, "", "token:a:j1", exp.Add(time.Minute)},
		{"token without expiry", &pipeline.Caller{Agent: "a", TokenID: "j1"}, "", "token:a:j1", now.Add(24 * time.Hour)},
		{"stateless credential without id", &pipeline.Caller{Agent: "a", Method: "spiffe-x509", Source: "spire:spiffe://td/w"}, "",
			"principal:a:spiffe-x509:spire:spiffe://td/w", now.Add(24 * time.Hour)},
		{"session credential without id", &pipeline.Caller{Agent: "a", Method: "spiffe-x509"}, "s", "", time.Time{}},
		{"no caller", nil, "", "", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, until := pipeline.FlowKey(&pipeline.Request{Caller: tt.caller, Session: tt.session}, now, pipeline.DefaultFlowTTL)
			if key != tt.key || !until.Equal(tt.until) {
				t.Errorf("FlowKey = %q, %v; want %q, %v", key, until, tt.key, tt.until)
			}
		})
	}
}

// labelSeen records the session labels the policy stage would see.
type labelSeen struct {
	stage
	seen []verdict.Label
}

func (s *labelSeen) Check(_ context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	s.seen = slices.Clone(r.SessionLabels)
	return verdict.Verdict{}, nil
}

// TestFlowLabelsOutliveTheSession: labels an output raises are kept for the
// task, a later request of the task (another session, or none) sees them
// joined with its own session's, and a store failure refuses the request
// or withholds the output.
func TestFlowLabelsOutliveTheSession(t *testing.T) {
	ctx := context.Background()
	flow := &flowtest.Memory{}
	seen := &labelSeen{stage: stage{name: "policy"}}
	p, err := pipeline.New(pipeline.Config{Stages: []pipeline.Stage{seen}, Recorder: &fakeRecorder{}, Flow: flow})
	if err != nil {
		t.Fatal(err)
	}
	task := func(id, session string, labels ...verdict.Label) *pipeline.Request {
		c := caller()
		c.Task = id
		return &pipeline.Request{Caller: c, Server: "bank", Session: session, Labels: labels}
	}

	// Reading the inbox in session s1 raises both labels for task t1.
	read := task("t1", "s1", verdict.ReadsPrivate, verdict.UntrustedContent)
	if v := p.Admit(ctx, read); v.Outcome != verdict.Allow {
		t.Fatal(v)
	}
	o := &pipeline.Outcome{Status: "ok", Result: []byte(`{}`)}
	if v := p.Screen(ctx, read, o); v.Outcome != verdict.Allow {
		t.Fatal(v)
	}
	p.Complete(ctx, read, o)

	// A stateless request of the same task sees them...
	if v := p.Admit(ctx, task("t1", "")); v.Outcome != verdict.Allow {
		t.Fatal(v)
	}
	if diff := cmp.Diff([]verdict.Label{verdict.SessionPrivateData, verdict.SessionUntrustedContent}, seen.seen); diff != "" {
		t.Errorf("same task, no session (-want +got):\n%s", diff)
	}
	// ...joined with the session's own labels, without duplicates.
	r := task("t1", "s2")
	r.SessionLabels = []verdict.Label{verdict.SessionUntrustedContent, "custom"}
	p.Admit(ctx, r)
	if diff := cmp.Diff([]verdict.Label{verdict.SessionUntrustedContent, "custom", verdict.SessionPrivateData}, seen.seen); diff != "" {
		t.Errorf("same task, another session (-want +got):\n%s", diff)
	}
	// Another task is clean.
	p.Admit(ctx, task("t2", ""))
	if len(seen.seen) != 0 {
		t.Errorf("another task sees %v", seen.seen)
	}
	// A withheld output raises the screener's labels, not the tool's.
	wr := task("t3", "", verdict.ReadsPrivate)
	p2, _ := pipeline.New(pipeline.Config{Recorder: &fakeRecorder{}, Flow: flow,
		Screener: screenFunc(func(o *pipeline.Outcome) verdict.Verdict {
			o.Raise = append(o.Raise, verdict.SessionUntrustedContent)
			return verdict.Deny(verdict.Semantic, "semantic.injection", "")
		})})
	p2.Admit(ctx, wr)
	p2.Screen(ctx, wr, &pipeline.Outcome{Status: "ok", Result: []byte(`{}`)})
	if got, _ := flow.Labels(ctx, "task:t3"); !cmp.Equal(got, []verdict.Label{verdict.SessionUntrustedContent}) {
		t.Errorf("withheld output raised %v", got)
	}

	// Fail closed.
	flow.SetError(errors.New("store down"))
	if v := p.Admit(ctx, task("t1", "")); v.Outcome != verdict.Block || v.First().Code != "flow.unavailable" {
		t.Errorf("unreadable labels: %+v", v)
	}
	if p.Visible(ctx, task("t1", "")) {
		t.Errorf("unreadable labels: the item is listed")
	}
	o = &pipeline.Outcome{Status: "ok", Result: []byte(`{}`)}
	if v := p.Screen(ctx, task("t4", "", verdict.ReadsPrivate), o); v.Outcome != verdict.Block || v.First().Code != "flow.unavailable" {
		t.Errorf("unrecordable labels: %+v", v)
	}
	if o.Verdict.Outcome != verdict.Block {
		t.Errorf("the outcome does not record the withholding: %+v", o.Verdict)
	}
	// Outputs that raise nothing, and requests without a server, do not
	// touch the store.
	if v := p.Screen(ctx, task("t4", ""), &pipeline.Outcome{Status: "ok", Result: []byte(`{}`)}); v.Outcome != verdict.Allow {
		t.Errorf("nothing to raise: %+v", v)
	}
	init := task("t1", "")
	init.Server = ""
	if v := p.Admit(ctx, init); v.Outcome != verdict.Allow {
		t.Errorf("request without a server: %+v", v)
	}
}

type screenFunc func(o *pipeline.Outcome) verdict.Verdict

func (f screenFunc) ScreenOutput(_ context.Context, _ *pipeline.Request, o *pipeline.Outcome) (verdict.Verdict, error) {
	return f(o), nil
}

// failingScreener fails every screening.
type failingScreener struct{}

func (failingScreener) ScreenOutput(context.Context, *pipeline.Request, *pipeline.Outcome) (verdict.Verdict, error) {
	return verdict.Verdict{}, errors.New("classifier down")
}

// TestFailedNamesTheControl: each time a control cannot decide, the
// request (or its output) is refused and Config.Failed is told which
// control failed.
func TestFailedNamesTheControl(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("registry down")
	task := func() *pipeline.Request {
		c := caller()
		c.Task = "t1"
		return &pipeline.Request{Caller: c, Server: "bank", Labels: []verdict.Label{verdict.ReadsPrivate}}
	}
	tests := []struct {
		name   string
		stages []pipeline.Stage
		flow   func(*flowtest.Memory)
		screen pipeline.Screener
		// run returns whether the request or its output was refused.
		run  func(p *pipeline.Pipeline) bool
		want []string
	}{
		{"stage error at call time", []pipeline.Stage{&stage{name: "locks"}, &stage{name: "policy", err: boom}}, nil, nil,
			func(p *pipeline.Pipeline) bool { return p.Admit(ctx, task()).Outcome == verdict.Block }, []string{"policy"}},
		{"stage error at list time hides the item", []pipeline.Stage{&stage{name: "policy", err: boom}}, nil, nil,
			func(p *pipeline.Pipeline) bool { return !p.Visible(ctx, task()) }, []string{"policy"}},
		{"flow labels unreadable", []pipeline.Stage{&stage{name: "policy"}}, func(f *flowtest.Memory) { f.SetError(boom) }, nil,
			func(p *pipeline.Pipeline) bool { return p.Admit(ctx, task()).Outcome == verdict.Block }, []string{"flow"}},
		{"screener fails", nil, nil, failingScreener{},
			func(p *pipeline.Pipeline) bool {
				return p.Screen(ctx, task(), &pipeline.Outcome{Status: "ok", Result: []byte(`{}`)}).Outcome == verdict.Block
			}, []string{"screen"}},
		{"flow labels not recorded", nil, func(f *flowtest.Memory) { f.SetError(boom) }, nil,
			func(p *pipeline.Pipeline) bool {
				return p.Screen(ctx, task(), &pipeline.Outcome{Status: "ok", Result: []byte(`{}`)}).Outcome == verdict.Block
			}, []string{"flow"}},
		{"a cancelled request is no failure", []pipeline.Stage{&stage{name: "policy", err: context.Canceled}}, nil, nil,
			func(p *pipeline.Pipeline) bool {
				cctx, cancel := context.WithCancel(ctx)
				cancel()
				return p.Admit(cctx, task()).Outcome == verdict.Block
			}, nil},
		{"no failure, no report", []pipeline.Stage{&stage{name: "policy"}}, nil, nil,
			func(p *pipeline.Pipeline) bool { return p.Admit(ctx, task()).Outcome == verdict.Block }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flow := &flowtest.Memory{}
			var failed []string
			p, err := pipeline.New(pipeline.Config{Stages: tt.stages, Recorder: &fakeRecorder{}, Flow: flow, Screener: tt.screen,
				Failed: func(control string) { failed = append(failed, control) }})
			if err != nil {
				t.Fatal(err)
			}
			if tt.flow != nil {
				tt.flow(flow)
			}
			if refused := tt.run(p); refused != (tt.name != "no failure, no report") {
				t.Errorf("refused = %v", refused)
			}
			if diff := cmp.Diff(tt.want, failed); diff != "" {
				t.Errorf("failed controls (-want +got):\n%s", diff)
			}
		})
	}
}
