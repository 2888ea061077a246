// Package config defines the gateway's YAML configuration file: its format,
// strict decoding (unknown keys are errors) and whole-file validation that
// reports every problem at once.
//
// The types here are the file format only: strings, paths and durations as
// an operator writes them. The composition root (internal/gateway) translates
// a validated File into the runtime Config of each package.
//
// Secrets never appear inline: a field that carries a secret names a file
// (the *_file keys). Relative paths are resolved against the directory of the
// configuration file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// File is the whole configuration file.
type File struct {
	// Listen is the address of the MCP listener (agents connect here).
	// Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// PublicURL is the externally visible base URL of the MCP listener, used
	// in metadata and links. Default http://<listen>.
	PublicURL string `yaml:"public_url"`
	// TLS, when set, serves the MCP listener over TLS.
	TLS *TLS `yaml:"tls"`
	// DataDir holds the embedded store and generated keys. Default ./data.
	DataDir string `yaml:"data_dir"`
	// Store selects the durable store. Default: SQLite in DataDir.
	Store Store `yaml:"store"`
	// Admin configures the admin API.
	Admin Admin `yaml:"admin"`
	// Identity configures agent authentication and token minting.
	Identity Identity `yaml:"identity"`
	// Agents registers agents in the file (small deployments).
	Agents []Agent `yaml:"agents"`
	// Servers lists the upstream MCP servers.
	Servers []Server `yaml:"servers"`
	// Endpoints lists the MCP endpoints agents connect to. Default: one
	// endpoint at /mcp aggregating every server.
	Endpoints []Endpoint `yaml:"endpoints"`
	// Limits bounds request handling.
	Limits Limits `yaml:"limits"`
	// Pinning configures tool-definition pinning.
	Pinning Pinning `yaml:"pinning"`
	// Audit configures the tamper-evident audit log.
	Audit Audit `yaml:"audit"`
	// Policy configures the Cedar authorization policies.
	Policy Policy `yaml:"policy"`
	// Locks configures the kill switch.
	Locks Locks `yaml:"locks"`
	// Telemetry configures metrics and traces.
	Telemetry Telemetry `yaml:"telemetry"`
	// Semantic configures the semantic layer's screening.
	Semantic Semantic `yaml:"semantic"`
	// Governance configures human approval of challenged calls.
	Governance Governance `yaml:"governance"`
	// Log configures operational logging.
	Log Log `yaml:"log"`

	// dir is the directory of the file, for resolving relative paths.
	dir string
}

// TLS names a certificate and key.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Store selects the durable store.
type Store struct {
	// DSNFile names a file holding a PostgreSQL DSN
	// (postgres://user:pass@host/db). Empty means the embedded SQLite store
	// at <data_dir>/gatehouse.db.
	DSNFile string `yaml:"dsn_file"`
}

// Admin configures the admin API listener.
type Admin struct {
	// Listen is the admin API address. Default 127.0.0.1:8081. It is served
	// over plain HTTP, and every request needs the admin credential (GET
	// /metrics also accepts telemetry.metrics_token_file's).
	Listen string `yaml:"listen"`
	// TokenFile holds the admin bearer credential. Default
	// <data_dir>/admin.token, generated on first start.
	TokenFile string `yaml:"token_file"`
}

// Identity configures agent authentication.
type Identity struct {
	// Issuer is the iss of tokens the gateway mints. Default "gatehouse".
	Issuer string `yaml:"issuer"`
	// Audience is the aud every agent token must carry. Default
	// "gatehouse".
	Audience string `yaml:"audience"`
	// SigningKeyFile holds the gateway's Ed25519 signing key (JWK).
	// Default <data_dir>/keys/signing.jwk, generated on first start.
	SigningKeyFile string `yaml:"signing_key_file"`
	// MaxTokenTTL caps the lifetime of minted tokens. Default 1h.
	MaxTokenTTL Duration `yaml:"max_token_ttl"`
	// ClockSkew is the leeway allowed on exp/nbf/iat. Default 60s; at most
	// 60s.
	ClockSkew Duration `yaml:"clock_skew"`
	// AnonymousAgent, for local conformance runs only, maps unauthenticated
	// requests to this agent. The gateway refuses to start with it on a
	// non-loopback listener and warns at start.
	AnonymousAgent string `yaml:"anonymous_agent"`
	// DefaultTokenTTL is the lifetime of exchanged tokens when the request
	// names none. Default 5m.
	DefaultTokenTTL Duration `yaml:"default_token_ttl"`
	// Keys, when set, replaces signing_key_file with a rotating key ring.
	Keys *KeyRing `yaml:"keys"`
	// DPoP is off, optional (default) or required (RFC 9449 proof of
	// possession at the token endpoint and on every request).
	DPoP string `yaml:"dpop"`
	// SingleUseLabels are tool risk labels whose calls consume the task
	// token (jti replay protection): one such call per token.
	SingleUseLabels []string `yaml:"single_use_labels"`
	// TrustSources are the workload identity issuers agents authenticate
	// with (token exchange at /oauth/token, or directly).
	TrustSources []TrustSource `yaml:"trust_sources"`
}

// KeyRing configures rotating token signing keys.
type KeyRing struct {
	// Dir holds one key per file (shared by replicas). Default
	// <data_dir>/keys/ring.
	Dir string `yaml:"dir"`
	// Algorithm is EdDSA (default) or ES256.
	Algorithm string `yaml:"algorithm"`
	// RotateEvery rotates automatically; 0 = never.
	RotateEvery Duration `yaml:"rotate_every"`
	// PublishDelay is how long a new key is published before it signs.
	PublishDelay Duration `yaml:"publish_delay"`
	// Retain is how long a superseded key still verifies.
	Retain Duration `yaml:"retain"`
	// ReloadInterval is how often replicas re-read the directory.
	ReloadInterval Duration `yaml:"reload_interval"`
}

// TrustSource is one workload identity issuer with its trust policy.
type TrustSource struct {
	// Name is referenced by agents' credentials.
	Name string `yaml:"name"`
	// Kind is oidc, entra, aws, kubernetes or spiffe.
	Kind string `yaml:"kind"`
	// Issuer is the exact issuer (oidc, kubernetes).
	Issuer string `yaml:"issuer"`
	// Audience is the one audience credentials must carry (the gateway).
	Audience string `yaml:"audience"`
	// Subjects and SubjectPrefixes restrict subjects (oidc, kubernetes).
	Subjects        []string `yaml:"subjects"`
	SubjectPrefixes []string `yaml:"subject_prefixes"`
	// Algorithms restricts signature algorithms.
	Algorithms []string `yaml:"algorithms"`
	// MaxAge bounds a credential's age (iat) or an AWS request's date.
	MaxAge Duration `yaml:"max_age"`
	// JWKSFile verifies offline against a key set file instead of
	// discovery (oidc, kubernetes).
	JWKSFile string `yaml:"jwks_file"`
	// Users accepts users' tokens (as the on-behalf-of user of an
	// exchange, never as an agent).
	Users bool `yaml:"users"`
	// UserTags maps policy's user tags to claims of users' tokens (tag
	// name → claim name): a string or array-of-strings claim becomes the
	// set context.user.getTag(name) (oidc and entra sources with users).
	UserTags map[string]string `yaml:"user_tags"`
	// Direct lets the credential be presented as a bearer token without
	// exchange.
	Direct bool `yaml:"direct"`
	// Entra: tenants, token versions and authority.
	Tenants   []string `yaml:"tenants"`
	Versions  []string `yaml:"versions"`
	Authority string   `yaml:"authority"`
	// AWS: allow-listed STS endpoints, accounts, the signed audience header
	// and whether IAM users (not only roles) may authenticate.
	Endpoints      []string `yaml:"endpoints"`
	Accounts       []string `yaml:"accounts"`
	AudienceHeader string   `yaml:"audience_header"`
	AllowUsers     bool     `yaml:"allow_users"`
	// Kubernetes: optional TokenReview for prompt revocation.
	TokenReview *TokenReview `yaml:"token_review"`
	// SPIFFE: trust domain, allowed ids, the bundle (a file or the
	// Workload API) and whether X.509-SVIDs over mTLS are accepted.
	TrustDomain string   `yaml:"trust_domain"`
	IDs         []string `yaml:"ids"`
	IDPrefixes  []string `yaml:"id_prefixes"`
	BundleFile  string   `yaml:"bundle_file"`
	WorkloadAPI string   `yaml:"workload_api"`
	MTLS        bool     `yaml:"mtls"`
}

// TokenReview configures Kubernetes TokenReview.
type TokenReview struct {
	URL        string   `yaml:"url"`
	BearerFile string   `yaml:"bearer_file"`
	Cache      Duration `yaml:"cache"`
}

// Credential is a federated credential of an agent.
type Credential struct {
	Source  string `yaml:"source"`
	Tenant  string `yaml:"tenant"`
	Subject string `yaml:"subject"`
}

// Agent registers one agent.
type Agent struct {
	// ID is the agent's unique id: [a-z0-9][a-z0-9._-]{0,62}.
	ID string `yaml:"id"`
	// Name is a display name.
	Name string `yaml:"name"`
	// Owner is the accountable human (an email or directory name).
	Owner string `yaml:"owner"`
	// Servers lists the server ids the agent may use.
	Servers []string `yaml:"servers"`
	// Groups lists the agent's groups (Cedar: Gatehouse::Group).
	Groups []string `yaml:"groups"`
	// Hosting is the hosting pattern: azure-native, aws-native,
	// kubernetes, spiffe or external (default external).
	Hosting string `yaml:"hosting"`
	// Tools narrows the agent's baseline to these "server/tool" (or
	// "server/*") entries; default every tool of its servers.
	Tools []string `yaml:"tools"`
	// Tenants lists the Entra tenants and AWS accounts whose identities may
	// act as or through this agent.
	Tenants []string `yaml:"tenants"`
	// Expires is when the registration lapses (RFC 3339 or YYYY-MM-DD).
	Expires string `yaml:"expires"`
	// Credentials are the workload identities allowed to authenticate as
	// this agent.
	Credentials []Credential `yaml:"credentials"`
	// Disabled refuses every request of the agent.
	Disabled bool `yaml:"disabled"`
}

// Server is one upstream MCP server: either URL (Streamable HTTP) or
// Command (stdio), not both.
type Server struct {
	// ID names the server: [a-z][a-z0-9-]{0,31}. It is the namespace
	// prefix of its tools and prompts and of its resource URIs' schemes.
	ID string `yaml:"id"`
	// URL is the Streamable HTTP endpoint of the server.
	URL string `yaml:"url"`
	// HeaderFiles maps HTTP header names to files whose contents are sent
	// as the header's value on every upstream request (credentials for the
	// upstream; never the agent's token).
	HeaderFiles map[string]string `yaml:"header_files"`
	// Command starts a stdio server: argv[0] and its arguments.
	Command []string `yaml:"command"`
	// Dir is the working directory of a stdio server.
	Dir string `yaml:"dir"`
	// Env is the complete environment of a stdio server (non-secret
	// values). The gateway's own environment is never inherited.
	Env map[string]string `yaml:"env"`
	// EnvFiles maps environment variable names to files holding secret
	// values.
	EnvFiles map[string]string `yaml:"env_files"`
	// Timeout bounds one upstream request. Default 60s.
	Timeout Duration `yaml:"timeout"`
	// ConnectTimeout bounds session setup with the server. Default 10s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// Tools configures the server's tools by name (as the server names
	// them).
	Tools map[string]Tool `yaml:"tools"`
}

// Tool configures one upstream tool.
type Tool struct {
	// Labels are the tool's risk labels (reads_private, untrusted_content,
	// external_sink, destructive, financial, privilege, policy_change,
	// bulk_export). When set they replace the labels derived from the
	// tool's MCP annotations.
	Labels []string `yaml:"labels"`
	// PathArgs names more arguments whose values are paths (normalised
	// into context.paths for policies).
	PathArgs []string `yaml:"path_args"`
}

// Endpoint is one MCP endpoint of the gateway.
type Endpoint struct {
	// Path is the URL path, e.g. /mcp. Unique.
	Path string `yaml:"path"`
	// Servers lists the server ids aggregated at this endpoint. Default all.
	Servers []string `yaml:"servers"`
	// Namespace prefixes tool and prompt names with "<server>__" and resource
	// URIs with "<server>+". Default true; false is allowed only with a
	// single server.
	Namespace *bool `yaml:"namespace"`
	// Stateless serves the endpoint without MCP sessions. Default false.
	Stateless bool `yaml:"stateless"`
}

// Policy configures the Cedar policy engine.
type Policy struct {
	// Dir holds the enforced policies (*.cedar). Without it no Cedar
	// policy runs and agents are limited by their server allow-lists only.
	Dir string `yaml:"dir"`
	// ShadowDir holds a candidate policy set evaluated beside the enforced
	// one; differences are recorded in the audit log.
	ShadowDir string `yaml:"shadow_dir"`
	// Totals declares the running totals policies read as
	// context.totals.NAME, each one of the limits' value rules' totals.
	// Default none.
	Totals []PolicyTotal `yaml:"totals"`
}

// PolicyTotal makes one running total of a value rule (limits.values)
// visible to policy: context.totals.<Name> is the rule's total counted per
// Per (the request's agent, user or task) in the current window, calls in
// flight included, before the call being decided, in the rule's unit.
type PolicyTotal struct {
	// Name is the Cedar attribute: a letter or _, then letters, digits or
	// _. Required, unique.
	Name string `yaml:"name"`
	// Value names the value rule (its name, default "SERVER/TOOL").
	// Required.
	Value string `yaml:"value"`
	// Per is agent, user or task: which of the rule's totals. Required.
	Per string `yaml:"per"`
	// Window picks among the rule's totals with the same per; optional
	// when there is one.
	Window Duration `yaml:"window"`
}

// Telemetry configures Prometheus metrics and OpenTelemetry traces.
type Telemetry struct {
	// ServiceName is the service.name of spans. Default "gatehouse".
	ServiceName string `yaml:"service_name"`
	// OTLPEndpoint is the OTLP/HTTP traces endpoint (http://host:4318).
	// Empty turns tracing off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// OTLPHeaderFiles maps header names to files with their values
	// (collector credentials).
	OTLPHeaderFiles map[string]string `yaml:"otlp_header_files"`
	// SampleRatio is the fraction of traces sampled, in (0, 1]. Default 1.
	SampleRatio float64 `yaml:"sample_ratio"`
	// TrustIncomingTraceContext continues the agent's W3C trace context
	// (default false: it is only linked, so agents cannot choose trace
	// ids).
	TrustIncomingTraceContext bool `yaml:"trust_incoming_trace_context"`
	// MaxSeries bounds the label combinations of each metric. Default
	// 10000.
	MaxSeries int `yaml:"max_series"`
	// MetricsTokenFile holds a read-only credential for scraping /metrics
	// on the admin listener. Without it /metrics needs the admin
	// credential.
	MetricsTokenFile string `yaml:"metrics_token_file"`
}

// Semantic configures the semantic layer (docs/semantic.md). The zero
// value screens with every built-in detector and the default thresholds.
type Semantic struct {
	// Disabled turns screening off.
	Disabled bool `yaml:"disabled"`
	// Detectors turns built-in detectors on or off by name (injection,
	// heuristics, secrets, pii, canary, exfil); all are on by default.
	Detectors map[string]bool `yaml:"detectors"`
	// FailModes sets a detector's fail mode: closed (default), challenge
	// or open.
	FailModes map[string]string `yaml:"fail_modes"`
	// Thresholds overrides the injection-risk thresholds per surface
	// (prompt, tool_input, tool_output, document, prompt_result,
	// sampling, model_output).
	Thresholds map[string]SemanticThreshold `yaml:"thresholds"`
	// Secrets sets the action on a secret per surface.
	Secrets struct {
		Actions map[string]string `yaml:"actions"`
	} `yaml:"secrets"`
	// PII sets the action per personal-data type and the default phone
	// region.
	PII struct {
		Region  string            `yaml:"region"`
		Actions map[string]string `yaml:"actions"`
	} `yaml:"pii"`
	// Exfil configures the detection of exfiltration channels in outputs.
	Exfil struct {
		AllowedHosts []string `yaml:"allowed_hosts"`
		ImageAction  string   `yaml:"image_action"`
		LinkAction   string   `yaml:"link_action"`
	} `yaml:"exfil"`
	// CanaryKeyFile keys the derivation of canary tokens (shared by
	// replicas). Default <data_dir>/keys/canary.key, generated.
	CanaryKeyFile string `yaml:"canary_key_file"`
	// Datamark turns spotlighting of untrusted tool output on.
	Datamark bool `yaml:"datamark"`
	// Remotes are cloud and model adapters consulted besides the
	// built-in detectors.
	Remotes []SemanticRemote `yaml:"remotes"`
}

// SemanticThreshold overrides thresholds of one surface; an absent value
// keeps the default, a value above 1 means never.
type SemanticThreshold struct {
	Label     *float64 `yaml:"label"`
	Challenge *float64 `yaml:"challenge"`
	Block     *float64 `yaml:"block"`
}

// SemanticRemote is one remote adapter.
type SemanticRemote struct {
	// Type is azure_prompt_shields, bedrock_guardrails, lakera_guard or
	// openai_guard.
	Type     string `yaml:"type"`
	Endpoint string `yaml:"endpoint"`
	BaseURL  string `yaml:"base_url"`
	// KeyFile holds the API key (Azure, Lakera, OpenAI-compatible).
	KeyFile string `yaml:"key_file"`
	// Bedrock: region, guardrail id and version, and the files holding
	// the AWS credentials.
	Region              string   `yaml:"region"`
	GuardrailID         string   `yaml:"guardrail_id"`
	GuardrailVersion    string   `yaml:"guardrail_version"`
	AccessKeyIDFile     string   `yaml:"access_key_id_file"`
	SecretAccessKeyFile string   `yaml:"secret_access_key_file"`
	SessionTokenFile    string   `yaml:"session_token_file"`
	ProjectID           string   `yaml:"project_id"`
	Model               string   `yaml:"model"`
	Categories          []string `yaml:"categories"`
	Surfaces            []string `yaml:"surfaces"`
	Timeout             Duration `yaml:"timeout"`
	FailMode            string   `yaml:"fail_mode"`
	Cache               struct {
		Size int      `yaml:"size"`
		TTL  Duration `yaml:"ttl"`
	} `yaml:"cache"`
}

// Locks configures the hierarchical kill switch.
type Locks struct {
	// PollInterval is how often a replica reads the lock version. Default
	// 250ms.
	PollInterval Duration `yaml:"poll_interval"`
	// MaxStale is how long the locks may go unrefreshed before the fail
	// mode applies. Default 5s.
	MaxStale Duration `yaml:"max_stale"`
	// FailMode is closed (default: refuse everything while the lock store
	// is unreadable) or open (keep enforcing the last known locks).
	FailMode string `yaml:"fail_mode"`
}

// RateLimit is one rate rule.
type RateLimit struct {
	Name    string   `yaml:"name"`
	Per     []string `yaml:"per"`
	Agent   string   `yaml:"agent"`
	Server  string   `yaml:"server"`
	Tool    string   `yaml:"tool"`
	Actions []string `yaml:"actions"`
	// Rate is N/DURATION, e.g. 120/1m.
	Rate  string `yaml:"rate"`
	Burst int    `yaml:"burst"`
}

// ConcurrencyLimit caps calls in flight to a server or tool.
type ConcurrencyLimit struct {
	Server string `yaml:"server"`
	Tool   string `yaml:"tool"`
	Max    int    `yaml:"max"`
}

// ValueLimit is the value rule of one tool: a per-call ceiling and running
// totals over windows.
type ValueLimit struct {
	Name         string       `yaml:"name"`
	Server       string       `yaml:"server"`
	Tool         string       `yaml:"tool"`
	Argument     string       `yaml:"argument"`
	Decimals     int          `yaml:"decimals"`
	Unit         string       `yaml:"unit"`
	UnitArgument string       `yaml:"unit_argument"`
	Ceiling      string       `yaml:"ceiling"`
	FailMode     string       `yaml:"fail_mode"`
	Totals       []ValueTotal `yaml:"totals"`
}

// ValueTotal is a running total over fixed windows.
type ValueTotal struct {
	Name   string   `yaml:"name"`
	Per    string   `yaml:"per"`
	Window Duration `yaml:"window"`
	Limit  string   `yaml:"limit"`
}

// Breaker configures circuit breakers.
type Breaker struct {
	Off      bool     `yaml:"off"`
	Failures int      `yaml:"failures"`
	Open     Duration `yaml:"open"`
	Probes   int      `yaml:"probes"`
	Interval Duration `yaml:"interval"`
	Slow     Duration `yaml:"slow"`
}

// Breakers configures the breaker of every server and every tool, with
// overrides by "SERVER" or "SERVER/TOOL".
type Breakers struct {
	Server    Breaker            `yaml:"server"`
	Tool      Breaker            `yaml:"tool"`
	Overrides map[string]Breaker `yaml:"overrides"`
}

// Limits bounds request handling.
type Limits struct {
	// MaxBodyBytes caps an agent's request body. Default 4 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxSessions caps concurrent MCP sessions. Default 10000.
	MaxSessions int `yaml:"max_sessions"`
	// SessionIdleTimeout closes sessions idle this long. Default 30m.
	SessionIdleTimeout Duration `yaml:"session_idle_timeout"`
	// Rates are rate limits per agent, user, task, server or tool.
	Rates []RateLimit `yaml:"rates"`
	// Concurrency caps calls in flight per server or tool.
	Concurrency []ConcurrencyLimit `yaml:"concurrency"`
	// ConcurrencyRetry is the retry hint of a concurrency refusal.
	// Default 1s.
	ConcurrencyRetry Duration `yaml:"concurrency_retry"`
	// MaxHold bounds how long a call may hold a slot or a reservation.
	// Default 15m.
	MaxHold Duration `yaml:"max_hold"`
	// Values are per-call ceilings and running totals of a tool's value
	// argument.
	Values []ValueLimit `yaml:"values"`
	// Breakers configures circuit breakers per server and per tool.
	Breakers Breakers `yaml:"breakers"`
}

// Pinning configures tool-definition pinning.
type Pinning struct {
	// Mode is "enforce" (default: changed tools are quarantined) or "off".
	Mode string `yaml:"mode"`
}

// Audit configures the tamper-evident audit log.
type Audit struct {
	// Privacy is "metadata" (default: payloads are kept as salted hashes)
	// or "full" (payloads kept, secrets in them replaced by salted hashes).
	Privacy string `yaml:"privacy"`
	// SaltFile keys the HMAC that replaces payloads and secrets. Default
	// <data_dir>/keys/audit.salt, generated on first start.
	SaltFile string `yaml:"salt_file"`
	// KeyFile holds the Ed25519 signed-note key that signs checkpoints.
	// Default <data_dir>/keys/audit.key, generated on first start (its
	// verifier key is written next to it as audit.key.pub).
	KeyFile string `yaml:"key_file"`
	// Origin names the log (the key name in its checkpoints). Default
	// "gatehouse.local/audit". Used only when the key is generated.
	Origin string `yaml:"origin"`
	// CheckpointInterval is how often a checkpoint is signed when the log
	// has grown. Default 1m.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// CheckpointDir, when set, receives every checkpoint as a file
	// (checkpoint.<size> and checkpoint, the latest), for an external
	// witness or write-once storage.
	CheckpointDir string `yaml:"checkpoint_dir"`
	// CheckpointWebhook, when set, receives every checkpoint note by POST.
	CheckpointWebhook string `yaml:"checkpoint_webhook"`
	// CheckpointWebhookHeaderFiles maps header names to files with their
	// values (credentials of the webhook).
	CheckpointWebhookHeaderFiles map[string]string `yaml:"checkpoint_webhook_header_files"`
	// Export streams the log as OCSF JSON Lines to SIEMs, with
	// back-pressure (an exporter lags, it never drops) and a durable cursor.
	Export []AuditExport `yaml:"export"`
	// Journal (SQLite only; default true) makes a record durable in the
	// audit journal file and moves it into SQLite in the background;
	// false commits every batch to SQLite before acknowledging it.
	Journal *bool `yaml:"journal"`
}

// AuditExport is one export stream: exactly one of File, Stdout and URL.
type AuditExport struct {
	// Name identifies the stream's cursor. Default "export-<index>".
	Name string `yaml:"name"`
	// File appends to a file (created if missing, fsync'ed per batch).
	File string `yaml:"file"`
	// Stdout writes to the gateway's standard output.
	Stdout bool `yaml:"stdout"`
	// URL receives POSTs of application/x-ndjson batches.
	URL string `yaml:"url"`
	// HeaderFiles maps header names to files with their values.
	HeaderFiles map[string]string `yaml:"header_files"`
}

// Log configures operational logs.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is text (default) or json.
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		// A *yaml.TypeError lets the decoder go on and report every problem.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration %q", n.Line, s)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Load reads, strictly decodes and validates the file at path. The error
// lists every problem found.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	dir := filepath.Dir(path)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	f, err := Parse(b, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse decodes and validates a configuration; dir resolves relative paths.
func Parse(b []byte, dir string) (*File, error) {
	f := &File{dir: dir}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, &Error{Problems: te.Errors}
		}
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("decoding config: more than one YAML document")
	}
	f.setDefaults()
	if probs := f.validate(); len(probs) > 0 {
		return nil, &Error{Problems: probs}
	}
	return f, nil
}

// Error lists every problem in a configuration.
type Error struct{ Problems []string }

func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "invalid config: " + e.Problems[0]
	}
	return fmt.Sprintf("invalid config (%d problems):\n  - %s", len(e.Problems), strings.Join(e.Problems, "\n  - "))
}

// Path resolves p against the configuration file's directory.
func (f *File) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(f.dir, p)
}

// Dir returns the directory relative paths are resolved against.
func (f *File) Dir() string { return f.dir }

// SetDir sets the directory relative paths are resolved against (for
// configurations built in code).
func (f *File) SetDir(dir string) { f.dir = dir }

func (f *File) setDefaults() {
	if f.Listen == "" {
		f.Listen = "127.0.0.1:8080"
	}
	if f.DataDir == "" {
		f.DataDir = "data"
	}
	if f.Admin.Listen == "" {
		f.Admin.Listen = "127.0.0.1:8081"
	}
	if f.Admin.TokenFile == "" {
		f.Admin.TokenFile = filepath.Join(f.DataDir, "admin.token")
	}
	if f.Identity.Issuer == "" {
		f.Identity.Issuer = "gatehouse"
	}
	if f.Identity.Audience == "" {
		f.Identity.Audience = "gatehouse"
	}
	if f.Identity.SigningKeyFile == "" {
		f.Identity.SigningKeyFile = filepath.Join(f.DataDir, "keys", "signing.jwk")
	}
	if f.Identity.MaxTokenTTL == 0 {
		f.Identity.MaxTokenTTL = Duration(time.Hour)
	}
	if f.Identity.DefaultTokenTTL == 0 {
		f.Identity.DefaultTokenTTL = Duration(5 * time.Minute)
	}
	if f.Identity.DPoP == "" {
		f.Identity.DPoP = "optional"
	}
	if k := f.Identity.Keys; k != nil && k.Dir == "" {
		k.Dir = filepath.Join(f.DataDir, "keys", "ring")
	}
	if f.Identity.ClockSkew == 0 {
		f.Identity.ClockSkew = Duration(60 * time.Second)
	}
	for i := range f.Servers {
		s := &f.Servers[i]
		if s.Timeout == 0 {
			s.Timeout = Duration(60 * time.Second)
		}
		if s.ConnectTimeout == 0 {
			s.ConnectTimeout = Duration(10 * time.Second)
		}
	}
	if len(f.Endpoints) == 0 {
		f.Endpoints = []Endpoint{{Path: "/mcp"}}
	}
	for i := range f.Endpoints {
		e := &f.Endpoints[i]
		if len(e.Servers) == 0 {
			for _, s := range f.Servers {
				e.Servers = append(e.Servers, s.ID)
			}
		}
		if e.Namespace == nil {
			t := true
			e.Namespace = &t
		}
	}
	if f.Limits.MaxBodyBytes == 0 {
		f.Limits.MaxBodyBytes = 4 << 20
	}
	if f.Limits.MaxSessions == 0 {
		f.Limits.MaxSessions = 10000
	}
	if f.Limits.SessionIdleTimeout == 0 {
		f.Limits.SessionIdleTimeout = Duration(30 * time.Minute)
	}
	if f.Pinning.Mode == "" {
		f.Pinning.Mode = "enforce"
	}
	if f.Audit.Privacy == "" {
		f.Audit.Privacy = "metadata"
	}
	if f.Audit.SaltFile == "" {
		f.Audit.SaltFile = filepath.Join(f.DataDir, "keys", "audit.salt")
	}
	if f.Audit.KeyFile == "" {
		f.Audit.KeyFile = filepath.Join(f.DataDir, "keys", "audit.key")
	}
	if f.Audit.Origin == "" {
		f.Audit.Origin = "gatehouse.local/audit"
	}
	if f.Audit.CheckpointInterval == 0 {
		f.Audit.CheckpointInterval = Duration(time.Minute)
	}
	for i := range f.Audit.Export {
		if f.Audit.Export[i].Name == "" {
			f.Audit.Export[i].Name = fmt.Sprintf("export-%d", i)
		}
	}
	if f.Semantic.CanaryKeyFile == "" {
		f.Semantic.CanaryKeyFile = filepath.Join(f.DataDir, "keys", "canary.key")
	}
	f.Governance.setDefaults()
	if f.Log.Level == "" {
		f.Log.Level = "info"
	}
	if f.Log.Format == "" {
		f.Log.Format = "text"
	}
	if f.PublicURL == "" {
		scheme := "http"
		if f.TLS != nil {
			scheme = "https"
		}
		f.PublicURL = scheme + "://" + f.Listen
	}
}

var (
	serverIDRe = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	agentIDRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	headerRe   = regexp.MustCompile(`^[A-Za-z0-9-]+$`)
	envRe      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func (f *File) validate() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	checkAddr := func(key, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			add("%s: %q is not host:port", key, addr)
		}
	}
	checkAddr("listen", f.Listen)
	checkAddr("admin.listen", f.Admin.Listen)
	if u, err := url.Parse(f.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("public_url: %q is not an http(s) URL", f.PublicURL)
	}
	if f.TLS != nil && (f.TLS.CertFile == "" || f.TLS.KeyFile == "") {
		add("tls: cert_file and key_file are both required")
	}
	if ttl := f.Identity.MaxTokenTTL.Std(); ttl < time.Minute || ttl > 24*time.Hour {
		add("identity.max_token_ttl: %v is outside 1m..24h", ttl)
	}
	if sk := f.Identity.ClockSkew.Std(); sk < 0 || sk > 60*time.Second {
		add("identity.clock_skew: %v is outside 0..60s", sk)
	}
	if a := f.Identity.AnonymousAgent; a != "" {
		if !IsLoopback(f.Listen) {
			add("identity.anonymous_agent: refused because listen %q is not a loopback address", f.Listen)
		}
	}

	servers := map[string]bool{}
	for i, s := range f.Servers {
		key := fmt.Sprintf("servers[%d]", i)
		if !serverIDRe.MatchString(s.ID) {
			add("%s.id: %q must match %s", key, s.ID, serverIDRe)
		} else if servers[s.ID] {
			add("%s.id: duplicate server id %q", key, s.ID)
		}
		servers[s.ID] = true
		switch {
		case s.URL != "" && len(s.Command) > 0:
			add("%s: url and command are mutually exclusive", key)
		case s.URL == "" && len(s.Command) == 0:
			add("%s: one of url or command is required", key)
		case s.URL != "":
			if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("%s.url: %q is not an http(s) URL", key, s.URL)
			} else if u.User != nil {
				add("%s.url: credentials in the URL are not allowed; use header_files", key)
			}
			if len(s.Env)+len(s.EnvFiles) > 0 || s.Dir != "" {
				add("%s: env, env_files and dir apply only to command servers", key)
			}
		default:
			if len(s.HeaderFiles) > 0 {
				add("%s.header_files: applies only to url servers", key)
			}
		}
		for h, file := range s.HeaderFiles {
			if !headerRe.MatchString(h) {
				add("%s.header_files: invalid header name %q", key, h)
			}
			f.checkFile(&p, fmt.Sprintf("%s.header_files[%s]", key, h), file)
		}
		for k := range s.Env {
			if !envRe.MatchString(k) {
				add("%s.env: invalid variable name %q", key, k)
			}
		}
		for k, file := range s.EnvFiles {
			if !envRe.MatchString(k) {
				add("%s.env_files: invalid variable name %q", key, k)
			}
			if _, dup := s.Env[k]; dup {
				add("%s: %s is set in both env and env_files", key, k)
			}
			f.checkFile(&p, fmt.Sprintf("%s.env_files[%s]", key, k), file)
		}
		if s.Timeout.Std() <= 0 || s.ConnectTimeout.Std() <= 0 {
			add("%s: timeouts must be positive", key)
		}
	}

	agents := map[string]bool{}
	for i, a := range f.Agents {
		key := fmt.Sprintf("agents[%d]", i)
		if !agentIDRe.MatchString(a.ID) {
			add("%s.id: %q must match %s", key, a.ID, agentIDRe)
		} else if agents[a.ID] {
			add("%s.id: duplicate agent id %q", key, a.ID)
		}
		agents[a.ID] = true
		if strings.TrimSpace(a.Owner) == "" {
			add("%s.owner: every agent needs an accountable owner", key)
		}
		for _, s := range a.Servers {
			if !servers[s] {
				add("%s.servers: unknown server %q", key, s)
			}
		}
	}
	sources := map[string]string{}
	for i, ts := range f.Identity.TrustSources {
		key := fmt.Sprintf("identity.trust_sources[%d]", i)
		if ts.Name == "" || sources[ts.Name] != "" {
			add("%s.name: %q is empty or not unique", key, ts.Name)
		}
		switch ts.Kind {
		case "oidc", "kubernetes":
			if ts.Issuer == "" {
				add("%s.issuer: required for %s", key, ts.Kind)
			}
		case "entra":
			if len(ts.Tenants) == 0 {
				add("%s.tenants: required for entra", key)
			}
			for _, t := range ts.Tenants {
				if t == "" || strings.ContainsAny(t, "/?#") || t == "common" || t == "organizations" || t == "consumers" {
					add("%s.tenants: %q is not a tenant id (multi-tenant authorities would admit any tenant)", key, t)
				}
			}
		case "aws":
			if len(ts.Endpoints) == 0 {
				add("%s.endpoints: required for aws", key)
			}
			if ts.Audience == "" {
				add("%s.audience: required for aws (the signed audience header binds requests to this gateway)", key)
			}
		case "spiffe":
			if ts.TrustDomain == "" || (ts.BundleFile == "" && ts.WorkloadAPI == "") {
				add("%s: spiffe needs trust_domain and bundle_file or workload_api", key)
			}
		default:
			add("%s.kind: %q is not oidc, entra, aws, kubernetes or spiffe", key, ts.Kind)
		}
		if ts.Kind != "aws" && ts.Audience == "" && ts.Kind != "" {
			add("%s.audience: required (the gateway's audience)", key)
		}
		if len(ts.UserTags) > 0 && (!ts.Users || ts.Kind != "oidc" && ts.Kind != "entra") {
			add("%s.user_tags: only for oidc and entra sources with users: true", key)
		}
		if len(ts.UserTags) > 64 {
			add("%s.user_tags: at most 64 tags", key)
		}
		for _, tag := range slices.Sorted(maps.Keys(ts.UserTags)) {
			if claim := ts.UserTags[tag]; tag == "" || claim == "" {
				add("%s.user_tags: tag and claim names must not be empty (%q: %q)", key, tag, claim)
			}
		}
		if ts.Direct && ts.Kind == "aws" {
			add("%s.direct: not available for aws (exchange the signed request)", key)
		}
		if ts.JWKSFile != "" {
			f.checkFile(&p, key+".jwks_file", ts.JWKSFile)
		}
		if ts.BundleFile != "" {
			f.checkFile(&p, key+".bundle_file", ts.BundleFile)
		}
		sources[ts.Name] = ts.Kind
	}
	for i, a := range f.Agents {
		for j, c := range a.Credentials {
			key := fmt.Sprintf("agents[%d].credentials[%d]", i, j)
			kind, ok := sources[c.Source]
			if !ok {
				add("%s.source: unknown trust source %q", key, c.Source)
			}
			if (kind == "entra" || kind == "aws") != (c.Tenant != "") && ok {
				add("%s.tenant: required exactly for entra and aws sources", key)
			}
			if c.Subject == "" {
				add("%s.subject: required", key)
			}
		}
		if a.Expires != "" {
			if _, err := ParseTime(a.Expires); err != nil {
				add("agents[%d].expires: %v", i, err)
			}
		}
	}
	if d := f.Identity.DPoP; d != "" && d != "off" && d != "optional" && d != "required" {
		add("identity.dpop: %q is not off, optional or required", d)
	}
	for _, l := range f.Identity.SingleUseLabels {
		if !toolLabels[l] {
			add("identity.single_use_labels: unknown label %q", l)
		}
	}
	if k := f.Identity.Keys; k != nil {
		if k.Algorithm != "" && k.Algorithm != "EdDSA" && k.Algorithm != "ES256" {
			add("identity.keys.algorithm: %q is not EdDSA or ES256", k.Algorithm)
		}
		if k.Retain != 0 && k.Retain.Std() < f.Identity.MaxTokenTTL.Std()+f.Identity.ClockSkew.Std() {
			add("identity.keys.retain: must be at least max_token_ttl + clock_skew")
		}
	}
	if a := f.Identity.AnonymousAgent; a != "" && !agents[a] {
		add("identity.anonymous_agent: unknown agent %q", a)
	}

	paths := map[string]bool{}
	for i, e := range f.Endpoints {
		key := fmt.Sprintf("endpoints[%d]", i)
		if !strings.HasPrefix(e.Path, "/") || strings.ContainsAny(e.Path, "?#* ") {
			add("%s.path: %q must be an absolute URL path", key, e.Path)
		}
		if paths[e.Path] {
			add("%s.path: duplicate path %q", key, e.Path)
		}
		if reserved(e.Path) {
			add("%s.path: %q is reserved by the gateway", key, e.Path)
		}
		paths[e.Path] = true
		if len(e.Servers) == 0 {
			add("%s: no servers", key)
		}
		seen := map[string]bool{}
		for _, s := range e.Servers {
			if !servers[s] {
				add("%s.servers: unknown server %q", key, s)
			}
			if seen[s] {
				add("%s.servers: %q listed twice", key, s)
			}
			seen[s] = true
		}
		if e.Namespace != nil && !*e.Namespace && len(e.Servers) > 1 {
			add("%s.namespace: false requires exactly one server (names would collide)", key)
		}
	}
	if f.Limits.MaxBodyBytes < 1024 {
		add("limits.max_body_bytes: %d is below 1024", f.Limits.MaxBodyBytes)
	}
	if f.Limits.MaxSessions < 1 {
		add("limits.max_sessions: must be positive")
	}
	if !slices.Contains([]string{"enforce", "off"}, f.Pinning.Mode) {
		add("pinning.mode: %q is not enforce or off", f.Pinning.Mode)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, f.Log.Level) {
		add("log.level: %q is not debug, info, warn or error", f.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, f.Log.Format) {
		add("log.format: %q is not text or json", f.Log.Format)
	}
	if f.Store.DSNFile != "" {
		f.checkFile(&p, "store.dsn_file", f.Store.DSNFile)
	}
	f.validateAudit(add, &p)
	f.validateExecution(add, servers)
	f.validateGovernance(add, &p)
	t := f.Telemetry
	if t.SampleRatio < 0 || t.SampleRatio > 1 {
		add("telemetry.sample_ratio: %v is outside (0, 1]", t.SampleRatio)
	}
	if t.OTLPEndpoint != "" {
		if u, err := url.Parse(t.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("telemetry.otlp_endpoint: %q is not an http(s) URL", t.OTLPEndpoint)
		}
	}
	for h, file := range t.OTLPHeaderFiles {
		if !headerRe.MatchString(h) {
			add("telemetry.otlp_header_files: invalid header name %q", h)
		}
		f.checkFile(&p, "telemetry.otlp_header_files["+h+"]", file)
	}
	if t.MetricsTokenFile != "" {
		f.checkFile(&p, "telemetry.metrics_token_file", t.MetricsTokenFile)
	}
	return p
}

// checkFile reports a secret file that cannot be read or is readable by
// others than its owner.
func (f *File) checkFile(p *[]string, key, path string) {
	if path == "" {
		*p = append(*p, key+": empty path")
		return
	}
	st, err := os.Stat(f.Path(path))
	if err != nil {
		*p = append(*p, fmt.Sprintf("%s: %v", key, err))
		return
	}
	if st.IsDir() {
		*p = append(*p, fmt.Sprintf("%s: %s is a directory", key, path))
	}
}

func reserved(path string) bool {
	for _, r := range []string{"/.well-known", "/healthz", "/metrics", "/approvals", "/oauth"} {
		if path == r || strings.HasPrefix(path, r+"/") {
			return true
		}
	}
	return false
}

// IsLoopback reports whether the host of addr is a loopback address or
// "localhost".
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ReadSecret reads a secret file named in the configuration, trimming one
// trailing newline.
func (f *File) ReadSecret(path string) (string, error) {
	b, err := os.ReadFile(f.Path(path))
	if err != nil {
		return "", fmt.Errorf("reading secret file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

var noteNameRe = regexp.MustCompile(`^[A-Za-z0-9./_-]{1,128}$`)

func (f *File) validateAudit(add func(string, ...any), p *[]string) {
	a := f.Audit
	if a.Privacy != "metadata" && a.Privacy != "full" {
		add("audit.privacy: %q is not metadata or full", a.Privacy)
	}
	if !noteNameRe.MatchString(a.Origin) {
		add("audit.origin: %q must match %s", a.Origin, noteNameRe)
	}
	if a.CheckpointInterval.Std() < time.Second {
		add("audit.checkpoint_interval: %v is below 1s", a.CheckpointInterval.Std())
	}
	if a.CheckpointWebhook != "" {
		if u, err := url.Parse(a.CheckpointWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("audit.checkpoint_webhook: %q is not an http(s) URL", a.CheckpointWebhook)
		}
	}
	for h, file := range a.CheckpointWebhookHeaderFiles {
		if !headerRe.MatchString(h) {
			add("audit.checkpoint_webhook_header_files: invalid header name %q", h)
		}
		f.checkFile(p, "audit.checkpoint_webhook_header_files["+h+"]", file)
	}
	names := map[string]bool{}
	for i, e := range a.Export {
		key := fmt.Sprintf("audit.export[%d]", i)
		n := 0
		for _, set := range []bool{e.File != "", e.Stdout, e.URL != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			add("%s: exactly one of file, stdout and url is required", key)
		}
		if e.URL != "" {
			if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("%s.url: %q is not an http(s) URL", key, e.URL)
			}
		}
		if names[e.Name] {
			add("%s.name: duplicate export name %q", key, e.Name)
		}
		names[e.Name] = true
		for h, file := range e.HeaderFiles {
			if !headerRe.MatchString(h) {
				add("%s.header_files: invalid header name %q", key, h)
			}
			f.checkFile(p, key+".header_files["+h+"]", file)
		}
	}
}

var toolLabels = map[string]bool{"reads_private": true, "untrusted_content": true, "external_sink": true, "destructive": true,
	"financial": true, "privilege": true, "policy_change": true, "bulk_export": true}

var hostingPatterns = map[string]bool{"": true, "azure-native": true, "aws-native": true, "kubernetes": true, "spiffe": true, "external": true}

func (f *File) validateExecution(add func(string, ...any), servers map[string]bool) {
	for i, s := range f.Servers {
		for name, t := range s.Tools {
			if name == "" {
				add("servers[%d].tools: empty tool name", i)
			}
			for _, l := range t.Labels {
				if !toolLabels[l] {
					add("servers[%d].tools[%s].labels: unknown label %q", i, name, l)
				}
			}
		}
	}
	for i, a := range f.Agents {
		if !hostingPatterns[a.Hosting] {
			add("agents[%d].hosting: %q is not azure-native, aws-native, kubernetes, spiffe or external", i, a.Hosting)
		}
	}
	for _, d := range []struct{ key, dir string }{{"policy.dir", f.Policy.Dir}, {"policy.shadow_dir", f.Policy.ShadowDir}} {
		if d.dir == "" {
			continue
		}
		if st, err := os.Stat(f.Path(d.dir)); err != nil || !st.IsDir() {
			add("%s: %q is not a directory", d.key, d.dir)
		}
	}
	if f.Policy.ShadowDir != "" && f.Policy.Dir == "" {
		add("policy.shadow_dir: needs policy.dir")
	}
	if len(f.Policy.Totals) > 0 && f.Policy.Dir == "" {
		add("policy.totals: needs policy.dir")
	}
	totalNames := map[string]bool{}
	for i, t := range f.Policy.Totals {
		if !cedarIdent.MatchString(t.Name) {
			add("policy.totals[%d].name: %q must be a letter or _ followed by letters, digits or _", i, t.Name)
		} else if totalNames[t.Name] {
			add("policy.totals[%d].name: %q is declared twice", i, t.Name)
		}
		totalNames[t.Name] = true
		if t.Value == "" {
			add("policy.totals[%d].value: required (the name of a limits.values rule)", i)
		}
		if t.Per != "agent" && t.Per != "user" && t.Per != "task" {
			add("policy.totals[%d].per: %q is not agent, user or task", i, t.Per)
		}
		if t.Window < 0 {
			add("policy.totals[%d].window: must not be negative", i)
		}
	}
	if fm := f.Locks.FailMode; fm != "" && fm != "closed" && fm != "open" {
		add("locks.fail_mode: %q is not closed or open", fm)
	}
	for i, r := range f.Limits.Concurrency {
		if !servers[r.Server] {
			add("limits.concurrency[%d].server: unknown server %q", i, r.Server)
		}
	}
	for i, v := range f.Limits.Values {
		if !servers[v.Server] {
			add("limits.values[%d].server: unknown server %q", i, v.Server)
		}
	}
	for i, r := range f.Limits.Rates {
		if r.Server != "" && !servers[r.Server] {
			add("limits.rates[%d].server: unknown server %q", i, r.Server)
		}
	}
}

// cedarIdent is a Cedar identifier, usable as context.totals.NAME.
var cedarIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ParseTime parses an RFC 3339 time or a YYYY-MM-DD date (midnight UTC).
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor YYYY-MM-DD", s)
	}
	return t, nil
}
