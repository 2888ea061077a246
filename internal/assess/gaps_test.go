package assess_test

import (
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
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:19 servers[0].command[1]", "--api-key"},
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:21 servers[1].url", "api_key"},
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:30 servers[2].env.FETCH_TOKEN", "FETCH_TOKEN"},
		{"gateway.long_lived_secret", "condition", "configs/weak.yaml:23 servers[1].header_files", "X-Api-Key"},
		{"gateway.pinning", "blocker", "configs/weak.yaml:35 pinning.mode", "pinning is off"},
		{"gateway.least_privilege", "condition", "configs/weak.yaml:10 agents[0].servers", `"web"`},
		{"gateway.agent_owner", "condition", "configs/weak.yaml:7 agents", "lead-scorer is not registered"},
		{"gateway.agent_owner", "info", "configs/weak.yaml:14 agents[2]", "forgotten-bot"},
		{"gateway.agent_hosting", "condition", "configs/weak.yaml:9 agents[0].hosting", `"azure-native"`},
		{"gateway.tool_labels", "condition", "configs/weak.yaml:26 servers[1].tools.delete_segment.labels", `without "destructive"`},
		{"gateway.approval_policy", "blocker", "descriptors/unobservable.yaml:20 agents[0].actions[1]", "destructive-change challenge tools labelled"},
		{"gateway.rate_limits", "condition", "configs/weak.yaml:2 limits", "no rate limit"},
		{"gateway.kill_switch", "blocker", "configs/weak.yaml:37 locks.fail_mode", "fails open"},
		{"gateway.kill_switch", "condition", "configs/weak.yaml:38 locks.max_stale", "2m0s"},
		{"gateway.audit_export", "blocker", "configs/weak.yaml:40 audit", "not exported"},
		{"gateway.embedded_secret", "blocker", "configs/weak.yaml:40 audit.checkpoint_webhook", "query parameter token"},
		{"gateway.traces", "condition", "configs/weak.yaml:2 telemetry", "tracing is off"},
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

// TestPlannedChecksReportNotConfigured: a control the configuration has
// no key for is reported as not configured, never as satisfied.
func TestPlannedChecksReportNotConfigured(t *testing.T) {
	r := goldenCase{descriptor: "azure-native.yaml", config: "strong.yaml"}.run(t)
	for _, c := range assess.Checks() {
		if !c.Planned {
			continue
		}
		i := slices.IndexFunc(r.Gaps, func(f assess.Finding) bool { return f.Check == c.ID })
		if i < 0 {
			t.Errorf("planned check %s reported nothing", c.ID)
			continue
		}
		if f := r.Gaps[i]; !f.NotConfigured || f.Severity == assess.Info {
			t.Errorf("planned check %s: finding %+v is not a not-configured condition", c.ID, f)
		}
	}
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
			if r.Verdict != assess.ReadyWithConditions {
				t.Errorf("verdict with the example configuration is %s, want ready_with_conditions", r.Verdict)
			}
			// The only conditions left are the controls the configuration
			// format has no key for yet.
			for _, f := range r.Findings() {
				if f.Severity != assess.Info && !f.NotConfigured {
					t.Errorf("example leaves a gap that today's configuration can close: %+v", f)
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
