package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gateway"
	"github.com/gatehouse/gatehouse/internal/semantic"
	"github.com/gatehouse/gatehouse/internal/semantic/injection"
)

func init() {
	commands["eval"] = command{summary: "evaluate detectors on labelled data (eval semantic --data FILE)", run: runEval}
}

const evalUsage = `usage: gatehouse eval semantic --data FILE.jsonl [--config FILE] [--json] [--misses] [--weights FILE]`

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "semantic" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stdout, evalUsage)
			return nil
		}
		fmt.Fprintln(stderr, evalUsage)
		return fmt.Errorf("%w: eval needs the subcommand semantic", errUsage)
	}
	fs := flag.NewFlagSet("eval semantic", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "labelled rows, one JSON object per line")
	asJSON := fs.Bool("json", false, "print one JSON object")
	weights := fs.String("weights", "", "classifier weight file (default: the shipped weights)")
	cfgPath := fs.String("config", "", "gateway configuration whose semantic section (detectors, thresholds, actions, remotes) to evaluate (default: the engine's defaults)")
	misses := fs.Bool("misses", false, "also list the rows judged wrongly (missed attacks, flagged benign rows)")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *data == "" || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: eval semantic needs --data", errUsage)
	}
	f, err := os.Open(*data)
	if err != nil {
		return err
	}
	rows, err := injection.ReadRows(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading %s: %w", *data, err)
	}
	var cfg semantic.Config
	if *cfgPath != "" {
		file, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		if file.Semantic.Disabled {
			return fmt.Errorf("%s: the semantic layer is disabled", *cfgPath)
		}
		if cfg, err = gateway.SemanticConfig(file); err != nil {
			return fmt.Errorf("%s: %w", *cfgPath, err)
		}
	}
	if *weights != "" {
		m, err := loadWeights(*weights)
		if err != nil {
			return err
		}
		cfg.Model = m
	}
	e, err := semantic.New(cfg)
	if err != nil {
		return err
	}
	rep, err := semantic.Evaluate(ctx, e, rows)
	if err != nil {
		return err
	}
	if !*misses {
		rep.Misses = nil
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	source := "the engine's defaults"
	if *cfgPath != "" {
		source = "the semantic section of " + *cfgPath
	}
	fmt.Fprintf(stdout, "%d rows from %s, screened with %s\n\n", rep.Overall.Rows, *data, source)
	printMetrics(stdout, "category", rep.PerCategory)
	fmt.Fprintln(stdout)
	printMetrics(stdout, "surface", rep.PerSurface)
	fmt.Fprintln(stdout)
	printMetrics(stdout, "overall", map[string]*semantic.Metrics{"all": rep.Overall})
	if m := rep.PerCategory[semantic.HardNegative]; m != nil && rep.HardNegativeFPR != nil {
		fmt.Fprintf(stdout, "\nhard negatives: FPR %.1f%% (%d of %d flagged)\n", 100**rep.HardNegativeFPR, m.FP, m.Benign)
	}
	fmt.Fprintf(stdout, "\nlatency per row: p50 %.0f µs, p99 %.0f µs, mean %.0f µs, max %.0f µs\n",
		rep.LatencyUS.P50, rep.LatencyUS.P99, rep.LatencyUS.Mean, rep.LatencyUS.Max)
	if *misses {
		fmt.Fprintf(stdout, "\n%d rows judged wrongly:\n", len(rep.Misses))
		for _, m := range rep.Misses {
			what := "missed"
			if m.Label == 0 {
				what = "flagged"
			}
			text := strings.Join(strings.Fields(m.Text), " ")
			if len(text) > 160 {
				text = text[:157] + "..."
			}
			fmt.Fprintf(stdout, "  %-7s %-13s %-11s risk %.2f %-9s %s %q\n", what, m.Category, m.Surface, m.Risk, m.Outcome, m.ID, text)
		}
	}
	return nil
}

func printMetrics(w io.Writer, title string, ms map[string]*semantic.Metrics) {
	keys := make([]string, 0, len(ms))
	for k := range ms {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintf(w, "%-14s %6s %7s %6s %8s %8s %9s %8s\n", title, "rows", "attacks", "benign", "recall", "fpr", "precision", "f1")
	pct := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100**p)
	}
	for _, k := range keys {
		m := ms[k]
		fmt.Fprintf(w, "%-14s %6d %7d %6d %8s %8s %9s %8s\n", k, m.Rows, m.Attacks, m.Benign, pct(m.Recall), pct(m.FPR), pct(m.Precision), pct(m.F1))
	}
}
