package gateway_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gateway"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/policies"
)

// contextPolicies are test rules on what the gateway tells policy about
// the caller, installed beside the demo's policies.
const contextPolicies = `
// Agents of the operators group may use the bank.
@id("operators-bank")
permit (principal in Gatehouse::Group::"operators", action, resource in Gatehouse::Server::"bank");

// Agents hosted on AWS may not read balances.
@id("no-aws-balances")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__get_balance")
when { principal.hosting == "aws-native" };
`

func writePolicy(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyContext: what the gateway tells policy about the agent comes
// from the registry, so agents managed through the admin API get their
// groups and hosting pattern.
func TestPolicyContext(t *testing.T) {
	dir, extra := execConfig(t)
	writePolicy(t, dir, "context.cedar", contextPolicies)
	h := start(t, extra)
	balance := map[string]any{"account": "acc-checking"}

	t.Run("agent groups and hosting from the registry", func(t *testing.T) {
		if code := adminDo(t, h, "POST", "/v1/agents", map[string]any{"id": "ops-bot", "owner": "leon@harlowpike.example", "servers": []string{"bank"},
			"groups": []string{"operators"}, "by": "ops", "reason": "test"}, nil); code != http.StatusCreated {
			t.Fatalf("adding ops-bot: HTTP %d", code)
		}
		cs := h.connect("ops-bot", nil, "")
		if _, e := callErr(t, cs, "bank__get_balance", balance); e != nil {
			t.Errorf("member of operators: %v", e)
		}
		update := func(change func(a map[string]any)) {
			t.Helper()
			var a map[string]any
			adminDo(t, h, "GET", "/v1/agents/ops-bot", nil, &a)
			change(a)
			a["by"], a["reason"] = "ops", "test"
			if code := adminDo(t, h, "PUT", "/v1/agents/ops-bot", a, nil); code != http.StatusOK {
				t.Fatalf("updating ops-bot: HTTP %d", code)
			}
		}
		update(func(a map[string]any) { a["hosting"] = "aws-native" })
		if _, e := callErr(t, cs, "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "no-aws-balances") {
			t.Errorf("hosted on AWS: %v", e)
		}
		update(func(a map[string]any) { a["hosting"], a["groups"] = "kubernetes", nil })
		if _, e := callErr(t, cs, "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "policy.no_permit") {
			t.Errorf("no longer in operators: %v", e)
		}
	})
}

// federate registers the test CI workload as the assistant's federated
// credential, so that it can exchange its token.
func federate(t *testing.T, h *harness) {
	t.Helper()
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/assistant", nil, &a)
	a["credentials"] = []map[string]string{{"source": "ci", "subject": "repo:acme/agents:environment:prod"}}
	a["by"], a["reason"] = "ops", "federate the CI workload"
	if code := adminDo(t, h, "PUT", "/v1/agents/assistant", a, nil); code != http.StatusOK {
		t.Fatalf("adding the credential: HTTP %d", code)
	}
}

// exchangeFor exchanges the test CI workload's token (or, with
// subject_token_override, a user's token with the workload as actor) at
// the gateway's token endpoint.
func exchangeFor(t *testing.T, h *harness, workload *issuer, form url.Values) (string, int, string) {
	t.Helper()
	form.Set("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
	form.Set("subject_token", workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil))
	if sub := form.Get("subject_token_override"); sub != "" {
		// Delegation: the user's token is the subject.
		form.Set("subject_token", sub)
		form.Del("subject_token_override")
	}
	form.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
	if form.Get("resource") == "" {
		form.Set("resource", h.url)
	}
	return exchange(t, strings.TrimSuffix(h.url, "/mcp"), form)
}

// TestTokenContextThroughGateway: what a token carries about the task (its
// purpose and time window, asked for at the token endpoint) and the user
// (the groups of the user's token) reaches policy — the library's
// task-window rule fires in the gateway.
func TestTokenContextThroughGateway(t *testing.T) {
	dir, extra := execConfig(t)
	writePolicy(t, dir, "task.cedar", `
// Audit tasks only read: nothing leaves.
@id("audit-tasks-read-only")
forbid (principal, action == Gatehouse::Action::"call_tool", resource)
when { context has task && context.task.purpose like "audit*" && resource.labels.contains("external_sink") };

// On a user's behalf, balances only for the finance group.
@id("balances-for-finance")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__get_balance")
when { context has user && !(context.user in Gatehouse::Group::"finance") };

// A user whose token names its accounts sees the balances of those only.
@id("own-accounts-only")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__get_balance")
when { context has user && context.user.hasTag("accounts") &&
       !context.user.getTag("accounts").contains(context.arguments.account) };

// No tokens for a user whose accounts are frozen.
@id("frozen-users-get-no-tokens")
forbid (principal, action == Gatehouse::Action::"request_token", resource)
when { context has user && context.user.hasTag("accounts") && context.user.getTag("accounts").contains("frozen") };
`)
	h, workload, users := identityGateway(t, extra)
	federate(t, h)
	taskToken := func(form url.Values) string {
		t.Helper()
		tok, code, msg := exchangeFor(t, h, workload, form)
		if code != http.StatusOK {
			t.Fatalf("exchange: %d %s", code, msg)
		}
		return tok
	}
	balance := map[string]any{"account": "acc-checking"}
	mail := map[string]any{"to": "leon.brandt@harlowpike.example", "subject": "figures", "body": "attached"}
	now := time.Now().UTC()

	t.Run("outside the task's window", func(t *testing.T) {
		// No token before the window opens (request_token meets
		// task-window)...
		_, code, msg := exchangeFor(t, h, workload, url.Values{"task": {"month-end"},
			"task_not_before": {now.Add(time.Hour).Format(time.RFC3339)}, "task_not_after": {now.Add(2 * time.Hour).Format(time.RFC3339)}})
		if code != http.StatusForbidden || !strings.Contains(msg, "access_denied") {
			t.Errorf("exchange before the window opens: %d %s", code, msg)
		}
		// ...and a token naming a window that is not open is refused call
		// by call (as one minted before a policy change would be).
		tok, _, err := h.g.Minter().MintClaims(identity.Claims{Claims: jwt.Claims{Subject: "assistant"}, ClientID: "assistant", Txn: "month-end",
			Context: &identity.TxnContext{NotBefore: jwt.NewNumericDate(now.Add(time.Hour)), NotAfter: jwt.NewNumericDate(now.Add(2 * time.Hour))}}, 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, e := callErr(t, h.connectToken(tok, "", ""), "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "policy.forbid (task-window)") {
			t.Errorf("before the window opens: %v", e)
		}
	})
	t.Run("inside the window, by purpose", func(t *testing.T) {
		window := url.Values{"task_not_before": {now.Add(-time.Minute).Format(time.RFC3339)}, "task_not_after": {now.Add(time.Hour).Format(time.RFC3339)}}
		audit := url.Values{"task": {"q1-audit"}, "task_purpose": {"audit of Q1 payments"}}
		for k, v := range window {
			audit[k] = v
		}
		cs := h.connectToken(taskToken(audit), "", "")
		if _, e := callErr(t, cs, "bank__get_balance", balance); e != nil {
			t.Errorf("reading during the window: %v", e)
		}
		if _, e := callErr(t, cs, "workspace__send_email", mail); e == nil || !strings.Contains(e.Message, "audit-tasks-read-only") {
			t.Errorf("sending mail in an audit task: %v", e)
		}
		report := url.Values{"task": {"q1-report"}, "task_purpose": {"send the Q1 figures"}}
		for k, v := range window {
			report[k] = v
		}
		if _, e := callErr(t, h.connectToken(taskToken(report), "", ""), "workspace__send_email", mail); e != nil {
			t.Errorf("sending mail in a reporting task: %v", e)
		}
	})
	t.Run("user groups from the user's token", func(t *testing.T) {
		onBehalf := func(groups []string) *sdk.ClientSession {
			t.Helper()
			var extra map[string]any
			if groups != nil {
				extra = map[string]any{"groups": groups}
			}
			return h.connectToken(taskToken(url.Values{"actor_token": {workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil)},
				"actor_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "subject_token_override": {users.token(t, "carol", "gatehouse", extra)}}), "", "")
		}
		if _, e := callErr(t, onBehalf([]string{"staff", "finance"}), "bank__get_balance", balance); e != nil {
			t.Errorf("for a member of finance: %v", e)
		}
		if _, e := callErr(t, onBehalf([]string{"staff"}), "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "balances-for-finance") {
			t.Errorf("for a user outside finance: %v", e)
		}
	})
	t.Run("user tags from the user's token", func(t *testing.T) {
		// The corp source maps its bank_accounts claim to the accounts tag.
		exchange := func(accounts any) (string, int, string) {
			t.Helper()
			return exchangeFor(t, h, workload, url.Values{"actor_token": {workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil)},
				"actor_token_type":       {"urn:ietf:params:oauth:token-type:jwt"},
				"subject_token_override": {users.token(t, "carol", "gatehouse", map[string]any{"groups": []string{"finance"}, "bank_accounts": accounts})}})
		}
		tok, code, msg := exchange([]string{"acc-checking"})
		if code != http.StatusOK {
			t.Fatalf("exchange: %d %s", code, msg)
		}
		cs := h.connectToken(tok, "", "")
		if _, e := callErr(t, cs, "bank__get_balance", balance); e != nil {
			t.Errorf("the user's own account: %v", e)
		}
		if _, e := callErr(t, cs, "bank__get_balance", map[string]any{"account": "acc-savings"}); e == nil || !strings.Contains(e.Message, "own-accounts-only") {
			t.Errorf("another account: %v", e)
		}
		// One account as a plain string claim (refusals by policy spend no
		// rate: the test config allows three balance checks a minute).
		if tok, code, msg = exchange("acc-savings"); code != http.StatusOK {
			t.Fatalf("exchange: %d %s", code, msg)
		}
		if _, e := callErr(t, h.connectToken(tok, "", ""), "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "own-accounts-only") {
			t.Errorf("another account than the string claim's: %v", e)
		}
		// Token issuance sees the tags too.
		if _, code, msg := exchange([]string{"acc-checking", "frozen"}); code != http.StatusForbidden || !strings.Contains(msg, "access_denied") {
			t.Errorf("a frozen user's token: %d %s", code, msg)
		}
		// A claim of another shape refuses the user's token: policy never
		// sees a partial set.
		if _, code, msg := exchange(42); code == http.StatusOK || !strings.Contains(msg, "bank_accounts") {
			t.Errorf("a numeric accounts claim: %d %s", code, msg)
		}
	})
}

// TestPolicyTotals: policy.totals makes a value rule's running total
// visible to policy; a payment past the day's total waits for approval.
func TestPolicyTotals(t *testing.T) {
	dir, extra := execConfig(t)
	writePolicy(t, dir, "totals.cedar", `
@id("payments-daily-total")
@challenge("finance-approvers")
@risk("financial")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__send_money")
when { context.totals.payments_today.greaterThan(decimal("1500.0")) };
`)
	extra = strings.Replace(extra, "policy: {dir: "+dir+"}", "policy: {dir: "+dir+", totals: [{name: payments_today, value: payments, per: agent}]}", 1)
	h := start(t, extra)
	cs := h.connect("assistant", nil, "")
	pay := func(amount float64) *jsonrpcErr {
		_, e := callErr(t, cs, "bank__send_money", map[string]any{"from_account": "acc-savings", "to_iban": "DE89 3704 0044 0532 0130 00", "amount": amount})
		return e
	}
	before := h.demo.Bank.Balance("acc-savings")
	for i := range 2 {
		if e := pay(900); e != nil {
			t.Fatalf("payment %d within the day's total: %v", i+1, e)
		}
	}
	// 1,800 EUR paid today: the next payment waits for finance.
	if e := pay(900); e == nil || e.Code != -32052 || !strings.Contains(e.Message, "payments-daily-total") {
		t.Errorf("payment past the day's total: %v", e)
	}
	// Another agent's day is its own.
	if code := adminDo(t, h, "POST", "/v1/agents", map[string]any{"id": "treasury-bot", "owner": "dana@harlowpike.example", "servers": []string{"bank"},
		"groups": []string{"operators"}, "by": "ops", "reason": "test"}, nil); code != http.StatusCreated {
		t.Fatalf("adding treasury-bot: HTTP %d", code)
	}
	writePolicy(t, dir, "context.cedar", contextPolicies)
	if code := adminDo(t, h, "POST", "/v1/policy/reload", nil, nil); code != http.StatusOK {
		t.Fatalf("policy reload: HTTP %d", code)
	}
	if _, e := callErr(t, h.connect("treasury-bot", nil, ""), "bank__send_money", map[string]any{"from_account": "acc-savings",
		"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 900}); e != nil {
		t.Errorf("another agent's first payment: %v", e)
	}
	if got := h.demo.Bank.Balance("acc-savings"); got != before-2700 {
		t.Errorf("savings balance %v, want %v", got, before-2700)
	}
}

// TestFinancialTemplateLoads: the shipped financial-threshold template
// loads in the gateway once its running total is declared, and the check
// says what is missing when it is not.
func TestFinancialTemplateLoads(t *testing.T) {
	dir := t.TempDir()
	tmpl, err := fs.ReadFile(policies.Templates, "templates/financial-threshold.cedar")
	if err != nil {
		t.Fatal(err)
	}
	writePolicy(t, dir, "financial-threshold.cedar", string(tmpl))
	base := fmt.Sprintf(`servers: [{id: payments, url: "http://127.0.0.1:1/mcp"}]
limits:
  values:
    - {name: transfers, server: payments, tool: transfer, argument: amount, decimals: 2, totals: [{per: agent, window: 24h, limit: "100000"}]}
policy:
  dir: %s
`, dir)
	for _, tc := range []struct {
		name, totals, want string
	}{
		{"declared", "  totals: [{name: payments_today, value: transfers, per: agent}]\n", ""},
		{"not declared", "", "payments_today"},
		{"no such total", "  totals: [{name: payments_today, value: transfers, per: user}]\n", "policy.totals[0] (payments_today): value rule transfers has no running total per user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(base+tc.totals), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			err = gateway.Validate(cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TestTokenExchangePolicy: the token endpoint asks policy (request_token)
// before it mints: per server, with the token's tools, lifetime, user and
// task in the context; an agent whose policies permit no token gets none
// whatever the registry allows.
func TestTokenExchangePolicy(t *testing.T) {
	dir, extra := execConfig(t)
	writePolicy(t, dir, "tokens.cedar", `
// The bank only on a user's behalf.
@id("bank-for-users-only")
forbid (principal, action == Gatehouse::Action::"request_token", resource == Gatehouse::Server::"bank")
unless { context has user };

// Wildcard scopes live ten minutes at most.
@id("short-wildcards")
forbid (principal, action == Gatehouse::Action::"request_token", resource)
when { context.tools.contains("workspace/*") && context.lifetime > 600 };
`)
	h, workload, users := identityGateway(t, extra)
	federate(t, h)
	for _, tc := range []struct {
		name string
		form url.Values
		code int
	}{
		{"autonomous, reaching the bank", url.Values{}, http.StatusForbidden},
		{"autonomous, workspace only", url.Values{"scope": {"workspace/read_inbox workspace/send_email"}}, http.StatusOK},
		{"on a user's behalf", url.Values{"actor_token": {workload.token(t, "repo:acme/agents:environment:prod", "gatehouse", nil)},
			"actor_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "subject_token_override": {users.token(t, "carol", "gatehouse", nil)}}, http.StatusOK},
		{"a short wildcard", url.Values{"scope": {"workspace/*"}, "lifetime": {"600"}}, http.StatusOK},
		{"a long wildcard", url.Values{"scope": {"workspace/*"}, "lifetime": {"1800"}}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, code, msg := exchangeFor(t, h, workload, tc.form)
			if code != tc.code || (code == http.StatusOK) != (tok != "") {
				t.Fatalf("exchange: %d %s, want %d", code, msg, tc.code)
			}
			if code == http.StatusForbidden && !strings.Contains(msg, "access_denied") {
				t.Errorf("refusal: %s", msg)
			}
		})
	}
	// The refusal is on record with the deciding policy.
	evs := h.events(audit.Filter{Agent: "assistant"}, 1)
	found := false
	for _, ev := range evs {
		found = found || strings.Contains(fmt.Sprint(ev), "bank-for-users-only")
	}
	if !found {
		t.Errorf("no audit record names the deciding policy")
	}

	// An agent the registry knows but no policy lets obtain tokens gets
	// none: intern-bot's policies permit listing and calling only.
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/intern-bot", nil, &a)
	a["credentials"] = []map[string]string{{"source": "ci", "subject": "repo:acme/intern"}}
	a["by"], a["reason"] = "ops", "test"
	if code := adminDo(t, h, "PUT", "/v1/agents/intern-bot", a, nil); code != http.StatusOK {
		t.Fatalf("federating intern-bot: HTTP %d", code)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {workload.token(t, "repo:acme/intern", "gatehouse", nil)},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "resource": {h.url}}
	if _, code, msg := exchange(t, strings.TrimSuffix(h.url, "/mcp"), form); code != http.StatusForbidden {
		t.Errorf("intern-bot: %d %s, want 403", code, msg)
	}
}

// TestSourceBindingThroughGateway: policy sees the workload identity
// behind the agent's token (context.source) — at the token endpoint, in
// tools/list and on every call — and binds the bank to one Entra tenant:
// the same agent, federated in two tenants and in an AWS account, reaches
// the bank only with a credential from the home tenant, whether exchanged
// or presented directly.
func TestSourceBindingThroughGateway(t *testing.T) {
	const (
		home    = "72f988bf-86f1-41af-91ab-2d7cd011db47"
		partner = "3c1a9e7d-5b2f-4e8a-9c0d-1f2e3d4c5b6a"
		oid     = "6f2b1c7e-1d3a-4c5b-9e8f-0a1b2c3d4e5f"
		account = "123456789012"
	)
	dir, extra := execConfig(t)
	writePolicy(t, dir, "source.cedar", fmt.Sprintf(`
// The bank only for workloads of the home Entra tenant.
@id("bank-from-home-tenant")
forbid (principal, action in [Gatehouse::Action::"list_tools", Gatehouse::Action::"call_tool"], resource in Gatehouse::Server::"bank")
unless { context has source && context.source.kind == "entra" && context.source has tenant && context.source.tenant == %q };

// No token reaching the workspace for AWS workloads.
@id("workspace-tokens-not-from-aws")
forbid (principal, action == Gatehouse::Action::"request_token", resource == Gatehouse::Server::"workspace")
when { context has source && context.source.trust_source == "aws-prod" };
`, home))
	entraKeys := newIssuer(t, "https://login.example.test")
	// Two sessions of one role (a signed request is used once).
	sts := fakeSTS(t, map[string]string{"ASIAROLE1": "arn:aws:sts::" + account + ":assumed-role/billing-agent/session-1",
		"ASIAROLE2": "arn:aws:sts::" + account + ":assumed-role/billing-agent/session-2"})
	h := start(t, fmt.Sprintf(`identity:
  trust_sources:
    - {name: contoso, kind: entra, tenants: [%s, %s], audience: "api://gatehouse", authority: %q, jwks_file: %q, algorithms: [ES256], direct: true}
    - {name: aws-prod, kind: aws, audience: gatehouse, endpoints: [%q], accounts: [%s]}
`, home, partner, entraKeys.url, entraKeys.file, sts.URL, account)+extra)
	base := strings.TrimSuffix(h.url, "/mcp")
	var a map[string]any
	adminDo(t, h, "GET", "/v1/agents/assistant", nil, &a)
	a["credentials"] = []map[string]string{{"source": "contoso", "tenant": home, "subject": oid}, {"source": "contoso", "tenant": partner, "subject": oid},
		{"source": "aws-prod", "tenant": account, "subject": "arn:aws:iam::" + account + ":role/billing-agent"}}
	a["tenants"] = []string{home, partner, account}
	a["by"], a["reason"] = "ops", "federate in both tenants and the AWS account"
	if code := adminDo(t, h, "PUT", "/v1/agents/assistant", a, nil); code != http.StatusOK {
		t.Fatalf("federating: HTTP %d", code)
	}
	entra := func(tid string) string {
		return entraKeys.token(t, oid, "api://gatehouse", map[string]any{"iss": entraKeys.url + "/" + tid + "/v2.0", "tid": tid, "oid": oid, "sub": oid,
			"ver": "2.0", "idtyp": "app", "azp": "9a2b3c4d-0000-4000-8000-000000000002", "iat": time.Now().Add(-time.Minute).Unix()})
	}
	jwtType, awsType := "urn:ietf:params:oauth:token-type:jwt", "urn:gatehouse:params:oauth:token-type:aws-sigv4-get-caller-identity"
	exchangeAs := func(cred, typ string, scope ...string) (string, int, string) {
		t.Helper()
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {cred}, "subject_token_type": {typ}, "resource": {h.url}}
		if scope != nil {
			form.Set("scope", strings.Join(scope, " "))
		}
		return exchange(t, base, form)
	}
	bankTools := func(cs *sdk.ClientSession) int {
		t.Helper()
		n := 0
		for tool, err := range cs.Tools(context.Background(), nil) {
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(tool.Name, "bank__") {
				n++
			}
		}
		return n
	}
	balance := map[string]any{"account": "acc-checking"}

	t.Run("exchanged in the home tenant", func(t *testing.T) {
		tok, code, msg := exchangeAs(entra(home), jwtType)
		if code != http.StatusOK {
			t.Fatalf("exchange: %d %s", code, msg)
		}
		cs := h.connectToken(tok, "", "")
		if n := bankTools(cs); n == 0 {
			t.Error("the home tenant's workload sees no bank tool")
		}
		if _, e := callErr(t, cs, "bank__get_balance", balance); e != nil {
			t.Errorf("from the home tenant: %v", e)
		}
	})
	t.Run("exchanged in the partner tenant", func(t *testing.T) {
		// The agent allows the tenant (the token is issued, and the
		// workspace is reachable); policy keeps the bank to the home tenant.
		tok, code, msg := exchangeAs(entra(partner), jwtType)
		if code != http.StatusOK {
			t.Fatalf("exchange: %d %s", code, msg)
		}
		cs := h.connectToken(tok, "", "")
		if n := bankTools(cs); n != 0 {
			t.Errorf("the partner tenant's workload sees %d bank tools", n)
		}
		if _, e := callErr(t, cs, "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "bank-from-home-tenant") {
			t.Errorf("from the partner tenant: %v", e)
		}
		if _, e := callErr(t, cs, "workspace__search_files", map[string]any{"query": "agenda"}); e != nil {
			t.Errorf("the workspace from the partner tenant: %v", e)
		}
	})
	t.Run("another trust source", func(t *testing.T) {
		// A token reaching the workspace is refused at the token endpoint...
		if _, code, msg := exchangeAs(stsToken(t, sts.URL, "ASIAROLE1", "gatehouse"), awsType); code != http.StatusForbidden || !strings.Contains(msg, "access_denied") {
			t.Errorf("AWS exchange for every server: %d %s", code, msg)
		}
		// ...one for the bank alone is issued, and the bank refuses it.
		tok, code, msg := exchangeAs(stsToken(t, sts.URL, "ASIAROLE2", "gatehouse"), awsType, "bank/get_balance")
		if code != http.StatusOK {
			t.Fatalf("AWS exchange for the bank: %d %s", code, msg)
		}
		if _, e := callErr(t, h.connectToken(tok, "", ""), "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "bank-from-home-tenant") {
			t.Errorf("from the AWS account: %v", e)
		}
	})
	t.Run("presented directly", func(t *testing.T) {
		if _, e := callErr(t, h.connectToken(entra(home), "", ""), "bank__get_balance", balance); e != nil {
			t.Errorf("home tenant credential: %v", e)
		}
		if _, e := callErr(t, h.connectToken(entra(partner), "", ""), "bank__get_balance", balance); e == nil || !strings.Contains(e.Message, "bank-from-home-tenant") {
			t.Errorf("partner tenant credential: %v", e)
		}
	})
	t.Run("recorded for replay", func(t *testing.T) {
		want := []string{home, partner, account, home, partner}
		// An allowed call's outcome record is committed after its answer:
		// wait until every call has its record.
		var tenants []string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			tenants = recordedTenants(t, h)
			if len(tenants) >= len(want) || time.Now().After(deadline) {
				break
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(tenants)), slices.Sorted(slices.Values(want))) {
			t.Errorf("recorded tenants %v, want %v", tenants, want)
		}
	})
}

// recordedTenants returns the source tenant of each get_balance decision
// and allowed call's outcome on record.
func recordedTenants(t *testing.T, h *harness) []string {
	t.Helper()
	var tenants []string
	for _, ev := range h.events(audit.Filter{Class: audit.ClassAPIActivity, Tool: "get_balance"}, 6) {
		// One record per call: its decision, or the outcome of an
		// allowed call.
		if s, ok := unmapped(ev, "source_identity").(map[string]any); ok && (unmapped(ev, "phase") == "decision" || unmapped(ev, "phase") == "outcome") {
			if s["trust_source"] == nil || s["kind"] == nil || s["subject"] == nil {
				t.Errorf("source_identity %v", s)
			}
			tenants = append(tenants, fmt.Sprint(s["tenant"]))
		}
	}
	return tenants
}
