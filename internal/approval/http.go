package approval

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Directory lists the people who may approve through the admin API, with
// their groups: the admin credential identifies an operator, who names the
// approver (the CLI's --as). Names missing from it are refused.
type Directory map[string]DirectoryEntry

// DirectoryEntry is one approver of a Directory.
type DirectoryEntry struct {
	Groups []string `json:"groups"`
	// NonHuman marks a service principal (automation holding the admin
	// credential): it may revoke but never approve.
	NonHuman bool `json:"non_human,omitempty"`
}

// ErrUnknownApprover: the named approver is not in the directory.
var ErrUnknownApprover = errors.New("unknown approver: name one listed in the governance approvers (--as)")

// AdminToken returns the Approver function for admin-credential requests:
// the claimed name is looked up in d, and the approver is recorded with
// Method "admin-token" and Operator operator. Such approvers carry no
// authentication time, so they never count for a risk class that demands
// fresh strong authentication (Rule.FreshAuth, Rule.ACR).
func (d Directory) AdminToken(operator string) func(r *http.Request, claimed string) (Approver, error) {
	return func(r *http.Request, claimed string) (Approver, error) {
		claimed = strings.TrimSpace(claimed)
		if claimed == "" {
			return Approver{}, fmt.Errorf("%w: name the approver (approver, or --as)", ErrInvalid)
		}
		e, ok := d[claimed]
		if !ok {
			return Approver{}, ErrUnknownApprover
		}
		return Approver{Subject: claimed, Groups: append([]string(nil), e.Groups...), Method: MethodAdminToken, Operator: operator, Human: !e.NonHuman}, nil
	}
}

// HandlerConfig configures the admin API handler.
type HandlerConfig struct {
	// Approver authenticates the approver of a request: claimed is the
	// name the client sent. Required (Directory.AdminToken for the admin
	// credential).
	Approver func(r *http.Request, claimed string) (Approver, error)
}

// View is an approval as the admin API shows it.
type View struct {
	Approval
	URL        string     `json:"url"`
	Deliveries []Delivery `json:"deliveries,omitempty"`
}

// DecisionRequest is the body of POST /v1/approvals/{id}/approve|deny.
type DecisionRequest struct {
	// Approver names who decides (see HandlerConfig.Approver).
	Approver      string `json:"approver"`
	Comment       string `json:"comment,omitempty"`
	Justification string `json:"justification,omitempty"`
	BreakGlass    bool   `json:"break_glass,omitempty"`
	// TTL narrows the grant window (Go duration, "2m").
	TTL          string `json:"ttl,omitempty"`
	MaxUses      int    `json:"max_uses,omitempty"`
	ValueCeiling string `json:"value_ceiling,omitempty"`
}

// RevokeRequest is the body of POST /v1/approvals/{id}/revoke.
type RevokeRequest struct {
	Approver string `json:"approver"`
	Comment  string `json:"comment,omitempty"`
}

// ElevationRequest is the body of POST /v1/elevations.
type ElevationRequest struct {
	Approver      string       `json:"approver"`
	Agent         string       `json:"agent"`
	User          string       `json:"user,omitempty"`
	Task          string       `json:"task,omitempty"`
	Server        string       `json:"server"`
	Tools         []string     `json:"tools"`
	Constraints   []Constraint `json:"constraints,omitempty"`
	Risk          string       `json:"risk,omitempty"`
	Group         string       `json:"group,omitempty"`
	TTL           string       `json:"ttl"`
	MaxUses       int          `json:"max_uses,omitempty"`
	ValueCeiling  string       `json:"value_ceiling,omitempty"`
	Justification string       `json:"justification"`
}

// CloseRequest is the body of POST /v1/reviews/{id}/close.
type CloseRequest struct {
	Approver string `json:"approver"`
	Comment  string `json:"comment"`
}

func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: ttl %q is not a positive duration", ErrInvalid, s)
	}
	return d, nil
}

// Handler serves the governance routes of the admin API. The caller
// mounts it behind the admin credential:
//
//	GET  /v1/approvals[?status=pending&agent=A&kind=call|elevation&open=1&limit=N]
//	GET  /v1/approvals/{id}                       the approval with its deliveries
//	POST /v1/approvals/{id}/approve               DecisionRequest
//	POST /v1/approvals/{id}/deny                  DecisionRequest
//	POST /v1/approvals/{id}/revoke                RevokeRequest
//	GET  /v1/approvals/{id}/bundle                the evidence bundle (Bundle.Encode)
//	POST /v1/elevations                           ElevationRequest → 201
//	GET  /v1/reviews[?status=open|closed]         after-the-fact review items
//	POST /v1/reviews/{id}/close                   CloseRequest
//
// Errors are {"error": message}: 400 invalid, 403 refused by the rules
// (separation of duties, groups, authentication strength, widening,
// break-glass), 404 unknown, 409 no longer pending or already reviewed,
// 501 no bundles, 503 audit log unavailable (nothing changed), 500 else.
func (m *Manager) Handler(cfg HandlerConfig) http.Handler {
	mux := http.NewServeMux()
	approver := func(r *http.Request, claimed string) (Approver, error) {
		if cfg.Approver == nil {
			return Approver{}, fmt.Errorf("%w: no approver directory is configured", ErrUnknownApprover)
		}
		return cfg.Approver(r, claimed)
	}
	mux.HandleFunc("GET /v1/approvals", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		query := Query{Status: Status(q.Get("status")), Kind: Kind(q.Get("kind")), Agent: q.Get("agent"), Open: q.Get("open") == "1" || q.Get("open") == "true"}
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 0 || n > 10000 {
				m.writeError(w, fmt.Errorf("%w: limit %q", ErrInvalid, l))
				return
			}
			query.Limit = n
		}
		as, err := m.List(r.Context(), query)
		if err != nil {
			m.writeError(w, err)
			return
		}
		out := make([]View, 0, len(as))
		for _, a := range as {
			out = append(out, View{Approval: a, URL: m.StatusURL(a.ID)})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		a, err := m.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			m.writeError(w, err)
			return
		}
		ds, err := m.Deliveries(r.Context(), a.ID)
		if err != nil {
			m.writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, View{Approval: a, URL: m.StatusURL(a.ID), Deliveries: ds})
	})
	decide := func(vote Vote) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var q DecisionRequest
			if err := decodeBody(r, &q); err != nil {
				m.writeError(w, err)
				return
			}
			who, err := approver(r, q.Approver)
			if err != nil {
				m.writeError(w, err)
				return
			}
			ttl, err := parseTTL(q.TTL)
			if err != nil {
				m.writeError(w, err)
				return
			}
			a, err := m.Decide(r.Context(), r.PathValue("id"), who, Decision{Vote: vote, Comment: q.Comment, Justification: q.Justification,
				BreakGlass: q.BreakGlass, TTL: ttl, MaxUses: q.MaxUses, ValueCeiling: q.ValueCeiling})
			if err != nil {
				m.writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, View{Approval: a, URL: m.StatusURL(a.ID)})
		}
	}
	mux.HandleFunc("POST /v1/approvals/{id}/approve", decide(Approve))
	mux.HandleFunc("POST /v1/approvals/{id}/deny", decide(Deny))
	mux.HandleFunc("POST /v1/approvals/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		var q RevokeRequest
		if err := decodeBody(r, &q); err != nil {
			m.writeError(w, err)
			return
		}
		// Anyone holding the admin credential may take a grant away; the
		// approver is named when known.
		by := strings.TrimSpace(q.Approver)
		if by != "" {
			who, err := approver(r, by)
			if err != nil {
				m.writeError(w, err)
				return
			}
			by = who.Subject
		} else {
			by = MethodAdminToken
		}
		a, err := m.Revoke(r.Context(), r.PathValue("id"), by, q.Comment)
		if err != nil {
			m.writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, View{Approval: a, URL: m.StatusURL(a.ID)})
	})
	mux.HandleFunc("GET /v1/approvals/{id}/bundle", func(w http.ResponseWriter, r *http.Request) {
		b, err := m.Bundle(r.Context(), r.PathValue("id"))
		if err != nil {
			m.writeError(w, err)
			return
		}
		data, err := b.Encode()
		if err != nil {
			m.writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="`+b.Approval.ID+`.bundle.json"`)
		_, _ = w.Write(data)
	})
	mux.HandleFunc("POST /v1/elevations", func(w http.ResponseWriter, r *http.Request) {
		var q ElevationRequest
		if err := decodeBody(r, &q); err != nil {
			m.writeError(w, err)
			return
		}
		who, err := approver(r, q.Approver)
		if err != nil {
			m.writeError(w, err)
			return
		}
		ttl, err := parseTTL(q.TTL)
		if err != nil {
			m.writeError(w, err)
			return
		}
		a, err := m.Elevate(r.Context(), Elevation{Agent: q.Agent, User: q.User, Task: q.Task, Server: q.Server, Tools: q.Tools, Constraints: q.Constraints,
			Risk: q.Risk, Group: q.Group, TTL: ttl, MaxUses: q.MaxUses, ValueCeiling: q.ValueCeiling, Justification: q.Justification}, who)
		if err != nil {
			m.writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, View{Approval: a, URL: m.StatusURL(a.ID)})
	})
	mux.HandleFunc("GET /v1/reviews", func(w http.ResponseWriter, r *http.Request) {
		items, err := m.ReviewItems(r.Context(), r.URL.Query().Get("status"))
		if err != nil {
			m.writeError(w, err)
			return
		}
		if items == nil {
			items = []ReviewItem{}
		}
		writeJSON(w, http.StatusOK, items)
	})
	mux.HandleFunc("POST /v1/reviews/{id}/close", func(w http.ResponseWriter, r *http.Request) {
		var q CloseRequest
		if err := decodeBody(r, &q); err != nil {
			m.writeError(w, err)
			return
		}
		who, err := approver(r, q.Approver)
		if err != nil {
			m.writeError(w, err)
			return
		}
		it, err := m.CloseReviewItem(r.Context(), r.PathValue("id"), who, q.Comment)
		if err != nil {
			m.writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, it)
	})
	return mux
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: malformed request body", ErrInvalid)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// HTTPStatus maps an error of the Manager to an HTTP status and a public
// message.
func HTTPStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, ErrNotFound.Error()
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrNotCanonicalizable), errors.Is(err, ErrNoApprovers):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrSeparation), errors.Is(err, ErrNotHuman), errors.Is(err, ErrNotEligible), errors.Is(err, ErrAuthTooWeak),
		errors.Is(err, ErrWiden), errors.Is(err, ErrBreakGlass), errors.Is(err, ErrUnknownApprover):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, ErrNotPending), errors.Is(err, ErrAlreadyReviewed), errors.Is(err, ErrExpired):
		return http.StatusConflict, err.Error()
	case errors.Is(err, ErrNoBundles):
		return http.StatusNotImplemented, ErrNoBundles.Error()
	case errors.Is(err, ErrAudit):
		return http.StatusServiceUnavailable, ErrAudit.Error() + "; nothing was changed"
	}
	return http.StatusInternalServerError, "the approval service is unavailable"
}

func (m *Manager) writeError(w http.ResponseWriter, err error) {
	status, msg := HTTPStatus(err)
	if status >= 500 {
		m.log.Error("approval admin request failed", "err", err)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}
