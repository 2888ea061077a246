package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gateway"
)

func init() {
	commands["serve"] = command{summary: "run the gateway from a configuration file", run: runServe}
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration `file` (YAML)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	if err := fs.Parse(args); err != nil {
		return usageError(err)
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: serve needs --config FILE and no arguments", errUsage)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *check {
		if err := gateway.Validate(cfg); err != nil {
			return fmt.Errorf("%s: %w", *cfgPath, err)
		}
		fmt.Fprintf(stdout, "%s: configuration is valid (%d servers, %d agents, %d endpoints)\n",
			*cfgPath, len(cfg.Servers), len(cfg.Agents), len(cfg.Endpoints))
		return nil
	}
	logger := newLogger(stderr, cfg.Log)
	g, err := gateway.New(ctx, cfg, gateway.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer g.Close()
	return g.Run(ctx)
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// usageError wraps a flag parsing error; -h is not an error.
func usageError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return exitError{code: 0}
	}
	return fmt.Errorf("%w: %w", errUsage, err)
}
