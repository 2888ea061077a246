package policy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

const permitBank = `@id("bank") permit (principal, action, resource in Gatehouse::Server::"bank");`

func TestEngineNoSetBlocks(t *testing.T) {
	e := policy.NewEngine(policy.Config{})
	d := e.Decide(call("send_money", `{"amount": 1, "to": "x"}`))
	if d.Outcome != verdict.Block || d.Code() != policy.CodeUnavailable || len(d.Diagnostics) == 0 {
		t.Errorf("Decide without a set = %+v", d)
	}
}

func TestEngineReload(t *testing.T) {
	dir := writeDir(t, map[string]string{"a.cedar": permitBank})
	e := policy.NewEngine(policy.Config{Schema: testSchema(t)})
	if err := e.Reload(dir); err != nil {
		t.Fatal(err)
	}
	good := e.Current().Version()
	req := call("send_money", `{"amount": 1, "to": "x"}`)
	if d := e.Decide(req); d.Outcome != verdict.Allow || d.Version != good {
		t.Fatalf("Decide = %+v", d)
	}

	// A broken file: the reload fails, names file and line, and the good
	// set stays in force.
	bad := filepath.Join(dir, "b.cedar")
	if err := os.WriteFile(bad, []byte("forbid (principal, action, resource)\nwhen { context.nope };\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := e.Reload(dir)
	var le *policy.LoadError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), bad+":1:") {
		t.Fatalf("Reload error = %v, want a LoadError naming %s:1", err, bad)
	}
	if v := e.Current().Version(); v != good {
		t.Errorf("after a failed reload version = %s, want %s", v, good)
	}
	if d := e.Decide(req); d.Outcome != verdict.Allow {
		t.Errorf("after a failed reload Decide = %s, want allow", d.Outcome)
	}

	// A missing directory fails the same way.
	if err := e.Reload(filepath.Join(dir, "missing")); err == nil || e.Current().Version() != good {
		t.Errorf("Reload of a missing dir: err %v, version %s", err, e.Current().Version())
	}

	// A fixed file loads and takes effect.
	if err := os.WriteFile(bad, []byte(`@id("no-bank") forbid (principal, action, resource in Gatehouse::Server::"bank");`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(dir); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(req); d.Outcome != verdict.Block || d.Code() != policy.CodeForbid || d.Version == good {
		t.Errorf("after reload Decide = %+v", d)
	}
}

func TestEngineWatchReload(t *testing.T) {
	dir := writeDir(t, map[string]string{"a.cedar": permitBank})
	e := policy.NewEngine(policy.Config{Schema: testSchema(t)})
	if err := e.Reload(dir); err != nil {
		t.Fatal(err)
	}
	good := e.Current().Version()
	ctx, cancel := context.WithCancel(t.Context())
	hup := make(chan os.Signal)
	results := make(chan error)
	done := make(chan error)
	go func() { done <- e.WatchReload(ctx, dir, hup, func(err error) { results <- err }) }()

	if err := os.WriteFile(filepath.Join(dir, "a.cedar"), []byte("permit ("), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	if err := <-results; err == nil || e.Current().Version() != good {
		t.Errorf("bad reload: err %v, version %s (want %s kept)", err, e.Current().Version(), good)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.cedar"), []byte(permitBank+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	if err := <-results; err != nil || e.Current().Version() == good {
		t.Errorf("good reload: err %v, version %s", err, e.Current().Version())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchReload returned %v", err)
	}
}

func TestEngineSetSchema(t *testing.T) {
	e := policy.NewEngine(policy.Config{}) // no tools known yet
	src := `@id("cap") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments.amount.greaterThan(decimal("10.0")) };` + permitBank
	if err := e.Install([]policy.File{{Name: "a.cedar", Data: []byte(src)}}); err != nil {
		t.Fatal(err)
	}
	if len(e.Current().Warnings()) != 1 {
		t.Errorf("Warnings = %q, want one", e.Current().Warnings())
	}
	if err := e.SetSchema(testSchema(t)); err != nil {
		t.Fatal(err)
	}
	if w := e.Current().Warnings(); len(w) != 0 {
		t.Errorf("after SetSchema Warnings = %q", w)
	}
	// The schema now types amount as decimal: integer JSON still compares.
	if d := e.Decide(call("send_money", `{"amount": 11, "to": "x"}`)); d.Code() != policy.CodeForbid {
		t.Errorf("Decide = %+v", d)
	}

	// A schema under which the set fails is refused and changes nothing.
	s, err := policy.SchemaFor([]policy.ToolSchema{{Server: "bank", Name: "send_money", InputSchema: []byte(`{"type":"object","properties":{"amount":{"type":"string"}},"required":["amount"]}`)}}, policy.SchemaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := e.Current()
	if err := e.SetSchema(s); err == nil {
		t.Fatal("SetSchema accepted a schema the set does not validate against")
	}
	if e.Current() != before {
		t.Error("a failed SetSchema replaced the set")
	}
}

func TestEngineShadow(t *testing.T) {
	type diff struct{ enforced, shadow verdict.Outcome }
	var (
		mu    sync.Mutex
		diffs []diff
	)
	e := policy.NewEngine(policy.Config{Schema: testSchema(t), OnShadow: func(_ policy.Request, a, b policy.Decision) {
		mu.Lock()
		defer mu.Unlock()
		diffs = append(diffs, diff{a.Outcome, b.Outcome})
	}})
	if err := e.Install([]policy.File{{Name: "a.cedar", Data: []byte(permitBank)}}); err != nil {
		t.Fatal(err)
	}
	candidate := permitBank + `
@id("cap") @challenge("finance") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money")
when { context.arguments.amount.greaterThan(decimal("100.0")) };`
	if err := e.SetShadow([]policy.File{{Name: "a.cedar", Data: []byte(candidate)}}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetShadow([]policy.File{{Name: "a.cedar", Data: []byte("permit (")}}); err == nil {
		t.Error("SetShadow accepted a broken set")
	}

	small := e.Decide(call("send_money", `{"amount": 5, "to": "x"}`))
	big := e.Decide(call("send_money", `{"amount": 500, "to": "x"}`))
	if small.Outcome != verdict.Allow || big.Outcome != verdict.Allow {
		t.Fatalf("enforced outcomes %s, %s; the shadow set must not change them", small.Outcome, big.Outcome)
	}
	if small.Shadow == nil || small.Shadow.Outcome != verdict.Allow || big.Shadow == nil || big.Shadow.Outcome != verdict.Challenge {
		t.Fatalf("shadow decisions %+v, %+v", small.Shadow, big.Shadow)
	}
	if big.Shadow.Version == big.Version {
		t.Error("shadow decision carries the enforced version")
	}
	if len(diffs) != 1 || diffs[0] != (diff{verdict.Allow, verdict.Challenge}) {
		t.Errorf("OnShadow calls %v, want one allow→challenge", diffs)
	}

	if err := e.SetShadow(nil); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(call("send_money", `{"amount": 500, "to": "x"}`)); d.Shadow != nil || len(diffs) != 1 {
		t.Errorf("after removing the shadow set: shadow %+v, %d diffs", d.Shadow, len(diffs))
	}
}

// Decide during reloads always sees one whole set (run with -race).
func TestEngineConcurrentReload(t *testing.T) {
	e := policy.NewEngine(policy.Config{Schema: testSchema(t)})
	allow := []policy.File{{Name: "a.cedar", Data: []byte(permitBank)}}
	deny := []policy.File{{Name: "a.cedar", Data: []byte(permitBank + `@id("f") forbid (principal, action, resource);`)}}
	if err := e.Install(allow); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 50 {
			files := allow
			if i%2 == 0 {
				files = deny
			}
			if err := e.Install(files); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	req := call("send_money", `{"amount": 1, "to": "x"}`)
	for range 500 {
		d := e.Decide(req)
		switch {
		case d.Outcome == verdict.Allow && len(d.Policies) == 1 && d.Policies[0] == "bank":
		case d.Outcome == verdict.Block && len(d.Policies) == 1 && d.Policies[0] == "f":
		default:
			t.Fatalf("decision from no whole set: %+v", d)
		}
	}
	wg.Wait()
}

// Replay decides recorded requests under a candidate set and reports the
// ones that would change.
func TestReplay(t *testing.T) {
	schema := testSchema(t)
	enforced := load(t, schema, permitBank)
	candidate := load(t, schema, permitBank+`@id("cap") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money") when { context.arguments.amount.greaterThan(decimal("100.0")) };`)
	var reqs []policy.Request
	var decs []policy.Decision
	for _, args := range []string{`{"amount": 5, "to": "x"}`, `{"amount": 500, "to": "x"}`, `{"amount": 50, "to": "y"}`} {
		r := call("send_money", args)
		reqs = append(reqs, r)
		decs = append(decs, enforced.Decide(r))
	}
	changes := policy.Replay(candidate, func(yield func(policy.Request, policy.Decision) bool) {
		for i := range reqs {
			if !yield(reqs[i], decs[i]) {
				return
			}
		}
	})
	if len(changes) != 1 {
		t.Fatalf("%d changes, want 1: %+v", len(changes), changes)
	}
	c := changes[0]
	if string(c.Request.Arguments) != `{"amount": 500, "to": "x"}` || c.Recorded.Outcome != verdict.Allow ||
		c.Candidate.Outcome != verdict.Block || c.Candidate.Policies[0] != "cap" || c.Candidate.Version != candidate.Version() {
		t.Errorf("change = %+v", c)
	}
	if again := policy.Replay(enforced, func(yield func(policy.Request, policy.Decision) bool) {
		for i := range reqs {
			if !yield(reqs[i], decs[i]) {
				return
			}
		}
	}); len(again) != 0 {
		t.Errorf("replay under the recording set changed %d decisions", len(again))
	}
}
