package assess_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/assess"
)

// TestGapLocations pins what the gap checks find in the weak example
// configuration and where they say it is.
func TestGapLocations(t *testing.T) {
	r := goldenCase{descriptor: "unobservable.yaml", config: "weak.yaml", policies: "policies"}.run(t)
	want := []struct{ check, severity, location, contains string }{
		{"gateway.anonymous", "blocker", "configs/weak.yaml:5 identity.anonymous_agent", "campaign-runner"},
		{"gateway.token_lifetime", "condition", "configs/weak.yaml:4 identity.max_token_ttl", "12h"},
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:32 servers[0].command[1]", "--api-key"},
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:34 servers[1].url", "api_key"},
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:43 servers[2].env.FETCH_TOKEN", "FETCH_TOKEN"},
		{"gateway.long_lived_secret", "condition", "configs/weak.yaml:36 servers[1].header_files", "X-Api-Key"},
		{"gateway.pinning", "blocker", "configs/weak.yaml:48 pinning.mode", "pinning is off"},
		{"gateway.least_privilege", "condition", "configs/weak.yaml:21 agents[0].servers", `"web"`},
		{"gateway.agent_owner", "condition", "configs/weak.yaml:17 agents", "lead-scorer is not registered"},
		{"gateway.agent_owner", "info", "configs/weak.yaml:27 agents[2]", "forgotten-bot"},
		{"gateway.agent_hosting", "condition", "configs/weak.yaml:19 agents[0].hosting", `"azure-native"`},
		{"gateway.tool_labels", "condition", "configs/weak.yaml:39 servers[1].tools.delete_segment.labels", `without "destructive"`},
		{"gateway.approval_policy", "blocker", "descriptors/unobservable.yaml:20 agents[0].actions[1]", "destructive-change challenge tools labelled"},
		{"gateway.rate_limits", "condition", "configs/weak.yaml:2 limits", "no rate limit"},
		{"gateway.kill_switch", "blocker", "configs/weak.yaml:50 locks.fail_mode", "fails open"},
		{"gateway.kill_switch", "condition", "configs/weak.yaml:51 locks.max_stale", "2m0s"},
		{"gateway.audit_export", "blocker", "configs/weak.yaml:53 audit", "not exported"},
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:53 audit.checkpoint_webhook", "query parameter token"},
		{"gateway.traces", "condition", "configs/weak.yaml:2 telemetry", "tracing is off"},
		{"gateway.trust_breadth", "condition", "configs/weak.yaml:11 identity.trust_sources[0].allow_users", "long-lived access keys"},
		{"gateway.trust_breadth", "condition", "configs/weak.yaml:12 identity.trust_sources[1]", "every identity of issuer https://k8s.example.com"},
		{"gateway.agent_expiry", "blocker", "configs/weak.yaml:20 agents[0].expires", "lapsed at 2026-06-30T00:00:00Z"},
	}
	for _, w := range want {
		found := slices.ContainsFunc(r.Gaps, func(f assess.Finding) bool {
			return f.Check == w.check && string(f.Severity) == w.severity && f.Location == w.location && strings.Contains(f.Message, w.contains)
		})
		if !found {
			t.Errorf("no %s %s finding at %q mentioning %q; gaps:\n%s", w.severity, w.check, w.location, w.contains, dump(r.Gaps))
		}
	}
	// The safe environment variable and the server without credentials
	// are not findings.
	for _, f := range r.Gaps {
		if strings.Contains(f.Message, "FETCH_TIMEOUT") || strings.Contains(f.Message, "server erp") {
			t.Errorf("false positive: %+v", f)
		}
	}
}

func dump(fs []assess.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + string(f.Severity) + " " + f.Check + " @ " + f.Location + ": " + f.Message + "\n")
	}
	return b.String()
}

// TestNotConfiguredIsNeverSatisfied: a control the configuration has no
// key for — alerting rules in the monitoring system, per-call upstream
// credentials — is reported as not configured in every assessment with a
// configuration, never as satisfied; it counts against readiness only
// when the descriptor says the control is missing.
func TestNotConfiguredIsNeverSatisfied(t *testing.T) {
	for _, c := range goldenCases {
		if c.config == "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			r := c.run(t)
			var rules []assess.Finding
			for _, f := range r.Gaps {
				if f.Check == "gateway.alerts" && f.NotConfigured {
					rules = append(rules, f)
				}
				if f.NotConfigured && f.Key == "" {
					t.Errorf("not-configured finding names no key: %+v", f)
				}
			}
			if len(rules) == 0 {
				t.Fatalf("alerting rules are not reported as not configured:\n%s", dump(r.Gaps))
			}
			d := descriptorOf(t, c)
			for _, f := range rules {
				if d.Operations.Alerts != (f.Severity == assess.Info) {
					t.Errorf("operations.alerts is %v but the finding is a %s: %+v", d.Operations.Alerts, f.Severity, f)
				}
			}
			for _, f := range gapsOf(r, "gateway.long_lived_secret") {
				if !f.NotConfigured || f.Severity != assess.Condition {
					t.Errorf("a static upstream credential is not a not-configured condition: %+v", f)
				}
			}
		})
	}
}

func descriptorOf(t *testing.T, c goldenCase) *assess.Descriptor {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("descriptors", c.descriptor))
	if err != nil {
		t.Fatal(err)
	}
	d, err := assess.ParseDescriptor(data, c.descriptor, today)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAutonomyEscalatesMissingControls: the same missing control is a
// condition for an assistive agent and a blocker for broad autonomy.
func TestAutonomyEscalatesMissingControls(t *testing.T) {
	r := goldenCase{descriptor: "unobservable.yaml", config: "weak.yaml", policies: "policies"}.run(t)
	for _, check := range []string{"gateway.audit_export", "gateway.alerts"} {
		sev := map[string]assess.Severity{}
		for _, f := range r.Gaps {
			if f.Check == check {
				sev[f.Agent] = f.Severity
			}
		}
		if sev["campaign-runner"] != assess.Blocker || sev["lead-scorer"] != assess.Condition {
			t.Errorf("%s severities = %v, want blocker for the autonomous agent, condition for the assistive one", check, sev)
		}
	}
}

func TestChecksCatalogue(t *testing.T) {
	ids := map[string]bool{}
	for _, c := range assess.Checks() {
		if c.ID == "" || c.Title == "" || c.Key == "" {
			t.Errorf("check %+v lacks an id, title or key", c)
		}
		if ids[c.ID] {
			t.Errorf("duplicate check id %s", c.ID)
		}
		ids[c.ID] = true
	}
}

// TestEveryCitedSourceIsCatalogued: findings and answers cite only known
// documentation pages.
func TestEveryCitedSourceIsCatalogued(t *testing.T) {
	known := map[string]bool{}
	for _, s := range assess.Sources() {
		known[s.ID] = true
	}
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) { checkCited(t, known, c.run(t)) })
	}
}

func checkCited(t *testing.T, known map[string]bool, r *assess.Report) {
	{
		var cited []string
		for _, f := range r.Findings() {
			cited = append(cited, f.Sources...)
		}
		for _, a := range r.Agents {
			cited = append(cited, a.Identity.Sources...)
			for _, q := range a.Answers {
				cited = append(cited, q.Sources...)
			}
		}
		cited = append(cited, r.Pattern.Sources...)
		for _, id := range cited {
			if !known[id] {
				t.Errorf("cites unknown source %q", id)
			}
		}
	}
}

// TestDocs keeps docs/assess.md in step with the code: it cites every
// documentation page, names every check and the key that satisfies it.
func TestDocs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "assess.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, s := range assess.Sources() {
		if !strings.Contains(doc, s.URL) {
			t.Errorf("docs/assess.md does not cite %s (%s)", s.URL, s.ID)
		}
	}
	for _, c := range assess.Checks() {
		if !strings.Contains(doc, "`"+c.ID+"`") {
			t.Errorf("docs/assess.md does not document check %s", c.ID)
		}
		if !strings.Contains(doc, c.Key) {
			t.Errorf("docs/assess.md does not name key %q of check %s", c.Key, c.ID)
		}
	}
	for _, v := range []assess.Verdict{assess.Ready, assess.ReadyWithConditions, assess.NotReady} {
		if !strings.Contains(doc, string(v)) {
			t.Errorf("docs/assess.md does not mention verdict %s", v)
		}
	}
}

// TestExamples: the examples shipped for each hosting pattern are valid
// and give the verdicts docs/assess.md states.
func TestExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "assess")
	want := map[string]assess.Verdict{
		"azure-native.yaml":   assess.Ready,
		"aws-native.yaml":     assess.Ready,
		"external-entra.yaml": assess.Ready,
		"hybrid.yaml":         assess.Ready,
	}
	for name, v := range want {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			d, err := assess.ParseDescriptor(data, name, today)
			if err != nil {
				t.Fatal(err)
			}
			if got := assess.Assess(d, nil).Verdict; got != v {
				t.Errorf("verdict %s, want %s", got, v)
			}
			gw, err := assess.LoadGateway(filepath.Join(dir, "gatehouse.yaml"), "")
			if err != nil {
				t.Fatal(err)
			}
			r := assess.Assess(d, gw)
			if r.Verdict != assess.Ready {
				t.Errorf("verdict with the example configuration is %s, want ready", r.Verdict)
			}
			for _, f := range r.Findings() {
				if f.Severity != assess.Info {
					t.Errorf("example leaves a gap: %+v", f)
				}
			}
			if !slices.ContainsFunc(r.Gaps, func(f assess.Finding) bool { return f.Check == "gateway.approval_policy" }) && hasHighRisk(d) {
				t.Error("the example's high-risk tools were not checked against policy.dir")
			}
		})
	}
}

func hasHighRisk(d *assess.Descriptor) bool {
	for _, a := range d.Agents {
		for _, act := range a.Actions {
			if act.Risk != "" && act.Risk != "none" {
				return true
			}
		}
	}
	return false
}

func FuzzParseDescriptor(f *testing.F) {
	entries, _ := filepath.Glob(filepath.Join("testdata", "descriptors", "*.yaml"))
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := assess.ParseDescriptor(data, "fuzz.yaml", today)
		if err != nil {
			if d != nil {
				t.Fatal("a descriptor returned with an error")
			}
			return
		}
		// A descriptor that validates can always be assessed and rendered.
		r := assess.Assess(d, nil)
		for _, format := range assess.Formats {
			if err := r.Write(discard{}, format); err != nil {
				t.Fatal(err)
			}
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestSecretNames(t *testing.T) {
	dir := t.TempDir()
	cfg := `listen: 127.0.0.1:8080
agents:
  - {id: a, owner: o@example.com, servers: [s]}
servers:
  - id: s
    command: [srv, --token-file, /run/token, --verbose]
    env:
      API_KEY: k
      DB_PASSWORD: p
      TOKEN_URL: https://idp.example.com/token
      OAUTH_CLIENT_ID: abc
      SECRET_PATH: /run/secret
      LOG_LEVEL: debug
`
	path := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	gw, err := assess.LoadGateway(path, "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := assess.ParseDescriptor([]byte(`version: 1
deployment: d
preview_acceptable: false
agents:
  - {id: a, owner: o@example.com, hosting: {platform: aws}, identity: {type: iam_role, credential: temporary}, autonomy: assistive}
`), "d.yaml", today)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range assess.Assess(d, gw).Gaps {
		if f.Check == "gateway.embedded_secret" {
			got = append(got, f.Message)
		}
	}
	want := []string{
		"server s: environment variable API_KEY holds a secret inline",
		"server s: environment variable DB_PASSWORD holds a secret inline",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("embedded secrets (-want +got):\n%s", diff)
	}
}

// inlineGateway loads a configuration written to a temporary directory,
// with files (relative path: contents) beside it.
func inlineGateway(t *testing.T, cfg string, files map[string]string) *assess.Gateway {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	gw, err := assess.LoadGateway(path, "")
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

func inlineDescriptor(t *testing.T, y string) *assess.Descriptor {
	t.Helper()
	d, err := assess.ParseDescriptor([]byte(y), "d.yaml", today)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func gapsOf(r *assess.Report, check string) []assess.Finding {
	var out []assess.Finding
	for _, f := range r.Gaps {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// TestAgentExpiry: agents[].expires is judged against the reference date
// (--today) as the gateway judges it — a date lapses at its start, 00:00
// UTC — and against the descriptor's review date, valid through its end.
func TestAgentExpiry(t *testing.T) {
	tests := []struct {
		name            string
		config, review  string // agents[0].expires, the descriptor's expires
		severity, words string // "" severity: no finding
	}{
		{"no expiry", "", "2027-06-30", "condition", "registered without an expiry"},
		{"lapses today", "2026-11-25", "2026-11-25", "blocker", "lapsed at 2026-11-25T00:00:00Z"},
		{"lapsed long ago", "2025-01-01T12:00:00Z", "", "blocker", "lapsed at 2025-01-01T12:00:00Z"},
		{"lapses tomorrow", "2026-11-26", "2026-11-26", "", ""},
		{"after the review date", "2027-09-30", "2027-06-30", "condition", "after the descriptor's review date 2027-06-30"},
		{"within the review day", "2027-06-30T23:00:00Z", "2027-06-30", "", ""},
		{"at the end of the review day", "2027-07-01", "2027-06-30", "", ""},
		{"no review date", "2030-01-01", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := "agents:\n  - {id: a, owner: o@example.com, hosting: aws-native, servers: [s]"
			if tt.config != "" {
				cfg += ", expires: " + tt.config
			}
			cfg += "}\nservers:\n  - {id: s, url: https://s.example.com/mcp}\n"
			desc := "version: 1\ndeployment: d\npreview_acceptable: false\nagents:\n  - {id: a, owner: o@example.com, hosting: {platform: aws}, identity: {type: iam_role, credential: temporary}, actions: [{tool: s__read}], autonomy: assistive"
			if tt.review != "" {
				desc += ", expires: " + tt.review
			}
			desc += "}\n"
			fs := gapsOf(assess.Assess(inlineDescriptor(t, desc), inlineGateway(t, cfg, nil)), "gateway.agent_expiry")
			switch {
			case tt.severity == "" && len(fs) > 0:
				t.Errorf("unexpected findings:\n%s", dump(fs))
			case tt.severity != "" && (len(fs) != 1 || string(fs[0].Severity) != tt.severity || !strings.Contains(fs[0].Message, tt.words)):
				t.Errorf("want one %s mentioning %q, got:\n%s", tt.severity, tt.words, dump(fs))
			}
			for _, f := range fs {
				if f.NotConfigured || f.Key != "agents[].expires" || !strings.Contains(f.Location, "agents[0].expires") {
					t.Errorf("finding %+v: want key agents[].expires, located at agents[0].expires, configured", f)
				}
			}
		})
	}
}

// oneAgent is a descriptor with one agent "a" of the given identity
// (YAML flow mapping) that calls s__read.
func oneAgent(t *testing.T, identity string, previewOK bool) *assess.Descriptor {
	t.Helper()
	platform := "azure"
	switch {
	case strings.Contains(identity, "iam_"):
		platform = "aws"
	case strings.Contains(identity, "workload"):
		platform = "external"
	}
	return inlineDescriptor(t, fmt.Sprintf(`version: 1
deployment: d
preview_acceptable: %v
agents:
  - {id: a, owner: o@example.com, expires: 2027-01-31, hosting: {platform: %s}, identity: %s, actions: [{tool: s__read}], autonomy: assistive}
`, previewOK, platform, identity))
}

const (
	managedIdentity = "{type: managed_identity, assignment: user_assigned, credential: managed}"
	iamRole         = "{type: iam_role, credential: temporary}"
	k8sWorkload     = "{type: workload, credential: federated}"
	agentID         = "{type: entra_agent_id, credential: federated}"
	tenant          = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

// trustConfig is a configuration with the given trust sources and agent
// "a" registered with the given credentials (YAML flow sequences).
func trustConfig(sources, creds string) string {
	return `identity:
  trust_sources: ` + sources + `
agents:
  - {id: a, owner: o@example.com, expires: 2027-01-31, servers: [s], credentials: ` + creds + `}
servers:
  - {id: s, url: https://s.example.com/mcp}
`
}

const (
	entraSource = `{name: contoso, kind: entra, tenants: [` + tenant + `], audience: api://gatehouse}`
	awsSource   = `{name: aws-prod, kind: aws, audience: gatehouse, endpoints: [https://sts.amazonaws.com], accounts: ["111122223333"]}`
	k8sSource   = `{name: eks, kind: kubernetes, issuer: https://oidc.eks.example.com, audience: gatehouse, subject_prefixes: ["system:serviceaccount:agents:"]}`
)

func TestTrustSources(t *testing.T) {
	tests := []struct {
		name, identity, sources, creds string
		want                           string // "" none; else a substring of the one condition
	}{
		{"no trust sources", managedIdentity, "[]", "[]", "(identity.trust_sources is empty)"},
		{"no credential", managedIdentity, "[" + entraSource + "]", "[]", "no federated credential: the gateway cannot verify its managed_identity"},
		{"managed identity through entra", managedIdentity, "[" + entraSource + "]", "[{source: contoso, tenant: " + tenant + ", subject: b5f1c0f6-6a3c-4bb3-8f5e-6c1d1e3f2a10}]", ""},
		{"managed identity through kubernetes", managedIdentity, "[" + k8sSource + "]", "[{source: eks, subject: system:serviceaccount:agents:a}]", "source eks is of kind kubernetes"},
		{"tenant the source does not trust", managedIdentity, "[" + entraSource + "]", "[{source: contoso, tenant: 00000000-0000-0000-0000-000000000001, subject: x}]", "does not trust tenant 00000000-0000-0000-0000-000000000001"},
		{"role through aws", iamRole, "[" + awsSource + "]", `[{source: aws-prod, tenant: "111122223333", subject: "arn:aws:iam::111122223333:role/a"}]`, ""},
		{"account the source does not trust", iamRole, "[" + awsSource + "]", `[{source: aws-prod, tenant: "444455556666", subject: "arn:aws:iam::444455556666:role/a"}]`, "does not trust account 444455556666"},
		{"role through the EKS issuer", iamRole, "[" + k8sSource + "]", "[{source: eks, subject: system:serviceaccount:agents:a}]", ""},
		{"one credential fits", k8sWorkload, "[" + entraSource + ", " + k8sSource + "]", "[{source: contoso, tenant: " + tenant + ", subject: x}, {source: eks, subject: system:serviceaccount:agents:a}]", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := assess.Assess(oneAgent(t, tt.identity, false), inlineGateway(t, trustConfig(tt.sources, tt.creds), nil))
			fs := gapsOf(r, "gateway.trust_sources")
			switch {
			case tt.want == "" && len(fs) > 0:
				t.Errorf("unexpected findings:\n%s", dump(fs))
			case tt.want != "" && (len(fs) != 1 || fs[0].Severity != assess.Condition || !strings.Contains(fs[0].Message, tt.want) || fs[0].NotConfigured):
				t.Errorf("want one configured condition mentioning %q, got:\n%s", tt.want, dump(fs))
			}
		})
	}
}

func TestTrustBreadth(t *testing.T) {
	tests := []struct {
		name, source string
		want         []string // "severity location-suffix message-substring"
	}{
		{"narrow kubernetes", k8sSource, nil},
		{"kubernetes without a subject rule", `{name: k, kind: kubernetes, issuer: https://k8s.example.com, audience: gatehouse}`,
			[]string{"condition identity.trust_sources[0] admits every identity of issuer https://k8s.example.com"}},
		{"kubernetes prefix without its colon", `{name: k, kind: kubernetes, issuer: https://k8s.example.com, audience: gatehouse, subject_prefixes: ["system:serviceaccount:agents"]}`,
			[]string{`condition identity.trust_sources[0].subject_prefixes[0] every namespace whose name starts with "agents"`}},
		{"kubernetes prefix over all namespaces", `{name: k, kind: kubernetes, issuer: https://k8s.example.com, audience: gatehouse, subject_prefixes: ["system:serviceaccount:"]}`,
			[]string{"condition identity.trust_sources[0].subject_prefixes[0] every namespace"}},
		{"kubernetes prefix that matches nothing", `{name: k, kind: kubernetes, issuer: https://k8s.example.com, audience: gatehouse, subject_prefixes: ["repo:acme/"]}`, nil},
		{"oidc with an empty prefix", `{name: o, kind: oidc, issuer: https://idp.example.com, audience: gatehouse, subject_prefixes: [""]}`,
			[]string{"condition identity.trust_sources[0].subject_prefixes[0] matches every subject"}},
		{"oidc with exact subjects", `{name: o, kind: oidc, issuer: https://token.actions.githubusercontent.com, audience: gatehouse, subjects: ["repo:acme/agents:environment:prod"]}`, nil},
		{"oidc with a prefix", `{name: o, kind: oidc, issuer: https://token.actions.githubusercontent.com, audience: gatehouse, subject_prefixes: ["repo:acme/agents:"]}`, nil},
		{"users' identity provider", `{name: corp, kind: oidc, issuer: https://login.example.com, audience: gatehouse, users: true}`, nil},
		{"spiffe over the trust domain", `{name: sp, kind: spiffe, trust_domain: example.org, audience: gatehouse, workload_api: "unix:///run/spire.sock", id_prefixes: ["spiffe://example.org/"]}`,
			[]string{"condition identity.trust_sources[0].id_prefixes[0] every workload of the trust domain"}},
		{"spiffe prefix without its slash", `{name: sp, kind: spiffe, trust_domain: example.org, audience: gatehouse, workload_api: "unix:///run/spire.sock", id_prefixes: ["spiffe://example.org/agents"]}`,
			[]string{"condition identity.trust_sources[0].id_prefixes[0] path boundary"}},
		{"spiffe without ids", `{name: sp, kind: spiffe, trust_domain: example.org, audience: gatehouse, workload_api: "unix:///run/spire.sock"}`,
			[]string{"condition identity.trust_sources[0] every identity of trust domain example.org"}},
		{"narrow aws", awsSource, nil},
		{"aws without accounts; users allowed", `{name: a, kind: aws, audience: gatehouse, endpoints: [https://sts.amazonaws.com], allow_users: true}`,
			[]string{"condition identity.trust_sources[0] every AWS account", "condition identity.trust_sources[0].allow_users long-lived access keys"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := assess.Assess(oneAgent(t, managedIdentity, false), inlineGateway(t, trustConfig("["+tt.source+"]", "[]"), nil))
			fs := gapsOf(r, "gateway.trust_breadth")
			if len(fs) != len(tt.want) {
				t.Errorf("got %d findings, want %d:\n%s", len(fs), len(tt.want), dump(fs))
			}
			for _, w := range tt.want {
				sev, rest, _ := strings.Cut(w, " ")
				loc, words, _ := strings.Cut(rest, " ")
				if !slices.ContainsFunc(fs, func(f assess.Finding) bool {
					return string(f.Severity) == sev && strings.HasSuffix(f.Location, " "+loc) && strings.Contains(f.Message, words) && f.Agent == "" && !f.NotConfigured
				}) {
					t.Errorf("no %s at %s mentioning %q:\n%s", sev, loc, words, dump(fs))
				}
			}
		})
	}
}

func TestPreviewIdentity(t *testing.T) {
	cfg := trustConfig("["+entraSource+", "+k8sSource+"]", "[{source: eks, subject: system:serviceaccount:agents:a}, {source: contoso, tenant: "+tenant+", subject: x}]")
	tests := []struct {
		name      string
		identity  string
		previewOK bool
		want      string
	}{
		{"Agent ID, preview not acceptable", agentID, false, "on its Microsoft Entra Agent ID identity, which is in preview, and preview is not acceptable"},
		{"Agent ID under its Conditional Access", "{type: entra_agent_id, credential: federated, conditional_access: agent_id}", false, "under Conditional Access for Agent ID, both in preview"},
		{"Agent ID, preview acceptable", agentID, true, ""},
		{"service principal", "{type: service_principal, credential: federated}", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := gapsOf(assess.Assess(oneAgent(t, tt.identity, tt.previewOK), inlineGateway(t, cfg, nil)), "gateway.preview_identity")
			switch {
			case tt.want == "" && len(fs) > 0:
				t.Errorf("unexpected findings:\n%s", dump(fs))
			case tt.want != "" && (len(fs) != 1 || fs[0].Severity != assess.Blocker || !strings.Contains(fs[0].Message, tt.want) || !strings.HasSuffix(fs[0].Location, "agents[0].credentials[1]") || len(fs[0].Sources) == 0):
				t.Errorf("want one cited blocker at the Entra credential mentioning %q, got:\n%s", tt.want, dump(fs))
			}
		})
	}
}

const transferPolicy = `@id("transfer")
@challenge("finance")
@risk("financial")
forbid (principal, action == Gatehouse::Action::"call_tool", resource == Gatehouse::Tool::"bank__transfer");
`

// bankAgent is a descriptor whose agent "a" (owner owner@example.com)
// calls bank__transfer, a financial tool the group finance approves.
func bankAgent(t *testing.T, autonomy string, alerts bool) *assess.Descriptor {
	return inlineDescriptor(t, fmt.Sprintf(`version: 1
deployment: d
preview_acceptable: false
operations: {logs: true, alerts: %v, kill_switch: true, rollback: true, playbooks: [p], incident_owner: o}
agents:
  - {id: a, owner: owner@example.com, expires: 2027-01-31, hosting: {platform: aws}, identity: {type: iam_role, credential: temporary},
     actions: [{tool: bank__transfer, risk: financial, approval: finance}], autonomy: %s}
`, alerts, autonomy))
}

// bankConfig registers agent "a" with the bank server, the transfer
// policy and the given governance section (YAML, indented two spaces) and
// telemetry section.
func bankConfig(t *testing.T, governance, telemetry string) *assess.Gateway {
	cfg := `agents:
  - {id: a, owner: owner@example.com, expires: 2027-01-31, servers: [bank]}
servers:
  - {id: bank, url: https://bank.example.com/mcp, tools: {transfer: {labels: [financial]}}}
policy:
  dir: policies
governance:
` + governance + "\ntelemetry:\n" + telemetry + "\n"
	return inlineGateway(t, cfg, map[string]string{
		"policies/approvals.cedar": transferPolicy,
		"secrets/webhook.key":      "example-not-real\n",
		"secrets/slack.url":        "https://hooks.slack.example.com/services/EXAMPLE\n",
		"secrets/metrics.token":    "example-not-real\n",
	})
}

func TestApprovers(t *testing.T) {
	tests := []struct {
		name, governance string
		want             []string // "severity message-substring"
	}{
		{"no approvers", "  hold_timeout: 0s", []string{"blocker has 0 eligible human approvers and risk class financial needs 1"}},
		{"one approver", "  approvers: {lena: {groups: [finance]}}", nil},
		{"approver of another group", "  approvers: {lena: {groups: [ops]}}", []string{"blocker has 0 eligible"}},
		{"the owner only", "  approvers: {owner@example.com: {groups: [finance]}}", []string{"blocker not counted: owner@example.com (the agent's owner)"}},
		{"the owner, allowed", "  approvers: {owner@example.com: {groups: [finance]}}\n  rules: {financial: {owner_may_approve: true}}", nil},
		{"the agent itself", "  approvers: {a: {groups: [finance]}}", []string{"blocker not counted: a (the agent itself)"}},
		{"an automation", "  approvers: {deploy-bot: {groups: [finance], non_human: true}}", []string{"blocker not counted: deploy-bot (not human)"}},
		{"two-person rule, one person", "  approvers: {lena: {groups: [finance]}}\n  rules: {financial: {quorum: 2}}", []string{"blocker has 1 eligible human approver (lena) and risk class financial needs 2"}},
		{"default rule applies", "  approvers: {lena: {groups: [finance]}}\n  rules: {default: {quorum: 2}}", []string{"blocker needs 2"}},
		{"another class's rule does not", "  approvers: {lena: {groups: [finance]}}\n  rules: {privilege: {quorum: 2}}", nil},
		{"fresh authentication", "  approvers: {lena: {groups: [finance]}}\n  rules: {financial: {fresh_auth: 5m}}", []string{"blocker admin credential never satisfy"}},
		{"authentication context", "  approvers: {lena: {groups: [finance]}}\n  rules: {default: {acr: [c1]}}", []string{"blocker fresh or stronger authentication"}},
		{"several uses", "  approvers: {lena: {groups: [finance]}}\n  rules: {financial: {max_uses: 3}}", []string{"condition allows 3 identical calls"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := gapsOf(assess.Assess(bankAgent(t, "semi_autonomous", true), bankConfig(t, tt.governance, "  service_name: g")), "gateway.approvers")
			if len(fs) != len(tt.want) {
				t.Errorf("got %d findings, want %d:\n%s", len(fs), len(tt.want), dump(fs))
			}
			for _, w := range tt.want {
				sev, words, _ := strings.Cut(w, " ")
				if !slices.ContainsFunc(fs, func(f assess.Finding) bool {
					return string(f.Severity) == sev && strings.Contains(f.Message, words) && f.Agent == "a" && strings.Contains(f.Location, "governance")
				}) {
					t.Errorf("no %s mentioning %q:\n%s", sev, words, dump(fs))
				}
			}
		})
	}
}

func TestAlerts(t *testing.T) {
	const someone = "  approvers: {lena: {groups: [finance]}}\n"
	tests := []struct {
		name, autonomy      string
		alerts              bool // the descriptor's operations.alerts
		governance, metrics string
		want                []string // "severity [not_configured] message-substring"
	}{
		{"nobody is told", "semi_autonomous", true, someone, "", []string{
			"condition approvers are not told", "info not_configured rules in the monitoring system", "info only with the admin credential"}},
		{"nobody is told, broad autonomy", "autonomous", true, someone, "  metrics_token_file: secrets/metrics.token", []string{
			"blocker approvers are not told", "info not_configured rules in the monitoring system"}},
		{"Slack by default", "semi_autonomous", true, someone + "  notifications: {slack: [{url_file: secrets/slack.url}]}", "  metrics_token_file: secrets/metrics.token", []string{
			"info not_configured rules in the monitoring system"}},
		{"a webhook for decisions only", "semi_autonomous", true, someone + "  notifications: {webhooks: [{url: https://hooks.example.com/a, secret_file: secrets/webhook.key, events: [approval.approved]}]}", "  metrics_token_file: secrets/metrics.token", []string{
			"condition approvers are not told", "info not_configured rules in the monitoring system"}},
		{"break-glass heard by no one", "semi_autonomous", true, someone + "  break_glass: {group: oncall}\n  notifications: {slack: [{url_file: secrets/slack.url, events: [approval.requested]}]}", "  metrics_token_file: secrets/metrics.token", []string{
			"condition break-glass self-approvals by group oncall alert no one", "info not_configured rules in the monitoring system"}},
		{"break-glass heard by a webhook", "semi_autonomous", true, someone + "  break_glass: {group: oncall}\n  notifications: {webhooks: [{url: https://hooks.example.com/a, secret_file: secrets/webhook.key}]}", "  metrics_token_file: secrets/metrics.token", []string{
			"info not_configured rules in the monitoring system"}},
		{"no alerting rules", "semi_autonomous", false, someone + "  notifications: {slack: [{url_file: secrets/slack.url}]}", "  metrics_token_file: secrets/metrics.token", []string{
			"condition not_configured the descriptor says no alerts exist"}},
		{"no alerting rules, broad autonomy", "autonomous", false, someone + "  notifications: {slack: [{url_file: secrets/slack.url}]}", "  metrics_token_file: secrets/metrics.token", []string{
			"blocker not_configured not ready for broad production autonomy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := gapsOf(assess.Assess(bankAgent(t, tt.autonomy, tt.alerts), bankConfig(t, tt.governance, tt.metrics+"\n  service_name: g")), "gateway.alerts")
			if len(fs) != len(tt.want) {
				t.Errorf("got %d findings, want %d:\n%s", len(fs), len(tt.want), dump(fs))
			}
			for _, w := range tt.want {
				sev, words, _ := strings.Cut(w, " ")
				nc := strings.HasPrefix(words, "not_configured ")
				words = strings.TrimPrefix(words, "not_configured ")
				if !slices.ContainsFunc(fs, func(f assess.Finding) bool {
					return string(f.Severity) == sev && f.NotConfigured == nc && strings.Contains(f.Message, words)
				}) {
					t.Errorf("no %s (not configured: %v) mentioning %q:\n%s", sev, nc, words, dump(fs))
				}
			}
		})
	}
}

// TestOwnerlessAgent: the gateway refuses a configuration that registers
// an agent without an owner, so a missing owner is found through the
// descriptor: question 6 (a blocker) with or without a configuration,
// and, with one, a gap that says what the configuration registers.
func TestOwnerlessAgent(t *testing.T) {
	if _, err := assess.LoadGateway(filepath.Join("testdata", "configs", "ownerless.yaml"), ""); err == nil || !strings.Contains(err.Error(), "agents[0].owner: every agent needs an accountable owner") {
		t.Errorf("loading a configuration with an ownerless agent: err = %v, want the owner refused", err)
	}
	d := inlineDescriptor(t, `version: 1
deployment: d
preview_acceptable: false
agents:
  - id: a
    expires: 2027-01-31
    hosting: {platform: aws}
    identity: {type: iam_role, credential: temporary}
    autonomy: assistive
`)
	lifecycle := func(r *assess.Report) []assess.Finding {
		var out []assess.Finding
		for _, f := range r.Findings() {
			if f.Check == "lifecycle.owner" {
				out = append(out, f)
			}
		}
		return out
	}
	tests := []struct {
		name   string
		config string // "" for none
		gap    string // substring of the one gateway.agent_owner finding, "" for none
	}{
		{"descriptor alone", "", ""},
		{"registered with an owner", "agents:\n  - {id: a, owner: o@example.com}\nservers:\n  - {id: s, url: https://s.example.com/mcp}\n", `names no owner for the agent; the configuration registers "o@example.com"`},
		{"not registered", "agents:\n  - {id: b, owner: o@example.com}\nservers:\n  - {id: s, url: https://s.example.com/mcp}\n", "the descriptor names no owner either"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gw *assess.Gateway
			if tt.config != "" {
				gw = inlineGateway(t, tt.config, nil)
			}
			r := assess.Assess(d, gw)
			if fs := lifecycle(r); len(fs) != 1 || fs[0].Severity != assess.Blocker || fs[0].Location != "d.yaml:5 agents[0].owner" {
				t.Errorf("question 6: want one blocker at d.yaml:5 agents[0].owner, got:\n%s", dump(fs))
			}
			if r.Verdict != assess.NotReady {
				t.Errorf("verdict %s, want not_ready", r.Verdict)
			}
			var gaps []assess.Finding
			for _, f := range gapsOf(r, "gateway.agent_owner") {
				if f.Agent == "a" {
					gaps = append(gaps, f)
				}
			}
			if tt.gap == "" {
				if len(gaps) > 0 {
					t.Errorf("unexpected gaps:\n%s", dump(gaps))
				}
				return
			}
			if len(gaps) != 1 || !strings.Contains(gaps[0].Message, tt.gap) {
				t.Errorf("want one gateway.agent_owner gap mentioning %q, got:\n%s", tt.gap, dump(gaps))
			}
		})
	}
}
