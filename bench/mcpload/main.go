// Command mcpload is Gatehouse's load benchmark. It drives MCP tools/call
// requests over Streamable HTTP against several targets in one interleaved
// run — typically the upstream server directly, the gateway in front of it,
// and a bare reverse proxy in front of it — and reports, per target:
//
//   - latency p50/p99 at fixed open-loop rates, and the latency each target
//     adds over the first target (the baseline) in the same run;
//   - maximum throughput in a closed loop, as a ratio to the baseline;
//   - the CPU time the target's own process spends per call, from
//     /proc/<pid>/stat (utime+stime) deltas over that target's slices.
//
// Method. Each target gets its own pool of MCP sessions (initialize once,
// then notifications/initialized). The run is a sequence of short slices;
// within a phase, every round gives each target one slice, the order of
// targets rotating from round to round, so that slow drifts of the machine
// (other processes, thermal state) fall evenly on all targets. Open-loop
// arrivals are Poisson (or uniform) at a fixed rate and latency is measured
// from each call's scheduled send time, so that a target that falls behind
// is charged for the queueing it causes (no coordinated omission). After a
// slice's last call completes, the generator waits a short settle time (so
// that work a target does after answering, such as committing audit records,
// is counted in its own slice) before it reads the CPU counters.
//
// Usage:
//
//	mcpload -target name=direct,url=http://127.0.0.1:3001/mcp \
//	        -target name=gateway,url=http://127.0.0.1:8080/mcp,pid=1234,token-file=tok \
//	        -target name=revproxy,url=http://127.0.0.1:3002/mcp,pid=1235 \
//	        -upstream-pid 1233 -out results.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpload: %v\n", err)
		os.Exit(1)
	}
}

// options are the command-line settings.
type options struct {
	Sessions      int           `json:"sessions"`
	Tool          string        `json:"tool"`
	Arguments     string        `json:"arguments"`
	Protocol      string        `json:"protocol_version"`
	Rates         []int         `json:"rates"`
	Arrivals      string        `json:"arrivals"`
	Slice         time.Duration `json:"-"`
	Rounds        int           `json:"rounds"`
	MaxSlice      time.Duration `json:"-"`
	MaxRounds     int           `json:"max_rounds"`
	Concurrency   int           `json:"max_concurrency"`
	Warmup        time.Duration `json:"-"`
	Settle        time.Duration `json:"-"`
	Workers       int           `json:"workers"`
	CallTimeout   time.Duration `json:"-"`
	Seed          uint64        `json:"seed"`
	SliceS        float64       `json:"slice_s"`
	MaxSliceS     float64       `json:"max_slice_s"`
	WarmupS       float64       `json:"warmup_s"`
	SettleS       float64       `json:"settle_s"`
	UpstreamPID   int           `json:"upstream_pid,omitempty"`
	Layers        string        `json:"layers,omitempty"`
	Notes         string        `json:"notes,omitempty"`
	FsyncDir      string        `json:"fsync_dir,omitempty"`
	GoalTarget    string        `json:"goal_target,omitempty"`
	GoalReference string        `json:"goal_reference,omitempty"`
	targetSpecs   []string
	out           string
	cpuprofile    string
	maxErrorRatio float64
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mcpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var rates string
	fs.Func("target", "a target: `name=N,url=URL[,pid=PID][,token-file=FILE]` (repeat; the first is the baseline)", func(s string) error {
		o.targetSpecs = append(o.targetSpecs, s)
		return nil
	})
	fs.IntVar(&o.Sessions, "sessions", 32, "MCP sessions per target")
	fs.StringVar(&o.Tool, "tool", "test_simple_text", "tool to call")
	fs.StringVar(&o.Arguments, "arguments", "{}", "tool arguments (a JSON object)")
	fs.StringVar(&o.Protocol, "protocol", "2025-06-18", "MCP protocol version to request")
	fs.StringVar(&rates, "rates", "100,500", "open-loop rates in calls/s, comma-separated (empty: none)")
	fs.StringVar(&o.Arrivals, "arrivals", "poisson", "open-loop arrivals: poisson or uniform")
	fs.DurationVar(&o.Slice, "slice", 2*time.Second, "open-loop slice length")
	fs.IntVar(&o.Rounds, "rounds", 10, "open-loop rounds per rate (each round gives every target one slice)")
	fs.DurationVar(&o.MaxSlice, "max-slice", 3*time.Second, "closed-loop slice length")
	fs.IntVar(&o.MaxRounds, "max-rounds", 5, "closed-loop rounds (0: skip the maximum-throughput phase)")
	fs.IntVar(&o.Concurrency, "max-concurrency", 32, "closed-loop calls in flight per target")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "closed-loop warm-up per target before measuring")
	fs.DurationVar(&o.Settle, "settle", 100*time.Millisecond, "pause after a slice's last answer before reading CPU counters")
	fs.IntVar(&o.Workers, "workers", 512, "open-loop sender goroutines")
	fs.DurationVar(&o.CallTimeout, "call-timeout", 30*time.Second, "timeout of one call")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the arrival process")
	fs.IntVar(&o.UpstreamPID, "upstream-pid", 0, "pid of the upstream server (its CPU per call is reported too)")
	fs.StringVar(&o.Layers, "layers", "", "the gateway's layers in this run (recorded: core, all, …)")
	fs.StringVar(&o.Notes, "notes", "", "free text recorded in the results (load conditions, build)")
	fs.StringVar(&o.out, "out", "", "write results as JSON to this `file`")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write the generator's own CPU profile to this `file`")
	fs.StringVar(&o.FsyncDir, "fsync-dir", "", "measure fdatasync latency in this `directory` (where the gateway's audit log lives) and record it")
	fs.StringVar(&o.GoalTarget, "goal-target", "gateway", "target whose figures are checked against the gateway-core issue's goals")
	fs.StringVar(&o.GoalReference, "goal-reference", "revproxy", "target whose CPU per call the goal target must beat")
	fs.Float64Var(&o.maxErrorRatio, "max-error-ratio", 0.001, "fail when more than this fraction of a target's calls fail")
	report := fs.String("report", "", "print the table of an earlier run's JSON `file` and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *report != "" {
		data, err := os.ReadFile(*report)
		if err != nil {
			return err
		}
		var r results
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("decoding %s: %w", *report, err)
		}
		if r.Options.GoalTarget == "" {
			r.Options.GoalTarget, r.Options.GoalReference = o.GoalTarget, o.GoalReference
		}
		if r.Goals == nil {
			r.Goals = checkGoals(&r, r.Options.GoalTarget, r.Options.GoalReference)
		}
		writeTable(stdout, &r)
		return nil
	}
	if len(o.targetSpecs) == 0 {
		fs.Usage()
		return errors.New("at least one -target is required")
	}
	for _, r := range strings.Split(rates, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		n, err := strconv.Atoi(r)
		if err != nil || n <= 0 {
			return fmt.Errorf("-rates: %q is not a positive integer", r)
		}
		o.Rates = append(o.Rates, n)
	}
	if o.Arrivals != "poisson" && o.Arrivals != "uniform" {
		return fmt.Errorf("-arrivals must be poisson or uniform")
	}
	if o.Sessions < 1 || o.Concurrency < 1 || o.Workers < 1 {
		return errors.New("-sessions, -max-concurrency and -workers must be positive")
	}
	if !json.Valid([]byte(o.Arguments)) {
		return errors.New("-arguments is not valid JSON")
	}
	o.SliceS, o.MaxSliceS, o.WarmupS, o.SettleS = o.Slice.Seconds(), o.MaxSlice.Seconds(), o.Warmup.Seconds(), o.Settle.Seconds()

	var targets []*target
	for _, spec := range o.targetSpecs {
		t, err := parseTarget(spec, max(o.Concurrency, o.Workers))
		if err != nil {
			return err
		}
		if slices.ContainsFunc(targets, func(x *target) bool { return x.Name == t.Name }) {
			return fmt.Errorf("duplicate target name %q", t.Name)
		}
		targets = append(targets, t)
	}

	b := &bench{o: o, targets: targets, log: stderr, args: []byte(o.Arguments)}
	b.res.Machine = describeMachine()
	b.res.Started = time.Now().UTC().Format(time.RFC3339)
	b.res.Options = o
	for _, t := range targets {
		b.res.Targets = append(b.res.Targets, targetInfo{Name: t.Name, URL: t.URL, PID: t.PID})
	}
	b.procs = append(b.procs, proc{name: "loadgen", pid: 0})
	for _, t := range targets {
		if t.PID > 0 {
			b.procs = append(b.procs, proc{name: t.Name, pid: t.PID, target: t.Name})
		}
	}
	if o.UpstreamPID > 0 {
		b.procs = append(b.procs, proc{name: "upstream", pid: o.UpstreamPID})
	}
	for _, p := range b.procs {
		if _, err := cpuTime(p.pid); err != nil {
			return fmt.Errorf("reading CPU time of %s (pid %d): %w", p.name, p.pid, err)
		}
	}
	if _, _, err := systemCPU(); err != nil {
		return err
	}

	if o.FsyncDir != "" {
		f, err := probeFsync(o.FsyncDir, 200)
		if err != nil {
			return fmt.Errorf("measuring fdatasync in %s: %w", o.FsyncDir, err)
		}
		b.res.Machine.Fsync = f
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	started := time.Now()
	for _, t := range targets {
		fmt.Fprintf(stderr, "mcpload: %s: opening %d sessions at %s\n", t.Name, o.Sessions, t.URL)
		if err := t.open(ctx, o.Sessions, o.Protocol); err != nil {
			return err
		}
		defer t.close(context.Background())
		// One call checks the tool before anything is measured.
		if err := t.call(ctx, t.session(), o.Tool, b.args); err != nil {
			return fmt.Errorf("%s: calling %s: %w", t.Name, o.Tool, err)
		}
	}
	if err := b.measure(ctx); err != nil {
		return err
	}
	b.res.Machine.LoadEnd = loadavg()
	b.res.DurationS = time.Since(started).Seconds()
	b.summarize()
	b.res.Goals = checkGoals(&b.res, o.GoalTarget, o.GoalReference)

	writeTable(stdout, &b.res)
	if o.out != "" {
		out, err := json.MarshalIndent(&b.res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.out, append(out, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "mcpload: results written to %s\n", o.out)
	}
	for _, ph := range b.res.Phases {
		for _, r := range ph.Targets {
			if r.Calls+r.Errors > 0 && float64(r.Errors) > o.maxErrorRatio*float64(r.Calls+r.Errors) {
				return fmt.Errorf("%s: %s: %d of %d calls failed (first: %s)", ph.Name, r.Name, r.Errors, r.Calls+r.Errors, r.FirstError)
			}
		}
	}
	return nil
}

func parseTarget(spec string, conns int) (*target, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("-target %q: %q is not key=value", spec, part)
		}
		kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	name, url := kv["name"], kv["url"]
	if name == "" || url == "" {
		return nil, fmt.Errorf("-target %q: name and url are required", spec)
	}
	pid := 0
	if s := kv["pid"]; s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-target %q: invalid pid", spec)
		}
		pid = n
	}
	token := ""
	if f := kv["token-file"]; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("-target %s: reading token: %w", name, err)
		}
		token = strings.TrimSpace(string(b))
	}
	for k := range kv {
		if !slices.Contains([]string{"name", "url", "pid", "token-file"}, k) {
			return nil, fmt.Errorf("-target %q: unknown key %q", spec, k)
		}
	}
	return newTarget(name, url, pid, token, conns), nil
}

// proc is a process whose CPU time is sampled around every slice.
type proc struct {
	name   string
	pid    int    // 0: the generator itself
	target string // the target this process serves, if any
}

// bench is one benchmark run.
type bench struct {
	o       options
	targets []*target
	procs   []proc
	log     io.Writer
	args    []byte
	res     results

	// acc holds the raw samples per phase and target.
	acc map[string]map[string]*agg
	// idle is CPU each target's process spent during other targets'
	// slices.
	idle map[string]*idleAgg
}

// agg accumulates one target's slices in one phase.
type agg struct {
	lat, lag    []int64 // nanoseconds
	calls, errs int
	inWindow    int // closed loop: calls completed before the slice deadline
	firstErr    string
	wall        time.Duration // summed slice lengths (closed loop: the nominal length)
	cpu         map[string]time.Duration
	sysBusy     time.Duration
	sysWall     time.Duration
	roundP50    []float64 // per-round p50 in ms, by round index
	roundP99    []float64
}

type idleAgg struct {
	cpu  time.Duration
	wall time.Duration
}

// snapshot is the CPU counters at one instant.
type snapshot struct {
	at   time.Time
	cpu  []time.Duration
	busy time.Duration
}

func (b *bench) snap() (snapshot, error) {
	s := snapshot{cpu: make([]time.Duration, len(b.procs))}
	for i, p := range b.procs {
		c, err := cpuTime(p.pid)
		if err != nil {
			return s, fmt.Errorf("reading CPU time of %s (pid %d): %w", p.name, p.pid, err)
		}
		s.cpu[i] = c
	}
	busy, _, err := systemCPU()
	s.busy = busy
	s.at = time.Now()
	return s, err
}

// sliceAcc collects the calls of one slice.
type sliceAcc struct {
	mu       sync.Mutex
	wg       sync.WaitGroup
	lat, lag []int64
	errs     int
	firstErr string
	deadline time.Time // closed loop
	inWindow int
}

func (a *sliceAcc) add(lat, lag time.Duration, done time.Time, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.errs++
		if a.firstErr == "" {
			a.firstErr = err.Error()
		}
		return
	}
	a.lat = append(a.lat, int64(lat))
	a.lag = append(a.lag, int64(lag))
	if !a.deadline.IsZero() && !done.After(a.deadline) {
		a.inWindow++
	}
}

// job is one scheduled open-loop call.
type job struct {
	t     *target
	sched time.Time
	acc   *sliceAcc
}

func (b *bench) measure(ctx context.Context) error {
	b.acc = map[string]map[string]*agg{}
	b.idle = map[string]*idleAgg{}

	jobs := make(chan job, 1<<16)
	var wg sync.WaitGroup
	for range b.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				sent := time.Now()
				cctx, cancel := context.WithTimeout(ctx, b.o.CallTimeout)
				err := j.t.call(cctx, j.t.session(), b.o.Tool, b.args)
				cancel()
				done := time.Now()
				j.acc.add(done.Sub(j.sched), sent.Sub(j.sched), done, err)
				j.acc.wg.Done()
			}
		}()
	}
	defer func() { close(jobs); wg.Wait() }()

	// Warm-up: connections, the gateway's tool catalog, page faults.
	for _, t := range b.targets {
		fmt.Fprintf(b.log, "mcpload: warming up %s for %v\n", t.Name, b.o.Warmup)
		b.closedSlice(ctx, t, b.o.Warmup)
	}

	rng := rand.New(rand.NewPCG(b.o.Seed, 0x9e3779b97f4a7c15))
	for _, rate := range b.o.Rates {
		phase := fmt.Sprintf("rate-%d", rate)
		fmt.Fprintf(b.log, "mcpload: %s: %d rounds × %d targets × %v\n", phase, b.o.Rounds, len(b.targets), b.o.Slice)
		for round := range b.o.Rounds {
			for i := range b.targets {
				t := b.targets[(i+round)%len(b.targets)]
				offsets := arrivals(rng, b.o.Arrivals, rate, b.o.Slice)
				err := b.slice(ctx, phase, round, t, b.o.Slice, func() *sliceAcc {
					return b.openSlice(ctx, jobs, t, offsets)
				})
				if err != nil {
					return err
				}
			}
		}
	}
	if b.o.MaxRounds > 0 {
		fmt.Fprintf(b.log, "mcpload: max: %d rounds × %d targets × %v, %d in flight\n", b.o.MaxRounds, len(b.targets), b.o.MaxSlice, b.o.Concurrency)
		for round := range b.o.MaxRounds {
			for i := range b.targets {
				t := b.targets[(i+round)%len(b.targets)]
				err := b.slice(ctx, "max", round, t, b.o.MaxSlice, func() *sliceAcc {
					return b.closedSlice(ctx, t, b.o.MaxSlice)
				})
				if err != nil {
					return err
				}
			}
		}
	}
	return ctx.Err()
}

// slice runs one slice between two CPU snapshots and files its results.
func (b *bench) slice(ctx context.Context, phase string, round int, t *target, nominal time.Duration, run func() *sliceAcc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s0, err := b.snap()
	if err != nil {
		return err
	}
	acc := run()
	time.Sleep(b.o.Settle)
	s1, err := b.snap()
	if err != nil {
		return err
	}
	byTarget := b.acc[phase]
	if byTarget == nil {
		byTarget = map[string]*agg{}
		b.acc[phase] = byTarget
	}
	a := byTarget[t.Name]
	if a == nil {
		a = &agg{cpu: map[string]time.Duration{}}
		byTarget[t.Name] = a
	}
	a.lat = append(a.lat, acc.lat...)
	a.lag = append(a.lag, acc.lag...)
	a.calls += len(acc.lat)
	a.errs += acc.errs
	a.inWindow += acc.inWindow
	if a.firstErr == "" {
		a.firstErr = acc.firstErr
	}
	a.wall += nominal
	wall := s1.at.Sub(s0.at)
	a.sysWall += wall
	var ours time.Duration
	for i, p := range b.procs {
		d := s1.cpu[i] - s0.cpu[i]
		ours += d
		a.cpu[p.name] += d
		if p.target != "" && p.target != t.Name {
			ia := b.idle[p.name]
			if ia == nil {
				ia = &idleAgg{}
				b.idle[p.name] = ia
			}
			ia.cpu += d
			ia.wall += wall
		}
	}
	a.sysBusy += (s1.busy - s0.busy) - ours
	for len(a.roundP50) <= round {
		a.roundP50 = append(a.roundP50, -1)
		a.roundP99 = append(a.roundP99, -1)
	}
	sorted := slices.Clone(acc.lat)
	slices.Sort(sorted)
	a.roundP50[round] = ms(percentile(sorted, 0.50))
	a.roundP99[round] = ms(percentile(sorted, 0.99))
	return nil
}

// arrivals returns the send offsets of one open-loop slice.
func arrivals(rng *rand.Rand, kind string, rate int, d time.Duration) []time.Duration {
	var out []time.Duration
	if kind == "uniform" {
		gap := time.Second / time.Duration(rate)
		for t := gap / 2; t < d; t += gap {
			out = append(out, t)
		}
		return out
	}
	t := 0.0
	for {
		t += rng.ExpFloat64() / float64(rate)
		off := time.Duration(t * float64(time.Second))
		if off >= d {
			return out
		}
		out = append(out, off)
	}
}

// openSlice sends calls at the given offsets from now and waits for every
// answer. Latency counts from the scheduled time.
func (b *bench) openSlice(ctx context.Context, jobs chan<- job, t *target, offsets []time.Duration) *sliceAcc {
	acc := &sliceAcc{lat: make([]int64, 0, len(offsets)), lag: make([]int64, 0, len(offsets))}
	start := time.Now().Add(time.Millisecond)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for _, off := range offsets {
		at := start.Add(off)
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				acc.wg.Wait()
				return acc
			}
		}
		acc.wg.Add(1)
		jobs <- job{t: t, sched: at, acc: acc}
	}
	acc.wg.Wait()
	return acc
}

// closedSlice keeps Concurrency calls in flight for d.
func (b *bench) closedSlice(ctx context.Context, t *target, d time.Duration) *sliceAcc {
	acc := &sliceAcc{}
	start := time.Now()
	acc.deadline = start.Add(d)
	for i := range b.o.Concurrency {
		acc.wg.Add(1)
		go func() {
			defer acc.wg.Done()
			s := t.sessions[i%len(t.sessions)]
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(acc.deadline) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, b.o.CallTimeout)
				err := t.call(cctx, s, b.o.Tool, b.args)
				cancel()
				done := time.Now()
				acc.add(done.Sub(t0), 0, done, err)
			}
		}()
	}
	acc.wg.Wait()
	return acc
}
