package lock

import (
	"context"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// snapshot is an immutable view of the locks, indexed for Check.
type snapshot struct {
	version int64
	all     []Lock
	global  *Lock
	byScope map[Scope]map[string]*Lock // agent, user, task, server
	tools   map[string]map[string]*Lock
}

func buildSnapshot(version int64, ls []Lock) *snapshot {
	s := &snapshot{version: version, all: ls, byScope: map[Scope]map[string]*Lock{}, tools: map[string]map[string]*Lock{}}
	for i := range ls {
		l := &ls[i]
		switch l.Scope {
		case Global:
			s.global = l
		case Tool:
			srv, tool, _ := strings.Cut(l.Target, "/")
			if s.tools[srv] == nil {
				s.tools[srv] = map[string]*Lock{}
			}
			s.tools[srv][tool] = l
		default:
			if s.byScope[l.Scope] == nil {
				s.byScope[l.Scope] = map[string]*Lock{}
			}
			s.byScope[l.Scope][l.Target] = l
		}
	}
	return s
}

func (s *snapshot) lookup(scope Scope, target string) *Lock {
	switch scope {
	case Global:
		return s.global
	case Tool:
		srv, tool, _ := strings.Cut(target, "/")
		return s.tools[srv][tool]
	}
	return s.byScope[scope][target]
}

// match returns the broadest lock in force at now that applies to r.
func (s *snapshot) match(r *pipeline.Request, now time.Time) *Lock {
	if len(s.all) == 0 {
		return nil
	}
	active := func(l *Lock) *Lock {
		if l != nil && l.Active(now) {
			return l
		}
		return nil
	}
	if l := active(s.global); l != nil {
		return l
	}
	if c := r.Caller; c != nil {
		if l := active(s.byScope[Agent][c.Agent]); l != nil {
			return l
		}
		if c.User != "" {
			if l := active(s.byScope[User][c.User]); l != nil {
				return l
			}
		}
		if c.Task != "" {
			if l := active(s.byScope[Task][c.Task]); l != nil {
				return l
			}
		}
	}
	if r.Server != "" {
		if l := active(s.byScope[Server][r.Server]); l != nil {
			return l
		}
		if l := active(s.tools[r.Server][r.Target]); l != nil {
			return l
		}
	}
	return nil
}

// Name implements pipeline.Stage.
func (m *Manager) Name() string { return "locks" }

// Check implements pipeline.Stage: it refuses a request that a lock in
// force matches (code "lock.<scope>"), and every request when the snapshot
// is stale and the fail mode is closed ("lock.unavailable"). At list time
// a locked server's or tool's items are hidden. It never returns an error.
func (m *Manager) Check(_ context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	now := m.cfg.Now()
	if now.UnixNano()-m.okAt.Load() > int64(m.cfg.MaxStale) {
		m.met.failures.WithLabelValues("locks", m.cfg.FailMode.String()).Inc()
		if m.cfg.FailMode == FailClosed {
			return verdict.Deny(verdict.Execution, "lock.unavailable", "the kill switch could not be checked; the request was refused"), nil
		}
	}
	l := m.snap.Load().match(r, now)
	if l == nil {
		return verdict.Verdict{}, nil
	}
	m.met.refusals.WithLabelValues(string(l.Scope)).Inc()
	return verdict.Deny(verdict.Execution, "lock."+string(l.Scope), message(l)), nil
}

// Match returns the lock in force that applies to r, if any (for the
// gateway to re-check a held request before it resumes).
func (m *Manager) Match(r *pipeline.Request) (Lock, bool) {
	if l := m.snap.Load().match(r, m.cfg.Now()); l != nil {
		return *l, true
	}
	return Lock{}, false
}

// message is the agent-visible explanation of a lock: its scope and expiry,
// never the operator's reason.
func message(l *Lock) string {
	var msg string
	switch l.Scope {
	case Global:
		msg = "the gateway is locked by an operator"
	case Agent:
		msg = "this agent is locked by an operator"
	case User:
		msg = "requests on behalf of this user are locked by an operator"
	case Task:
		msg = "this task is locked by an operator"
	case Server:
		msg = "server " + l.Target + " is locked by an operator"
	case Tool:
		srv, tool, _ := strings.Cut(l.Target, "/")
		msg = "tool " + tool + " of server " + srv + " is locked by an operator"
	}
	if !l.Expires.IsZero() {
		msg += " until " + l.Expires.UTC().Format(time.RFC3339)
	}
	return msg
}
