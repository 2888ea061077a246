package limits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// BreakerSettings configure one circuit breaker.
type BreakerSettings struct {
	// Off disables the breaker.
	Off bool
	// Failures is the number of consecutive failures that opens the
	// breaker. Default 5.
	Failures int
	// Open is how long the breaker stays open before it lets probes
	// through (half-open). Default 30s.
	Open time.Duration
	// Probes is the number of calls let through while half-open; that many
	// consecutive successes close the breaker, one failure opens it again.
	// Default 1.
	Probes int
	// Interval is the period after which a closed breaker forgets its
	// counts. Default 60s.
	Interval time.Duration
	// Slow, when set, counts a call that took longer as a failure.
	Slow time.Duration
}

func (s BreakerSettings) withDefaults() BreakerSettings {
	if s.Failures <= 0 {
		s.Failures = 5
	}
	if s.Open <= 0 {
		s.Open = 30 * time.Second
	}
	if s.Probes <= 0 {
		s.Probes = 1
	}
	if s.Interval <= 0 {
		s.Interval = 60 * time.Second
	}
	return s
}

// BreakerConfig configures the Breakers stage.
type BreakerConfig struct {
	// Server configures every upstream server's breaker.
	Server BreakerSettings
	// Tool configures every tool's breaker.
	Tool BreakerSettings
	// Overrides replace the settings of one server ("SERVER") or tool
	// ("SERVER/TOOL").
	Overrides map[string]BreakerSettings
	// OnStateChange, when set, is told of every state change ("closed",
	// "half-open", "open") of the breaker named "SERVER" or "SERVER/TOOL".
	// It must not block.
	OnStateChange func(name, from, to string)
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
}

// Breakers is the "breakers" pipeline stage: a circuit breaker per upstream
// server and per tool, in memory per replica. It is safe for concurrent
// use.
type Breakers struct {
	cfg     BreakerConfig
	servers sync.Map // server → *serverBreakers
	pending sync.Map // *pipeline.Request → *probe
	state   *prometheus.GaugeVec
	refused *prometheus.CounterVec
}

type serverBreakers struct {
	b     *breaker
	tools sync.Map // tool → *breaker
}

type breaker struct {
	name     string
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	set      BreakerSettings
	openedAt atomic.Int64 // UnixNano
}

type probe struct {
	server, tool         *breaker
	serverDone, toolDone func(error)
}

var (
	errFailed   = errors.New("upstream failure")
	errExcluded = errors.New("not counted")
)

// NewBreakers returns the stage.
func NewBreakers(cfg BreakerConfig) (*Breakers, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for k, s := range cfg.Overrides {
		if k == "" || s.Failures < 0 || s.Probes < 0 || s.Open < 0 || s.Interval < 0 || s.Slow < 0 {
			return nil, fmt.Errorf("invalid breaker override %q", k)
		}
	}
	b := &Breakers{cfg: cfg}
	b.state = register(cfg.Registerer, cfg.Logger, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_breaker_state", Help: "Circuit breaker state by breaker (SERVER or SERVER/TOOL): 0 closed, 1 half-open, 2 open."}, []string{"breaker"}))
	b.refused = register(cfg.Registerer, cfg.Logger, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_breaker_refusals_total", Help: "Calls refused because a circuit breaker was open, by breaker."}, []string{"breaker"}))
	return b, nil
}

func (b *Breakers) newBreaker(name string, def BreakerSettings) *breaker {
	set := def
	if o, ok := b.cfg.Overrides[name]; ok {
		set = o
	}
	if set.Off {
		return nil
	}
	set = set.withDefaults()
	br := &breaker{name: name, set: set}
	failures := uint32(set.Failures)
	br.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: uint32(set.Probes),
		Interval:    set.Interval,
		Timeout:     set.Open,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return errors.Is(err, errExcluded) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				br.openedAt.Store(time.Now().UnixNano())
			}
			b.state.WithLabelValues(name).Set(float64(stateValue(to)))
			b.cfg.Logger.Warn("circuit breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
			if b.cfg.OnStateChange != nil {
				b.cfg.OnStateChange(name, from.String(), to.String())
			}
		},
	})
	b.state.WithLabelValues(name).Set(0)
	return br
}

func stateValue(s gobreaker.State) int {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}

func (b *Breakers) server(id string) *serverBreakers {
	if v, ok := b.servers.Load(id); ok {
		return v.(*serverBreakers)
	}
	v, _ := b.servers.LoadOrStore(id, &serverBreakers{b: b.newBreaker(id, b.cfg.Server)})
	return v.(*serverBreakers)
}

func (b *Breakers) tool(sb *serverBreakers, server, tool string) *breaker {
	if v, ok := sb.tools.Load(tool); ok {
		return v.(*breaker)
	}
	v, _ := sb.tools.LoadOrStore(tool, b.newBreaker(server+"/"+tool, b.cfg.Tool))
	return v.(*breaker)
}

// Name implements pipeline.Stage.
func (b *Breakers) Name() string { return "breakers" }

// Check implements pipeline.Stage: it refuses a call whose server's or
// tool's breaker is open, or half-open with its probes already out (code
// "breaker.open", with a retry hint). List-time checks pass untouched.
func (b *Breakers) Check(_ context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	if r.Phase == pipeline.PhaseList || r.Server == "" || r.Action == pipeline.ActionSample || r.Action == pipeline.ActionElicit {
		return verdict.Verdict{}, nil
	}
	sb := b.server(r.Server)
	p := &probe{}
	if sb.b != nil {
		done, err := sb.b.cb.Allow()
		if err != nil {
			return b.open(sb.b), nil
		}
		p.server, p.serverDone = sb.b, done
	}
	if r.Action == pipeline.ActionCallTool && r.Target != "" {
		if tb := b.tool(sb, r.Server, r.Target); tb != nil {
			done, err := tb.cb.Allow()
			if err != nil {
				if p.serverDone != nil {
					p.serverDone(errExcluded)
				}
				return b.open(tb), nil
			}
			p.tool, p.toolDone = tb, done
		}
	}
	if p.serverDone != nil || p.toolDone != nil {
		if old, loaded := b.pending.Swap(r, p); loaded {
			// Checked twice without Finish: return the first probe's place.
			b.report(old.(*probe), &pipeline.Outcome{Status: "refused"})
		}
	}
	return verdict.Verdict{}, nil
}

func (b *Breakers) open(br *breaker) verdict.Verdict {
	b.refused.WithLabelValues(br.name).Inc()
	retry := time.Until(time.Unix(0, br.openedAt.Load()).Add(br.set.Open))
	if retry < time.Second {
		retry = time.Second
	}
	v := verdict.Deny(verdict.Execution, "breaker.open",
		fmt.Sprintf("%s is failing and its circuit breaker is open; retry after %s", br.name, formatRetry(retry)))
	v.Reasons[0].Policies = []string{br.name}
	v.Reasons[0].RetryAfter = retrySeconds(retry)
	return v
}

// Finish implements pipeline.Finisher: "upstream_error", and a call slower
// than the breaker's Slow setting, are failures; "refused", "listed" and
// "cancelled" are not counted; every other status ("ok", "tool_error",
// "error": the upstream answered) is a success.
func (b *Breakers) Finish(_ context.Context, r *pipeline.Request, o *pipeline.Outcome) {
	v, ok := b.pending.LoadAndDelete(r)
	if !ok {
		return
	}
	b.report(v.(*probe), o)
}

func (b *Breakers) report(p *probe, o *pipeline.Outcome) {
	if p.serverDone != nil {
		p.serverDone(result(p.server, o))
	}
	if p.toolDone != nil {
		p.toolDone(result(p.tool, o))
	}
}

func result(br *breaker, o *pipeline.Outcome) error {
	switch o.Status {
	case "refused", "listed", "cancelled":
		return errExcluded
	case "upstream_error":
		return errFailed
	}
	if br.set.Slow > 0 && o.Duration > br.set.Slow {
		return errFailed
	}
	return nil
}

// State returns the state ("closed", "half-open", "open") of the breaker
// named "SERVER" or "SERVER/TOOL"; "closed" for one never used.
func (b *Breakers) State(name string) string {
	server, tool, isTool := cut(name)
	v, ok := b.servers.Load(server)
	if !ok {
		return gobreaker.StateClosed.String()
	}
	sb := v.(*serverBreakers)
	br := sb.b
	if isTool {
		t, ok := sb.tools.Load(tool)
		if !ok {
			return gobreaker.StateClosed.String()
		}
		br = t.(*breaker)
	}
	if br == nil {
		return gobreaker.StateClosed.String()
	}
	return br.cb.State().String()
}

func cut(name string) (string, string, bool) {
	for i := 0; i < len(name); i++ {
		if name[i] == '/' {
			return name[:i], name[i+1:], true
		}
	}
	return name, "", false
}
