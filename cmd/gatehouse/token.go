package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
)

func init() {
	commands["token"] = command{summary: "mint a short-lived agent token (token mint --agent ID --ttl 5m)", run: runToken}
}

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "mint" {
		fmt.Fprintln(stderr, "usage: gatehouse token mint --config FILE --agent ID [--ttl 5m]")
		return fmt.Errorf("%w: token needs the subcommand mint", errUsage)
	}
	fs := flag.NewFlagSet("token mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "gatehouse.yaml", "gateway configuration `file`")
	agent := fs.String("agent", "", "agent `id`")
	ttl := fs.Duration("ttl", 5*time.Minute, "token lifetime")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err)
	}
	if *agent == "" {
		return fmt.Errorf("%w: --agent is required", errUsage)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(cfg.Agents, func(a config.Agent) bool { return a.ID == *agent })
	if i < 0 {
		return fmt.Errorf("agent %q is not registered in %s", *agent, *cfgPath)
	}
	if cfg.Agents[i].Disabled {
		return fmt.Errorf("agent %q is disabled", *agent)
	}
	m := &identity.Minter{Issuer: cfg.Identity.Issuer, Audience: cfg.Identity.Audience, MaxTTL: cfg.Identity.MaxTokenTTL.Std()}
	if k := cfg.Identity.Keys; k != nil {
		ring, err := identity.NewKeyRing(identity.KeyRingConfig{Dir: cfg.Path(k.Dir), Algorithm: k.Algorithm, PublishDelay: k.PublishDelay.Std(),
			Retain: k.Retain.Std(), RotateEvery: k.RotateEvery.Std()})
		if err != nil {
			return err
		}
		m.Keys = ring
	} else {
		key, err := identity.LoadOrCreateKey(cfg.Path(cfg.Identity.SigningKeyFile))
		if err != nil {
			return err
		}
		m.Key = key
	}
	tok, exp, err := m.Mint(*agent, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "token for agent %s, expires %s\n", *agent, exp.Format(time.RFC3339))
	return nil
}
