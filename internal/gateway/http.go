package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/store"
)

// mcpHandler serves the agent-facing listener: the MCP endpoints, RFC 9728
// protected resource metadata and a health check.
func (g *Gateway) mcpHandler() http.Handler {
	mux := http.NewServeMux()
	for _, p := range g.proxy.Paths() {
		mux.Handle(p, g.proxy)
	}
	g.identityRoutes(mux)
	mux.Handle("/approvals/", g.approvals.Page(approval.PageConfig{CheckAdmin: g.checkAdminCredential, Directory: g.approvers,
		ShowArguments: g.cfg.Governance.Page.ShowArguments}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

// recoverer turns a panic in a handler into an error-level log entry with
// its stack and a 500 answer, instead of net/http's silent connection
// close: a crash on some input must be visible to operators.
func (g *Gateway) recoverer(listener string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				g.log.Error("handler panicked; answered 500", "listener", listener, "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				writeJSON(w, http.StatusInternalServerError, apiError{"internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// apiError is the admin API's error body.
type apiError struct {
	Error string `json:"error"`
}

// adminHandler serves the admin API. Every route requires the admin
// credential.
func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": Version})
	})
	mux.HandleFunc("GET /v1/tools", g.adminListTools)
	mux.HandleFunc("GET /v1/tools/{server}/{tool}", g.adminShowTool)
	mux.HandleFunc("POST /v1/tools/{server}/{tool}/approve", g.adminApproveTool)
	mux.HandleFunc("POST /v1/tokens", g.adminMintToken)
	g.auditRoutes(mux)
	g.policyRoutes(mux)
	// The admin credential names no one, so the operator recorded is the
	// one the client names (the body's "by" when locking, ?by= when
	// unlocking; "admin" when none), as on the other admin routes.
	locks := g.exec.locks.Handler(nil)
	mux.Handle("/v1/locks", locks)
	mux.Handle("/v1/locks/", locks)
	agents := identity.AdminHandler(g.agents)
	mux.Handle("/v1/agents", agents)
	mux.Handle("/v1/agents/", agents)
	g.governanceRoutes(mux, agents)
	metrics := g.metricsHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && r.Method == http.MethodGet {
			metrics.ServeHTTP(w, r)
			return
		}
		if !g.checkAdmin(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse-admin"`)
			writeJSON(w, http.StatusUnauthorized, apiError{"admin credential required"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// toolView is a pinned tool as the admin API shows it.
type toolView struct {
	Server      string          `json:"server"`
	Tool        string          `json:"tool"`
	Status      string          `json:"status"` // pinned or quarantined
	Approved    string          `json:"approved_hash"`
	Seen        string          `json:"seen_hash"`
	FirstSeen   time.Time       `json:"first_seen"`
	ChangedAt   time.Time       `json:"changed_at"`
	ApprovedDef json.RawMessage `json:"approved_definition,omitempty"`
	SeenDef     json.RawMessage `json:"seen_definition,omitempty"`
}

func (g *Gateway) adminListTools(w http.ResponseWriter, r *http.Request) {
	pins, err := g.pins.List(r.Context())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
		return
	}
	out := make([]toolView, 0, len(pins))
	for _, p := range pins {
		v := toolView{Server: p.Server, Tool: p.Tool, Status: "pinned", Approved: p.Approved, Seen: p.Seen, FirstSeen: p.FirstSeen, ChangedAt: p.ChangedAt}
		if p.Quarantined() {
			v.Status = "quarantined"
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) adminShowTool(w http.ResponseWriter, r *http.Request) {
	pins, err := g.pins.List(r.Context())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
		return
	}
	for _, p := range pins {
		if p.Server == r.PathValue("server") && p.Tool == r.PathValue("tool") {
			v := toolView{Server: p.Server, Tool: p.Tool, Status: "pinned", Approved: p.Approved, Seen: p.Seen,
				FirstSeen: p.FirstSeen, ChangedAt: p.ChangedAt, ApprovedDef: p.ApprovedDef, SeenDef: p.SeenDef}
			if p.Quarantined() {
				v.Status = "quarantined"
			}
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	writeJSON(w, http.StatusNotFound, apiError{"no such tool"})
}

func (g *Gateway) adminApproveTool(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Hash string `json:"hash"`
		By   string `json:"by"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil || body.Hash == "" {
		writeJSON(w, http.StatusBadRequest, apiError{"body must be {\"hash\": \"<seen hash you reviewed>\"}"})
		return
	}
	server, tool := r.PathValue("server"), r.PathValue("tool")
	st, err := g.pins.Approve(r.Context(), server, tool, body.Hash)
	switch {
	case errors.Is(err, store.ErrNoPin):
		writeJSON(w, http.StatusNotFound, apiError{err.Error()})
		return
	case errors.Is(err, store.ErrPinMismatch):
		writeJSON(w, http.StatusConflict, apiError{err.Error()})
		return
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
		return
	}
	g.proxy.PinApproved(server, tool)
	g.recorder.pinApproved(r.Context(), server, tool, st.Approved, body.By)
	writeJSON(w, http.StatusOK, toolView{Server: st.Server, Tool: st.Tool, Status: "pinned", Approved: st.Approved, Seen: st.Seen, FirstSeen: st.FirstSeen, ChangedAt: st.ChangedAt})
}

func (g *Gateway) adminMintToken(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Agent string `json:"agent"`
		TTL   string `json:"ttl"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{"invalid JSON body"})
		return
	}
	ttl := 5 * time.Minute
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"invalid ttl"})
			return
		}
		ttl = d
	}
	// The registry decides, as at the token endpoint: an unknown,
	// suspended, retired or expired agent gets no token (one would be
	// refused at its first use anyway).
	a, err := g.agents.Agent(r.Context(), body.Agent)
	switch {
	case errors.Is(err, identity.ErrNoAgent):
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("agent %q is not registered", body.Agent)})
		return
	case err != nil:
		g.log.Error("minting a token: reading the agent registry", "agent", body.Agent, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{"the agent registry is unavailable"})
		return
	}
	if err := a.Usable(g.now()); err != nil {
		msg := fmt.Sprintf("agent %q is suspended", a.ID)
		switch identity.ErrorCode(err) {
		case identity.CodeAgentRetired:
			msg = fmt.Sprintf("agent %q is retired", a.ID)
		case identity.CodeAgentExpired:
			msg = fmt.Sprintf("agent %q expired at %s", a.ID, a.Expires.UTC().Format(time.RFC3339))
		}
		writeJSON(w, http.StatusConflict, apiError{msg})
		return
	}
	// The kill switch, as at authentication: a locked agent gets no token.
	if err := g.lockedPrincipal(r.Context(), &identity.Principal{Agent: a}); err != nil {
		writeJSON(w, http.StatusConflict, apiError{fmt.Sprintf("agent %q is locked by the kill switch (%v); gatehouse unlock lifts it", a.ID, err)})
		return
	}
	tok, exp, err := g.minter.Mint(a.ID, ttl)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "expires_at": exp, "agent": a.ID})
}
