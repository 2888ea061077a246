package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
)

// AgentStore is the durable, managed agent registry. Implementations must
// make every change atomic with its audit record: Audit is called inside
// the change's transaction and an error aborts the change (no change
// without a record). A federated credential belongs to at most one agent.
type AgentStore interface {
	Registry
	List(ctx context.Context) ([]*Agent, error)
	// Create adds a new agent (ErrAgentExists when the id is taken,
	// ErrCredentialTaken when a credential is another agent's).
	Create(ctx context.Context, a *Agent, change ChangeInfo) (*Agent, error)
	// Update replaces an agent's definition (not its status). a.Version
	// must equal the stored version (ErrVersionConflict otherwise).
	Update(ctx context.Context, a *Agent, change ChangeInfo) (*Agent, error)
	// SetStatus suspends, resumes (active) or retires an agent. A retired
	// agent cannot be resumed.
	SetStatus(ctx context.Context, id string, s Status, change ChangeInfo) (*Agent, error)
}

// ChangeInfo says who changes the registry and why.
type ChangeInfo struct {
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
}

// AgentChange is the audit record of one registry change.
type AgentChange struct {
	// Action is "agent.create", "agent.update", "agent.suspend",
	// "agent.resume" or "agent.retire".
	Action string
	ChangeInfo
	Time   time.Time
	Before *Agent // nil for create
	After  *Agent
	// Failed is set on a second record of a change that was recorded but
	// could not be applied; Error says why.
	Failed bool
	Error  string
}

// Registry errors.
var (
	ErrAgentExists     = errors.New("an agent with this id exists")
	ErrCredentialTaken = errors.New("the federated credential belongs to another agent")
	ErrVersionConflict = errors.New("the agent was changed concurrently; reload and retry")
	ErrRetired         = errors.New("a retired agent cannot change status")
)

var agentID = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateAgent checks an agent definition.
func ValidateAgent(a *Agent) error {
	if !agentID.MatchString(a.ID) {
		return fmt.Errorf("agent id %q must match %s", a.ID, agentID)
	}
	switch a.Hosting {
	case "", HostingAzure, HostingAWS, HostingKubernetes, HostingSPIFFE, HostingExternal:
	default:
		return fmt.Errorf("agent %s: hosting %q is not one of azure-native, aws-native, kubernetes, spiffe, external", a.ID, a.Hosting)
	}
	switch a.Status {
	case "", StatusActive, StatusSuspended, StatusRetired:
	default:
		return fmt.Errorf("agent %s: unknown status %q", a.ID, a.Status)
	}
	seen := map[string]bool{}
	for _, c := range a.Credentials {
		if c.Source == "" || c.Subject == "" {
			return fmt.Errorf("agent %s: a federated credential needs a source and a subject", a.ID)
		}
		if strings.ContainsRune(c.Source+c.Tenant+c.Subject, 0) {
			return fmt.Errorf("agent %s: a federated credential contains a NUL byte", a.ID)
		}
		if seen[c.Key()] {
			return fmt.Errorf("agent %s: federated credential %s/%s is listed twice", a.ID, c.Source, c.Subject)
		}
		seen[c.Key()] = true
	}
	seenGroup := map[string]bool{}
	for _, g := range a.Groups {
		if g == "" || len(g) > 128 || strings.ContainsFunc(g, unicode.IsControl) {
			return fmt.Errorf("agent %s: group %q must be 1 to 128 characters without control characters", a.ID, g)
		}
		if seenGroup[g] {
			return fmt.Errorf("agent %s: group %q is listed twice", a.ID, g)
		}
		seenGroup[g] = true
	}
	for _, t := range a.Tools {
		srv, tool, ok := strings.Cut(t, "/")
		if !ok || srv == "" || tool == "" || !slices.Contains(a.Servers, srv) {
			return fmt.Errorf("agent %s: tool %q must be server/tool for one of its servers", a.ID, t)
		}
	}
	return nil
}

// AdminHandler serves the agent routes of the admin API. Mount it on the
// admin listener, behind the admin credential check, at /v1/agents and
// /v1/agents/:
//
//	GET  /v1/agents                  list
//	POST /v1/agents                  create (body: Agent)
//	GET  /v1/agents/{id}             show
//	PUT  /v1/agents/{id}             replace the definition (body: Agent with version)
//	POST /v1/agents/{id}/suspend     body: {"by": "...", "reason": "..."}
//	POST /v1/agents/{id}/resume      same
//	POST /v1/agents/{id}/retire      same
//
// Errors are {"error": "..."} with 400, 404, 409 or 500.
func AdminHandler(s AgentStore) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agents", func(w http.ResponseWriter, r *http.Request) {
		list, err := s.List(r.Context())
		if err != nil {
			adminError(w, err)
			return
		}
		if list == nil {
			list = []*Agent{}
		}
		adminJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /v1/agents/{id}", func(w http.ResponseWriter, r *http.Request) {
		a, err := s.Agent(r.Context(), r.PathValue("id"))
		if err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, http.StatusOK, a)
	})
	mux.HandleFunc("POST /v1/agents", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Agent
			ChangeInfo
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		a, err := s.Create(r.Context(), &req.Agent, req.ChangeInfo)
		if err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, http.StatusCreated, a)
	})
	mux.HandleFunc("PUT /v1/agents/{id}", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Agent
			ChangeInfo
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		if req.ID != r.PathValue("id") {
			adminJSON(w, http.StatusBadRequest, map[string]string{"error": "the body's id differs from the path"})
			return
		}
		a, err := s.Update(r.Context(), &req.Agent, req.ChangeInfo)
		if err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, http.StatusOK, a)
	})
	for verb, st := range map[string]Status{"suspend": StatusSuspended, "resume": StatusActive, "retire": StatusRetired} {
		mux.HandleFunc("POST /v1/agents/{id}/"+verb, func(w http.ResponseWriter, r *http.Request) {
			var ci ChangeInfo
			if !decodeAdmin(w, r, &ci) {
				return
			}
			a, err := s.SetStatus(r.Context(), r.PathValue("id"), st, ci)
			if err != nil {
				adminError(w, err)
				return
			}
			adminJSON(w, http.StatusOK, a)
		})
	}
	return mux
}

func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		adminJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid request body: " + err.Error()})
		return false
	}
	return true
}

func adminError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNoAgent):
		status = http.StatusNotFound
	case errors.Is(err, ErrAgentExists), errors.Is(err, ErrCredentialTaken), errors.Is(err, ErrVersionConflict), errors.Is(err, ErrRetired):
		status = http.StatusConflict
	case errors.As(err, new(*ValidationError)):
		status = http.StatusBadRequest
	}
	adminJSON(w, status, map[string]string{"error": err.Error()})
}

// ValidationError wraps an invalid agent definition.
type ValidationError struct{ Err error }

func (e *ValidationError) Error() string { return e.Err.Error() }
func (e *ValidationError) Unwrap() error { return e.Err }

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
