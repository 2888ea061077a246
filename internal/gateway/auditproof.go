package gateway

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// proofRoutes serves the audit log's RFC 6962 proofs to external
// witnesses (as `gatehouse audit prove` and `consistency` print them):
//
//	GET /v1/audit/proofs/inclusion?index=N[&size=S]
//	GET /v1/audit/proofs/consistency?old=N[&new=M]
//
// A size left out is the latest signed checkpoint's.
func (g *Gateway) proofRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/audit/proofs/inclusion", func(w http.ResponseWriter, r *http.Request) {
		index, ok := sizeParam(w, r, "index", true)
		if !ok {
			return
		}
		size, ok := sizeParam(w, r, "size", false)
		if !ok {
			return
		}
		b := g.recorder.backend
		p, err := audit.ProveInclusion(r.Context(), b, b, index, size)
		g.writeProof(w, p, err)
	})
	mux.HandleFunc("GET /v1/audit/proofs/consistency", func(w http.ResponseWriter, r *http.Request) {
		oldSize, ok := sizeParam(w, r, "old", true)
		if !ok {
			return
		}
		newSize, ok := sizeParam(w, r, "new", false)
		if !ok {
			return
		}
		b := g.recorder.backend
		p, err := audit.ProveConsistency(r.Context(), b, b, oldSize, newSize)
		g.writeProof(w, p, err)
	})
}

// sizeParam reads a non-negative integer query parameter (0 when absent
// and optional); on a bad value it answers 400.
func sizeParam(w http.ResponseWriter, r *http.Request, name string, required bool) (int64, bool) {
	s := r.URL.Query().Get(name)
	if s == "" && !required {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		writeJSON(w, http.StatusBadRequest, apiError{name + " must be a whole number, 0 or more"})
		return 0, false
	}
	return n, true
}

func (g *Gateway) writeProof(w http.ResponseWriter, p any, err error) {
	switch {
	case errors.Is(err, audit.ErrNotFound):
		writeJSON(w, http.StatusNotFound, apiError{err.Error()})
	case err != nil:
		g.log.Error("audit proof failed", "err", err)
		writeJSON(w, http.StatusInternalServerError, apiError{"the proof could not be read from the audit store"})
	default:
		writeJSON(w, http.StatusOK, p)
	}
}
