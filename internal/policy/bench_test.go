package policy_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// benchSet builds a realistic set of exactly 100 policies over 20 servers
// with 5 tools each: per-agent permits, label guardrails, argument
// challenges and forbids, the default library's shape.
func benchSet(b *testing.B) (*policy.Set, *policy.Schema) {
	var tools []policy.ToolSchema
	for s := range 20 {
		for t := range 5 {
			tools = append(tools, policy.ToolSchema{
				Server: fmt.Sprintf("srv%d", s), Name: fmt.Sprintf("tool%d", t),
				InputSchema: json.RawMessage(`{"type":"object","properties":{"amount":{"type":"number"},"to":{"type":"string"},"path":{"type":"string"}},"required":["amount","to"]}`),
			})
		}
	}
	schema, err := policy.SchemaFor(tools, policy.SchemaOptions{Totals: []string{"spend_today"}})
	if err != nil {
		b.Fatal(err)
	}
	var src strings.Builder
	n := 0
	add := func(format string, args ...any) {
		fmt.Fprintf(&src, "@id(\"p%d\")\n", n)
		fmt.Fprintf(&src, format+"\n", args...)
		n++
	}
	for i := range 50 { // per-agent permits
		add(`permit (principal == Gatehouse::Agent::"agent%d", action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource in Gatehouse::Server::"srv%d");`, i, i%20)
	}
	for i := range 10 { // group permits
		add(`permit (principal in Gatehouse::Group::"team%d", action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource in Gatehouse::Server::"srv%d");`, i, i)
	}
	for i := range 15 { // argument forbids
		add(`forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"srv%d__tool%d") when { context.arguments.to like "*@blocked%d.example" };`, i, i%5, i)
	}
	for i := range 10 { // argument challenges
		add(`@challenge("finance") forbid (principal, action == Gatehouse::Action::"call_tool", resource in Gatehouse::Server::"srv%d") when { context.arguments.amount.greaterThan(decimal("%d000.0")) };`, i, i+1)
	}
	for i := range 5 { // path scoping
		add(`forbid (principal, action == Gatehouse::Action::"call_tool", resource in Gatehouse::Server::"srv%d") when { context.paths has path && !(context.paths.path like "/srv/data%d/*") };`, i, i)
	}
	labels := []string{"destructive", "privilege", "policy_change", "bulk_export"}
	for _, l := range labels { // high-risk classes
		add(`@challenge("admins") forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { resource.labels.contains(%q) };`, l)
	}
	add(`@challenge("security") forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { resource.labels.contains("external_sink") && context.session_labels.containsAll(["private_data", "untrusted_content"]) };`)
	add(`forbid (principal, action, resource) when { principal.owner == "" };`)
	add(`forbid (principal, action, resource) when { context has task && ((context.task has not_before && context.now < context.task.not_before) || (context.task has not_after && context.now >= context.task.not_after)) };`)
	add(`forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { context.findings.kinds.contains("prompt_injection") };`)
	add(`@challenge("finance") forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { context.totals.spend_today.greaterThan(decimal("10000.0")) };`)
	for n < 100 {
		add(`permit (principal, action == Gatehouse::Action::"sample", resource == Gatehouse::Server::"srv%d");`, n%20)
	}
	set, err := policy.LoadFiles([]policy.File{{Name: "bench.cedar", Data: []byte(src.String())}}, schema)
	if err != nil {
		b.Fatal(err)
	}
	if got := len(set.Policies()); got != 100 {
		b.Fatalf("%d policies, want 100", got)
	}
	return set, schema
}

func benchRequest(action policy.Action) policy.Request {
	return policy.Request{
		Action:        action,
		Agent:         policy.Agent{ID: "agent3", Owner: "alice", Hosting: "k8s", Groups: []string{"team3", "everyone"}},
		User:          &policy.User{ID: "carol", Groups: []string{"staff"}},
		Task:          &policy.Task{ID: "t1", Purpose: "billing", NotAfter: now.Add(time.Hour)},
		Server:        "srv3",
		Tool:          "tool1",
		Labels:        []verdict.Label{verdict.ExternalSink},
		Arguments:     json.RawMessage(`{"amount": 250.5, "to": "ops@example.com", "path": "/srv/data3/reports/q1.csv"}`),
		SessionLabels: []verdict.Label{verdict.SessionPrivateData},
		Findings:      &policy.Findings{Scores: map[string]float64{"injection": 0.1}},
		Totals:        map[string]float64{"spend_today": 1200},
		Now:           now,
	}
}

// BenchmarkDecide measures one decision at 100 policies and reports the
// median and 99th percentile latency of individual decisions.
func BenchmarkDecide(b *testing.B) {
	set, schema := benchSet(b)
	for _, bc := range []struct {
		name   string
		action policy.Action
		decide func(policy.Request) policy.Decision
	}{
		{"call", policy.CallTool, set.Decide},
		{"list", policy.ListTools, set.Decide},
		{"call-with-shadow", policy.CallTool, func() func(policy.Request) policy.Decision {
			e := policy.NewEngine(policy.Config{Schema: schema})
			if err := e.Install(set.Files()); err != nil {
				b.Fatal(err)
			}
			if err := e.SetShadow(set.Files()); err != nil {
				b.Fatal(err)
			}
			return e.Decide
		}()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := benchRequest(bc.action)
			if d := bc.decide(req); d.Outcome != verdict.Allow {
				b.Fatalf("benchmark request decided %s %s %v", d.Outcome, d.Code(), d.Diagnostics)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				bc.decide(req)
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// BenchmarkLoad measures loading and validating the 100-policy set
// against 100 tools (what a reload costs).
func BenchmarkLoad(b *testing.B) {
	set, schema := benchSet(b)
	files := set.Files()
	for b.Loop() {
		if _, err := policy.LoadFiles(files, schema); err != nil {
			b.Fatal(err)
		}
	}
}
