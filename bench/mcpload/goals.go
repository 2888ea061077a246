package main

import (
	"fmt"
	"io"
)

// The gateway-core issue sets targets for the gateway with authentication
// and durable audit on. They are checked against one run's figures, and the
// result is printed and recorded, never used as a pass/fail exit status: a
// benchmark measures, and the machine it ran on decides how far its numbers
// can be trusted.
const (
	goalAddedP50MS = 0.5 // added p50 at every open-loop rate
	goalRatio      = 0.7 // maximum throughput relative to the baseline
)

// goal is one target checked in one run.
type goal struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Limit    float64 `json:"limit"`
	Met      bool    `json:"met"`
	Unit     string  `json:"unit"`
	Relation string  `json:"relation"` // "<=", ">=", "<"
}

// checkGoals evaluates the targets for the target named subject, with
// reference (the bare reverse proxy) as the CPU yardstick.
func checkGoals(r *results, subject, reference string) []goal {
	var out []goal
	find := func(ph phase, name string) *targetResult {
		for i := range ph.Targets {
			if ph.Targets[i].Name == name {
				return &ph.Targets[i]
			}
		}
		return nil
	}
	for _, ph := range r.Phases {
		s := find(ph, subject)
		if s == nil {
			continue
		}
		if ph.Rate > 0 {
			out = append(out, goal{Name: fmt.Sprintf("added p50 at %d calls/s", ph.Rate), Value: s.AddedP50MS, Limit: goalAddedP50MS,
				Met: s.AddedP50MS <= goalAddedP50MS, Unit: "ms", Relation: "<="})
		} else {
			out = append(out, goal{Name: "maximum throughput × baseline", Value: s.Ratio, Limit: goalRatio,
				Met: s.Ratio >= goalRatio, Unit: "×", Relation: ">="})
		}
		ref := find(ph, reference)
		if ref != nil && s.CPUPerCallUS != nil && ref.CPUPerCallUS != nil {
			out = append(out, goal{Name: fmt.Sprintf("CPU per call (%s) below %s", ph.Name, reference), Value: *s.CPUPerCallUS, Limit: *ref.CPUPerCallUS,
				Met: *s.CPUPerCallUS < *ref.CPUPerCallUS, Unit: "µs", Relation: "<"})
		}
	}
	return out
}

func writeGoals(w io.Writer, subject string, goals []goal) {
	if len(goals) == 0 {
		return
	}
	fmt.Fprintf(w, "\ngoals for %s (gateway-core issue):\n", subject)
	for _, g := range goals {
		mark := "MISSED"
		if g.Met {
			mark = "met"
		}
		fmt.Fprintf(w, "  %-40s %10.3f %s %s %.3f %s\n", g.Name, g.Value, g.Unit, g.Relation, g.Limit, mark)
	}
}
