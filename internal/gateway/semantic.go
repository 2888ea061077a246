package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/semantic"
	"github.com/gatehouse/gatehouse/internal/semantic/guard"
	"github.com/gatehouse/gatehouse/internal/semantic/pii"
	"github.com/gatehouse/gatehouse/internal/telemetry"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// SemanticConfig translates the semantic section of cfg into the engine
// configuration a gateway runs: detectors, fail modes, thresholds (with
// the gateway's label-only defaults for tool_output and document),
// secret and PII actions, exfiltration settings, datamarking and remote
// adapters, whose secrets it reads through cfg.ReadSecret. Every problem
// is reported at once. CanaryKey and Logger are left to the caller (the
// gateway reads the key from semantic.canary_key_file).
func SemanticConfig(cfg *config.File) (semantic.Config, error) {
	return semanticConfig(cfg, cfg.ReadSecret)
}

// semanticConfig translates the semantic section into the engine's
// configuration; every problem is reported at once.
func semanticConfig(cfg *config.File, readSecret func(string) (string, error)) (semantic.Config, error) {
	sc := cfg.Semantic
	var c semantic.Config
	var errs []error
	surface := func(key, s string) semantic.Surface {
		switch v := semantic.Surface(s); v {
		case semantic.SurfacePrompt, semantic.SurfaceToolInput, semantic.SurfaceToolOutput, semantic.SurfaceDocument,
			semantic.SurfacePromptResult, semantic.SurfaceSampling, semantic.SurfaceModelOutput:
			return v
		}
		errs = append(errs, fmt.Errorf("%s: unknown surface %q", key, s))
		return ""
	}
	action := func(key, s string) semantic.Action {
		switch v := semantic.Action(s); v {
		case semantic.ActionReport, semantic.ActionLabel, semantic.ActionRedact, semantic.ActionChallenge, semantic.ActionBlock:
			return v
		}
		errs = append(errs, fmt.Errorf("%s: unknown action %q", key, s))
		return ""
	}
	failMode := func(key, s string) semantic.FailMode {
		switch v := semantic.FailMode(s); v {
		case semantic.FailClosed, semantic.FailChallenge, semantic.FailOpen:
			return v
		case "":
			return semantic.FailClosed
		}
		errs = append(errs, fmt.Errorf("%s: unknown fail mode %q", key, s))
		return ""
	}
	detector := func(key, s string) semantic.Detector {
		switch v := semantic.Detector(s); v {
		case semantic.DetectInjection, semantic.DetectHeuristics, semantic.DetectSecrets, semantic.DetectPII, semantic.DetectCanary, semantic.DetectExfil:
			return v
		}
		errs = append(errs, fmt.Errorf("%s: unknown detector %q", key, s))
		return ""
	}
	for name, on := range sc.Detectors {
		if d := detector("semantic.detectors", name); d != "" && !on {
			if c.Disable == nil {
				c.Disable = map[semantic.Detector]bool{}
			}
			c.Disable[d] = true
		}
	}
	for name, fm := range sc.FailModes {
		if d := detector("semantic.fail_modes", name); d != "" {
			if c.FailModes == nil {
				c.FailModes = map[semantic.Detector]semantic.FailMode{}
			}
			c.FailModes[d] = failMode("semantic.fail_modes."+name, fm)
		}
	}
	// Content that arrives from outside (tool results, documents) is
	// labelled, not blocked, by default: an injected email should taint
	// the session, so that policy (the lethal trifecta) decides what the
	// session may still do, rather than hide the whole inbox.
	c.Thresholds = map[semantic.Surface]semantic.Threshold{}
	for _, s := range []semantic.Surface{semantic.SurfaceToolOutput, semantic.SurfaceDocument} {
		th := semantic.DefaultThresholds[s]
		th.Challenge, th.Block = semantic.Never, semantic.Never
		c.Thresholds[s] = th
	}
	for name, t := range sc.Thresholds {
		s := surface("semantic.thresholds", name)
		if s == "" {
			continue
		}
		th, ok := c.Thresholds[s]
		if !ok {
			th = semantic.DefaultThresholds[s]
		}
		if t.Label != nil {
			th.Label = *t.Label
		}
		if t.Challenge != nil {
			th.Challenge = *t.Challenge
		}
		if t.Block != nil {
			th.Block = *t.Block
		}
		c.Thresholds[s] = th
	}
	for name, a := range sc.Secrets.Actions {
		if s := surface("semantic.secrets.actions", name); s != "" {
			if c.SecretActions == nil {
				c.SecretActions = map[semantic.Surface]semantic.Action{}
			}
			c.SecretActions[s] = action("semantic.secrets.actions."+name, a)
		}
	}
	for name, a := range sc.PII.Actions {
		if c.PIIActions == nil {
			c.PIIActions = map[pii.Type]semantic.Action{}
		}
		c.PIIActions[pii.Type(name)] = action("semantic.pii.actions."+name, a)
	}
	c.PIIRegion = sc.PII.Region
	c.AllowedHosts = sc.Exfil.AllowedHosts
	if sc.Exfil.ImageAction != "" {
		c.ExfilImageAction = action("semantic.exfil.image_action", sc.Exfil.ImageAction)
	}
	if sc.Exfil.LinkAction != "" {
		c.ExfilLinkAction = action("semantic.exfil.link_action", sc.Exfil.LinkAction)
	}
	c.Datamark = sc.Datamark
	for i, r := range sc.Remotes {
		key := fmt.Sprintf("semantic.remotes[%d]", i)
		secret := func(file string) string {
			if file == "" {
				return ""
			}
			v, err := readSecret(file)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
			}
			return v
		}
		rc := semantic.RemoteConfig{Timeout: r.Timeout.Std(), FailMode: failMode(key+".fail_mode", r.FailMode), CacheSize: r.Cache.Size, CacheTTL: r.Cache.TTL.Std()}
		for _, s := range r.Surfaces {
			if v := surface(key+".surfaces", s); v != "" {
				rc.Surfaces = append(rc.Surfaces, v)
			}
		}
		switch r.Type {
		case "azure_prompt_shields":
			rc.Remote = &guard.Azure{Endpoint: r.Endpoint, Key: secret(r.KeyFile)}
		case "bedrock_guardrails":
			id, sk, tok := secret(r.AccessKeyIDFile), secret(r.SecretAccessKeyFile), secret(r.SessionTokenFile)
			creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				if id == "" || sk == "" {
					return aws.Credentials{}, errors.New("no AWS credentials configured")
				}
				return aws.Credentials{AccessKeyID: id, SecretAccessKey: sk, SessionToken: tok, Source: "gatehouse config"}, nil
			})
			rc.Remote = &guard.Bedrock{Region: r.Region, Endpoint: r.Endpoint, GuardrailID: r.GuardrailID, Version: r.GuardrailVersion, Credentials: creds}
		case "lakera_guard":
			rc.Remote = &guard.Lakera{Endpoint: r.Endpoint, Key: secret(r.KeyFile), ProjectID: r.ProjectID}
		case "openai_guard":
			rc.Remote = &guard.OpenAI{BaseURL: r.BaseURL, Model: r.Model, Key: secret(r.KeyFile), Categories: r.Categories}
		default:
			errs = append(errs, fmt.Errorf("%s.type: %q is not azure_prompt_shields, bedrock_guardrails, lakera_guard or openai_guard", key, r.Type))
			continue
		}
		c.Remotes = append(c.Remotes, rc)
	}
	return c, errors.Join(errs...)
}

// openSemantic builds the engine; nil when the layer is disabled.
func (g *Gateway) openSemantic() (*semantic.Engine, error) {
	if g.cfg.Semantic.Disabled {
		return nil, nil
	}
	c, err := semanticConfig(g.cfg, g.cfg.ReadSecret)
	if err != nil {
		return nil, err
	}
	key, err := loadOrCreateToken(g.cfg.Path(g.cfg.Semantic.CanaryKeyFile))
	if err != nil {
		return nil, fmt.Errorf("canary key: %w", err)
	}
	c.CanaryKey = []byte(key)
	c.Logger = g.log
	return semantic.New(c)
}

// inputSurface is the surface of what an agent (or a server's request to
// the agent) sends.
func inputSurface(action string) (semantic.Surface, bool) {
	switch action {
	case pipeline.ActionCallTool, pipeline.ActionGetPrompt, pipeline.ActionComplete:
		return semantic.SurfaceToolInput, true
	case pipeline.ActionSample, pipeline.ActionElicit:
		return semantic.SurfaceSampling, true
	}
	return "", false
}

// outputSurface is the surface of what an upstream returns.
func outputSurface(action string) (semantic.Surface, bool) {
	switch action {
	case pipeline.ActionCallTool:
		return semantic.SurfaceToolOutput, true
	case pipeline.ActionReadResource:
		return semantic.SurfaceDocument, true
	case pipeline.ActionGetPrompt:
		return semantic.SurfacePromptResult, true
	}
	return "", false
}

// semanticStage screens what an agent sends: tool arguments, prompt
// arguments, and servers' sampling and elicitation requests. Its findings
// go into the request for policy; its hits into
// gatehouse_detector_hits_total.
type semanticStage struct{ semanticScreen }

// semanticScreen screens the texts of an MCP message for both directions
// (semanticStage, screener).
type semanticScreen struct {
	e *semantic.Engine
	t *telemetry.T
	// failed counts failed detectors (Gateway.controlFailures); nil
	// counts nothing.
	failed func(control, failMode string)
}

// screen screens the texts of doc together on surf and counts the hits
// and failed detectors. It returns no texts when there is nothing to
// screen.
func (s semanticScreen) screen(ctx context.Context, surf semantic.Surface, doc *mcpDoc, r *pipeline.Request) ([]string, semantic.Result, error) {
	texts, _ := doc.texts()
	if len(texts) == 0 {
		return nil, semantic.Result{}, nil
	}
	res, err := s.e.Screen(ctx, semantic.Input{Surface: surf, Text: strings.Join(texts, textSep), SessionID: r.Session, Tool: r.Target})
	if err != nil {
		return nil, semantic.Result{}, err
	}
	observeDetections(s.t, surf, res)
	observeDetectorFailures(s.failed, res)
	return texts, res, nil
}

func (s semanticStage) Name() string { return "semantic" }

func (s semanticStage) Check(ctx context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	surf, ok := inputSurface(r.Action)
	if !ok || r.Phase != pipeline.PhaseCall || len(r.Arguments) == 0 {
		return verdict.Verdict{}, nil
	}
	doc, err := decodeMCP(inputShape(r.Action), r.Arguments)
	if err != nil {
		return verdict.Verdict{}, fmt.Errorf("decoding arguments: %w", err)
	}
	texts, res, err := s.screen(ctx, surf, doc, r)
	if err != nil || len(texts) == 0 {
		return verdict.Verdict{}, err
	}
	r.Findings = findingsOf(res)
	v := res.Verdict
	if v.Outcome == verdict.Challenge {
		// A semantic challenge asks the approvers of the "semantic" risk
		// class (governance.rules.semantic, else default).
		v.Obligations = append(v.Obligations, verdict.Obligation{Kind: verdict.ObligationApproval, Detail: semanticRisk})
	}
	return v, nil
}

// observeDetectorFailures counts each detector that failed on one
// screened text (its "detector_error" finding) in
// gatehouse_control_failures_total{control="semantic:<detector>"}, with
// the fail mode the finding's action shows: closed (blocked), challenge
// (held for approval) or open (allowed).
func observeDetectorFailures(failed func(control, failMode string), res semantic.Result) {
	if failed == nil {
		return
	}
	for _, f := range res.Findings {
		if f.Kind != "detector_error" {
			continue
		}
		mode := string(semantic.FailClosed)
		switch f.Action {
		case semantic.ActionReport:
			mode = string(semantic.FailOpen)
		case semantic.ActionChallenge:
			mode = string(semantic.FailChallenge)
		}
		failed("semantic:"+f.Detector, mode)
	}
}

// observeDetections counts the detectors that fired on one screened text
// in gatehouse_detector_hits_total: once per detector and finding kind,
// for findings scoring at least policy.FiredScore (the rule by which
// policy's context.findings.detectors says a detector fired). A detector
// that failed is not a hit (its failure is the fail mode's business).
func observeDetections(t *telemetry.T, surface semantic.Surface, res semantic.Result) {
	if t == nil {
		return
	}
	var seen [][2]string // few: the distinct detector and kind pairs
next:
	for _, f := range res.Findings {
		if f.Kind == "detector_error" || f.Score < policy.FiredScore {
			continue
		}
		hit := [2]string{f.Detector, f.Kind}
		for _, s := range seen {
			if s == hit {
				continue next
			}
		}
		seen = append(seen, hit)
		t.ObserveDetection(f.Detector, f.Kind, string(surface))
	}
}

// textSep joins the strings of a message into the one text screened.
const textSep = "\n"

// semanticRisk is the risk class of semantic-layer challenges.
const semanticRisk = "semantic"

func findingsOf(res semantic.Result) *pipeline.Findings {
	f := &pipeline.Findings{Kinds: res.Context.Kinds, Scores: make(map[string]float64, len(res.Context.Scores))}
	for d, v := range res.Context.Scores {
		f.Scores[d] = float64(v) / 1000
	}
	return f
}

// screener screens upstream answers (tool results, resources, prompts);
// its hits go into gatehouse_detector_hits_total.
type screener struct{ semanticScreen }

// ScreenOutput implements pipeline.Screener: it screens every text of the
// result together (see mcptext.go for which strings), raises the labels
// the findings call for, and rewrites the result when the engine says so:
// each string that carries a secret or personal data to mask is masked,
// and, with spotlighting on, the text of each content block is datamarked
// with the session's marker.
func (s screener) ScreenOutput(ctx context.Context, r *pipeline.Request, o *pipeline.Outcome) (verdict.Verdict, error) {
	surf, ok := outputSurface(r.Action)
	if !ok {
		return verdict.Verdict{}, nil
	}
	doc, err := decodeMCP(outputShape(r.Action), o.Result)
	if err != nil {
		return verdict.Verdict{}, fmt.Errorf("decoding the result: %w", err)
	}
	texts, res, err := s.screen(ctx, surf, doc, r)
	if err != nil || len(texts) == 0 {
		return verdict.Verdict{}, err
	}
	o.Raise = append(o.Raise, res.Labels...)
	if len(res.Context.Kinds) > 0 {
		o.Findings = findingsOf(res)
	}
	if res.Verdict.Outcome != verdict.Block && (res.Redacted() || res.Spotlight != nil) {
		parts := res.RedactParts(texts, textSep)
		i := 0
		doc.walk(func(_ string, role textRole) string {
			p := parts[i]
			i++
			if res.Spotlight != nil && role == contentText {
				p = semantic.DatamarkWith(p, res.Spotlight.Marker).Text
			}
			return p
		})
		if o.Result, err = doc.marshal(); err != nil {
			return verdict.Verdict{}, err
		}
	}
	return res.Verdict, nil
}

// sessionInstructions returns what the semantic layer adds to a new
// session's instructions: the session's canary (unless the canary
// detector is off) and, with spotlighting on, the preamble that explains
// the session's datamark. It returns nil when there is nothing to add.
func (g *Gateway) sessionInstructions() func(session string) string {
	if g.semantic == nil {
		return nil
	}
	on, set := g.cfg.Semantic.Detectors["canary"]
	canary, datamark := !set || on, g.cfg.Semantic.Datamark
	if !canary && !datamark {
		return nil
	}
	return func(session string) string {
		var parts []string
		if canary {
			parts = append(parts, g.canaryInstructions(session))
		}
		if datamark {
			parts = append(parts, semantic.Preamble(g.semantic.Marker(session)))
		}
		return strings.Join(parts, "\n")
	}
}

// canaryInstructions plants the session's canary in its instructions: a
// marker no legitimate tool call or answer contains, so its appearance in
// a tool's arguments shows the agent's context leaking out.
func (g *Gateway) canaryInstructions(session string) string {
	return "Gatehouse session marker " + g.semantic.NewCanary(session) + ": internal to this session; never include it in tool calls, messages or answers."
}
