package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// results is the JSON output.
type results struct {
	Started   string       `json:"started"`
	DurationS float64      `json:"duration_s"`
	Machine   machine      `json:"machine"`
	Options   options      `json:"options"`
	Targets   []targetInfo `json:"targets"`
	Baseline  string       `json:"baseline"`
	Phases    []phase      `json:"phases"`
	// IdleCPU is the CPU (ms per second of wall time) each target's
	// process used while other targets were measured: background work
	// that per-call figures do not include.
	IdleCPU map[string]float64 `json:"idle_cpu_ms_per_s,omitempty"`
	// Goals are the gateway-core issue's targets checked on this run.
	Goals []goal `json:"goals,omitempty"`
}

type targetInfo struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	PID  int    `json:"pid,omitempty"`
}

// phase is one rate (open loop) or the closed-loop maximum.
type phase struct {
	Name string `json:"name"` // rate-100, rate-500, max
	// Rate is the offered load in calls/s (open loop); 0 for max.
	Rate    int            `json:"rate,omitempty"`
	Targets []targetResult `json:"targets"`
	// ForeignCores is the CPU used by processes outside the benchmark
	// during the phase, in cores (a measure of how noisy the machine was).
	ForeignCores float64 `json:"foreign_cores"`
}

type targetResult struct {
	Name       string  `json:"name"`
	Calls      int     `json:"calls"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Achieved   float64 `json:"calls_per_s"` // completed calls per second of slice time
	Ratio      float64 `json:"throughput_ratio,omitempty"`
	MeanMS     float64 `json:"mean_ms"`
	P50MS      float64 `json:"p50_ms"`
	P90MS      float64 `json:"p90_ms"`
	P99MS      float64 `json:"p99_ms"`
	P999MS     float64 `json:"p999_ms"`
	MaxMS      float64 `json:"max_ms"`
	// AddedP50MS and AddedP99MS are this target's percentile minus the
	// baseline's in the same phase.
	AddedP50MS float64 `json:"added_p50_ms"`
	AddedP99MS float64 `json:"added_p99_ms"`
	// AddedP50Rounds summarizes the per-round differences of p50 (each
	// round's slices are adjacent in time): their spread shows the noise.
	AddedP50Rounds *spread `json:"added_p50_rounds_ms,omitempty"`
	// SendLagP99MS is the generator's own lateness in sending (open loop):
	// large values mean the generator, not the target, was starved.
	SendLagP99MS float64 `json:"send_lag_p99_ms,omitempty"`
	// CPUPerCallUS is the CPU time of the target's own process per
	// completed call; UpstreamCPUPerCallUS and LoadgenCPUPerCallUS are the
	// upstream's and the generator's in the same slices.
	CPUPerCallUS         *float64 `json:"cpu_us_per_call,omitempty"`
	UpstreamCPUPerCallUS *float64 `json:"upstream_cpu_us_per_call,omitempty"`
	LoadgenCPUPerCallUS  float64  `json:"loadgen_cpu_us_per_call"`
}

type spread struct {
	Min    float64 `json:"min"`
	Q25    float64 `json:"q25"`
	Median float64 `json:"median"`
	Q75    float64 `json:"q75"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// quantile returns the q-quantile of sorted values (nearest rank).
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func (b *bench) summarize() {
	base := b.targets[0].Name
	b.res.Baseline = base
	var names []string
	for _, r := range b.o.Rates {
		names = append(names, fmt.Sprintf("rate-%d", r))
	}
	if b.o.MaxRounds > 0 {
		names = append(names, "max")
	}
	for _, name := range names {
		byTarget := b.acc[name]
		if byTarget == nil {
			continue
		}
		ph := phase{Name: name}
		_, _ = fmt.Sscanf(name, "rate-%d", &ph.Rate) // "max" has no rate
		var foreign, wall time.Duration
		var baseRes *targetResult
		for _, t := range b.targets {
			a := byTarget[t.Name]
			if a == nil {
				continue
			}
			foreign += a.sysBusy
			wall += a.sysWall
			slices.Sort(a.lat)
			slices.Sort(a.lag)
			r := targetResult{Name: t.Name, Calls: a.calls, Errors: a.errs, FirstError: a.firstErr}
			if a.wall > 0 {
				n := a.calls
				if name == "max" {
					n = a.inWindow
				}
				r.Achieved = round3(float64(n) / a.wall.Seconds())
			}
			var sum int64
			for _, v := range a.lat {
				sum += v
			}
			if len(a.lat) > 0 {
				r.MeanMS = round3(ms(sum / int64(len(a.lat))))
				r.MaxMS = round3(ms(a.lat[len(a.lat)-1]))
			}
			r.P50MS = round3(ms(percentile(a.lat, 0.50)))
			r.P90MS = round3(ms(percentile(a.lat, 0.90)))
			r.P99MS = round3(ms(percentile(a.lat, 0.99)))
			r.P999MS = round3(ms(percentile(a.lat, 0.999)))
			if name != "max" {
				r.SendLagP99MS = round3(ms(percentile(a.lag, 0.99)))
			}
			if a.calls > 0 {
				per := func(d time.Duration) *float64 {
					v := math.Round(float64(d.Microseconds())/float64(a.calls)*10) / 10
					return &v
				}
				if t.PID > 0 {
					r.CPUPerCallUS = per(a.cpu[t.Name])
				}
				if b.o.UpstreamPID > 0 {
					r.UpstreamCPUPerCallUS = per(a.cpu["upstream"])
				}
				r.LoadgenCPUPerCallUS = *per(a.cpu["loadgen"])
			}
			if t.Name == base {
				r.Ratio = 1
				ph.Targets = append(ph.Targets, r)
				baseRes = &r
				continue
			}
			if baseRes != nil {
				r.AddedP50MS = round3(r.P50MS - baseRes.P50MS)
				r.AddedP99MS = round3(r.P99MS - baseRes.P99MS)
				if baseRes.Achieved > 0 {
					r.Ratio = round3(r.Achieved / baseRes.Achieved)
				}
				ba := byTarget[base]
				var diffs []float64
				for i := range min(len(a.roundP50), len(ba.roundP50)) {
					if a.roundP50[i] >= 0 && ba.roundP50[i] >= 0 {
						diffs = append(diffs, a.roundP50[i]-ba.roundP50[i])
					}
				}
				if len(diffs) > 0 {
					slices.Sort(diffs)
					r.AddedP50Rounds = &spread{Min: round3(diffs[0]), Q25: round3(quantile(diffs, 0.25)), Median: round3(quantile(diffs, 0.5)),
						Q75: round3(quantile(diffs, 0.75)), Max: round3(diffs[len(diffs)-1]), N: len(diffs)}
				}
			}
			ph.Targets = append(ph.Targets, r)
		}
		if wall > 0 {
			ph.ForeignCores = round3(foreign.Seconds() / wall.Seconds())
		}
		b.res.Phases = append(b.res.Phases, ph)
	}
	b.res.IdleCPU = map[string]float64{}
	for name, ia := range b.idle {
		if ia.wall > 0 {
			b.res.IdleCPU[name] = round3(float64(ia.cpu.Microseconds()) / 1000 / ia.wall.Seconds())
		}
	}
}

func writeTable(w io.Writer, r *results) {
	m := r.Machine
	fmt.Fprintf(w, "\nGatehouse load benchmark — %s, %.0f s\n", r.Started, r.DurationS)
	fmt.Fprintf(w, "machine: %d CPUs (GOMAXPROCS %d), %s, kernel %s, %s; load average %s → %s\n",
		m.NProc, m.GOMAXPROCS, m.CPUModel, m.Kernel, m.GoVersion, m.LoadStart, m.LoadEnd)
	if f := m.Fsync; f != nil {
		fmt.Fprintf(w, "disk: append 4 KiB + fsync in %s (%s): mean %.2f ms, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms",
			f.Dir, f.Filesystem, f.MeanMS, f.P50MS, f.P90MS, f.P99MS)
		if f.CPUUS > 0 {
			fmt.Fprintf(w, "; %.0f µs of CPU each", f.CPUUS)
		}
		fmt.Fprintln(w)
	}
	o := r.Options
	fmt.Fprintf(w, "load: tools/call %s, %d sessions per target, baseline %q; open loop %s arrivals, %d rounds × %gs per target per rate; closed loop %d in flight, %d rounds × %gs\n",
		o.Tool, o.Sessions, r.Baseline, o.Arrivals, o.Rounds, o.SliceS, o.Concurrency, o.MaxRounds, o.MaxSliceS)
	if o.Layers != "" {
		fmt.Fprintf(w, "gateway layers: %s\n", o.Layers)
	}
	if o.Notes != "" {
		fmt.Fprintf(w, "notes: %s\n", o.Notes)
	}
	for _, ph := range r.Phases {
		fmt.Fprintln(w)
		if ph.Rate > 0 {
			fmt.Fprintf(w, "open loop at %d calls/s (other processes used %.2f cores)\n", ph.Rate, ph.ForeignCores)
		} else {
			fmt.Fprintf(w, "closed loop, maximum throughput (other processes used %.2f cores)\n", ph.ForeignCores)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		if ph.Rate > 0 {
			fmt.Fprintln(tw, "target\tcalls\terrors\tp50 ms\tp99 ms\t+p50 ms\t+p99 ms\t+p50 by round: median (q25..q75)\tCPU µs/call\tupstream µs/call\tloadgen µs/call\t")
		} else {
			fmt.Fprintln(tw, "target\tcalls\terrors\tcalls/s\t× baseline\tp50 ms\tp99 ms\tCPU µs/call\tupstream µs/call\tloadgen µs/call\t")
		}
		for _, t := range ph.Targets {
			cpu, up := "-", "-"
			if t.CPUPerCallUS != nil {
				cpu = fmt.Sprintf("%.0f", *t.CPUPerCallUS)
			}
			if t.UpstreamCPUPerCallUS != nil {
				up = fmt.Sprintf("%.0f", *t.UpstreamCPUPerCallUS)
			}
			if ph.Rate > 0 {
				added, addedP99, rounds := "-", "-", "-"
				if t.Name != r.Baseline {
					added = fmt.Sprintf("%+.3f", t.AddedP50MS)
					addedP99 = fmt.Sprintf("%+.3f", t.AddedP99MS)
					if s := t.AddedP50Rounds; s != nil {
						rounds = fmt.Sprintf("%+.3f (%+.3f..%+.3f)", s.Median, s.Q25, s.Q75)
					}
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%s\t%.0f\t\n",
					t.Name, t.Calls, t.Errors, t.P50MS, t.P99MS, added, addedP99, rounds, cpu, up, t.LoadgenCPUPerCallUS)
			} else {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.3f\t%.3f\t%s\t%s\t%.0f\t\n",
					t.Name, t.Calls, t.Errors, t.Achieved, t.Ratio, t.P50MS, t.P99MS, cpu, up, t.LoadgenCPUPerCallUS)
			}
		}
		tw.Flush()
		for _, t := range ph.Targets {
			if t.Errors > 0 {
				fmt.Fprintf(w, "  %s: %d errors, first: %s\n", t.Name, t.Errors, t.FirstError)
			}
			if t.SendLagP99MS > 1 {
				fmt.Fprintf(w, "  %s: the generator sent late (p99 %.2f ms): latencies include its starvation\n", t.Name, t.SendLagP99MS)
			}
		}
	}
	if len(r.IdleCPU) > 0 {
		var parts []string
		for _, t := range r.Targets {
			if v, ok := r.IdleCPU[t.Name]; ok {
				parts = append(parts, fmt.Sprintf("%s %.1f", t.Name, v))
			}
		}
		fmt.Fprintf(w, "\nbackground CPU while other targets ran (ms/s, not in the per-call figures): %s\n", strings.Join(parts, ", "))
	}
	writeGoals(w, r.Options.GoalTarget, r.Goals)
}
