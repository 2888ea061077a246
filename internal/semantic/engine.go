package semantic

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/semantic/injection"
	"github.com/gatehouse/gatehouse/internal/semantic/pii"
	"github.com/gatehouse/gatehouse/internal/semantic/secret"
	"github.com/gatehouse/gatehouse/internal/semantic/textnorm"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Input is one text to screen.
type Input struct {
	// Surface is where the text arrives; required.
	Surface Surface
	// Text is the text to screen.
	Text string
	// SessionID identifies the session; when set, the canary that
	// NewCanary derives for it is looked for in outputs.
	SessionID string
	// Canaries are further canary tokens planted in this session.
	Canaries []string
	// Tool names the tool whose arguments or result this is (for logs).
	Tool string
}

// Finding is one thing a detector found.
type Finding struct {
	// Detector is a built-in Detector name or "remote:<name>".
	Detector string `json:"detector"`
	// Kind is a stable identifier of what was found: "prompt_injection",
	// "instruction_override", "prompt_leak", "unrestricted_ai", "role_play", "role_marker",
	// "encoded_payload", "tag_characters", "bidi_control",
	// "invisible_characters", "confusables", "secret", "pii",
	// "canary_leak", "exfil_image", "exfil_link", "detector_error".
	Kind string `json:"kind"`
	// Rule refines Kind: a gitleaks rule id, a pii.Type, an encoding.
	Rule string `json:"rule,omitempty"`
	// Score is the detector's confidence in [0, 1].
	Score float64 `json:"score"`
	// Start and End are byte offsets in Input.Text, or -1 when the finding
	// has no exact span (for example after normalisation changed the text).
	Start int `json:"start"`
	End   int `json:"end"`
	// Action is what the engine did about the finding.
	Action Action `json:"action"`
}

// Result is the outcome of screening one input.
type Result struct {
	// Verdict is the semantic layer's verdict, with reasons and
	// obligations (redact, datamark, label).
	Verdict verdict.Verdict `json:"verdict"`
	// Risk is the injection risk: the highest score among injection-class
	// findings (classifier, heuristics, decoded payloads, remotes).
	Risk float64 `json:"risk"`
	// Findings lists every finding, ordered by detector then position.
	Findings []Finding `json:"findings"`
	// Labels are the session labels to raise.
	Labels []verdict.Label `json:"labels,omitempty"`
	// RedactedText is Input.Text with redacted spans masked; empty when
	// nothing was redacted.
	RedactedText string `json:"redacted_text,omitempty"`
	// Spotlight is the datamarked text when Config.Datamark is on and the
	// surface is tool_output or document (Surface.Datamarked), marked with
	// the session's marker (Engine.Marker) when Input.SessionID is set,
	// else with one drawn at random.
	Spotlight *Spotlight `json:"spotlight,omitempty"`
	// Context summarises the findings for policy (Cedar context).
	Context Context `json:"context"`
}

// Redacted reports whether any span was masked.
func (r Result) Redacted() bool { return r.RedactedText != "" }

// RedactParts applies the result's redactions to the parts of a text that
// was screened as strings.Join(parts, sep), so that a caller that screens
// several strings together (the fields of a JSON document) can mask each
// in place. It returns a new slice; a part without a redacted span is
// returned unchanged, and a span that crosses a separator is masked in
// each part it touches. parts and sep must be those the text was joined
// from.
func (r Result) RedactParts(parts []string, sep string) []string {
	out := slices.Clone(parts)
	if !r.Redacted() {
		return out
	}
	var red []Finding
	for _, f := range r.Findings {
		if f.Action == ActionRedact && f.Start >= 0 && f.Start < f.End {
			red = append(red, f)
		}
	}
	off := 0
	for i, p := range parts {
		var mine []Finding
		for _, f := range red {
			if f.Start < off+len(p) && f.End > off {
				f.Start, f.End = max(f.Start, off)-off, min(f.End, off+len(p))-off
				mine = append(mine, f)
			}
		}
		if m := redactSpans(p, mine); m != "" {
			out[i] = m
		}
		off += len(p) + len(sep)
	}
	return out
}

// Context is the flat summary of a Result, ready for a policy context.
// Scores are integers in per-mille (0–1000) because Cedar has no
// floating-point type. (The MCP gateway passes Kinds and Scores on to its
// policies as context.findings {kinds, detectors, max_score}; see
// docs/semantic.md.)
type Context struct {
	// Outcome is "allow", "challenge" or "block".
	Outcome string `json:"outcome"`
	// Risk is Result.Risk in per-mille.
	Risk int64 `json:"risk"`
	// Scores maps detector name to its highest score in per-mille.
	Scores map[string]int64 `json:"scores"`
	// Kinds lists the distinct finding kinds, sorted. The classifier and
	// remote adapters answer on every text: their findings are listed
	// only from a score of 0.5 (below, they show in Scores only).
	Kinds []string `json:"kinds"`
	// Rules lists the distinct rules (secret rule ids, PII types,
	// encodings, remote categories) of those findings, sorted.
	Rules []string `json:"rules"`
	// Labels lists the labels raised.
	Labels []string `json:"labels"`
	// Failed lists detectors that failed, sorted.
	Failed []string `json:"failed"`
}

// Record returns the context as a map of Cedar-compatible values (string,
// int64, []any, map[string]any), ready for a Cedar context record.
func (c Context) Record() map[string]any {
	scores := make(map[string]any, len(c.Scores))
	for k, v := range c.Scores {
		scores[k] = v
	}
	list := func(xs []string) []any {
		out := make([]any, len(xs))
		for i, x := range xs {
			out[i] = x
		}
		return out
	}
	return map[string]any{
		"outcome": c.Outcome,
		"risk":    c.Risk,
		"scores":  scores,
		"kinds":   list(c.Kinds),
		"rules":   list(c.Rules),
		"labels":  list(c.Labels),
		"failed":  list(c.Failed),
	}
}

// ErrSurface reports an Input whose Surface is not one of Surfaces.
var ErrSurface = errors.New("semantic: unknown surface")

// Engine screens text. It is immutable after New and safe for concurrent
// use.
type Engine struct {
	log        *slog.Logger
	thresholds map[Surface]Threshold
	disable    map[Detector]bool
	failModes  map[Detector]FailMode
	secretAct  map[Surface]Action
	piiAct     map[pii.Type]Action
	piiScan    *pii.Scanner
	hosts      []string
	imgAction  Action
	linkAction Action
	datamark   bool
	canaryKey  []byte
	model      *injection.Model
	secrets    *secret.Scanner
	remotes    []*remote
	now        func() time.Time
	// faults make built-in detectors fail, for tests of the fail modes
	// (export_test.go); nil in production.
	faults map[Detector]func() error
}

// New builds an Engine. It loads the classifier weights and compiles the
// secret rules once; it fails if either cannot be loaded or cfg is invalid.
func New(cfg Config) (*Engine, error) {
	e := &Engine{
		log:        cfg.Logger,
		thresholds: map[Surface]Threshold{},
		disable:    map[Detector]bool{},
		failModes:  map[Detector]FailMode{},
		secretAct:  map[Surface]Action{},
		piiAct:     map[pii.Type]Action{},
		piiScan:    &pii.Scanner{Region: cfg.PIIRegion},
		hosts:      slices.Clone(cfg.AllowedHosts),
		imgAction:  cmpOr(cfg.ExfilImageAction, ActionBlock),
		linkAction: cmpOr(cfg.ExfilLinkAction, ActionChallenge),
		datamark:   cfg.Datamark,
		canaryKey:  slices.Clone(cfg.CanaryKey),
		model:      cfg.Model,
		secrets:    cfg.Secrets,
		now:        cfg.Now,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	for _, s := range Surfaces {
		t := DefaultThresholds[s]
		if o, ok := cfg.Thresholds[s]; ok {
			t.Label = cmpOr(o.Label, t.Label)
			t.Challenge = cmpOr(o.Challenge, t.Challenge)
			t.Block = cmpOr(o.Block, t.Block)
		}
		e.thresholds[s] = t
		e.secretAct[s] = cmpOr(cfg.SecretActions[s], DefaultSecretActions[s])
	}
	for s, t := range cfg.Thresholds {
		if !s.valid() {
			return nil, fmt.Errorf("thresholds: %w %q", ErrSurface, s)
		}
		for _, x := range []float64{t.Label, t.Challenge, t.Block} {
			if x < 0 || math.IsNaN(x) {
				return nil, fmt.Errorf("thresholds for %s: %v is not a score", s, x)
			}
		}
	}
	for d, off := range cfg.Disable {
		if !slices.Contains(Detectors, d) {
			return nil, fmt.Errorf("disable: unknown detector %q", d)
		}
		e.disable[d] = off
	}
	for _, d := range Detectors {
		m := cmpOr(cfg.FailModes[d], FailClosed)
		if !validFailMode(m) {
			return nil, fmt.Errorf("fail mode for %s: unknown mode %q", d, m)
		}
		e.failModes[d] = m
	}
	for _, t := range pii.Types {
		e.piiAct[t] = cmpOr(cfg.PIIActions[t], DefaultPIIActions[t])
	}
	// Phone numbers past the scanner's validation budget are reported
	// unvalidated when they must be masked (or stop the text), so that a
	// text with many numbers leaks none.
	switch e.piiAct[pii.Phone] {
	case ActionRedact, ActionChallenge, ActionBlock:
		e.piiScan.Unvalidated = true
	}
	for t, a := range cfg.PIIActions {
		if !slices.Contains(pii.Types, t) {
			return nil, fmt.Errorf("pii actions: unknown type %q", t)
		}
		if !validAction(a) {
			return nil, fmt.Errorf("pii actions: unknown action %q", a)
		}
	}
	for _, a := range []Action{e.imgAction, e.linkAction} {
		if !validAction(a) {
			return nil, fmt.Errorf("exfil action: unknown action %q", a)
		}
	}
	for _, a := range e.secretAct {
		if !validAction(a) {
			return nil, fmt.Errorf("secret action: unknown action %q", a)
		}
	}
	if len(e.canaryKey) == 0 {
		e.canaryKey = make([]byte, 32)
		rand.Read(e.canaryKey)
	}
	if e.model == nil && !e.disable[DetectInjection] {
		m, err := injection.Default()
		if err != nil {
			return nil, fmt.Errorf("loading injection model: %w", err)
		}
		e.model = m
	}
	if e.secrets == nil && !e.disable[DetectSecrets] {
		s, err := secret.Default()
		if err != nil {
			return nil, fmt.Errorf("loading secret rules: %w", err)
		}
		e.secrets = s
	}
	for i, rc := range cfg.Remotes {
		r, err := newRemote(rc, e.now)
		if err != nil {
			return nil, fmt.Errorf("remote %d: %w", i, err)
		}
		e.remotes = append(e.remotes, r)
	}
	return e, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func validAction(a Action) bool {
	switch a {
	case ActionReport, ActionLabel, ActionRedact, ActionChallenge, ActionBlock:
		return true
	}
	return false
}

func validFailMode(m FailMode) bool {
	return m == FailClosed || m == FailOpen || m == FailChallenge
}

// Screen screens one input. On error (an unknown surface, a cancelled
// context) the returned Result still carries a Block verdict, so a caller
// that ignores the error does not let the text through. Detector failures
// are not errors: they become findings that apply the detector's fail mode.
func (e *Engine) Screen(ctx context.Context, in Input) (Result, error) {
	if !in.Surface.valid() {
		return denied("semantic.bad_surface", "unknown surface"), fmt.Errorf("%w %q", ErrSurface, in.Surface)
	}
	if err := ctx.Err(); err != nil {
		return denied("semantic.cancelled", "screening cancelled"), err
	}
	// Remote adapters run while the built-in detectors do.
	var remoteFindings [][]Finding
	var wg sync.WaitGroup
	for i, r := range e.remotes {
		if !r.applies(in.Surface) {
			continue
		}
		if remoteFindings == nil {
			remoteFindings = make([][]Finding, len(e.remotes))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			remoteFindings[i] = r.screen(ctx, in, e.log)
		}()
	}

	s := &screening{e: e, in: in}
	s.norm = textnorm.Normalize(in.Text)
	s.run(DetectHeuristics, s.heuristics)
	s.run(DetectInjection, s.injection)
	s.run(DetectSecrets, s.secretScan)
	s.run(DetectPII, s.piiScan)
	s.run(DetectCanary, s.canary)
	s.run(DetectExfil, s.exfil)
	wg.Wait()
	for _, fs := range remoteFindings {
		s.findings = append(s.findings, fs...)
	}
	if err := ctx.Err(); err != nil {
		return denied("semantic.cancelled", "screening cancelled"), err
	}
	return s.decide(), nil
}

func denied(code, msg string) Result {
	v := verdict.Deny(verdict.Semantic, code, msg)
	return Result{Verdict: v, Context: Context{Outcome: v.Outcome.String(), Scores: map[string]int64{}}}
}

// screening is the state of one Screen call.
type screening struct {
	e        *Engine
	in       Input
	norm     textnorm.Result
	findings []Finding
}

// run runs one built-in detector unless disabled, turning a panic into a
// detector failure handled by its fail mode.
func (s *screening) run(d Detector, f func()) {
	if s.e.disable[d] {
		return
	}
	fail := func(err any) {
		s.e.log.Error("semantic detector failed", "detector", string(d), "surface", string(s.in.Surface), "tool", s.in.Tool, "err", fmt.Sprint(err))
		s.findings = append(s.findings, failure(string(d), s.e.failModes[d]))
	}
	defer func() {
		if r := recover(); r != nil {
			fail(r)
		}
	}()
	if fault := s.e.faults[d]; fault != nil {
		if err := fault(); err != nil {
			fail(err)
			return
		}
	}
	f()
}

// failure is the finding that records a failed detector under mode.
func failure(detector string, mode FailMode) Finding {
	a := ActionBlock
	switch mode {
	case FailOpen:
		a = ActionReport
	case FailChallenge:
		a = ActionChallenge
	}
	return Finding{Detector: detector, Kind: "detector_error", Score: 0, Start: -1, End: -1, Action: a}
}

func (s *screening) add(f Finding) { s.findings = append(s.findings, f) }

// span maps a span of the normalised text to Input.Text: exact when
// normalisation changed nothing, unknown (-1) otherwise.
func (s *screening) span(start, end int) (int, int) {
	if s.norm.Changed {
		return -1, -1
	}
	return start, end
}

// injectionKinds are the kinds whose score counts toward the injection
// risk that the surface thresholds act on.
var injectionKinds = map[string]bool{
	"prompt_injection": true, "instruction_override": true, "prompt_leak": true,
	"role_marker": true, "unrestricted_ai": true, "deception_request": true, "ai_addressee": true, "encoded_payload": true, "tag_characters": true,
	"role_play": true, "bidi_control": true, "invisible_characters": true, "confusables": true,
}

// decide turns findings into actions, a verdict, labels, redactions and
// the policy context.
func (s *screening) decide() Result {
	e, in := s.e, s.in
	th := e.thresholds[in.Surface]
	var res Result
	for _, f := range s.findings {
		if injectionKinds[f.Kind] || strings.HasPrefix(f.Detector, "remote:") && f.Kind != "detector_error" {
			res.Risk = max(res.Risk, f.Score)
		}
	}
	riskAction := ActionReport
	switch {
	case res.Risk >= th.Block:
		riskAction = ActionBlock
	case res.Risk >= th.Challenge:
		riskAction = ActionChallenge
	case res.Risk >= th.Label:
		riskAction = ActionLabel
	}
	v := verdict.Verdict{}
	labels := map[verdict.Label]bool{}
	var redact []Finding
	for i := range s.findings {
		f := &s.findings[i]
		if injectionKinds[f.Kind] || strings.HasPrefix(f.Detector, "remote:") && f.Kind != "detector_error" {
			// Every injection-class finding carries the action the
			// combined risk calls for, if its own score reached it.
			f.Action = ActionReport
			if f.Score >= res.Risk-1e-9 {
				f.Action = riskAction
			}
		}
		switch f.Action {
		case ActionLabel:
			labels[verdict.SessionUntrustedContent] = true
		case ActionRedact:
			redact = append(redact, *f)
		}
		if in.Surface.Untrusted() && (f.Kind == "secret" || f.Kind == "pii") {
			labels[verdict.SessionPrivateData] = true
		}
		if f.Action == ActionChallenge || f.Action == ActionBlock {
			if in.Surface.Untrusted() && f.Kind != "detector_error" {
				labels[verdict.SessionUntrustedContent] = true
			}
			o := verdict.Challenge
			if f.Action == ActionBlock {
				o = verdict.Block
			}
			v.Outcome = max(v.Outcome, o)
			v.Reasons = append(v.Reasons, reason(*f, o))
		}
	}
	if len(redact) > 0 {
		res.RedactedText = redactSpans(in.Text, redact)
		v.Obligations = append(v.Obligations, verdict.Obligation{Kind: verdict.ObligationRedact, Detail: ruleList(redact)})
	}
	if e.datamark && in.Surface.Datamarked() {
		text := in.Text
		if res.RedactedText != "" {
			text = res.RedactedText
		}
		var sp Spotlight
		if in.SessionID != "" {
			sp = DatamarkWith(text, e.Marker(in.SessionID))
		} else {
			sp = Datamark(text)
		}
		res.Spotlight = &sp
		v.Obligations = append(v.Obligations, verdict.Obligation{Kind: verdict.ObligationDatamark, Detail: sp.Marker})
	}
	for _, l := range []verdict.Label{verdict.SessionUntrustedContent, verdict.SessionPrivateData} {
		if labels[l] {
			res.Labels = append(res.Labels, l)
			v.Obligations = append(v.Obligations, verdict.Obligation{Kind: verdict.ObligationLabel, Detail: string(l)})
		}
	}
	sort.SliceStable(s.findings, func(i, j int) bool {
		a, b := s.findings[i], s.findings[j]
		if a.Detector != b.Detector {
			return a.Detector < b.Detector
		}
		return a.Start < b.Start
	})
	res.Findings = s.findings
	res.Verdict = v
	res.Context = summarise(res)
	return res
}

// reason is the public reason for a finding; it names no payload content.
func reason(f Finding, o verdict.Outcome) verdict.Reason {
	code, msg := "semantic."+f.Kind, ""
	switch f.Kind {
	case "secret":
		msg = "a credential was found"
	case "pii":
		msg = "personal data was found"
	case "canary_leak":
		msg = "a planted canary token appeared in output"
	case "exfil_image", "exfil_link":
		msg = "output links to an unapproved host with data in the URL"
	case "detector_error":
		msg = "a detector failed"
	default:
		code = "semantic.prompt_injection"
		msg = "the text looks like a prompt injection or jailbreak"
	}
	rule := f.Detector
	if f.Rule != "" {
		rule += ":" + f.Rule
	}
	return verdict.Reason{Layer: verdict.Semantic, Code: code, Message: msg, Policies: []string{rule}, Outcome: o}
}

func ruleList(fs []Finding) string {
	var rs []string
	for _, f := range fs {
		r := f.Kind
		if f.Rule != "" {
			r += ":" + f.Rule
		}
		if !slices.Contains(rs, r) {
			rs = append(rs, r)
		}
	}
	slices.Sort(rs)
	return strings.Join(rs, ",")
}

// redactSpans masks the findings' spans in text as [REDACTED:<rule>].
// Overlapping spans are merged.
func redactSpans(text string, fs []Finding) string {
	type span struct {
		a, b int
		tag  string
	}
	var spans []span
	for _, f := range fs {
		if f.Start < 0 || f.End > len(text) || f.Start >= f.End {
			continue
		}
		tag := f.Kind
		if f.Rule != "" {
			tag = f.Rule
		}
		spans = append(spans, span{f.Start, f.End, tag})
	}
	if len(spans) == 0 {
		return ""
	}
	slices.SortFunc(spans, func(x, y span) int { return x.a - y.a })
	var b strings.Builder
	pos := 0
	for i := 0; i < len(spans); i++ {
		sp := spans[i]
		for i+1 < len(spans) && spans[i+1].a < sp.b {
			sp.b = max(sp.b, spans[i+1].b)
			i++
		}
		if sp.a < pos {
			sp.a = pos
		}
		b.WriteString(text[pos:sp.a])
		b.WriteString("[REDACTED:" + sp.tag + "]")
		pos = sp.b
	}
	b.WriteString(text[pos:])
	return b.String()
}

// kindFloor is the score from which a classifier or remote finding is
// listed in the policy context's kinds and rules.
const kindFloor = 0.5

func permille(x float64) int64 { return int64(math.Round(math.Max(0, math.Min(1, x)) * 1000)) }

func summarise(r Result) Context {
	c := Context{
		Outcome: r.Verdict.Outcome.String(),
		Risk:    permille(r.Risk),
		Scores:  map[string]int64{},
		Kinds:   []string{},
		Rules:   []string{},
		Labels:  []string{},
		Failed:  []string{},
	}
	for _, f := range r.Findings {
		if f.Kind == "detector_error" {
			if !slices.Contains(c.Failed, f.Detector) {
				c.Failed = append(c.Failed, f.Detector)
			}
			continue
		}
		c.Scores[f.Detector] = max(c.Scores[f.Detector], permille(f.Score))
		if (f.Detector == string(DetectInjection) || strings.HasPrefix(f.Detector, "remote:")) && f.Score < kindFloor {
			continue // the classifier and remotes always answer; a weak score shows in Scores only
		}
		if !slices.Contains(c.Kinds, f.Kind) {
			c.Kinds = append(c.Kinds, f.Kind)
		}
		if f.Rule != "" && !slices.Contains(c.Rules, f.Rule) {
			c.Rules = append(c.Rules, f.Rule)
		}
	}
	for _, l := range r.Labels {
		c.Labels = append(c.Labels, string(l))
	}
	slices.Sort(c.Kinds)
	slices.Sort(c.Rules)
	slices.Sort(c.Failed)
	return c
}
