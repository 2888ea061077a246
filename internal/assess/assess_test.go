package assess_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/assess"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// today is the reference date of every fixture, so that expiry findings
// do not change with the calendar.
var today = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

type goldenCase struct {
	name       string
	descriptor string // under testdata/descriptors
	config     string // under testdata/configs, "" for none
	policies   string // --policies, relative to testdata; "" for the configuration's policy.dir
	verdict    assess.Verdict
}

// goldenCases cover every branch of the tree and every hosting pattern
// (descriptors alone), and the gap checks against the example configs.
var goldenCases = []goldenCase{
	{"azure-native", "azure-native.yaml", "", "", assess.Ready},
	{"aws-native", "aws-native.yaml", "", "", assess.Ready},
	{"external-entra", "external-entra.yaml", "", "", assess.Ready},
	{"external-aws", "external-aws.yaml", "", "", assess.NotReady},
	{"external-gcp", "external-gcp.yaml", "", "", assess.Ready},
	{"hybrid", "hybrid.yaml", "", "", assess.NotReady},
	{"preview-not-acceptable", "preview-not-acceptable.yaml", "", "", assess.NotReady},
	{"preview-acceptable", "preview-acceptable.yaml", "", "", assess.ReadyWithConditions},
	{"unobservable", "unobservable.yaml", "", "", assess.NotReady},
	{"secrets", "secrets.yaml", "", "", assess.NotReady},
	{"hostile", "hostile.yaml", "", "", assess.ReadyWithConditions},
	{"external-multi", "external-multi.yaml", "", "", assess.NotReady},
	{"aws-service-unbound", "aws-service-unbound.yaml", "", "", assess.NotReady},
	{"federation-no-issuer", "federation-no-issuer.yaml", "", "", assess.NotReady},
	{"partner-data", "partner-data.yaml", "", "", assess.ReadyWithConditions},
	{"ca-workload-identity", "ca-workload-identity.yaml", "", "", assess.ReadyWithConditions},
	{"azure-native+strong", "azure-native.yaml", "strong.yaml", "", assess.ReadyWithConditions},
	{"aws-native+strong", "aws-native.yaml", "strong.yaml", "", assess.ReadyWithConditions},
	{"external-entra+strong", "external-entra.yaml", "strong.yaml", "", assess.NotReady},
	{"external-entra+strong+example-policies", "external-entra.yaml", "strong.yaml", "../../../examples/assess/policies", assess.NotReady},
	{"external-aws+strong+policies", "external-aws.yaml", "strong.yaml", "policies", assess.NotReady},
	{"unobservable+weak+policies", "unobservable.yaml", "weak.yaml", "policies", assess.NotReady},
	{"hybrid+weak", "hybrid.yaml", "weak.yaml", "", assess.NotReady},
	{"external-multi+exposed+policies", "external-multi.yaml", "exposed.yaml", "policies", assess.NotReady},
}

// run assesses a case from inside testdata, so that locations in the
// reports are short relative paths.
func (c goldenCase) run(t *testing.T) *assess.Report {
	t.Helper()
	t.Chdir("testdata")
	name := filepath.Join("descriptors", c.descriptor)
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	d, err := assess.ParseDescriptor(data, name, today)
	if err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	var gw *assess.Gateway
	if c.config != "" {
		if gw, err = assess.LoadGateway(filepath.Join("configs", c.config), c.policies); err != nil {
			t.Fatalf("loading %s: %v", c.config, err)
		}
	}
	return assess.Assess(d, gw)
}

var extensions = map[string]string{"text": "txt", "markdown": "md", "json": "json", "html": "html"}

func TestGolden(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			r := c.run(t)
			if r.Verdict != c.verdict {
				t.Errorf("verdict = %s, want %s", r.Verdict, c.verdict)
			}
			for _, format := range assess.Formats {
				var buf bytes.Buffer
				if err := r.Write(&buf, format); err != nil {
					t.Fatalf("%s: %v", format, err)
				}
				checkGolden(t, filepath.Join("golden", c.name+"."+extensions[format]), buf.Bytes())
			}
		})
	}
}

// checkGolden compares got with the golden file (relative to testdata,
// the current directory of a case) or rewrites it under -update.
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from the golden file (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

func TestInvalidDescriptorGolden(t *testing.T) {
	t.Chdir("testdata")
	data, err := os.ReadFile("descriptors/invalid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = assess.ParseDescriptor(data, "descriptors/invalid.yaml", today)
	var de *assess.DescriptorError
	if !errors.As(err, &de) {
		t.Fatalf("error = %v, want a *DescriptorError", err)
	}
	checkGolden(t, "golden/invalid.txt", []byte(err.Error()+"\n"))
}

func TestDescriptorProblems(t *testing.T) {
	const base = `version: 1
deployment: d
preview_acceptable: false
agents:
  - id: a
    owner: o@example.com
    hosting: {platform: azure}
    identity: {type: managed_identity, assignment: user_assigned, credential: managed}
    autonomy: assistive
`
	tests := []struct {
		name string
		yaml string
		want []assess.Problem // compared on Line and Msg
	}{
		{"valid", base, nil},
		{"unknown top-level key", base + "owner: x\n", []assess.Problem{{Line: 10, Msg: "field owner not found in type assess.Descriptor"}}},
		{"unknown nested key", strings.Replace(base, "autonomy: assistive", "autonomy: assistive\n    region: eu", 1), []assess.Problem{{Line: 10, Msg: "field region not found in type assess.Agent"}}},
		{"wrong type", strings.Replace(base, "preview_acceptable: false", "preview_acceptable: maybe", 1), []assess.Problem{
			{Line: 3, Msg: "cannot unmarshal !!str `maybe` into bool"},
		}},
		{"every problem at once", strings.NewReplacer("platform: azure", "platform: moon", "autonomy: assistive", "autonomy: wild").Replace(base), []assess.Problem{
			{Line: 7, Msg: `"moon" is not one of azure, aws, external`},
			{Line: 9, Msg: `"wild" is not one of assistive, semi_autonomous, autonomous`},
		}},
		{"two documents", base + "---\nversion: 1\n", []assess.Problem{{Line: 10, Msg: "more than one YAML document"}}},
		{"syntax error", "version: [1\n", []assess.Problem{{Line: 1, Msg: "did not find expected ',' or ']'"}}},
		{"empty", "", []assess.Problem{{Msg: "empty document"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := assess.ParseDescriptor([]byte(tt.yaml), "d.yaml", today)
			var got []assess.Problem
			if err != nil {
				var de *assess.DescriptorError
				if !errors.As(err, &de) {
					t.Fatalf("error %v is not a *DescriptorError", err)
				}
				for _, p := range de.Problems {
					got = append(got, assess.Problem{Line: p.Line, Msg: p.Msg})
				}
			}
			if diff := cmp.Diff(sortProblems(tt.want), sortProblems(got)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func sortProblems(ps []assess.Problem) []assess.Problem {
	out := append([]assess.Problem(nil), ps...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Line < out[i].Line || out[j].Line == out[i].Line && out[j].Msg < out[i].Msg {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestIdentityReasons: for every hosting pattern the recommendation is
// explained by the four properties the hierarchy is built on, each
// backed by a cited page where it is a statement about a cloud.
func TestIdentityReasons(t *testing.T) {
	reasons := []string{"Secretless: ", "Auditable: ", "Least privilege at the runtime boundary: ", "Clear trust anchor: "}
	seen := map[string]bool{}
	for _, c := range goldenCases {
		if c.config != "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			for _, a := range c.run(t).Agents {
				p := a.Identity.HostingPattern
				seen[p] = true
				for _, want := range reasons {
					if !slices.ContainsFunc(a.Identity.Why, func(w string) bool { return strings.HasPrefix(w, want) }) {
						t.Errorf("agent %s (%s): no %q reason in %q", a.ID, p, want, a.Identity.Why)
					}
				}
				if p != "external" && len(a.Identity.Sources) == 0 {
					t.Errorf("agent %s (%s): the reasons cite no source", a.ID, p)
				}
			}
		})
	}
	for _, p := range []string{"azure_native", "aws_native", "external_entra", "external_aws", "external_gcp", "external", "cross_cloud"} {
		if !seen[p] {
			t.Errorf("no fixture has hosting pattern %s", p)
		}
	}
}

// TestSourceBindingOnlyForServiceTrusts: aws:SourceArn and
// aws:SourceAccount apply to AWS cross-service confused-deputy cases, so
// the assessor recommends them only where an AWS service assumes a role
// for the agent — never for federation or a third party's account.
func TestSourceBindingOnlyForServiceTrusts(t *testing.T) {
	trustRe := regexp.MustCompile(`agents\[(\d+)\]\.trust\[(\d+)\]`)
	checked := 0
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			r := c.run(t)
			d := descriptorOf(t, c)
			for i, a := range r.Agents {
				service := slices.ContainsFunc(d.Agents[i].Trust, func(tr assess.Trust) bool { return tr.Method == "service" })
				var texts []string
				for _, q := range a.Answers {
					texts = append(texts, q.Controls...)
					for _, f := range q.Findings {
						texts = append(texts, f.Message+" "+f.Fix)
						if !strings.Contains(f.Message+f.Fix, "aws:Source") {
							continue
						}
						checked++
						m := trustRe.FindStringSubmatch(f.Location)
						if m == nil {
							t.Errorf("agent %s: %s recommends a source binding but is not located at a trust: %q", a.ID, f.Check, f.Location)
							continue
						}
						ai, _ := strconv.Atoi(m[1])
						ti, _ := strconv.Atoi(m[2])
						if method := d.Agents[ai].Trust[ti].Method; method != "service" {
							t.Errorf("agent %s: %s recommends aws:SourceArn/aws:SourceAccount for a %s trust", a.ID, f.Check, method)
						}
					}
				}
				if !service && strings.Contains(strings.Join(texts, "\n"), "aws:Source") {
					t.Errorf("agent %s has no service trust, but its report recommends aws:SourceArn/aws:SourceAccount", a.ID)
				}
			}
		})
	}
	if checked == 0 {
		t.Error("no fixture reaches a source-binding finding")
	}
}
