package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// The index must decide exactly as evaluating every policy does.
func TestIndexMatchesPlainCedar(t *testing.T) {
	schema, err := SchemaFor([]ToolSchema{
		{Server: "bank", Name: "pay", InputSchema: json.RawMessage(`{"type":"object","properties":{"amount":{"type":"integer"}},"required":["amount"]}`)},
		{Server: "bank", Name: "balance"},
		{Server: "mail", Name: "send", Labels: []verdict.Label{verdict.ExternalSink}},
	}, SchemaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := `
@id("a1") permit (principal == Gatehouse::Agent::"a1", action, resource);
@id("g1") permit (principal in Gatehouse::Group::"g1", action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource in Gatehouse::Server::"bank");
@id("self") permit (principal in Gatehouse::Agent::"a2", action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"mail__send");
@id("is") permit (principal is Gatehouse::Agent in Gatehouse::Group::"g2", action, resource is Gatehouse::Tool in Gatehouse::Server::"mail");
@id("srv") permit (principal, action in [Gatehouse::Action::"sample", Gatehouse::Action::"elicit"], resource == Gatehouse::Server::"bank");
@id("srv-in") permit (principal, action == Gatehouse::Action::"elicit", resource in Gatehouse::Server::"mail");
@id("prompt") permit (principal in Gatehouse::Group::"g3", action, resource is Gatehouse::Prompt);
@id("res") permit (principal, action == Gatehouse::Action::"read_resource", resource in Gatehouse::Server::"bank") when { principal.owner != "" };
@id("big") @challenge("fin") forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__pay") when { context.arguments.amount > 100 };
@id("sink") @challenge("sec") forbid (principal, action, resource is Gatehouse::Tool) when { resource.labels.contains("external_sink") && context.session_labels.contains("private_data") };
@id("g4") forbid (principal in Gatehouse::Group::"g4", action, resource);
@id("res-is") forbid (principal, action == Gatehouse::Action::"list_resources", resource is Gatehouse::Resource in Gatehouse::Server::"mail");
@id("src") forbid (principal == Gatehouse::Agent::"a4", action, resource in Gatehouse::Server::"bank") when { context has source && !(context.source has tenant && context.source.tenant == "t1") };
@id("err") forbid (principal == Gatehouse::Agent::"a3", action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__pay") when { context.arguments.amount * 9223372036854775807 > 1 };
`
	indexed, err := LoadFiles([]File{{Name: "x.cedar", Data: []byte(src)}}, schema)
	if err != nil {
		t.Fatal(err)
	}
	plain := *indexed
	plain.noIndex = true

	rnd := rand.New(rand.NewPCG(1, 2))
	pick := func(xs []string) string { return xs[rnd.IntN(len(xs))] }
	agents := []string{"a1", "a2", "a3", "a4"}
	groups := []string{"g1", "g2", "g3", "g4", "a1"}
	servers := []string{"bank", "mail", "other", ""}
	names := []string{"pay", "balance", "send", "x"}
	codes := map[string]int{}
	for i := range 5000 {
		var gs []string
		for range rnd.IntN(3) {
			gs = append(gs, pick(groups))
		}
		req := Request{
			Action:    Actions[rnd.IntN(len(Actions))],
			Agent:     Agent{ID: pick(agents), Owner: pick([]string{"", "o"}), Groups: gs},
			Server:    pick(servers),
			Tool:      pick(names),
			Resource:  pick([]string{"", "bank://x", "mail://y"}),
			Prompt:    pick([]string{"", "p"}),
			Arguments: json.RawMessage(fmt.Sprintf(`{"amount": %d}`, rnd.IntN(200))),
			Now:       time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		}
		switch rnd.IntN(3) {
		case 0:
			req.Source = &Source{TrustSource: "corp", Kind: "entra", Tenant: pick([]string{"t1", "t2"}), Subject: "oid"}
		case 1:
			req.Source = &Source{TrustSource: "k8s", Kind: "kubernetes", Subject: "system:serviceaccount:ns:sa"}
		}
		if rnd.IntN(2) == 0 {
			req.SessionLabels = []verdict.Label{verdict.SessionPrivateData}
		}
		a, b := indexed.Decide(req), plain.Decide(req)
		codes[a.Code()]++
		a.Diagnostics, b.Diagnostics = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("request %d %+v:\nindexed %+v\nplain   %+v", i, req, a, b)
		}
	}
	for _, c := range []string{CodePermit, CodeForbid, CodeChallenge, CodeNoPermit, CodeError} {
		if codes[c] < 10 {
			t.Errorf("only %d decisions with code %s; the comparison needs variety: %v", codes[c], c, codes)
		}
	}
}

// A policy that does not read context.source does not have it built.
func TestNeedsSource(t *testing.T) {
	for _, tt := range []struct {
		src  string
		want bool
	}{
		{`forbid (principal, action, resource) when { context has source && context.source.kind == "aws" };`, true},
		{`forbid (principal, action, resource) when { context has source };`, true},
		{`forbid (principal, action, resource) when { context has task && context.task.purpose == "x" };`, false},
		{`forbid (principal, action, resource) when { context.now > datetime("2026-01-01") };`, false},
	} {
		var p cedar.Policy
		if err := p.UnmarshalCedar([]byte(tt.src)); err != nil {
			t.Fatal(err)
		}
		n := needsOf((*xast.Policy)(p.AST()))
		if got := n&(needAll|needSource) != 0; got != tt.want {
			t.Errorf("%s: needs source = %v, want %v (needs %b)", tt.src, got, tt.want, n)
		}
	}
}
