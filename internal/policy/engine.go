package policy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
)

// Config configures an Engine.
type Config struct {
	// Schema is the schema policy sets are validated against. Nil means no
	// upstream tool is known yet; see Engine.SetSchema.
	Schema *Schema
	// Logger receives reloads and shadow differences. Nil discards.
	Logger *slog.Logger
	// OnShadow, if set, is called from Decide, synchronously, whenever the
	// shadow set decides a request differently from the enforced set (see
	// Differs). It must be quick and safe for concurrent use; the audit
	// layer records the difference. Nil: differences are only logged.
	OnShadow func(req Request, enforced, shadow Decision)
}

// Engine decides requests under the current policy set and, optionally, a
// shadow (candidate) set. Sets are swapped atomically: Decide always sees
// one whole set, and a set that fails to load never replaces a good one.
// All methods are safe for concurrent use.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	mu     sync.Mutex // serialises writers
	schema atomic.Pointer[Schema]
	cur    atomic.Pointer[Set]
	shadow atomic.Pointer[Set]
}

// NewEngine returns an engine with no policy set: until one is installed
// every decision is a Block (policy.unavailable).
func NewEngine(cfg Config) *Engine {
	e := &Engine{cfg: cfg, log: cfg.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.schema.Store(cfg.Schema)
	return e
}

// Current returns the enforced set, or nil.
func (e *Engine) Current() *Set { return e.cur.Load() }

// Shadow returns the shadow set, or nil.
func (e *Engine) Shadow() *Set { return e.shadow.Load() }

// Reload loads dir under the engine's schema and makes it the enforced
// set. On error the current set stays in force and the error (a
// *LoadError for policy problems) names each file and line.
func (e *Engine) Reload(dir string) error {
	files, err := ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reloading policies: %w", err)
	}
	return e.Install(files)
}

// WatchReload reloads dir each time trigger delivers a signal (the gateway
// passes SIGHUP from signal.Notify) until ctx ends, and returns ctx's
// error. A failed reload is logged and keeps the set in force; report, if
// not nil, is called with each reload's result.
func (e *Engine) WatchReload(ctx context.Context, dir string, trigger <-chan os.Signal, report func(error)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-trigger:
			err := e.Reload(dir)
			if err != nil {
				e.log.Error("policy reload failed; keeping the policy set in force", "dir", dir, "version", versionOf(e.cur.Load()), "err", err)
			}
			if report != nil {
				report(err)
			}
		}
	}
}

// Install validates files as a set and makes it the enforced set, as
// Reload does; the admin API uses it for uploaded policies.
func (e *Engine) Install(files []File) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	set, err := LoadFiles(files, e.schema.Load())
	if err != nil {
		e.log.Warn("policy set rejected", "err", err)
		return err
	}
	old := e.cur.Swap(set)
	e.log.Info("policy set installed", "version", set.Version(), "previous", versionOf(old), "policies", len(set.infos), "warnings", len(set.warnings))
	return nil
}

// SetShadow loads files as the shadow set, decided beside the enforced set
// with differences reported to Config.OnShadow. Nil files remove it.
func (e *Engine) SetShadow(files []File) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if files == nil {
		e.shadow.Store(nil)
		return nil
	}
	set, err := LoadFiles(files, e.schema.Load())
	if err != nil {
		return err
	}
	e.shadow.Store(set)
	e.log.Info("shadow policy set installed", "version", set.Version())
	return nil
}

// SetSchema revalidates the enforced and shadow sets under a new schema
// (new upstream tools, changed input schemas) and installs all three
// together. If either set fails under the new schema nothing changes and
// the error says which policies need the old typing.
func (e *Engine) SetSchema(s *Schema) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var cur, sh *Set
	var err error
	if old := e.cur.Load(); old != nil {
		if cur, err = LoadFiles(old.files, s); err != nil {
			return fmt.Errorf("revalidating policy set %s: %w", old.Version(), err)
		}
	}
	if old := e.shadow.Load(); old != nil {
		if sh, err = LoadFiles(old.files, s); err != nil {
			return fmt.Errorf("revalidating shadow policy set %s: %w", old.Version(), err)
		}
	}
	e.schema.Store(s)
	if cur != nil {
		e.cur.Store(cur)
	}
	if sh != nil {
		e.shadow.Store(sh)
	}
	return nil
}

// Decide decides req under the enforced set; with a shadow set installed it
// also decides it there and reports a difference (Decision.Shadow carries
// the shadow decision). It never fails: every error is a Block.
func (e *Engine) Decide(req Request) Decision {
	set := e.cur.Load()
	var d Decision
	if set == nil {
		d = blocked(CodeUnavailable, "", nil, errNoSet.Error())
	} else {
		d = set.Decide(req)
	}
	if sh := e.shadow.Load(); sh != nil {
		sd := sh.Decide(req)
		d.Shadow = &sd
		if Differs(d, sd) {
			e.log.Info("shadow policy decision differs", "action", req.Action, "agent", req.Agent.ID,
				"enforced", d.Outcome.String(), "shadow", sd.Outcome.String(), "shadow_version", sd.Version)
			if e.cfg.OnShadow != nil {
				e.cfg.OnShadow(req, d, sd)
			}
		}
	}
	return d
}

func versionOf(s *Set) string {
	if s == nil {
		return ""
	}
	return s.Version()
}
