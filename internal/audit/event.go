package audit

import (
	"encoding/json"
	"time"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// OCSFVersion is the OCSF schema version the events follow.
const OCSFVersion = "1.3.0"

// Product names the producer in every event's metadata.
var Product = ProductInfo{Name: "Gatehouse", VendorName: "Gatehouse"}

// OCSF categories and classes used by the gateway.
const (
	CategoryIAM         = 3 // Identity & Access Management
	CategoryApplication = 6 // Application Activity

	ClassAuthentication       = 3002
	ClassAuthorizeSession     = 3003
	ClassEntityManagement     = 3004
	ClassUserAccessManagement = 3005
	ClassAPIActivity          = 6003
)

// Activity identifiers of the classes used (OCSF 1.3.0). Other (99) is valid
// in every class.
const (
	ActivityUnknown = 0
	ActivityOther   = 99

	// API Activity.
	APICreate = 1
	APIRead   = 2
	APIUpdate = 3
	APIDelete = 4

	// Authentication.
	AuthLogon  = 1
	AuthLogoff = 2

	// Authorize Session.
	AuthorizeAssignPrivileges = 1
	AuthorizeAssignGroups     = 2

	// Entity Management.
	EntityCreate     = 1
	EntityRead       = 2
	EntityUpdate     = 3
	EntityDelete     = 4
	EntityEnable     = 8
	EntityDisable    = 9
	EntityActivate   = 10
	EntityDeactivate = 11
	EntitySuspend    = 12
	EntityResume     = 13

	// User Access Management.
	AccessAssignPrivileges = 1
	AccessRevokePrivileges = 2
)

// Severity identifiers.
const (
	SeverityUnknown       = 0
	SeverityInformational = 1
	SeverityLow           = 2
	SeverityMedium        = 3
	SeverityHigh          = 4
	SeverityCritical      = 5
)

// Status identifiers.
const (
	StatusUnknown = 0
	StatusSuccess = 1
	StatusFailure = 2
	StatusOther   = 99
)

// Event is one audit event in OCSF JSON. Fields are declared in the
// lexicographic order of their JSON names, and so are those of every nested
// type, so that encoding/json produces canonical JSON (sorted keys, no
// insignificant whitespace) without a second pass; a test enforces it.
//
// Build events with the constructors (APIActivity, Authentication,
// AuthorizeSession, EntityManagement, UserAccessManagement); Append fills
// metadata and time.
type Event struct {
	ActivityID   int            `json:"activity_id"`
	ActivityName string         `json:"activity_name,omitempty"`
	Actor        *Actor         `json:"actor,omitempty"`
	API          *API           `json:"api,omitempty"`
	CategoryName string         `json:"category_name,omitempty"`
	CategoryUID  int            `json:"category_uid"`
	ClassName    string         `json:"class_name,omitempty"`
	ClassUID     int            `json:"class_uid"`
	Comment      string         `json:"comment,omitempty"`
	DstEndpoint  *Endpoint      `json:"dst_endpoint,omitempty"`
	Entity       *ManagedEntity `json:"entity,omitempty"`
	HTTPRequest  *HTTPRequest   `json:"http_request,omitempty"`
	Message      string         `json:"message,omitempty"`
	Metadata     Metadata       `json:"metadata"`
	Privileges   []string       `json:"privileges,omitempty"`
	Resources    []Resource     `json:"resources,omitempty"`
	Service      *Service       `json:"service,omitempty"`
	Severity     string         `json:"severity,omitempty"`
	SeverityID   int            `json:"severity_id"`
	SrcEndpoint  *Endpoint      `json:"src_endpoint,omitempty"`
	Status       string         `json:"status,omitempty"`
	StatusCode   string         `json:"status_code,omitempty"`
	StatusDetail string         `json:"status_detail,omitempty"`
	StatusID     int            `json:"status_id"`
	Time         int64          `json:"time"` // milliseconds since the Unix epoch
	TypeName     string         `json:"type_name,omitempty"`
	TypeUID      int            `json:"type_uid"`
	Unmapped     *Unmapped      `json:"unmapped,omitempty"`
	User         *User          `json:"user,omitempty"`
}

// Metadata is the OCSF metadata object.
type Metadata struct {
	CorrelationUID string      `json:"correlation_uid,omitempty"`
	LoggedTime     int64       `json:"logged_time,omitempty"`
	Product        ProductInfo `json:"product"`
	UID            string      `json:"uid,omitempty"`
	Version        string      `json:"version"`
}

// ProductInfo is the OCSF product object.
type ProductInfo struct {
	Name       string `json:"name,omitempty"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version,omitempty"`
}

// Actor is the OCSF actor object: AppName is the agent, AppUID its instance,
// User the human on whose behalf it acts (or the operator, for
// administrative events), InvokedBy the gateway.
type Actor struct {
	AppName   string `json:"app_name,omitempty"`
	AppUID    string `json:"app_uid,omitempty"`
	InvokedBy string `json:"invoked_by,omitempty"`
	User      *User  `json:"user,omitempty"`
}

// User is the OCSF user object.
type User struct {
	Name   string `json:"name,omitempty"`
	Type   string `json:"type,omitempty"`
	TypeID int    `json:"type_id,omitempty"`
	UID    string `json:"uid,omitempty"`
}

// API is the OCSF api object.
type API struct {
	Operation string       `json:"operation"`
	Request   *APIRequest  `json:"request,omitempty"`
	Response  *APIResponse `json:"response,omitempty"`
	Service   *Service     `json:"service,omitempty"`
}

// APIRequest is the OCSF request object.
type APIRequest struct {
	UID string `json:"uid"`
}

// APIResponse is the OCSF response object.
type APIResponse struct {
	Code    int    `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// Service is the OCSF service object.
type Service struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

// Endpoint is the OCSF network_endpoint object.
type Endpoint struct {
	Hostname string `json:"hostname,omitempty"`
	IP       string `json:"ip,omitempty"`
	Name     string `json:"name,omitempty"`
	Port     int    `json:"port,omitempty"`
	UID      string `json:"uid,omitempty"`
}

// HTTPRequest is the OCSF http_request object (subset).
type HTTPRequest struct {
	HTTPMethod string `json:"http_method,omitempty"`
	URL        *URL   `json:"url,omitempty"`
	UserAgent  string `json:"user_agent,omitempty"`
}

// URL is the OCSF url object (subset).
type URL struct {
	Hostname string `json:"hostname,omitempty"`
	Path     string `json:"path,omitempty"`
	Scheme   string `json:"scheme,omitempty"`
}

// Resource is the OCSF resource_details object.
type Resource struct {
	Labels []string `json:"labels,omitempty"`
	Name   string   `json:"name,omitempty"`
	Type   string   `json:"type,omitempty"`
	UID    string   `json:"uid,omitempty"`
}

// ManagedEntity is the OCSF managed_entity object.
type ManagedEntity struct {
	Data    json.RawMessage `json:"data,omitempty"`
	Name    string          `json:"name,omitempty"`
	Type    string          `json:"type,omitempty"`
	UID     string          `json:"uid,omitempty"`
	Version string          `json:"version,omitempty"`
}

// Unmapped carries the Gatehouse fields that OCSF has no attribute for.
type Unmapped struct {
	Act           []string        `json:"act,omitempty"`
	Agent         string          `json:"agent,omitempty"`
	Arguments     json.RawMessage `json:"arguments,omitempty"`
	Findings      *Findings       `json:"findings,omitempty"`
	ArgumentsHash string          `json:"arguments_hash,omitempty"`
	Instance      string          `json:"instance,omitempty"`
	IntentIndex   *int64          `json:"intent_index,omitempty"`
	Labels        []string        `json:"labels,omitempty"`
	OnBehalfOf    string          `json:"on_behalf_of,omitempty"`
	Phase         string          `json:"phase,omitempty"`
	Policies      []Policy        `json:"policies,omitempty"`
	Result        json.RawMessage `json:"result,omitempty"`
	ResultHash    string          `json:"result_hash,omitempty"`
	Server        string          `json:"server,omitempty"`
	SessionLabels []string        `json:"session_labels,omitempty"`
	Source        string          `json:"source,omitempty"`
	Task          string          `json:"task,omitempty"`
	Tool          string          `json:"tool,omitempty"`
	TokenID       string          `json:"token_id,omitempty"`
	TraceID       string          `json:"trace_id,omitempty"`
	Verdict       *Verdict        `json:"verdict,omitempty"`
	// Workload holds the informational attributes of the workload
	// credential an identity event verified (Entra app_id and an Agent ID
	// token's agent_blueprint, an AWS role's session_name, a Kubernetes
	// pod); never a token.
	Workload map[string]string `json:"workload,omitempty"`
	// SourceIdentity is Source in parts, as policy sees it
	// (context.source), so that replay can give it back to policy.
	SourceIdentity *SourceIdentity `json:"source_identity,omitempty"`
}

// SourceIdentity is the verified workload identity behind a request's
// token: the trust source that verified it, its kind, the Entra tenant or
// AWS account (empty for sources without tenants) and the subject.
type SourceIdentity struct {
	TrustSource string `json:"trust_source"`
	Kind        string `json:"kind,omitempty"`
	Tenant      string `json:"tenant,omitempty"`
	Subject     string `json:"subject"`
}

// Findings summarise the semantic layer's findings on a request or its
// output: the kinds found and each detector's highest score (0 to 1).
type Findings struct {
	Kinds  []string           `json:"kinds,omitempty"`
	Scores map[string]float64 `json:"scores,omitempty"`
}

// Policy names a policy and the version that decided.
type Policy struct {
	ID      string `json:"id"`
	Version string `json:"version,omitempty"`
}

// Verdict is the recorded form of a verdict.Verdict, with canonical key order.
type Verdict struct {
	Obligations []Obligation `json:"obligations,omitempty"`
	Outcome     string       `json:"outcome"`
	Reasons     []Reason     `json:"reasons,omitempty"`
}

// Reason is the recorded form of a verdict.Reason.
type Reason struct {
	Code     string   `json:"code"`
	Layer    string   `json:"layer"`
	Message  string   `json:"message,omitempty"`
	Outcome  string   `json:"outcome"`
	Policies []string `json:"policies,omitempty"`
}

// Obligation is the recorded form of a verdict.Obligation.
type Obligation struct {
	Detail string `json:"detail,omitempty"`
	Group  string `json:"group,omitempty"`
	Kind   string `json:"kind"`
}

// RecordVerdict converts a verdict for recording.
func RecordVerdict(v verdict.Verdict) *Verdict {
	out := &Verdict{Outcome: v.Outcome.String()}
	for _, r := range v.Reasons {
		out.Reasons = append(out.Reasons, Reason{Code: r.Code, Layer: string(r.Layer), Message: r.Message, Outcome: r.Outcome.String(), Policies: r.Policies})
	}
	for _, o := range v.Obligations {
		out.Obligations = append(out.Obligations, Obligation{Detail: o.Detail, Group: o.Group, Kind: o.Kind})
	}
	return out
}

// Subject says who acted, for whom, in which task, and how the event
// correlates with others. Every constructor takes one.
type Subject struct {
	Agent       string // registered agent identity
	Instance    string // agent instance (workload) identifier
	User        string // human on whose behalf the agent acts, or the operator of an administrative change
	Task        string // task identifier from the gateway token
	Correlation string // links related events (intent and outcome of one call, an approval and its use)
	TraceID     string // W3C trace id
	SrcIP       string // client address
}

// Phase of a mediated call.
type Phase string

// Phases.
const (
	PhaseIntent  Phase = "intent"  // recorded before a side-effecting call is forwarded
	PhaseOutcome Phase = "outcome" // recorded after the upstream answered (or failed)
	PhaseList    Phase = "list"    // tool listing
	PhaseDecide  Phase = "decision"
)

// Call describes a mediated tool call or LLM request.
type Call struct {
	Phase     Phase
	Activity  int    // APICreate..APIDelete, or ActivityOther (default)
	Operation string // e.g. "tools/call", "chat/completions"; default "tools/call"
	Server    string // upstream MCP server or LLM provider
	Tool      string // tool or model name
	RequestID string // JSON-RPC or HTTP request id
	Labels    []verdict.Label
	// SessionLabels are the session's information-flow labels when the
	// call was decided (for policy replay).
	SessionLabels []verdict.Label
	// Findings are the semantic layer's findings, if any.
	Findings *Findings
	Policies []Policy
	// Arguments and Result are JSON payloads. They are hashed (salted) in
	// metadata-only mode and stored redacted in full-payload mode.
	Arguments json.RawMessage
	Result    json.RawMessage
	// Intent is the receipt of the intent record that an outcome completes.
	Intent *Receipt
	// Failed marks an outcome whose upstream call failed; Error says why.
	Failed bool
	Error  string
	// HTTP describes the underlying HTTP request (LLM traffic).
	HTTP *HTTPRequest
}

func base(class, category, activity int, className, categoryName, activityName string, s Subject) *Event {
	e := &Event{
		ActivityID:   activity,
		ActivityName: activityName,
		CategoryName: categoryName,
		CategoryUID:  category,
		ClassName:    className,
		ClassUID:     class,
		Metadata:     Metadata{CorrelationUID: s.Correlation, Product: Product, Version: OCSFVersion},
		SeverityID:   SeverityInformational,
		Severity:     "Informational",
		TypeUID:      class*100 + activity,
		TypeName:     className + ": " + activityName,
		Unmapped: &Unmapped{
			Agent:      s.Agent,
			Instance:   s.Instance,
			OnBehalfOf: s.User,
			Task:       s.Task,
			TraceID:    s.TraceID,
		},
	}
	if s.SrcIP != "" {
		e.SrcEndpoint = &Endpoint{IP: s.SrcIP}
	}
	return e
}

func actor(s Subject) *Actor {
	a := &Actor{AppName: s.Agent, AppUID: s.Instance, InvokedBy: Product.Name}
	if s.User != "" {
		a.User = &User{Name: s.User, UID: s.User, Type: "User", TypeID: 1}
	}
	return a
}

func agentUser(s Subject) *User {
	switch {
	case s.Agent != "":
		return &User{Name: s.Agent, UID: s.Agent, Type: "Agent", TypeID: 99}
	case s.Instance != "":
		// A credential that names no registered agent: the workload
		// identity it proved.
		return &User{UID: s.Instance, Type: "Agent", TypeID: 99}
	default:
		// Nothing identifies the caller (no credential, or an unreadable
		// one). OCSF requires a name, uid or account.
		return &User{Name: "unknown", Type: "Unknown"}
	}
}

var apiActivityNames = map[int]string{APICreate: "Create", APIRead: "Read", APIUpdate: "Update", APIDelete: "Delete", ActivityOther: "Other", ActivityUnknown: "Unknown"}

func setVerdict(e *Event, v verdict.Verdict) {
	e.Unmapped.Verdict = RecordVerdict(v)
	switch v.Outcome {
	case verdict.Allow:
		e.StatusID, e.Status = StatusSuccess, "Success"
	default:
		e.StatusID, e.Status = StatusFailure, "Failure"
		e.SeverityID, e.Severity = SeverityMedium, "Medium"
		if r := v.First(); r.Code != "" {
			e.StatusDetail = r.Code
		}
	}
}

// APIActivity records a tool call, a tool listing or an LLM request (OCSF
// API Activity, 6003). For an intent, v is the pipeline's verdict; for an
// outcome, v is the final verdict (after output screening) and c.Intent links
// the intent record.
func APIActivity(s Subject, c Call, v verdict.Verdict) *Event {
	act := c.Activity
	if _, ok := apiActivityNames[act]; !ok || act == ActivityUnknown {
		act = ActivityOther
	}
	if c.Phase == PhaseList {
		act = APIRead
	}
	e := base(ClassAPIActivity, CategoryApplication, act, "API Activity", "Application Activity", apiActivityNames[act], s)
	op := c.Operation
	if op == "" {
		op = "tools/call"
		if c.Phase == PhaseList {
			op = "tools/list"
		}
	}
	e.Actor = actor(s)
	e.API = &API{Operation: op, Service: &Service{Name: c.Server}}
	if c.RequestID != "" {
		e.API.Request = &APIRequest{UID: c.RequestID}
	}
	if e.SrcEndpoint == nil {
		// src_endpoint is required by the class; the agent instance is the
		// best identifier of the caller when no address is known.
		e.SrcEndpoint = &Endpoint{UID: firstNonEmpty(s.Instance, s.Agent, "unknown")}
	}
	e.HTTPRequest = c.HTTP
	if c.Tool != "" {
		r := Resource{Name: c.Tool, Type: "tool", UID: c.Server + "/" + c.Tool}
		for _, l := range c.Labels {
			r.Labels = append(r.Labels, string(l))
			e.Unmapped.Labels = append(e.Unmapped.Labels, string(l))
		}
		e.Resources = []Resource{r}
	}
	u := e.Unmapped
	u.Phase = string(c.Phase)
	u.Server, u.Tool, u.Policies = c.Server, c.Tool, c.Policies
	for _, l := range c.SessionLabels {
		u.SessionLabels = append(u.SessionLabels, string(l))
	}
	u.Findings = c.Findings
	u.Arguments, u.Result = c.Arguments, c.Result
	if c.Intent != nil {
		i := c.Intent.Index
		u.IntentIndex = &i
	}
	setVerdict(e, v)
	if c.Failed {
		e.StatusID, e.Status = StatusFailure, "Failure"
		e.API.Response = &APIResponse{Error: c.Error}
		if e.StatusDetail == "" {
			e.StatusDetail = "upstream_error"
		}
	}
	e.Message = string(c.Phase) + " " + op + " " + c.Server + "/" + c.Tool + ": " + v.Outcome.String()
	return e
}

// Auth describes an authentication attempt of an agent.
type Auth struct {
	Activity int    // AuthLogon (default) or AuthLogoff
	Issuer   string // identity provider: OIDC issuer, SPIFFE trust domain, ...
	Method   string // verifier kind: "oidc", "entra", "aws", "k8s", "spiffe"
	Failed   bool
	Detail   string // e.g. "identity.token_expired"
}

// Authentication records an agent proving its identity to the gateway (OCSF
// Authentication, 3002).
func Authentication(s Subject, a Auth, v verdict.Verdict) *Event {
	act, name := AuthLogon, "Logon"
	if a.Activity == AuthLogoff {
		act, name = AuthLogoff, "Logoff"
	}
	e := base(ClassAuthentication, CategoryIAM, act, "Authentication", "Identity & Access Management", name, s)
	e.Actor = actor(s)
	e.User = agentUser(s)
	e.Service = &Service{Name: Product.Name, UID: a.Issuer}
	if a.Method != "" {
		e.Resources = []Resource{{Type: "identity_verifier", Name: a.Method, UID: a.Issuer}}
	}
	setVerdict(e, v)
	if a.Failed {
		e.StatusID, e.Status = StatusFailure, "Failure"
		e.StatusDetail = firstNonEmpty(a.Detail, e.StatusDetail, "authentication_failed")
	}
	e.Message = name + " of agent " + s.Agent + " via " + a.Method
	return e
}

// AuthorizeSession records the privileges (scopes, tools) granted to an
// agent's task-scoped gateway token (OCSF Authorize Session, 3003).
func AuthorizeSession(s Subject, privileges []string, v verdict.Verdict) *Event {
	e := base(ClassAuthorizeSession, CategoryIAM, AuthorizeAssignPrivileges, "Authorize Session", "Identity & Access Management", "Assign Privileges", s)
	e.Actor = actor(s)
	e.User = agentUser(s)
	e.Privileges = append([]string{}, privileges...)
	if len(e.Privileges) == 0 {
		e.Privileges = []string{"none"}
	}
	setVerdict(e, v)
	e.Message = "session authorized for agent " + s.Agent
	return e
}

// Entity describes a managed object of the gateway.
type Entity struct {
	Type    string // "agent", "lock", "policy", "tool_pin", "owner", ...
	UID     string
	Name    string
	Version string
	Data    json.RawMessage // the new state, if useful (never secrets)
}

var entityActivityNames = map[int]string{
	EntityCreate: "Create", EntityRead: "Read", EntityUpdate: "Update", EntityDelete: "Delete",
	EntityEnable: "Enable", EntityDisable: "Disable", EntityActivate: "Activate", EntityDeactivate: "Deactivate",
	EntitySuspend: "Suspend", EntityResume: "Resume", ActivityOther: "Other",
}

// EntityManagement records a change of gateway state: agent registry,
// locks (kill switch), policy reloads, tool pins (OCSF Entity Management,
// 3004). s.User is the operator who made the change.
func EntityManagement(s Subject, activity int, ent Entity, comment string) *Event {
	name, ok := entityActivityNames[activity]
	if !ok {
		activity, name = ActivityOther, "Other"
	}
	e := base(ClassEntityManagement, CategoryIAM, activity, "Entity Management", "Identity & Access Management", name, s)
	e.Actor = actor(s)
	e.Entity = &ManagedEntity{Data: ent.Data, Name: ent.Name, Type: ent.Type, UID: ent.UID, Version: ent.Version}
	if ent.Type == "policy" && ent.UID != "" {
		e.Unmapped.Policies = []Policy{{ID: ent.UID, Version: ent.Version}}
	}
	e.Comment = comment
	e.StatusID, e.Status = StatusSuccess, "Success"
	e.Message = name + " " + ent.Type + " " + firstNonEmpty(ent.Name, ent.UID)
	return e
}

// Grant describes an approval decision about an agent's privileges.
type Grant struct {
	Approval   string   // approval request id
	Privileges []string // e.g. "call:server/tool#<arguments hash>"
	Resource   string   // what the privileges give access to (server/tool)
	ExpiresAt  time.Time
}

// UserAccessManagement records the grant (AccessAssignPrivileges) or
// revocation/expiry/consumption (AccessRevokePrivileges) of an approval
// (OCSF User Access Management, 3005). s.User is the approver; s.Agent the
// grantee.
func UserAccessManagement(s Subject, activity int, g Grant, v verdict.Verdict) *Event {
	name := "Assign Privileges"
	if activity == AccessRevokePrivileges {
		name = "Revoke Privileges"
	} else if activity != AccessAssignPrivileges {
		activity, name = ActivityOther, "Other"
	}
	e := base(ClassUserAccessManagement, CategoryIAM, activity, "User Access Management", "Identity & Access Management", name, s)
	e.Actor = actor(s)
	e.User = agentUser(s)
	e.Privileges = append([]string{}, g.Privileges...)
	if len(e.Privileges) == 0 {
		e.Privileges = []string{"none"}
	}
	if g.Approval != "" || g.Resource != "" {
		e.Resources = []Resource{{Type: "approval", UID: g.Approval, Name: g.Resource}}
	}
	setVerdict(e, v)
	e.Message = name + " for agent " + s.Agent + " by " + s.User
	if !g.ExpiresAt.IsZero() {
		e.Message += " until " + g.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return e
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
