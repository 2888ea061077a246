package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/lock"
	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/store"
)

func init() {
	commands["token"] = command{summary: "mint a short-lived agent token (token mint --agent ID --ttl 5m)", run: runToken}
}

const tokenUsage = `usage: gatehouse token mint --agent ID [--ttl 5m] [--config FILE]
       gatehouse token mint --agent ID [--ttl 5m] --admin URL [--admin-token-file FILE]

Mints a gateway token for an agent of the agent registry: the agents added
at run time (gatehouse agents add, POST /v1/agents) and those of the
configuration file. Unknown, suspended, retired and expired agents are
refused.

With --config (the default), the command signs with the gateway's keys and
reads the registry straight from the store, for reading only, so it can run
next to a running gateway. An agent of the configuration file that the store
does not hold yet (or no store yet: the gateway has never started) counts as
registered, as the gateway registers it when it starts.

With --admin, a running gateway mints the token through its admin API
(POST /v1/tokens); the credential defaults to the configuration's
admin.token_file.`

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "mint" {
		fmt.Fprintln(stderr, tokenUsage)
		return fmt.Errorf("%w: token needs the subcommand mint", errUsage)
	}
	fs := flag.NewFlagSet("token mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, tokenUsage)
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "gatehouse.yaml", "gateway configuration `file`")
	agent := fs.String("agent", "", "agent `id`")
	ttl := fs.Duration("ttl", 5*time.Minute, "token lifetime")
	adminURL := fs.String("admin", "", "mint through a running gateway's admin API at this `URL`")
	adminToken := fs.String("admin-token-file", "", "`file` holding the admin credential (with --admin; default: the configuration's)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: token mint takes no arguments (got %q)", errUsage, fs.Arg(0))
	}
	if *agent == "" {
		return fmt.Errorf("%w: --agent is required", errUsage)
	}
	if *adminToken != "" && *adminURL == "" {
		return fmt.Errorf("%w: --admin-token-file needs --admin URL", errUsage)
	}
	if *adminURL != "" {
		return mintThroughAdmin(ctx, *cfgPath, *adminURL, *adminToken, *agent, *ttl, stdout, stderr)
	}

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	db, err := openStoreReadOnly(ctx, cfg)
	if err != nil {
		return err
	}
	if db != nil {
		defer db.Close()
	}
	a, err := registeredAgent(ctx, db, cfg, *cfgPath, *agent, stderr)
	if err != nil {
		return err
	}
	if err := a.Usable(time.Now()); err != nil {
		return agentRefusal(a, err)
	}
	if err := agentLocked(ctx, db, a.ID); err != nil {
		return err
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
	tok, exp, err := m.Mint(a.ID, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "token for agent %s, expires %s\n", a.ID, exp.Format(time.RFC3339))
	return nil
}

// openStoreReadOnly opens the store the configuration names for reading
// only, never creating it: nil when no gateway has started with this
// data_dir yet.
func openStoreReadOnly(ctx context.Context, cfg *config.File) (*store.DB, error) {
	dsn, err := configDSN(cfg)
	if err != nil {
		return nil, err
	}
	db, err := store.OpenReadOnly(ctx, dsn)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading the agent registry: %w (--admin URL mints through a running gateway instead)", err)
	}
	return db, nil
}

// registeredAgent looks id up in the agent registry as the gateway sees
// it once it has seeded the configuration's agents: the durable store's
// agent when db (opened read-only, nil before any gateway started) holds
// one (its runtime status wins), else the configuration's.
func registeredAgent(ctx context.Context, db *store.DB, cfg *config.File, cfgPath, id string, stderr io.Writer) (*identity.Agent, error) {
	stored := false // the store holds an agent registry
	if db != nil {
		a, err := store.ReadAgent(ctx, db, id)
		switch {
		case err == nil:
			return a, nil
		case errors.Is(err, identity.ErrNoAgent):
			stored = true
		case errors.Is(err, store.ErrNoRegistry):
		default:
			return nil, fmt.Errorf("reading the agent registry: %w (--admin URL mints through a running gateway instead)", err)
		}
	}
	i := slices.IndexFunc(cfg.Agents, func(a config.Agent) bool { return a.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("agent %q is not registered (neither in the agent registry nor in %s)", id, cfgPath)
	}
	ca := cfg.Agents[i]
	if ca.Disabled {
		return nil, fmt.Errorf("agent %q is disabled in %s", id, cfgPath)
	}
	a := &identity.Agent{ID: ca.ID, Owner: ca.Owner, Servers: ca.Servers, Enabled: true, Status: identity.StatusActive}
	if ca.Expires != "" {
		t, err := config.ParseTime(ca.Expires)
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", ca.ID, err)
		}
		a.Expires = t
	}
	if stored {
		fmt.Fprintf(stderr, "note: agent %s is in %s but not yet in the agent registry; the gateway registers it when it next starts and refuses the token until then\n", id, cfgPath)
	}
	return a, nil
}

// agentLocked refuses a token to an agent under the kill switch (a lock on
// the agent or on the whole gateway), as the gateway's own token services
// do; the token would be refused at its first use anyway. db is the store
// opened read-only, nil before any gateway started (no locks then).
func agentLocked(ctx context.Context, db *store.DB, id string) error {
	if db == nil {
		return nil
	}
	locks, err := store.ReadLocks(ctx, db)
	if err != nil {
		return fmt.Errorf("reading the kill switch's locks: %w (--admin URL mints through a running gateway instead)", err)
	}
	now := time.Now()
	c := &pipeline.Caller{Agent: id}
	for _, l := range locks {
		if !l.Active(now) || !l.BarsCaller(c) {
			continue
		}
		if l.Scope == lock.Global {
			return fmt.Errorf("the gateway is locked by the kill switch (%s); gatehouse unlock global lifts it", l.Reason)
		}
		return fmt.Errorf("agent %q is locked by the kill switch (%s); gatehouse unlock agent %s lifts it", id, l.Reason, id)
	}
	return nil
}

// agentRefusal says why a registered agent gets no token (err is from
// Agent.Usable).
func agentRefusal(a *identity.Agent, err error) error {
	switch identity.ErrorCode(err) {
	case identity.CodeAgentRetired:
		return fmt.Errorf("agent %q is retired", a.ID)
	case identity.CodeAgentExpired:
		return fmt.Errorf("agent %q expired at %s", a.ID, a.Expires.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("agent %q is suspended (gatehouse agents resume %s lifts a suspension)", a.ID, a.ID)
}

// mintThroughAdmin asks a running gateway to mint the token.
func mintThroughAdmin(ctx context.Context, cfgPath, adminURL, tokenFile, agent string, ttl time.Duration, stdout, stderr io.Writer) error {
	if _, err := url.Parse(adminURL); err != nil {
		return fmt.Errorf("%w: --admin: %w", errUsage, err)
	}
	c, err := newAdminClient(cfgPath, adminURL, tokenFile)
	if err != nil {
		return err
	}
	var out struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires_at"`
		Agent   string    `json:"agent"`
	}
	if err := c.do(ctx, "POST", "/v1/tokens", map[string]string{"agent": agent, "ttl": ttl.String()}, &out); err != nil {
		return err
	}
	if out.Token == "" {
		return errors.New("admin API: the answer holds no token")
	}
	fmt.Fprintln(stdout, out.Token)
	fmt.Fprintf(stderr, "token for agent %s, expires %s\n", out.Agent, out.Expires.Format(time.RFC3339))
	return nil
}
