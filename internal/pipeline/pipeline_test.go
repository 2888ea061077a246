package pipeline_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/pipeline"
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
