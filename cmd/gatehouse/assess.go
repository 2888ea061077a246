package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/assess"
)

func init() {
	commands["assess"] = command{summary: "walk the deployment decision tree and check a gateway config against it", run: runAssess}
}

const assessUsage = `usage: gatehouse assess --deployment FILE [--config GATEHOUSE.yaml] [--policies DIR]
                        [--format text|markdown|json|html] [--output FILE] [--strict]

Walks the deployment decision tree for every agent of the descriptor, recommends
the identity and controls, and with --config lists the gateway configuration's
gaps against them, reading the approval policies of its policy.dir (or of a
candidate directory given with --policies). See docs/assess.md.

Exit status: 0 ready (or ready with conditions without --strict), 1 error
(including an invalid descriptor or configuration), 2 usage, 3 not ready,
4 ready with conditions under --strict.`

// Exit codes of gatehouse assess.
const (
	assessExitNotReady   = 3
	assessExitConditions = 4
)

func runAssess(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("assess", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, assessUsage); fs.PrintDefaults() }
	deployment := fs.String("deployment", "", "deployment descriptor (YAML)")
	configPath := fs.String("config", "", "gateway configuration to check against the recommendations")
	policies := fs.String("policies", "", "read approval policies from this directory instead of the configuration's policy.dir (needs --config)")
	format := fs.String("format", "text", "output format: "+strings.Join(assess.Formats, ", "))
	output := fs.String("output", "", "write the report to this file instead of standard output")
	strict := fs.Bool("strict", false, "exit 4 when the verdict is ready with conditions")
	today := fs.String("today", "", "judge expiry dates against this date (YYYY-MM-DD; default today, UTC)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		fs.Usage()
		return fmt.Errorf("%w: assess takes no arguments, got %q", errUsage, fs.Arg(0))
	case *deployment == "":
		fs.Usage()
		return fmt.Errorf("%w: assess needs --deployment FILE", errUsage)
	case !slices.Contains(assess.Formats, *format):
		return fmt.Errorf("%w: unknown --format %q (want %s)", errUsage, *format, strings.Join(assess.Formats, ", "))
	case *policies != "" && *configPath == "":
		return fmt.Errorf("%w: --policies needs --config", errUsage)
	}
	now := time.Now().UTC().Truncate(24 * time.Hour) // an agent is valid through its expiry date
	if *today != "" {
		t, err := time.Parse(time.DateOnly, *today)
		if err != nil {
			return fmt.Errorf("%w: --today %q is not YYYY-MM-DD", errUsage, *today)
		}
		now = t
	}

	data, err := readFile(*deployment)
	if err != nil {
		return fmt.Errorf("reading deployment descriptor: %w", err)
	}
	d, err := assess.ParseDescriptor(data, *deployment, now)
	if err != nil {
		return err
	}
	var gw *assess.Gateway
	if *configPath != "" {
		if gw, err = assess.LoadGateway(*configPath, *policies); err != nil {
			return fmt.Errorf("loading gateway configuration: %w", err)
		}
	}
	rep := assess.Assess(d, gw)

	var buf bytes.Buffer
	if err := rep.Write(&buf, *format); err != nil {
		return fmt.Errorf("rendering report: %w", err)
	}
	if *output != "" {
		if err := os.WriteFile(*output, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
		fmt.Fprintf(stderr, "gatehouse assess: %s: %s (%s)\n", *output, rep.Verdict, rep.Summary)
	} else if _, err := stdout.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	switch {
	case rep.Verdict == assess.NotReady:
		return exitError{code: assessExitNotReady}
	case rep.Verdict == assess.ReadyWithConditions && *strict:
		return exitError{code: assessExitConditions}
	}
	return nil
}
