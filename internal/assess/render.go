package assess

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
)

// Formats lists the output formats Write accepts.
var Formats = []string{"text", "markdown", "json", "html"}

// Write renders the report in format: text, markdown, json or html.
func (r *Report) Write(w io.Writer, format string) error {
	switch format {
	case "text":
		return r.writeText(w)
	case "markdown":
		return r.writeMarkdown(w)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(r)
	case "html":
		return reportHTML.Execute(w, r)
	}
	return fmt.Errorf("unknown format %q (want %s)", format, strings.Join(Formats, ", "))
}

var verdictText = map[Verdict]string{
	Ready:               "READY",
	ReadyWithConditions: "READY WITH CONDITIONS",
	NotReady:            "NOT READY",
}

var verdictWords = map[Verdict]string{
	Ready:               "ready",
	ReadyWithConditions: "ready with conditions",
	NotReady:            "not ready",
}

// plural writes "1 one" or "n many".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func (s Summary) String() string {
	return fmt.Sprintf("%s, %s, %s", plural(s.Blockers, "blocker", "blockers"), plural(s.Conditions, "condition", "conditions"), plural(s.Infos, "note", "notes"))
}

// textWriter accumulates the first write error.
type textWriter struct {
	w   io.Writer
	err error
}

func (t *textWriter) f(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.w, format, args...)
	}
}

func (f Finding) label() string {
	return map[Severity]string{Blocker: "BLOCKER", Condition: "CONDITION", Info: "NOTE"}[f.Severity]
}

func (r *Report) writeText(w io.Writer) error {
	t := &textWriter{w: w}
	t.f("Gatehouse deployment assessment: %s\n", r.Deployment)
	t.f("Descriptor: %s\n", r.Descriptor)
	if r.Config != "" {
		t.f("Gateway configuration: %s\n", r.Config)
	}
	if r.Policies != "" {
		t.f("Policy directory: %s\n", r.Policies)
	}
	t.f("Verdict: %s (%s)\n\n", verdictText[r.Verdict], r.Summary)
	t.f("Implementation pattern: %s\n  %s.\n  Strengths:\n", r.Pattern.Name, r.Pattern.Why)
	for _, s := range r.Pattern.Strengths {
		t.f("    - %s\n", s)
	}
	t.f("  Constraints:\n")
	for _, s := range r.Pattern.Constraints {
		t.f("    - %s\n", s)
	}
	textFinding := func(f Finding, indent string) {
		t.f("%s[%s] %s\n", indent, f.label(), f.Message)
		if f.Location != "" {
			t.f("%s    at: %s\n", indent, f.Location)
		}
		if f.Key != "" {
			note := ""
			if f.NotConfigured {
				note = " (not configured: the gateway configuration has no key for it)"
			}
			t.f("%s    key: %s%s\n", indent, f.Key, note)
		}
		if f.Fix != "" {
			t.f("%s    fix: %s\n", indent, f.Fix)
		}
		if len(f.Sources) > 0 {
			t.f("%s    see: %s\n", indent, strings.Join(f.Sources, ", "))
		}
	}
	for _, a := range r.Agents {
		t.f("\nAgent %s (owner %s): %s\n", a.ID, orDefault(a.Owner, "none"), verdictText[a.Verdict])
		t.f("  Hosting pattern: %s\n", a.Pattern)
		t.f("  Recommended identity: %s\n", a.Identity.Recommended)
		rank := "not in the hierarchy"
		if a.Identity.Rank > 0 {
			rank = fmt.Sprintf("rank %d of %d", a.Identity.Rank, len(a.Identity.Hierarchy))
		}
		t.f("  Current identity: %s (%s)\n", a.Identity.Current, rank)
		t.f("  Identity hierarchy:\n")
		for i, h := range a.Identity.Hierarchy {
			t.f("    %d. %s\n", i+1, h)
		}
		t.f("  Why:\n")
		for _, y := range a.Identity.Why {
			t.f("    - %s\n", y)
		}
		for _, q := range a.Answers {
			t.f("\n  %d. %s\n     Answer: %s\n     Recommended controls:\n", q.Number, q.Question, q.Answer)
			for _, c := range q.Controls {
				t.f("       - %s\n", c)
			}
			t.f("     Why: %s\n", q.Why)
			for _, f := range q.Findings {
				textFinding(f, "     ")
			}
		}
	}
	if r.Config != "" {
		t.f("\nGateway configuration gaps (%s):\n", r.Config)
		if len(r.Gaps) == 0 {
			t.f("  none\n")
		}
		for _, f := range r.Gaps {
			if f.Agent != "" {
				f.Message = f.Agent + ": " + f.Message
			}
			textFinding(f, "  ")
		}
	}
	t.f("\nSources:\n")
	for _, s := range r.Sources {
		t.f("  [%s] %s\n    %s\n", s.ID, s.Title, s.URL)
	}
	return t.err
}

// mdEscape keeps descriptor text from being read as Markdown markup.
var mdEscape = strings.NewReplacer(`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`, "<", "&lt;", ">", "&gt;", "|", `\|`, "#", `\#`)

func md(s string) string { return mdEscape.Replace(s) }

func (r *Report) writeMarkdown(w io.Writer) error {
	t := &textWriter{w: w}
	t.f("# Deployment assessment: %s\n\n", md(r.Deployment))
	t.f("**Verdict: %s** (%s)\n\n", verdictWords[r.Verdict], r.Summary)
	t.f("- Descriptor: %s\n", md(r.Descriptor))
	if r.Config != "" {
		t.f("- Gateway configuration: %s\n", md(r.Config))
	}
	if r.Policies != "" {
		t.f("- Policy directory: %s\n", md(r.Policies))
	}
	t.f("\n## Implementation pattern: %s\n\n%s.\n\n**Strengths**\n\n", r.Pattern.Name, md(r.Pattern.Why))
	for _, s := range r.Pattern.Strengths {
		t.f("- %s\n", md(s))
	}
	t.f("\n**Constraints**\n\n")
	for _, s := range r.Pattern.Constraints {
		t.f("- %s\n", md(s))
	}
	mdFindings := func(fs []Finding, withAgent bool) {
		if len(fs) == 0 {
			return
		}
		if withAgent {
			t.f("\n| severity | agent | finding | where | fix |\n|---|---|---|---|---|\n")
		} else {
			t.f("\n| severity | finding | where | fix |\n|---|---|---|---|\n")
		}
		for _, f := range fs {
			msg := md(f.Message)
			if f.NotConfigured {
				msg += " *(not configured: " + md(f.Key) + ")*"
			}
			if len(f.Sources) > 0 {
				msg += " (see " + md(strings.Join(f.Sources, ", ")) + ")"
			}
			if withAgent {
				t.f("| %s | %s | %s | %s | %s |\n", f.label(), md(orDefault(f.Agent, "all")), msg, md(f.Location), md(f.Fix))
			} else {
				t.f("| %s | %s | %s | %s |\n", f.label(), msg, md(f.Location), md(f.Fix))
			}
		}
	}
	for _, a := range r.Agents {
		t.f("\n## Agent %s: %s\n\n", md(a.ID), verdictWords[a.Verdict])
		t.f("- Owner: %s\n- Hosting pattern: %s\n- Recommended identity: %s\n- Current identity: %s", md(orDefault(a.Owner, "none")), md(a.Pattern), md(a.Identity.Recommended), md(a.Identity.Current))
		if a.Identity.Rank > 0 {
			t.f(" (rank %d of %d)\n", a.Identity.Rank, len(a.Identity.Hierarchy))
		} else {
			t.f(" (not in the hierarchy)\n")
		}
		t.f("\nIdentity hierarchy:\n\n")
		for i, h := range a.Identity.Hierarchy {
			t.f("%d. %s\n", i+1, md(h))
		}
		t.f("\nWhy:\n\n")
		for _, y := range a.Identity.Why {
			t.f("- %s\n", md(y))
		}
		for _, q := range a.Answers {
			t.f("\n### %d. %s\n\n**Answer:** %s\n\n**Recommended controls:**\n\n", q.Number, md(q.Question), md(q.Answer))
			for _, c := range q.Controls {
				t.f("- %s\n", md(c))
			}
			t.f("\n**Why:** %s\n", md(q.Why))
			mdFindings(q.Findings, false)
		}
	}
	if r.Config != "" {
		t.f("\n## Gateway configuration gaps\n")
		if len(r.Gaps) == 0 {
			t.f("\nNone.\n")
		}
		mdFindings(r.Gaps, true)
	}
	t.f("\n## Sources\n\n")
	for _, s := range r.Sources {
		t.f("- `%s` [%s](%s)\n", s.ID, md(s.Title), s.URL)
	}
	return t.err
}

//go:embed report.html.tmpl
var reportTemplate string

var reportHTML = template.Must(template.New("report").Funcs(template.FuncMap{
	"verdictWords": func(v Verdict) string { return verdictWords[v] },
	"label":        func(f Finding) string { return f.label() },
	"inc":          func(i int) int { return i + 1 },
	"join":         strings.Join,
	"orNone":       func(s string) string { return orDefault(s, "none") },
}).Parse(reportTemplate))
