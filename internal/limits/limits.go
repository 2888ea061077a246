// Package limits holds the execution layer's runtime controls: rate limits,
// concurrency limits, value ceilings and running totals (the Limiter stage)
// and circuit breakers (the Breakers stage).
//
// Model:
//   - A rate limit is a token bucket (golang.org/x/time/rate) per agent,
//     user, task, server or tool (or a combination), kept in memory per
//     replica: with N replicas behind a balancer an agent may reach up to N
//     times the rate. A refused call says when to retry.
//   - A concurrency limit caps the calls in flight to an upstream server
//     (or one of its tools), per replica.
//   - A value rule names the argument of a tool that carries a value (an
//     amount). It may cap each call (ceiling) and keep running totals per
//     agent, user or task over fixed windows aligned to the Unix epoch
//     (a 24h window is a UTC day). Totals live in a Ledger shared by every
//     replica; a call reserves its amount before it is forwarded, in every
//     total at once, and only if no total would exceed its limit counting
//     the calls in flight; the reservation is committed or released when
//     the call ends.
//   - A circuit breaker (github.com/sony/gobreaker/v2) per upstream server
//     and per tool opens after consecutive failures and fails fast while
//     open, per replica.
//
// Invariants:
//   - Check at list time (pipeline.PhaseList) counts and reserves nothing.
//   - Finish is called exactly once for every request that Check allowed;
//     a Check that refuses, or fails, releases whatever it took first.
//   - Every control has a fail mode, closed by default: when the Ledger is
//     unavailable the call is refused ("limits.unavailable") and the metric
//     gatehouse_control_failures_total names the control. Rate, concurrency
//     and breaker state is in memory and cannot be unavailable.
//   - Amounts are exact fixed-point integers; amounts are rounded up.
package limits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Dimension names what a rate or a running total is counted per.
type Dimension string

// Dimensions.
const (
	PerAgent  Dimension = "agent"
	PerUser   Dimension = "user"
	PerTask   Dimension = "task"
	PerServer Dimension = "server"
	// PerTool counts per server and tool.
	PerTool Dimension = "tool"
)

// FailMode says what a control does when a dependency is unavailable.
type FailMode uint8

const (
	// FailClosed refuses the call (the default).
	FailClosed FailMode = iota
	// FailOpen lets the call through uncounted.
	FailOpen
)

// ParseFailMode parses "closed" (or "") and "open".
func ParseFailMode(s string) (FailMode, error) {
	switch s {
	case "", "closed":
		return FailClosed, nil
	case "open":
		return FailOpen, nil
	}
	return FailClosed, fmt.Errorf("unknown fail mode %q (want closed or open)", s)
}

func (f FailMode) String() string {
	if f == FailOpen {
		return "open"
	}
	return "closed"
}

// Rate limits requests to Limit per Interval, with bursts of up to Burst.
type Rate struct {
	// Name identifies the rule in reasons and metrics. Required, unique.
	Name string
	// Per lists the dimensions counted separately ([agent] is one bucket per
	// agent, [agent, tool] one per agent and tool). Empty: one bucket for
	// every matching request.
	Per []Dimension
	// Agent, Server and Tool restrict the rule to matching requests; empty
	// matches any. Tool is the name as the upstream server knows it.
	Agent, Server, Tool string
	// Actions lists the pipeline actions counted. Default
	// [pipeline.ActionCallTool].
	Actions []string
	// Limit requests per Interval. Required.
	Limit    int
	Interval time.Duration
	// Burst is the largest number of requests allowed at once. Default
	// Limit.
	Burst int
}

// Concurrency caps the calls in flight to a server, or to one of its tools.
type Concurrency struct {
	// Server is the upstream server's id. Required.
	Server string
	// Tool, when set, limits only that tool.
	Tool string
	// Max calls in flight. Required.
	Max int
}

// Value is the value rule of one tool.
type Value struct {
	// Name identifies the rule. Default "SERVER/TOOL".
	Name string
	// Server and Tool name the tool (as the upstream knows it). Required.
	Server, Tool string
	// Argument is the path of the argument carrying the value, with dots
	// between object keys ("amount", "payment.amount"). Its value is a JSON
	// number or a string holding one; a call without it, or with a negative
	// or malformed value, is refused. Required.
	Argument string
	// Decimals is the number of fractional digits counted (2 for cents).
	// Default 0: whole units; finer values are rounded up.
	Decimals int
	// Unit names the value's unit in messages ("EUR").
	Unit string
	// UnitArgument, when set, names an argument that must equal Unit
	// (case-insensitively): a call in another currency is refused.
	UnitArgument string
	// Ceiling is the largest value of one call, as a decimal ("5000"). Empty:
	// no ceiling.
	Ceiling string
	// Totals are running totals over windows.
	Totals []Total
	// FailMode applies when the Ledger is unavailable. Default FailClosed.
	FailMode FailMode
}

// Total is a running total of a value over fixed windows.
type Total struct {
	// Name identifies the total (also its rows in the ledger: renaming a
	// total starts it afresh). Default "RULE/PER/WINDOW".
	Name string
	// Per is agent, user or task. Requests without a user (task) share one
	// bucket "-" for a per-user (per-task) total.
	Per Dimension
	// Window is the length of a window: a whole number of seconds, at
	// least 1s. Windows are aligned to the Unix epoch (24h: UTC days).
	Window time.Duration
	// Limit is the largest total in a window, as a decimal. Required.
	Limit string
}

// Config configures a Limiter.
type Config struct {
	Rates       []Rate
	Concurrency []Concurrency
	Values      []Value
	// Ledger keeps running totals. Required when a Value has Totals.
	Ledger Ledger
	// ConcurrencyRetry is the retry hint of a concurrency refusal. Default
	// 1s.
	ConcurrencyRetry time.Duration
	// MaxHold bounds how long a call may hold a concurrency slot or a
	// reservation without Finish (a leak guard run by Run): older holds are
	// released, and their values committed, since their outcome is unknown.
	// Default 15m.
	MaxHold time.Duration
	// AsyncSettle settles reservations in the background instead of on
	// the request path (Finish returns at once). Set it with a durable
	// Ledger, whose Settle is a durable transaction (milliseconds): until
	// the settlement lands the amount stays counted, which errs on the safe
	// side. Run waits for outstanding settlements when it returns.
	AsyncSettle bool
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Limiter is the "limits" pipeline stage: rates, concurrency, ceilings and
// running totals. It is safe for concurrent use.
type Limiter struct {
	cfg     Config
	rates   []*rateRule
	servers map[string]*slot            // concurrency per server
	tools   map[string]map[string]*slot // concurrency per server and tool
	values  map[string]map[string]*valueRule
	pending sync.Map // *pipeline.Request → *hold
	settles sync.WaitGroup
	met     *metrics
}

type slot struct {
	name string
	max  int64
	n    atomic.Int64
}

type valueRule struct {
	Value
	path    []string
	ceiling int64 // -1: none
	totals  []totalRule
}

type totalRule struct {
	name   string
	per    Dimension
	window int64 // seconds
	limit  int64
}

// bucket is the ledger bucket of the total for rv at now (Unix seconds):
// the window that holds now, keyed "-" when rv has no value for per.
func (t *totalRule) bucket(rv requestView, now int64) Bucket {
	key := rv.dim(t.per)
	if key == "" {
		key = "-"
	}
	start := now - mod(now, t.window)
	return Bucket{Rule: t.name, Key: key, Start: start, End: start + t.window, Limit: t.limit}
}

// hold is what an admitted call holds until Finish.
type hold struct {
	at      time.Time
	slots   []*slot
	rule    *valueRule
	amount  int64
	buckets []Bucket
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$`)

// New validates cfg and returns a Limiter. The error lists every problem.
func New(cfg Config) (*Limiter, error) {
	if cfg.ConcurrencyRetry <= 0 {
		cfg.ConcurrencyRetry = time.Second
	}
	if cfg.MaxHold <= 0 {
		cfg.MaxHold = 15 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{cfg: cfg, servers: map[string]*slot{}, tools: map[string]map[string]*slot{}, values: map[string]map[string]*valueRule{}}
	var probs []string
	add := func(format string, a ...any) { probs = append(probs, fmt.Sprintf(format, a...)) }
	names := map[string]bool{}

	for i, rc := range cfg.Rates {
		where := fmt.Sprintf("rates[%d]", i)
		if !nameRE.MatchString(rc.Name) {
			add("%s: name %q must match %s", where, rc.Name, nameRE)
		} else if names["rate:"+rc.Name] {
			add("%s: duplicate name %q", where, rc.Name)
		}
		names["rate:"+rc.Name] = true
		for _, d := range rc.Per {
			if !validDim(d, true) {
				add("%s: per %q must be agent, user, task, server or tool", where, d)
			}
		}
		if rc.Limit <= 0 || rc.Interval <= 0 {
			add("%s: limit and interval must be positive", where)
			continue
		}
		if rc.Burst < 0 {
			add("%s: burst must not be negative", where)
		}
		rr := &rateRule{cfg: rc, limit: rate.Limit(float64(rc.Limit) / rc.Interval.Seconds()), burst: rc.Burst, actions: map[string]bool{}, m: map[string]*keyed{}}
		if rr.burst == 0 {
			rr.burst = rc.Limit
		}
		rr.idle = time.Duration(float64(rr.burst) / float64(rr.limit) * float64(time.Second))
		if len(rc.Actions) == 0 {
			rr.actions[pipeline.ActionCallTool] = true
		}
		for _, a := range rc.Actions {
			rr.actions[a] = true
		}
		l.rates = append(l.rates, rr)
	}

	for i, cc := range cfg.Concurrency {
		where := fmt.Sprintf("concurrency[%d]", i)
		if cc.Server == "" || cc.Max <= 0 {
			add("%s: server and a positive max are required", where)
			continue
		}
		s := &slot{name: cc.Server, max: int64(cc.Max)}
		if cc.Tool == "" {
			if l.servers[cc.Server] != nil {
				add("%s: duplicate limit for server %s", where, cc.Server)
			}
			l.servers[cc.Server] = s
			continue
		}
		s.name += "/" + cc.Tool
		if l.tools[cc.Server] == nil {
			l.tools[cc.Server] = map[string]*slot{}
		}
		if l.tools[cc.Server][cc.Tool] != nil {
			add("%s: duplicate limit for tool %s", where, s.name)
		}
		l.tools[cc.Server][cc.Tool] = s
	}

	needLedger := false
	for i, vc := range cfg.Values {
		where := fmt.Sprintf("values[%d]", i)
		if vc.Server == "" || vc.Tool == "" || vc.Argument == "" {
			add("%s: server, tool and argument are required", where)
			continue
		}
		vr := &valueRule{Value: vc, path: strings.Split(vc.Argument, "."), ceiling: -1}
		if vr.Name == "" {
			vr.Name = vc.Server + "/" + vc.Tool
		}
		if !nameRE.MatchString(vr.Name) {
			add("%s: name %q must match %s", where, vr.Name, nameRE)
		}
		if names["value:"+vr.Name] {
			add("%s: duplicate name %q", where, vr.Name)
		}
		names["value:"+vr.Name] = true
		if vc.Decimals < 0 || vc.Decimals > 18 {
			add("%s: decimals must be in 0..18", where)
			continue
		}
		if vc.UnitArgument != "" && vc.Unit == "" {
			add("%s: unit_argument needs a unit", where)
		}
		if vc.Ceiling != "" {
			c, err := ParseAmount(vc.Ceiling, vc.Decimals)
			if err != nil {
				add("%s: ceiling %q: %v", where, vc.Ceiling, err)
			}
			vr.ceiling = c
		}
		for j, tc := range vc.Totals {
			tw := fmt.Sprintf("%s.totals[%d]", where, j)
			if !validDim(tc.Per, false) {
				add("%s: per %q must be agent, user or task", tw, tc.Per)
			}
			if tc.Window < time.Second || tc.Window%time.Second != 0 {
				add("%s: window must be a whole number of seconds, at least 1s", tw)
			}
			lim, err := ParseAmount(tc.Limit, vc.Decimals)
			if err != nil {
				add("%s: limit %q: %v", tw, tc.Limit, err)
			}
			name := tc.Name
			if name == "" {
				name = vr.Name + "/" + string(tc.Per) + "/" + tc.Window.String()
			}
			if names["total:"+name] {
				add("%s: duplicate name %q", tw, name)
			}
			names["total:"+name] = true
			vr.totals = append(vr.totals, totalRule{name: name, per: tc.Per, window: int64(tc.Window / time.Second), limit: lim})
			needLedger = true
		}
		if vr.ceiling < 0 && len(vr.totals) == 0 {
			add("%s: needs a ceiling or totals", where)
		}
		if l.values[vc.Server] == nil {
			l.values[vc.Server] = map[string]*valueRule{}
		}
		if l.values[vc.Server][vc.Tool] != nil {
			add("%s: a second value rule for %s/%s", where, vc.Server, vc.Tool)
		}
		l.values[vc.Server][vc.Tool] = vr
	}
	if needLedger && cfg.Ledger == nil {
		add("running totals need a ledger")
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("invalid limits: %s", strings.Join(probs, "; "))
	}
	l.met = newMetrics(cfg.Registerer, cfg.Logger)
	return l, nil
}

func validDim(d Dimension, serverAndTool bool) bool {
	switch d {
	case PerAgent, PerUser, PerTask:
		return true
	case PerServer, PerTool:
		return serverAndTool
	}
	return false
}

// requestView is the part of a request the limits look at.
type requestView struct {
	action, agent, user, task, server, target string
	tool                                      string // server/target, built on demand
}

func (v *requestView) dim(d Dimension) string {
	switch d {
	case PerAgent:
		return v.agent
	case PerUser:
		return v.user
	case PerTask:
		return v.task
	case PerServer:
		return v.server
	case PerTool:
		if v.tool == "" {
			v.tool = v.server + "/" + v.target
		}
		return v.tool
	}
	return ""
}

// Name implements pipeline.Stage.
func (l *Limiter) Name() string { return "limits" }

// Check implements pipeline.Stage. Reason codes: limits.rate,
// limits.concurrency, limits.value_ceiling, limits.running_total,
// limits.value_invalid, limits.unavailable. A message ends with
// "; retry after D" when retrying can help (see RetryAfter).
func (l *Limiter) Check(ctx context.Context, r *pipeline.Request) (verdict.Verdict, error) {
	if r.Phase == pipeline.PhaseList {
		return verdict.Verdict{}, nil
	}
	if r.Caller == nil {
		return verdict.Verdict{}, errors.New("limits: request without a caller")
	}
	now := l.cfg.Now()
	rv := requestView{action: r.Action, agent: r.Caller.Agent, user: r.Caller.User, task: r.Caller.Task, server: r.Server, target: r.Target}

	// Value rule: parse and check the ceiling before taking anything.
	var vr *valueRule
	var amount int64
	if r.Action == pipeline.ActionCallTool {
		vr = l.values[r.Server][r.Target]
	}
	if vr != nil {
		var v verdict.Verdict
		amount, v = l.value(vr, r)
		if v.Outcome == verdict.Block {
			return v, nil
		}
	}

	// Rates.
	var resvBuf [4]*rate.Reservation
	resv := resvBuf[:0]
	cancel := func() {
		for _, res := range resv {
			res.CancelAt(now)
		}
	}
	for _, rr := range l.rates {
		if !rr.applies(&rv) {
			continue
		}
		res := rr.limiter(rr.key(&rv), now).ReserveN(now, 1)
		if !res.OK() {
			cancel()
			return l.refuse("limits.rate", rr.cfg.Name, "rate limit "+rr.cfg.Name+" exceeded", rr.cfg.Interval), nil
		}
		if d := res.DelayFrom(now); d > 0 {
			res.CancelAt(now)
			cancel()
			return l.refuse("limits.rate", rr.cfg.Name, fmt.Sprintf("rate limit %s (%d per %v) exceeded", rr.cfg.Name, rr.cfg.Limit, rr.cfg.Interval), d), nil
		}
		resv = append(resv, res)
	}

	// Concurrency.
	var h *hold
	if r.Server != "" && r.Action != pipeline.ActionSample && r.Action != pipeline.ActionElicit {
		for _, s := range [2]*slot{l.servers[r.Server], l.tools[r.Server][r.Target]} {
			if s == nil {
				continue
			}
			if s.n.Add(1) > s.max {
				s.n.Add(-1)
				if h != nil {
					release(h.slots)
				}
				cancel()
				return l.refuse("limits.concurrency", s.name, fmt.Sprintf("%s already has %d calls in flight", s.name, s.max), l.cfg.ConcurrencyRetry), nil
			}
			if h == nil {
				h = &hold{at: now}
			}
			h.slots = append(h.slots, s)
		}
	}

	// Running totals.
	if vr != nil && len(vr.totals) > 0 && amount > 0 {
		buckets := make([]Bucket, len(vr.totals))
		for i, t := range vr.totals {
			buckets[i] = t.bucket(rv, now.Unix())
		}
		full, used, err := l.cfg.Ledger.Reserve(ctx, amount, buckets)
		if err != nil {
			control := "limits.value:" + vr.Name
			l.met.failures.WithLabelValues(control, vr.FailMode.String()).Inc()
			l.cfg.Logger.Error("reserving a running total failed", "rule", vr.Name, "correlation_id", r.ID, "fail_mode", vr.FailMode, "err", err)
			if vr.FailMode == FailClosed {
				if h != nil {
					release(h.slots)
				}
				cancel()
				return l.deny("limits.unavailable", vr.Name, "the running totals are unavailable; the request was refused"), nil
			}
		} else if full >= 0 {
			if h != nil {
				release(h.slots)
			}
			cancel()
			t, b := vr.totals[full], buckets[full]
			msg := fmt.Sprintf("%s would exceed the limit of %s per %s per %v (%s used)",
				vr.money(amount), vr.money(t.limit), t.per, time.Duration(t.window)*time.Second, vr.money(used))
			return l.refuse("limits.running_total", t.name, msg, time.Unix(b.End, 0).Sub(now)), nil
		} else {
			if h == nil {
				h = &hold{at: now}
			}
			h.rule, h.amount, h.buckets = vr, amount, buckets
		}
	}
	if h != nil {
		if old, loaded := l.pending.Swap(r, h); loaded {
			// Checked twice without Finish: never leak the first hold.
			l.settle(ctx, old.(*hold), true, r.ID)
		}
	}
	return verdict.Verdict{}, nil
}

// value reads and checks a call's value.
func (l *Limiter) value(vr *valueRule, r *pipeline.Request) (int64, verdict.Verdict) {
	invalid := func(msg string) (int64, verdict.Verdict) {
		return 0, l.deny("limits.value_invalid", vr.Name, msg)
	}
	raw, ok, err := argument(r.Arguments, vr.path)
	if err != nil || !ok {
		return invalid("argument " + vr.Argument + " must carry the call's value")
	}
	text, err := amountText(raw)
	if err != nil {
		return invalid("argument " + vr.Argument + " is not a number")
	}
	amount, err := ParseAmount(text, vr.Decimals)
	if err != nil {
		return invalid("argument " + vr.Argument + ": " + err.Error())
	}
	if vr.UnitArgument != "" {
		uraw, ok, err := argument(r.Arguments, strings.Split(vr.UnitArgument, "."))
		u, isStr := stringArg(uraw)
		if err != nil || !ok || !isStr || !strings.EqualFold(strings.TrimSpace(u), vr.Unit) {
			return invalid("argument " + vr.UnitArgument + " must be " + vr.Unit)
		}
	}
	if vr.ceiling >= 0 && amount > vr.ceiling {
		return 0, l.deny("limits.value_ceiling", vr.Name, fmt.Sprintf("%s exceeds the per-call ceiling of %s", vr.money(amount), vr.money(vr.ceiling)))
	}
	return amount, verdict.Verdict{}
}

func (vr *valueRule) money(v int64) string {
	s := FormatAmount(v, vr.Decimals)
	if vr.Unit != "" {
		s += " " + vr.Unit
	}
	return s
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func release(slots []*slot) {
	for _, s := range slots {
		s.n.Add(-1)
	}
}

// deny refuses with code, counting the refusal under rule.
func (l *Limiter) deny(code, rule, msg string) verdict.Verdict {
	l.met.refusals.WithLabelValues(code, rule).Inc()
	v := verdict.Deny(verdict.Execution, code, msg)
	v.Reasons[0].Policies = []string{rule}
	return v
}

// refuse is deny with a retry hint.
func (l *Limiter) refuse(code, rule, msg string, retry time.Duration) verdict.Verdict {
	v := l.deny(code, rule, msg+"; retry after "+formatRetry(retry))
	v.Reasons[0].RetryAfter = retrySeconds(retry)
	return v
}

// retrySeconds rounds a retry hint up to whole seconds (at least 1).
func retrySeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// formatRetry rounds a retry hint up to a readable duration.
func formatRetry(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return (((d + time.Millisecond - 1) / time.Millisecond) * time.Millisecond).String()
	default:
		return (((d + time.Second - 1) / time.Second) * time.Second).String()
	}
}

var retryRE = regexp.MustCompile(`; retry after ([0-9hms.]+)$`)

// RetryAfter returns the retry hint of a reason produced by this package
// (rate, concurrency, running-total and breaker refusals), for the agent's
// error data.
func RetryAfter(r verdict.Reason) (time.Duration, bool) {
	m := retryRE.FindStringSubmatch(r.Message)
	if m == nil {
		return 0, false
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		return 0, false
	}
	return d, true
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds (for an HTTP
// Retry-After header).
func RetryAfterSeconds(r verdict.Reason) (string, bool) {
	d, ok := RetryAfter(r)
	if !ok {
		return "", false
	}
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10), true
}

// TotalRef names one running total of a value rule, for policy: the
// rule's name, the dimension the total is counted per, and its window
// (zero: the rule's only total per that dimension).
type TotalRef struct {
	Value  string
	Per    Dimension
	Window time.Duration
}

// TotalView reads one running total for policy (context.totals).
type TotalView struct {
	l  *Limiter
	vr *valueRule
	t  *totalRule
}

// View resolves ref to exactly one running total; the error says why it
// names none or several.
func (l *Limiter) View(ref TotalRef) (*TotalView, error) {
	var vr *valueRule
	for _, m := range l.values {
		for _, v := range m {
			if v.Name == ref.Value {
				vr = v
			}
		}
	}
	if vr == nil {
		return nil, fmt.Errorf("no value rule is named %q", ref.Value)
	}
	var found *totalRule
	for i := range vr.totals {
		t := &vr.totals[i]
		if t.per != ref.Per || ref.Window != 0 && time.Duration(t.window)*time.Second != ref.Window {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("value rule %s has several totals per %s: name the window", vr.Name, ref.Per)
		}
		found = t
	}
	if found == nil {
		what := string(ref.Per)
		if ref.Window != 0 {
			what += " over " + ref.Window.String()
		}
		return nil, fmt.Errorf("value rule %s has no running total per %s", vr.Name, what)
	}
	if _, ok := l.cfg.Ledger.(TotalReader); !ok {
		return nil, errors.New("the running totals' ledger cannot report them")
	}
	return &TotalView{l: l, vr: vr, t: found}, nil
}

// Used returns the total for r's agent, user or task in the current
// window, in the value's units: what was committed plus what calls in
// flight reserved — before r itself, which the limits stage reserves only
// later. An error means the total is unknown (the ledger is unavailable).
func (v *TotalView) Used(ctx context.Context, r *pipeline.Request) (float64, error) {
	if r.Caller == nil {
		return 0, errors.New("limits: request without a caller")
	}
	now := v.l.cfg.Now().Unix()
	rv := requestView{agent: r.Caller.Agent, user: r.Caller.User, task: r.Caller.Task}
	used, err := v.l.cfg.Ledger.(TotalReader).Used(ctx, v.t.bucket(rv, now))
	if err != nil {
		v.l.met.failures.WithLabelValues("limits.total:"+v.t.name, FailClosed.String()).Inc()
		return 0, fmt.Errorf("reading running total %s: %w", v.t.name, err)
	}
	return float64(used) / math.Pow10(v.vr.Decimals), nil
}

// Finish implements pipeline.Finisher: it frees the call's concurrency
// slots and settles its reservation. A value is committed when the call may
// have taken effect: status "ok", and also "upstream_error" and "cancelled"
// (the outcome is unknown); it is released for "refused", "listed",
// "tool_error" and "error" (the call was not made, or the tool or server
// reported that it failed).
func (l *Limiter) Finish(ctx context.Context, r *pipeline.Request, o *pipeline.Outcome) {
	v, ok := l.pending.LoadAndDelete(r)
	if !ok {
		return
	}
	h := v.(*hold)
	if l.cfg.AsyncSettle && len(h.buckets) > 0 {
		release(h.slots)
		h.slots = nil
		l.settles.Add(1)
		go func() {
			defer l.settles.Done()
			l.settle(ctx, h, spent(o.Status), r.ID)
		}()
		return
	}
	l.settle(ctx, h, spent(o.Status), r.ID)
}

func spent(status string) bool {
	switch status {
	case "refused", "listed", "tool_error", "error":
		return false
	}
	return true
}

func (l *Limiter) settle(ctx context.Context, h *hold, commit bool, id string) {
	release(h.slots)
	if len(h.buckets) == 0 {
		return
	}
	// Settle even when the request's context is cancelled: an unsettled
	// reservation would hold the budget until its window ends.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.cfg.Ledger.Settle(ctx, h.amount, h.buckets, commit); err != nil {
		l.met.settleFailures.Inc()
		l.cfg.Logger.Error("settling a running total failed; the amount stays counted until its window ends",
			"rule", h.rule.Name, "correlation_id", id, "commit", commit, "err", err)
	}
}

// Run does the Limiter's housekeeping until ctx ends: it drops idle rate
// buckets, releases holds older than MaxHold (committing their values) and
// prunes ledger windows that ended more than a day ago.
func (l *Limiter) Run(ctx context.Context) error {
	t := time.NewTicker(30 * time.Second)
	defer func() {
		t.Stop()
		l.settles.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		l.Sweep(ctx)
	}
}

// Sweep does one round of Run's housekeeping.
func (l *Limiter) Sweep(ctx context.Context) {
	now := l.cfg.Now()
	for _, rr := range l.rates {
		rr.sweep(now)
		l.met.keys.WithLabelValues(rr.cfg.Name).Set(float64(rr.size()))
	}
	l.pending.Range(func(k, v any) bool {
		h := v.(*hold)
		if now.Sub(h.at) > l.cfg.MaxHold {
			if _, ok := l.pending.LoadAndDelete(k); ok {
				l.met.leaked.Inc()
				l.cfg.Logger.Warn("a call held limits longer than max_hold without finishing; releasing it", "correlation_id", k.(*pipeline.Request).ID)
				l.settle(ctx, h, true, k.(*pipeline.Request).ID)
			}
		}
		return true
	})
	if p, ok := l.cfg.Ledger.(Pruner); ok {
		if _, err := p.Prune(ctx, now.Add(-24*time.Hour).Unix()); err != nil && ctx.Err() == nil {
			l.cfg.Logger.Warn("pruning running totals failed", "err", err)
		}
	}
}

// InFlight returns the calls in flight counted by the concurrency limit of
// server (tool empty) or of one of its tools.
func (l *Limiter) InFlight(server, tool string) int {
	s := l.servers[server]
	if tool != "" {
		s = l.tools[server][tool]
	}
	if s == nil {
		return 0
	}
	return int(s.n.Load())
}

// CallValue returns the value of a tools/call request as a decimal string
// (the amount a value rule names, in the rule's unit), for approvals whose
// grants carry a value ceiling; value is "" when no value rule covers the
// tool. v blocks when the value is invalid or above the per-call ceiling,
// so that such a call is refused before anyone is asked to approve it.
func (l *Limiter) CallValue(r *pipeline.Request) (value string, v verdict.Verdict) {
	if r.Action != pipeline.ActionCallTool {
		return "", verdict.Verdict{}
	}
	vr := l.values[r.Server][r.Target]
	if vr == nil {
		return "", verdict.Verdict{}
	}
	amount, v := l.value(vr, r)
	if v.Outcome == verdict.Block {
		return "", v
	}
	return FormatAmount(amount, vr.Decimals), verdict.Verdict{}
}
