package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/config"
)

func TestParseValid(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("Bearer x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse([]byte(`
listen: 127.0.0.1:9000
agents:
  - id: billing-bot
    owner: alice@example.com
    servers: [bank]
servers:
  - id: bank
    url: http://127.0.0.1:9001/mcp
    header_files: {Authorization: token}
    timeout: 5s
  - id: files
    command: [/bin/cat]
    env: {HOME: /tmp}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Servers[0].Timeout.Std().String(); got != "5s" {
		t.Errorf("timeout = %s", got)
	}
	if len(f.Endpoints) != 1 || f.Endpoints[0].Path != "/mcp" || len(f.Endpoints[0].Servers) != 2 || !*f.Endpoints[0].Namespace {
		t.Errorf("default endpoint = %+v", f.Endpoints)
	}
	if got := f.Path(f.Servers[0].HeaderFiles["Authorization"]); got != filepath.Join(dir, "token") {
		t.Errorf("Path = %s", got)
	}
	if s, err := f.ReadSecret("token"); err != nil || s != "Bearer x" {
		t.Errorf("ReadSecret = %q, %v", s, err)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings, each must appear
	}{
		{"unknown keys", "listen: 127.0.0.1:1\nlisten_addr: x\nservers:\n  - id: a\n    urll: http://x\n", []string{"listen_addr", "urll"}},
		{"several semantic problems", `
listen: nohost
servers:
  - id: Bad_ID
    url: ftp://x
  - id: ok
    url: http://h/mcp
    command: [x]
agents:
  - id: a
    servers: [nope]
endpoints:
  - path: mcp
    servers: [ok, ghost]
pinning: {mode: maybe}
`, []string{`listen: "nohost"`, "servers[0].id", "servers[0].url", "mutually exclusive", "agents[0].owner", `unknown server "nope"`, "endpoints[0].path", `unknown server "ghost"`, "pinning.mode"}},
		{"namespace off with two servers", `
servers: [{id: a, url: "http://a/"}, {id: b, url: "http://b/"}]
endpoints: [{path: /mcp, namespace: false}]
`, []string{"namespace: false requires exactly one server"}},
		{"anonymous agent on public listener", `
listen: 0.0.0.0:8080
agents: [{id: conf, owner: me}]
identity: {anonymous_agent: conf}
`, []string{"anonymous_agent: refused"}},
		{"bad duration", "identity: {max_token_ttl: soon}\n", []string{"invalid duration"}},
		{"policy totals", `
policy:
  totals:
    - {name: payments-today, value: payments, per: agent}
    - {name: ok, value: "", per: day}
    - {name: ok, value: payments, per: agent, window: -1h}
`, []string{"policy.totals: needs policy.dir", `policy.totals[0].name: "payments-today"`, "policy.totals[1].value: required",
			`policy.totals[1].per: "day"`, `policy.totals[2].name: "ok" is declared twice`, "policy.totals[2].window"}},
		{"missing secret file", "servers: [{id: a, url: 'http://a/', header_files: {X-Key: /nonexistent/key}}]\n", []string{"header_files[X-Key]"}},
		{"credentials in url", "servers: [{id: a, url: 'http://u:p@a/'}]\n", []string{"credentials in the URL"}},
		{"trust source problems", `
identity:
  trust_sources:
    - {name: contoso, kind: entra, tenants: [common], audience: "api://gatehouse"}
    - {name: aws-prod, kind: aws, endpoints: ["https://sts.amazonaws.com"], accounts: ["123456789012"]}
    - {name: ci, kind: oidc, issuer: "https://token.actions.githubusercontent.com", audience: gatehouse, user_tags: {accounts: accts}}
agents:
  - id: a
    owner: me
    credentials: [{source: aws-prod, tenant: "999999999999", subject: "arn:aws:iam::999999999999:role/x"}]
`, []string{`tenants: "common" is not a tenant id`, "trust_sources[1].audience: required for aws",
			"trust_sources[2].user_tags: only for oidc and entra sources with users: true"}},
		{"governance problems", `
governance:
  hold_timeout: 1h
  approvers:
    "bad name!": {groups: [ops]}
    alice: {groups: []}
  rules:
    financial: {quorum: -1, max_uses: 5000, pending_ttl: 200h}
  break_glass: {group: oncall, ttl: 5h}
  notifications:
    attempts: 50
    webhooks:
      - {id: soc, url: "ftp://x", events: [approval.nope]}
      - {id: soc, url: "https://x/", secret_file: /nonexistent/secret}
    slack:
      - {id: fin}
`, []string{"governance.hold_timeout", `approvers[bad name!]`, "approvers[alice].groups", "rules[financial].quorum", "rules[financial].max_uses",
			"rules[financial].pending_ttl", "break_glass.ttl", "notifications.attempts", "webhooks[0].url", "webhooks[0].secret_file: required",
			`unknown event "approval.nope"`, `duplicate notifier id "soc"`, "webhooks[1].secret_file", "slack[0].url_file: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml), t.TempDir())
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:1\n"))
	f.Add([]byte("servers: [{id: a, url: 'http://a/'}]\nendpoints: [{path: /x}]\n"))
	f.Add([]byte("agents:\n  - {id: a, owner: b, servers: [c]}\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := config.Parse(b, dir)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
	})
}
