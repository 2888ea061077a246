package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/internal/semantic"
	"github.com/gatehouse/gatehouse/internal/semantic/injection"
)

func init() {
	commands["semantic"] = command{summary: "train the injection classifier, or screen text from stdin", run: runSemantic}
}

const semanticUsage = `usage: gatehouse semantic train --data DIR|FILE [--data ...] --out FILE [--seed N] [--folds N] [--ensemble N] [--epochs N]
       gatehouse semantic screen [--surface S] [--session ID --canary-key-file F] [--canary T] [--weights FILE] [--datamark] < text`

func runSemantic(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, semanticUsage)
		return fmt.Errorf("%w: semantic needs a subcommand", errUsage)
	}
	switch args[0] {
	case "train":
		return runSemanticTrain(ctx, args[1:], stdout, stderr)
	case "screen":
		return runSemanticScreen(ctx, args[1:], os.Stdin, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, semanticUsage)
		return nil
	}
	fmt.Fprintln(stderr, semanticUsage)
	return fmt.Errorf("%w: unknown semantic subcommand %q", errUsage, args[0])
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// dataFiles expands --data arguments: a file is taken as is; a directory
// contributes its *.jsonl files except those named dev*, test* or eval*
// (held-out splits never train).
func dataFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		for _, p := range strings.Split(a, ",") {
			if p == "" {
				continue
			}
			st, err := os.Stat(p)
			if err != nil {
				return nil, err
			}
			if !st.IsDir() {
				files = append(files, p)
				continue
			}
			m, err := filepath.Glob(filepath.Join(p, "*.jsonl"))
			if err != nil {
				return nil, err
			}
			slices.Sort(m)
			for _, f := range m {
				base := filepath.Base(f)
				if strings.HasPrefix(base, "dev") || strings.HasPrefix(base, "test") || strings.HasPrefix(base, "eval") {
					continue
				}
				files = append(files, f)
			}
		}
	}
	if len(files) == 0 {
		return nil, errors.New("no data files")
	}
	return files, nil
}

func readRowFiles(files []string) ([]injection.Row, error) {
	var rows []injection.Row
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		r, err := injection.ReadRows(fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func runSemanticTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("semantic train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var data listFlag
	fs.Var(&data, "data", "training data: a JSONL file or a directory of them (repeatable)")
	out := fs.String("out", "", "where to write the weight file")
	seed := fs.Uint64("seed", 1, "random seed (training is deterministic for a seed)")
	folds := fs.Int("folds", 5, "cross-validation folds (they fit the combiner and give the CV figures)")
	ensemble := fs.Int("ensemble", 3, "models averaged, each trained with its own seed")
	epochs := fs.Int("epochs", 12, "training epochs")
	quiet := fs.Bool("q", false, "no progress logs")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if len(data) == 0 || *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: semantic train needs --data and --out", errUsage)
	}
	if *folds < 2 || *ensemble < 1 || *epochs < 1 {
		return fmt.Errorf("%w: --folds must be at least 2, --ensemble and --epochs at least 1", errUsage)
	}
	files, err := dataFiles(data)
	if err != nil {
		return fmt.Errorf("finding training data: %w", err)
	}
	rows, err := readRowFiles(files)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *quiet {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("training", "files", strings.Join(files, ","), "rows", len(rows), "seed", *seed)
	m, oof, err := injection.Train(ctx, rows, injection.TrainOptions{Seed: *seed, Folds: *folds, Ensemble: *ensemble, Epochs: *epochs, Logger: log})
	if err != nil {
		return fmt.Errorf("training: %w", err)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encoding weights: %w", err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return fmt.Errorf("writing weights: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes) from %d rows\n", *out, len(b), len(rows))
	fmt.Fprintf(stdout, "\n%d-fold cross-validation on the training rows (classifier alone, grouped by source item):\n", *folds)
	printCV(stdout, oof)
	return nil
}

// printCV prints per-category recall or false-positive rate of the
// out-of-fold classifier scores at a few thresholds.
func printCV(w io.Writer, oof []injection.OOF) {
	cats := map[string]bool{}
	for _, o := range oof {
		cats[o.Row.Category] = true
	}
	names := make([]string, 0, len(cats))
	for c := range cats {
		names = append(names, c)
	}
	slices.Sort(names)
	fmt.Fprintf(w, "  %-10s", "threshold")
	for _, c := range names {
		fmt.Fprintf(w, " %16s", c)
	}
	fmt.Fprintln(w)
	for _, th := range []float64{0.5, 0.8, 0.9} {
		fmt.Fprintf(w, "  %-10.2f", th)
		for _, c := range names {
			n, flagged, attacks := 0, 0, 0
			for _, o := range oof {
				if o.Row.Category != c {
					continue
				}
				n++
				attacks += o.Row.Label
				if o.Score >= th {
					flagged++
				}
			}
			what := "fpr"
			if attacks*2 > n {
				what = "recall"
			}
			fmt.Fprintf(w, " %9s %5.1f%%", what, 100*float64(flagged)/float64(max(n, 1)))
		}
		fmt.Fprintln(w)
	}
}

func runSemanticScreen(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("semantic screen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	surface := fs.String("surface", "tool_output", "surface of the text: "+surfaceNames())
	session := fs.String("session", "", "session id whose canary to look for (with --canary-key-file)")
	keyFile := fs.String("canary-key-file", "", "file holding the canary key shared by the gateway's replicas")
	var canaries listFlag
	fs.Var(&canaries, "canary", "a canary token to look for (repeatable)")
	weights := fs.String("weights", "", "classifier weight file (default: the shipped weights)")
	datamark := fs.Bool("datamark", false, "datamark untrusted text (spotlighting)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	cfg := semantic.Config{Datamark: *datamark}
	if *keyFile != "" {
		k, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("reading canary key: %w", err)
		}
		cfg.CanaryKey = []byte(strings.TrimRight(string(k), "\n"))
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
	text, err := io.ReadAll(io.LimitReader(stdin, 64<<20))
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	res, err := e.Screen(ctx, semantic.Input{Surface: semantic.Surface(*surface), Text: string(text), SessionID: *session, Canaries: canaries})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func surfaceNames() string {
	var s []string
	for _, x := range semantic.Surfaces {
		s = append(s, string(x))
	}
	return strings.Join(s, ", ")
}

func loadWeights(path string) (*injection.Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading weights: %w", err)
	}
	m, err := injection.Load(b)
	if err != nil {
		return nil, fmt.Errorf("loading weights from %s: %w", path, err)
	}
	return m, nil
}
