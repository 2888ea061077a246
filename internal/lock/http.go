package lock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Request is the body of POST /v1/locks.
type Request struct {
	Scope  string `json:"scope"`
	Target string `json:"target"`
	Reason string `json:"reason"`
	// TTL is a Go duration ("1h"); empty means no expiry.
	TTL string `json:"ttl,omitempty"`
	By  string `json:"by"`
}

// Lock turns the request into a lock created at now. Target "-" means none
// (for global locks).
func (q Request) Lock(now time.Time) (Lock, error) {
	sc, err := ParseScope(q.Scope)
	if err != nil {
		return Lock{}, err
	}
	l := Lock{Scope: sc, Target: q.Target, Reason: q.Reason, By: q.By, Created: now}
	if l.Target == "-" {
		l.Target = ""
	}
	if q.TTL != "" {
		d, err := time.ParseDuration(q.TTL)
		if err != nil || d <= 0 {
			return Lock{}, fmt.Errorf("%w: ttl %q is not a positive duration", ErrInvalid, q.TTL)
		}
		l.Expires = now.Add(d)
	}
	return l, l.Validate()
}

// Handler serves the admin routes of the kill switch:
//
//	POST   /v1/locks                  {scope, target, reason, ttl, by} → 201 with the lock
//	DELETE /v1/locks/{scope}/{target} (target "-" for global; ?by=NAME) → 204
//	GET    /v1/locks                  → 200 with the locks in force
//
// Errors are {"error": message} with 400 (invalid), 404 (no such lock) or
// 500. who, when not nil, names the authenticated administrator and
// overrides the "by" the client sent. The caller authenticates requests.
func (m *Manager) Handler(who func(*http.Request) string) http.Handler {
	mux := http.NewServeMux()
	by := func(r *http.Request, claimed string) string {
		if who != nil {
			if w := who(r); w != "" {
				return w
			}
		}
		if claimed == "" {
			return "admin"
		}
		return claimed
	}
	mux.HandleFunc("GET /v1/locks", func(w http.ResponseWriter, r *http.Request) {
		ls, err := m.List(r.Context())
		if err != nil {
			m.cfg.Logger.Error("listing locks", "err", err)
			writeError(w, err)
			return
		}
		if ls == nil {
			ls = []Lock{}
		}
		writeJSON(w, http.StatusOK, ls)
	})
	mux.HandleFunc("POST /v1/locks", func(w http.ResponseWriter, r *http.Request) {
		var q Request
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			writeError(w, fmt.Errorf("%w: malformed request body", ErrInvalid))
			return
		}
		q.By = by(r, q.By)
		l, err := q.Lock(m.cfg.Now())
		if err == nil {
			l, err = m.Lock(r.Context(), l)
		}
		if err != nil {
			m.cfg.Logger.Warn("setting a lock failed", "err", err)
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, l)
	})
	mux.HandleFunc("DELETE /v1/locks/{scope}/{target...}", func(w http.ResponseWriter, r *http.Request) {
		sc, err := ParseScope(r.PathValue("scope"))
		if err != nil {
			writeError(w, err)
			return
		}
		target := r.PathValue("target")
		if sc == Global && target == "-" {
			target = ""
		}
		if err := m.Unlock(r.Context(), sc, target, by(r, r.URL.Query().Get("by"))); err != nil {
			m.cfg.Logger.Warn("removing a lock failed", "err", err)
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError maps an error to a status and a public message.
func writeError(w http.ResponseWriter, err error) {
	status, msg := http.StatusInternalServerError, "the lock store is unavailable"
	switch {
	case errors.Is(err, ErrInvalid):
		status, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrNotLocked):
		status, msg = http.StatusNotFound, "no such lock"
	case errors.Is(err, ErrAudit):
		msg = ErrAudit.Error() + "; nothing was changed"
	}
	writeJSON(w, status, map[string]string{"error": strings.TrimSpace(msg)})
}
