package policy_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

const decidePolicies = `
@id("finance-bank")
permit (principal in Gatehouse::Group::"finance", action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource in Gatehouse::Server::"bank");

@id("finance-mail")
permit (principal in Gatehouse::Group::"finance", action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource == Gatehouse::Tool::"mail__send");

@id("big-payment")
@challenge("finance-approvers")
@risk("financial")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money")
when { context.arguments.amount.greaterThan(decimal("1000.0")) };

@id("sanctioned")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money")
when { context.arguments.to == "sanctioned-co" };

@id("mail-sink")
@challenge("security")
forbid (principal, action == Gatehouse::Action::"call_tool", resource)
when { resource.labels.contains("external_sink") && context.session_labels.contains("private_data") };

@id("injection")
forbid (principal, action == Gatehouse::Action::"call_tool", resource)
when { context.findings.kinds.contains("prompt_injection") || context.findings.max_score.greaterThan(decimal("0.9")) };

@id("spend")
@challenge("finance-approvers")
forbid (principal, action == Gatehouse::Action::"call_tool", resource in Gatehouse::Server::"bank")
when { context.totals.spend_today.greaterThanOrEqual(decimal("5000.0")) };

@id("user-accounts")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money")
when { context has user && context.arguments has memo && !(context.user.hasTag("accounts") && context.user.getTag("accounts").contains(context.arguments.memo)) };

@id("unknown-tool-args")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"crm__export")
when { context.arguments.rows > 100 };

@id("crm-out")
forbid (principal, action == Gatehouse::Action::"call_tool", resource in Gatehouse::Server::"crm")
when { context.paths has output_file && context.paths.output_file like "/etc/*" };

@id("crm")
permit (principal, action == Gatehouse::Action::"call_tool", resource in Gatehouse::Server::"crm");

@id("files")
permit (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"fs__read_file")
when { context.paths.path like "/srv/*" };

@id("sampling")
permit (principal, action == Gatehouse::Action::"sample", resource == Gatehouse::Server::"bank")
when { context.now.toTime() < duration("18h") };

@id("prompts")
permit (principal, action in [Gatehouse::Action::"list_prompts", Gatehouse::Action::"get_prompt", Gatehouse::Action::"complete"], resource in Gatehouse::Server::"bank");
`

func TestDecide(t *testing.T) {
	set := load(t, testSchema(t), decidePolicies)
	tests := []struct {
		name     string
		req      func() policy.Request
		outcome  verdict.Outcome
		code     string
		policies []string
		group    string
	}{
		{"permitted call", func() policy.Request { return call("send_money", `{"amount": 10, "to": "acme"}`) },
			verdict.Allow, policy.CodePermit, []string{"finance-bank"}, ""},
		{"list time sees no arguments and needs none", func() policy.Request {
			r := call("send_money", `{"amount": 1e9, "to": "sanctioned-co"}`)
			r.Action = policy.ListTools
			return r
		}, verdict.Allow, policy.CodePermit, []string{"finance-bank"}, ""},
		{"forbid", func() policy.Request { return call("send_money", `{"amount": 10, "to": "sanctioned-co"}`) },
			verdict.Block, policy.CodeForbid, []string{"sanctioned"}, ""},
		{"forbid beats challenge", func() policy.Request { return call("send_money", `{"amount": 5000, "to": "sanctioned-co"}`) },
			verdict.Block, policy.CodeForbid, []string{"sanctioned"}, ""},
		{"challenge above threshold", func() policy.Request { return call("send_money", `{"amount": 1000.0001, "to": "acme"}`) },
			verdict.Challenge, policy.CodeChallenge, []string{"big-payment"}, "finance-approvers"},
		{"integer JSON for a number argument", func() policy.Request { return call("send_money", `{"amount": 1001, "to": "acme"}`) },
			verdict.Challenge, policy.CodeChallenge, []string{"big-payment"}, "finance-approvers"},
		{"exactly the threshold", func() policy.Request { return call("send_money", `{"amount": 1000, "to": "acme"}`) },
			verdict.Allow, policy.CodePermit, []string{"finance-bank"}, ""},
		{"two challenges", func() policy.Request {
			r := call("send_money", `{"amount": 2000, "to": "acme"}`)
			r.Totals = map[string]float64{"spend_today": 5000}
			return r
		}, verdict.Challenge, policy.CodeChallenge, []string{"big-payment", "spend"}, "finance-approvers"},
		{"no permit", func() policy.Request {
			r := call("send_money", `{"amount": 10, "to": "acme"}`)
			r.Agent.Groups = nil
			return r
		}, verdict.Block, policy.CodeNoPermit, nil, ""},
		{"new server is denied", func() policy.Request { return call("newsrv__do", `{}`) },
			verdict.Block, policy.CodeNoPermit, nil, ""},
		{"label from the schema", func() policy.Request {
			r := call("mail__send", `{"to": "x@example.com"}`)
			r.SessionLabels = []verdict.Label{verdict.SessionPrivateData}
			return r
		}, verdict.Challenge, policy.CodeChallenge, []string{"mail-sink"}, "security"},
		{"label from the request", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme"}`)
			r.Labels = []verdict.Label{verdict.ExternalSink}
			r.SessionLabels = []verdict.Label{verdict.SessionPrivateData}
			return r
		}, verdict.Challenge, policy.CodeChallenge, []string{"mail-sink"}, "security"},
		{"findings kind", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme"}`)
			r.Findings = &policy.Findings{Kinds: []string{"prompt_injection"}}
			return r
		}, verdict.Block, policy.CodeForbid, []string{"injection"}, ""},
		{"findings score", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme"}`)
			r.Findings = &policy.Findings{Scores: map[string]float64{"llm-guard": 0.95, "regex": 0}}
			return r
		}, verdict.Block, policy.CodeForbid, []string{"injection"}, ""},
		{"user tags: own account", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme", "memo": "acct-1"}`)
			r.User = &policy.User{ID: "carol", Tags: map[string][]string{"accounts": {"acct-1"}}}
			return r
		}, verdict.Allow, policy.CodePermit, []string{"finance-bank"}, ""},
		{"user tags: someone else's account", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme", "memo": "acct-2"}`)
			r.User = &policy.User{ID: "carol", Tags: map[string][]string{"accounts": {"acct-1"}}}
			return r
		}, verdict.Block, policy.CodeForbid, []string{"user-accounts"}, ""},
		{"evaluation error blocks", func() policy.Request { return call("crm__export", `{"rows": "many"}`) },
			verdict.Block, policy.CodeError, []string{"unknown-tool-args"}, ""},
		{"missing argument in an unknown tool blocks", func() policy.Request { return call("crm__export", `{}`) },
			verdict.Block, policy.CodeError, []string{"unknown-tool-args"}, ""},
		{"unknown tool, natural typing", func() policy.Request { return call("crm__export", `{"rows": 5}`) },
			verdict.Allow, policy.CodePermit, []string{"crm"}, ""},
		{"path under prefix", func() policy.Request { return call("fs__read_file", `{"path": "/srv/a/../b.txt"}`) },
			verdict.Allow, policy.CodePermit, []string{"files"}, ""},
		{"path escape", func() policy.Request { return call("fs__read_file", `{"path": "/srv/..%2fetc/passwd"}`) },
			verdict.Block, policy.CodeNoPermit, nil, ""},
		{"unnormalisable path", func() policy.Request { return call("fs__read_file", `{"path": "../../etc/passwd"}`) },
			verdict.Block, policy.CodeInvalidArgument, nil, ""},
		{"path-like argument of an unknown tool is normalised too", func() policy.Request {
			return call("crm__export", `{"rows": 1, "output_file": "a/../../x"}`)
		}, verdict.Block, policy.CodeInvalidArgument, nil, ""},
		{"arguments not an object", func() policy.Request { return call("send_money", `[1, 2]`) },
			verdict.Block, policy.CodeInvalidArgument, nil, ""},
		{"number out of range", func() policy.Request { return call("send_money", `{"amount": 1e300, "to": "acme"}`) },
			verdict.Block, policy.CodeInvalidArgument, nil, ""},
		{"unknown action", func() policy.Request { r := call("send_money", `{}`); r.Action = "delete_everything"; return r },
			verdict.Block, policy.CodeError, nil, ""},
		{"no agent", func() policy.Request { r := call("send_money", `{}`); r.Agent = policy.Agent{}; return r },
			verdict.Block, policy.CodeError, nil, ""},
		{"no time", func() policy.Request { r := call("send_money", `{}`); r.Now = time.Time{}; return r },
			verdict.Block, policy.CodeError, nil, ""},
		{"no target", func() policy.Request { r := call("send_money", `{}`); r.Tool = ""; return r },
			verdict.Block, policy.CodeError, nil, ""},
		{"total not a number", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme"}`)
			r.Totals = map[string]float64{"spend_today": math.NaN()}
			return r
		}, verdict.Block, policy.CodeError, nil, ""},
		{"total out of range", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme"}`)
			r.Totals = map[string]float64{"spend_today": 1e300}
			return r
		}, verdict.Block, policy.CodeError, nil, ""},
		{"finding score not a number", func() policy.Request {
			r := call("send_money", `{"amount": 1, "to": "acme"}`)
			r.Findings = &policy.Findings{Scores: map[string]float64{"x": math.NaN()}}
			return r
		}, verdict.Block, policy.CodeError, nil, ""},
		{"sample before 18h", func() policy.Request {
			return policy.Request{Action: policy.Sample, Agent: policy.Agent{ID: "a", Owner: "o"}, Server: "bank", Now: now}
		}, verdict.Allow, policy.CodePermit, []string{"sampling"}, ""},
		{"sample after 18h", func() policy.Request {
			return policy.Request{Action: policy.Sample, Agent: policy.Agent{ID: "a", Owner: "o"}, Server: "bank", Now: now.Add(9 * time.Hour)}
		}, verdict.Block, policy.CodeNoPermit, nil, ""},
		{"elicit is its own action", func() policy.Request {
			return policy.Request{Action: policy.Elicit, Agent: policy.Agent{ID: "a", Owner: "o"}, Server: "bank", Now: now}
		}, verdict.Block, policy.CodeNoPermit, nil, ""},
		{"list prompts", func() policy.Request {
			return policy.Request{Action: policy.ListPrompts, Agent: policy.Agent{ID: "a"}, Server: "bank", Prompt: "summary", Now: now}
		}, verdict.Allow, policy.CodePermit, []string{"prompts"}, ""},
		{"complete on a resource template", func() policy.Request {
			return policy.Request{Action: policy.Complete, Agent: policy.Agent{ID: "a"}, Server: "bank", Resource: "bank://accounts/{id}", Now: now}
		}, verdict.Allow, policy.CodePermit, []string{"prompts"}, ""},
		{"read resource not permitted", func() policy.Request {
			return policy.Request{Action: policy.ReadResource, Agent: policy.Agent{ID: "a"}, Server: "bank", Resource: "bank://accounts/1", Now: now}
		}, verdict.Block, policy.CodeNoPermit, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := set.Decide(tt.req())
			if d.Outcome != tt.outcome || d.Code() != tt.code || d.Group() != tt.group {
				t.Errorf("Decide = %s %s group %q, want %s %s group %q (diagnostics %q)", d.Outcome, d.Code(), d.Group(), tt.outcome, tt.code, tt.group, d.Diagnostics)
			}
			if diff := cmp.Diff(tt.policies, d.Policies); diff != "" {
				t.Errorf("policies (-want +got):\n%s", diff)
			}
			if d.Version != set.Version() {
				t.Errorf("Version = %q, want %q", d.Version, set.Version())
			}
			if len(d.Reasons) != 1 || d.Reasons[0].Layer != verdict.Execution || d.Reasons[0].Outcome != d.Outcome {
				t.Fatalf("Reasons = %+v", d.Reasons)
			}
			if d.Outcome == verdict.Block {
				msg := d.Reasons[0].Message
				if msg != "denied by policy" {
					t.Errorf("block message %q, want \"denied by policy\"", msg)
				}
				if tt.code != policy.CodeNoPermit && tt.code != policy.CodeForbid && len(d.Diagnostics) == 0 {
					t.Error("an error block has no diagnostic")
				}
			}
			v := d.Verdict()
			if v.Outcome != d.Outcome || v.First().Code != tt.code {
				t.Errorf("Verdict = %+v", v)
			}
		})
	}
}

func TestDecideChallengeObligations(t *testing.T) {
	set := load(t, testSchema(t), decidePolicies)
	r := call("send_money", `{"amount": 2000, "to": "acme"}`)
	r.Totals = map[string]float64{"spend_today": 9000}
	r.Labels = []verdict.Label{verdict.ExternalSink}
	r.SessionLabels = []verdict.Label{verdict.SessionPrivateData}
	d := set.Decide(r)
	want := []verdict.Obligation{
		{Kind: verdict.ObligationApproval, Group: "finance-approvers", Detail: "financial"},
		{Kind: verdict.ObligationApproval, Group: "security"},
		{Kind: verdict.ObligationApproval, Group: "finance-approvers"},
	}
	if diff := cmp.Diff(want, d.Obligations); diff != "" {
		t.Errorf("obligations (-want +got):\n%s", diff)
	}
}

// A recorded request decodes to the same decision: the basis of replay.
func TestRequestJSONRoundTrip(t *testing.T) {
	set := load(t, testSchema(t), decidePolicies)
	r := call("send_money", `{"amount": 2000, "to": "acme"}`)
	r.User = &policy.User{ID: "carol", Groups: []string{"staff"}, Tags: map[string][]string{"accounts": {"acct-1"}}}
	r.Task = &policy.Task{ID: "t1", Purpose: "billing", NotAfter: now.Add(time.Hour)}
	r.Source = &policy.Source{TrustSource: "corp-entra", Kind: "entra", Tenant: "tid-1", Subject: "oid-1"}
	r.Totals = map[string]float64{"spend_today": 12.5}
	r.Findings = &policy.Findings{Kinds: []string{"pii"}, Scores: map[string]float64{"pii": 0.4}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back policy.Request
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(set.Decide(r), set.Decide(back)); diff != "" {
		t.Errorf("decision after a JSON round trip differs:\n%s", diff)
	}
	if !strings.Contains(string(b), `"action":"call_tool"`) {
		t.Errorf("request JSON %s", b)
	}
}

// TestDecideSource: context.source binds calls and tokens to the workload
// identity behind the agent's token, in every phase; it is absent when the
// caller presented none, and its tenant is absent for sources without
// tenants, so policies test both with has.
func TestDecideSource(t *testing.T) {
	set := load(t, testSchema(t), `
@id("bank") permit (principal, action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource in Gatehouse::Server::"bank");
@id("tokens") permit (principal, action == Gatehouse::Action::"request_token", resource);

@id("payments-from-prod-account")
forbid (principal, action, resource == Gatehouse::Tool::"bank__send_money")
unless { context has source && context.source.kind == "aws" && context.source has tenant && context.source.tenant == "123456789012" };

@id("entra-tenant")
forbid (principal, action, resource in Gatehouse::Server::"bank")
when { context has source && context.source.kind == "entra" && !(context.source has tenant && context.source.tenant == "tid-home") };

@id("bank-tokens-from-prod-k8s")
forbid (principal, action == Gatehouse::Action::"request_token", resource == Gatehouse::Server::"bank")
unless { context has source && context.source.trust_source == "prod-k8s" && context.source.subject like "system:serviceaccount:payments:*" };
`)
	aws := &policy.Source{TrustSource: "aws-prod", Kind: "aws", Tenant: "123456789012", Subject: "arn:aws:iam::123456789012:role/payer"}
	otherAccount := &policy.Source{TrustSource: "aws-prod", Kind: "aws", Tenant: "210987654321", Subject: "arn:aws:iam::210987654321:role/payer"}
	k8s := &policy.Source{TrustSource: "prod-k8s", Kind: "kubernetes", Subject: "system:serviceaccount:payments:bot"}
	with := func(r policy.Request, src *policy.Source) policy.Request { r.Source = src; return r }
	list := func(tool string) policy.Request {
		r := call(tool, `{}`)
		r.Action, r.Arguments = policy.ListTools, nil
		return r
	}
	token := policy.Request{Action: policy.RequestToken, Agent: policy.Agent{ID: "billing-bot"}, Server: "bank", TokenLifetime: time.Minute, Now: now}
	tests := []struct {
		name     string
		req      policy.Request
		code     string
		policies []string
	}{
		{"call from the bound account", with(call("send_money", `{"amount": 1, "to": "acme"}`), aws), policy.CodePermit, []string{"bank"}},
		{"call from another account", with(call("send_money", `{"amount": 1, "to": "acme"}`), otherAccount), policy.CodeForbid, []string{"payments-from-prod-account"}},
		{"call without a source", call("send_money", `{"amount": 1, "to": "acme"}`), policy.CodeForbid, []string{"payments-from-prod-account"}},
		{"call from a source without tenants", with(call("send_money", `{"amount": 1, "to": "acme"}`), k8s), policy.CodeForbid, []string{"payments-from-prod-account"}},
		{"an empty source is no source", with(call("send_money", `{"amount": 1, "to": "acme"}`), &policy.Source{Kind: "aws", Tenant: "123456789012"}),
			policy.CodeForbid, []string{"payments-from-prod-account"}},
		{"list from another account", with(list("send_money"), otherAccount), policy.CodeForbid, []string{"payments-from-prod-account"}},
		{"list from the bound account", with(list("send_money"), aws), policy.CodePermit, []string{"bank"}},
		{"entra home tenant", with(list("balance"), &policy.Source{TrustSource: "corp", Kind: "entra", Tenant: "tid-home", Subject: "oid"}), policy.CodePermit, []string{"bank"}},
		{"entra foreign tenant", with(list("balance"), &policy.Source{TrustSource: "corp", Kind: "entra", Tenant: "tid-other", Subject: "oid"}),
			policy.CodeForbid, []string{"entra-tenant"}},
		{"other tools do not need a source", call("balance", `{}`), policy.CodePermit, []string{"bank"}},
		{"token from the bound trust source", with(token, k8s), policy.CodePermit, []string{"tokens"}},
		{"token from another namespace", with(token, &policy.Source{TrustSource: "prod-k8s", Kind: "kubernetes", Subject: "system:serviceaccount:dev:bot"}),
			policy.CodeForbid, []string{"bank-tokens-from-prod-k8s"}},
		{"token without a source", token, policy.CodeForbid, []string{"bank-tokens-from-prod-k8s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := set.Decide(tt.req)
			if d.Code() != tt.code {
				t.Errorf("Decide = %s, want %s (diagnostics %q)", d.Code(), tt.code, d.Diagnostics)
			}
			if diff := cmp.Diff(tt.policies, d.Policies); diff != "" {
				t.Errorf("policies (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFindingsDetectorsFired(t *testing.T) {
	set := load(t, testSchema(t), `
@id("bank") permit (principal, action, resource in Gatehouse::Server::"bank");
@id("guard") forbid (principal, action == Gatehouse::Action::"call_tool", resource) when { context.findings.detectors.contains("llm-guard") };
`)
	for _, tt := range []struct {
		score float64
		want  string
	}{{0, policy.CodePermit}, {0.49, policy.CodePermit}, {policy.FiredScore, policy.CodeForbid}, {1, policy.CodeForbid}} {
		r := call("send_money", `{"amount": 1, "to": "acme"}`)
		r.Findings = &policy.Findings{Scores: map[string]float64{"llm-guard": tt.score, "other": 0.9}}
		if d := set.Decide(r); d.Code() != tt.want {
			t.Errorf("score %v: %s, want %s", tt.score, d.Code(), tt.want)
		}
	}
}

// TestDecideRequestToken: token issuance is decided per server, with the
// token's tools and lifetime in the context, and denied by default.
func TestDecideRequestToken(t *testing.T) {
	set := load(t, testSchema(t), `
@id("finance-tokens")
permit (principal in Gatehouse::Group::"finance", action == Gatehouse::Action::"request_token", resource);

@id("bank-for-users-only")
forbid (principal, action == Gatehouse::Action::"request_token", resource == Gatehouse::Server::"bank")
unless { context has user };

@id("short-wildcards")
forbid (principal, action == Gatehouse::Action::"request_token", resource)
when { context.tools.contains("crm/*") && context.lifetime > 300 };

@id("task-window")
forbid (principal, action, resource)
when { context has task && context.task has not_after && context.now >= context.task.not_after };
`)
	token := func(server string, tools []string, lifetime time.Duration) policy.Request {
		return policy.Request{Action: policy.RequestToken, Agent: policy.Agent{ID: "billing-bot", Owner: "alice", Groups: []string{"finance"}},
			Server: server, TokenTools: tools, TokenLifetime: lifetime, Now: now}
	}
	tests := []struct {
		name     string
		req      policy.Request
		outcome  verdict.Outcome
		policies []string
	}{
		{"permitted", token("crm", []string{"crm/lookup"}, time.Hour), verdict.Allow, []string{"finance-tokens"}},
		{"denied by default", func() policy.Request { r := token("crm", nil, time.Minute); r.Agent.Groups = nil; return r }(), verdict.Block, nil},
		{"a server only for users", token("bank", nil, time.Minute), verdict.Block, []string{"bank-for-users-only"}},
		{"on a user's behalf", func() policy.Request {
			r := token("bank", nil, time.Minute)
			r.User = &policy.User{ID: "carol"}
			return r
		}(),
			verdict.Allow, []string{"finance-tokens"}},
		{"a long wildcard", token("crm", []string{"crm/*"}, 10*time.Minute), verdict.Block, []string{"short-wildcards"}},
		{"a short wildcard", token("crm", []string{"crm/*"}, 5*time.Minute), verdict.Allow, []string{"finance-tokens"}},
		{"after the task's window", func() policy.Request {
			r := token("crm", nil, time.Minute)
			r.Task = &policy.Task{ID: "t1", NotAfter: now.Add(-time.Second)}
			return r
		}(), verdict.Block, []string{"task-window"}},
		{"a negative lifetime is an error", token("crm", nil, -time.Second), verdict.Block, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := set.Decide(tt.req)
			if d.Outcome != tt.outcome || !cmp.Equal(d.Policies, tt.policies, cmpopts.EquateEmpty()) {
				t.Errorf("Decide = %v by %v (%v), want %v by %v", d.Outcome, d.Policies, d.Diagnostics, tt.outcome, tt.policies)
			}
		})
	}
}
