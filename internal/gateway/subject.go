package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/telemetry"
)

// instanceOf is the agent instance of a mediated request (audit.Subject
// Instance, OCSF actor.app_uid): the MCP session the agent holds —
// "session:" and the first 16 bytes of the SHA-256 of the session id, in
// hex, so one agent process's requests share it while the session id, which
// carries the session's state, stays out of the log — or, without a session
// (stateless endpoints), the workload identity the agent proved, "<trust
// source>:<subject>" ("" when there is none either).
func instanceOf(q *pipeline.Request) string {
	if q.Session != "" {
		h := sha256.Sum256([]byte(q.Session))
		return "session:" + hex.EncodeToString(h[:16])
	}
	if q.Caller != nil {
		return q.Caller.Source
	}
	return ""
}

// identitySubject is the subject of an identity event: the agent, the
// workload identity it proved as its instance (the same "<trust
// source>:<subject>" a request made with the issued token records as its
// source), the user and task, a correlation id of its own, and the trace
// id of the authentication's span (authenticateTraced, tokenEndpoint).
func identitySubject(ctx context.Context, e identity.Event) audit.Subject {
	s := audit.Subject{Agent: e.Agent, Task: e.Task, Correlation: newCorrelationID(), TraceID: telemetry.TraceID(ctx)}
	if e.User != nil {
		s.User = e.User.Subject
	}
	if w := e.Workload; w != nil && !w.User {
		s.Instance = w.Source + ":" + w.Subject
	}
	return s
}

// newCorrelationID returns 128 random bits in hex, the form of the MCP
// proxy's correlation ids.
func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// authenticateTraced is the MCP proxy's Authenticator: authenticate, timed
// as the "authenticate" stage, in a span whose trace id the identity
// events of a refused authentication carry.
func (g *Gateway) authenticateTraced(r *http.Request) (*pipeline.Caller, error) {
	ctx, end := observer{g.tel}.StartStage(r.Context(), telemetry.StageAuthenticate)
	if ctx != r.Context() {
		r = r.WithContext(ctx)
	}
	c, err := g.authenticate(r)
	end(err)
	return c, err
}

// traced serves h in a span of its own (stage name), so that the audit
// events h records carry a trace id.
func (g *Gateway) traced(stage string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, end := observer{g.tel}.StartStage(r.Context(), stage)
		h.ServeHTTP(w, r.WithContext(ctx))
		end(nil)
	})
}
