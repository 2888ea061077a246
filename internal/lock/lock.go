// Package lock is the gateway's hierarchical kill switch.
//
// A Lock stops every request in its scope: the whole gateway (global), one
// agent, one user (on whose behalf agents act), one task, one upstream
// server, or one tool of a server. Locks are records in a shared Store; a
// Manager keeps an immutable snapshot of them in memory, refreshed when the
// store's version counter changes (polled every 250 ms by default, and at
// once when the store can push changes, as PostgreSQL does with
// LISTEN/NOTIFY), so a lock set on one gateway replica is enforced by every
// replica within a second.
//
// Invariants:
//   - The Manager is a pipeline stage: Check runs on every request,
//     including requests on sessions opened before the lock, and costs a few
//     map look-ups on the snapshot.
//   - Fail closed: when the snapshot cannot be refreshed for longer than
//     Config.MaxStale, Check refuses every request (code "lock.unavailable")
//     unless the operator chose FailOpen, and a metric names the control.
//   - Every change is audited before it is applied (Config.Audit); a change
//     whose audit record fails is not applied.
//   - Subscribers are told of every lock that appears, so the gateway can
//     cancel in-flight and held requests that it matches.
package lock

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
)

// Scope is the breadth of a lock.
type Scope string

// The scopes, from the broadest.
const (
	Global Scope = "global"
	Agent  Scope = "agent"
	User   Scope = "user"
	Task   Scope = "task"
	Server Scope = "server"
	// Tool locks one tool (or prompt, or resource) of one server; its target
	// is "SERVER/NAME", with the name as the upstream server knows it.
	Tool Scope = "tool"
)

// Scopes lists every scope, broadest first.
var Scopes = []Scope{Global, Agent, User, Task, Server, Tool}

// ParseScope returns the scope named s.
func ParseScope(s string) (Scope, error) {
	for _, sc := range Scopes {
		if string(sc) == s {
			return sc, nil
		}
	}
	return "", fmt.Errorf("%w: unknown scope %q (want one of global, agent, user, task, server, tool)", ErrInvalid, s)
}

// Lock is one kill-switch record.
type Lock struct {
	Scope Scope `json:"scope"`
	// Target names what is locked: an agent, user, task or server id, or
	// "SERVER/TOOL". Empty for Global.
	Target string `json:"target"`
	// Reason is the operator's explanation, for the audit log and the
	// console. Agents never see it.
	Reason string `json:"reason"`
	// By names who set the lock.
	By      string    `json:"by"`
	Created time.Time `json:"created"`
	// Expires, when not zero, ends the lock.
	Expires time.Time `json:"expires,omitzero"`
}

// Errors callers branch on.
var (
	// ErrInvalid marks a malformed lock or request.
	ErrInvalid = errors.New("invalid lock")
	// ErrNotLocked is returned by Unlock when there is no such lock.
	ErrNotLocked = errors.New("no such lock")
	// ErrAudit marks a change refused because its audit record failed.
	ErrAudit = errors.New("recording the lock change in the audit log failed")
)

// maxField bounds the length of a target, reason or author.
const maxField = 1024

// Validate checks the lock's scope and target.
func (l Lock) Validate() error {
	if _, err := ParseScope(string(l.Scope)); err != nil {
		return err
	}
	switch {
	case l.Scope == Global && l.Target != "":
		return fmt.Errorf("%w: a global lock has no target", ErrInvalid)
	case l.Scope != Global && l.Target == "":
		return fmt.Errorf("%w: a %s lock needs a target", ErrInvalid, l.Scope)
	case l.Scope == Tool:
		s, t, ok := strings.Cut(l.Target, "/")
		if !ok || s == "" || t == "" {
			return fmt.Errorf("%w: a tool lock's target is SERVER/TOOL, not %q", ErrInvalid, l.Target)
		}
	}
	if strings.TrimSpace(l.Reason) == "" {
		return fmt.Errorf("%w: a lock needs a reason", ErrInvalid)
	}
	if strings.TrimSpace(l.By) == "" {
		return fmt.Errorf("%w: a lock needs an author", ErrInvalid)
	}
	if len(l.Target) > maxField || len(l.Reason) > maxField || len(l.By) > maxField {
		return fmt.Errorf("%w: target, reason and author are limited to %d bytes", ErrInvalid, maxField)
	}
	if !l.Expires.IsZero() && !l.Expires.After(l.Created) {
		return fmt.Errorf("%w: the lock expires before it is created", ErrInvalid)
	}
	return nil
}

// Active reports whether the lock is in force at now.
func (l *Lock) Active(now time.Time) bool {
	return l.Expires.IsZero() || now.Before(l.Expires)
}

// Matches reports whether the lock applies to r (ignoring expiry). The
// gateway uses it to find the in-flight and held requests that a new lock
// must cancel.
func (l *Lock) Matches(r *pipeline.Request) bool {
	switch l.Scope {
	case Global:
		return true
	case Server:
		return r.Server != "" && r.Server == l.Target
	case Tool:
		s, t, _ := strings.Cut(l.Target, "/")
		return r.Server == s && r.Target == t
	}
	if r.Caller == nil {
		return false
	}
	switch l.Scope {
	case Agent:
		return r.Caller.Agent == l.Target
	case User:
		return r.Caller.User != "" && r.Caller.User == l.Target
	case Task:
		return r.Caller.Task != "" && r.Caller.Task == l.Target
	}
	return false
}

// BarsCaller reports whether l keeps caller c out: a global lock, or a lock
// on c's agent, user or task. Such a caller can neither authenticate nor
// obtain a token.
func (l *Lock) BarsCaller(c *pipeline.Caller) bool {
	switch l.Scope {
	case Global, Agent, User, Task:
		return l.Matches(&pipeline.Request{Caller: c})
	}
	return false
}

// String returns "scope target" (or "global").
func (l Lock) String() string {
	if l.Scope == Global {
		return string(Global)
	}
	return string(l.Scope) + " " + l.Target
}
