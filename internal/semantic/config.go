package semantic

import (
	"log/slog"
	"time"

	"github.com/gatehouse/gatehouse/internal/semantic/injection"
	"github.com/gatehouse/gatehouse/internal/semantic/pii"
	"github.com/gatehouse/gatehouse/internal/semantic/secret"
)

// Surface names where a text arrives.
type Surface string

// The surfaces.
const (
	// SurfacePrompt is a prompt from a user or an agent (chat prompts in
	// the LLM proxy).
	SurfacePrompt Surface = "prompt"
	// SurfaceToolInput is a tool call's arguments (agent → tool).
	SurfaceToolInput Surface = "tool_input"
	// SurfaceToolOutput is a tool's result (tool → agent).
	SurfaceToolOutput Surface = "tool_output"
	// SurfaceDocument is resource contents or retrieved documents.
	SurfaceDocument Surface = "document"
	// SurfacePromptResult is the result of an MCP prompts/get.
	SurfacePromptResult Surface = "prompt_result"
	// SurfaceSampling is an MCP sampling request (server → client model).
	SurfaceSampling Surface = "sampling"
	// SurfaceModelOutput is a model's output (LLM proxy responses).
	SurfaceModelOutput Surface = "model_output"
)

// Surfaces lists every surface.
var Surfaces = []Surface{SurfacePrompt, SurfaceToolInput, SurfaceToolOutput, SurfaceDocument, SurfacePromptResult, SurfaceSampling, SurfaceModelOutput}

// Untrusted reports whether text on s comes from outside the agent's
// principal (tool results, documents, prompt templates): where indirect
// injections arrive and where a hit raises the untrusted_content label.
func (s Surface) Untrusted() bool {
	return s == SurfaceToolOutput || s == SurfaceDocument || s == SurfacePromptResult
}

// Output reports whether text on s leaves through a model or a tool call,
// where canary tokens and exfiltration channels are looked for as leaks.
func (s Surface) Output() bool {
	return s == SurfaceModelOutput || s == SurfaceSampling || s == SurfaceToolInput
}

// Datamarked reports whether text on s is datamarked when spotlighting is
// on: tool results and documents. Prompt results are untrusted too, but
// they are instructions the user chose to run; marking them as data would
// defeat them.
func (s Surface) Datamarked() bool {
	return s == SurfaceToolOutput || s == SurfaceDocument
}

func (s Surface) valid() bool {
	for _, x := range Surfaces {
		if s == x {
			return true
		}
	}
	return false
}

// Action is what the engine does about a finding.
type Action string

// The actions, from mildest to most severe.
const (
	// ActionReport records the finding (and puts it in the policy
	// context) without changing the verdict.
	ActionReport Action = "report"
	// ActionLabel also raises the session's untrusted_content label.
	ActionLabel Action = "label"
	// ActionRedact masks the finding's span in Result.RedactedText.
	ActionRedact Action = "redact"
	// ActionChallenge holds the request for approval.
	ActionChallenge Action = "challenge"
	// ActionBlock refuses the request.
	ActionBlock Action = "block"
)

// FailMode says what a detector's failure (error, panic, timeout) means.
type FailMode string

// The fail modes. The default everywhere is FailClosed.
const (
	FailClosed    FailMode = "closed"    // block
	FailChallenge FailMode = "challenge" // hold for approval
	FailOpen      FailMode = "open"      // allow; the failure is recorded
)

// Detector names a built-in detector.
type Detector string

// The built-in detectors.
const (
	DetectInjection  Detector = "injection"  // the trained classifier
	DetectHeuristics Detector = "heuristics" // override, role-play, encodings, invisible Unicode
	DetectSecrets    Detector = "secrets"    // gitleaks rules
	DetectPII        Detector = "pii"        // validated personal data
	DetectCanary     Detector = "canary"     // planted canary tokens
	DetectExfil      Detector = "exfil"      // markdown image and link channels
)

// Detectors lists the built-in detectors.
var Detectors = []Detector{DetectInjection, DetectHeuristics, DetectSecrets, DetectPII, DetectCanary, DetectExfil}

// Threshold sets, for one surface, the injection risk (0–1) at or above
// which the engine labels, challenges and blocks. A zero field takes the
// surface's default (DefaultThresholds); a value above 1 disables that
// step.
type Threshold struct {
	Label     float64
	Challenge float64
	Block     float64
}

// Never is a threshold value that no score reaches.
const Never = 2.0

// DefaultThresholds are the per-surface defaults, tuned on the dev split
// (see docs/semantic.md). Untrusted content is labelled rather than
// challenged, so that policy (the lethal-trifecta rule) decides what a
// tainted session may still do; a near-certain injection is blocked.
// It is read-only: set Config.Thresholds instead of changing it.
var DefaultThresholds = map[Surface]Threshold{
	SurfacePrompt:       {Label: Never, Challenge: 0.74, Block: 0.97},
	SurfaceToolInput:    {Label: Never, Challenge: 0.86, Block: 0.97},
	SurfaceToolOutput:   {Label: 0.8, Challenge: Never, Block: 0.97},
	SurfaceDocument:     {Label: 0.8, Challenge: Never, Block: 0.97},
	SurfacePromptResult: {Label: 0.8, Challenge: 0.9, Block: 0.97},
	SurfaceSampling:     {Label: Never, Challenge: 0.86, Block: 0.97},
	SurfaceModelOutput:  {Label: Never, Challenge: Never, Block: Never},
}

// DefaultPIIActions are the default actions per personal-data type. It is
// read-only: set Config.PIIActions instead of changing it.
var DefaultPIIActions = map[pii.Type]Action{
	pii.Card:  ActionRedact,
	pii.IBAN:  ActionRedact,
	pii.SSN:   ActionRedact,
	pii.Email: ActionReport,
	pii.Phone: ActionReport,
	pii.IP:    ActionReport,
}

// DefaultSecretActions are the default actions for a secret per surface: a
// secret in a result is masked; one leaving in a tool call is challenged.
// It is read-only: set Config.SecretActions instead of changing it.
var DefaultSecretActions = map[Surface]Action{
	SurfacePrompt:       ActionRedact,
	SurfaceToolInput:    ActionChallenge,
	SurfaceToolOutput:   ActionRedact,
	SurfaceDocument:     ActionRedact,
	SurfacePromptResult: ActionRedact,
	SurfaceSampling:     ActionRedact,
	SurfaceModelOutput:  ActionRedact,
}

// Config configures an Engine. The zero value is the documented default:
// every built-in detector on, default thresholds and actions, fail closed,
// no remote adapters, no datamarking.
type Config struct {
	// Logger receives operational logs (never payloads); nil discards.
	Logger *slog.Logger
	// Thresholds overrides DefaultThresholds per surface.
	Thresholds map[Surface]Threshold
	// Disable turns built-in detectors off.
	Disable map[Detector]bool
	// FailModes sets the fail mode per built-in detector; default
	// FailClosed.
	FailModes map[Detector]FailMode
	// SecretActions overrides DefaultSecretActions per surface.
	SecretActions map[Surface]Action
	// PIIActions overrides DefaultPIIActions per type.
	PIIActions map[pii.Type]Action
	// PIIRegion is the region assumed for phone numbers without a country
	// code; default "US".
	PIIRegion string
	// AllowedHosts are hosts that outputs may link to or load images from
	// with data in the URL; a leading "." or "*." allows subdomains. Other
	// hosts count as exfiltration channels.
	AllowedHosts []string
	// ExfilImageAction and ExfilLinkAction are the actions for a markdown
	// or HTML image, and a link, to a host outside AllowedHosts with data
	// in its URL, on output surfaces; defaults block and challenge. On
	// other surfaces such a finding labels the session.
	ExfilImageAction Action
	ExfilLinkAction  Action
	// Datamark turns on spotlighting: tool results and documents
	// (Surface.Datamarked) are returned datamarked in Result.Spotlight,
	// with the session's marker (Engine.Marker) when Input.SessionID is
	// set. Default off.
	Datamark bool
	// CanaryKey keys the derivation of canary tokens from session ids, so
	// that every replica recognises every session's canary. Empty: a
	// random key per Engine (canaries then only survive in Input.Canaries).
	CanaryKey []byte
	// Remotes are cloud or model adapters consulted in addition to the
	// built-in detectors.
	Remotes []RemoteConfig
	// Model is the injection classifier; nil uses the shipped weights.
	Model *injection.Model
	// Secrets is the secret scanner; nil uses gitleaks' default rules.
	Secrets *secret.Scanner
	// Now returns the current time (for caches); default time.Now.
	Now func() time.Time
}

// RemoteConfig attaches one remote adapter with its own timeout, fail mode
// and cache.
type RemoteConfig struct {
	// Remote is the adapter (see package guard for the shipped ones).
	Remote Remote
	// Surfaces limits the adapter to these surfaces; nil means all.
	Surfaces []Surface
	// Timeout bounds each call; default 2s.
	Timeout time.Duration
	// FailMode applies when the call fails or times out; default
	// FailClosed.
	FailMode FailMode
	// CacheSize is the number of results kept (LRU); default 1024,
	// negative disables caching.
	CacheSize int
	// CacheTTL is how long a cached result is used; default 10 minutes.
	CacheTTL time.Duration
}
