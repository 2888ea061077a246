package policy_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

func Example() {
	schema, err := policy.SchemaFor([]policy.ToolSchema{{
		Server:      "bank",
		Name:        "send_money",
		Labels:      []verdict.Label{verdict.Financial},
		InputSchema: json.RawMessage(`{"type":"object","properties":{"amount":{"type":"number"}},"required":["amount"]}`),
	}}, policy.SchemaOptions{})
	if err != nil {
		panic(err)
	}
	e := policy.NewEngine(policy.Config{Schema: schema})
	err = e.Install([]policy.File{{Name: "bank.cedar", Data: []byte(`
@id("finance-bank")
permit (principal in Gatehouse::Group::"finance",
        action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"],
        resource in Gatehouse::Server::"bank");

@id("big-payment")
@challenge("finance-approvers")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money")
when { context.arguments.amount.greaterThan(decimal("1000.0")) };
`)}})
	if err != nil {
		panic(err)
	}
	req := policy.Request{
		Action:    policy.CallTool,
		Agent:     policy.Agent{ID: "billing-bot", Owner: "alice", Groups: []string{"finance"}},
		Server:    "bank",
		Tool:      "send_money",
		Arguments: json.RawMessage(`{"amount": 5000}`),
		Now:       time.Now(),
	}
	d := e.Decide(req)
	fmt.Println(d.Outcome, d.Code(), d.Policies, d.Group())

	req.Agent.Groups = nil
	d = e.Decide(req)
	fmt.Println(d.Outcome, d.Code(), d.Reasons[0].Message)
	// Output:
	// challenge policy.challenge [big-payment] finance-approvers
	// block policy.no_permit denied by policy
}
