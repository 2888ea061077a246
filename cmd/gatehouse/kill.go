package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gatehouse/gatehouse/internal/lock"
)

func init() {
	commands["kill"] = command{summary: "lock (kill switch) the gateway, an agent, user, task, server or tool; kill list shows the locks", run: runKill}
	commands["unlock"] = command{summary: "remove a kill-switch lock", run: runUnlock}
}

const killUsage = `usage: gatehouse kill <global|agent|user|task|server|tool> [ID] --reason TEXT [--ttl 1h] [flags]
       gatehouse kill list [flags]

  global                 every request through the gateway
  agent ID               every request of the agent, on open sessions too
  user ID                every request made on behalf of the user
  task ID                every request of the task
  server ID              every request to the upstream server
  tool SERVER/TOOL       calls of one tool of a server

The lock takes effect on every gateway replica within a second and is
recorded in the audit log. Remove it with 'gatehouse unlock'.`

const unlockUsage = `usage: gatehouse unlock <global|agent|user|task|server|tool> [ID] [flags]`

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and returns the positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// lockTarget checks the scope and ID arguments of kill and unlock.
func lockTarget(pos []string) (lock.Scope, string, error) {
	if len(pos) == 0 {
		return "", "", fmt.Errorf("%w: missing scope", errUsage)
	}
	scope, err := lock.ParseScope(pos[0])
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", errUsage, err)
	}
	if scope == lock.Global {
		if len(pos) != 1 {
			return "", "", fmt.Errorf("%w: a global lock takes no ID", errUsage)
		}
		return scope, "", nil
	}
	if len(pos) != 2 || pos[1] == "" {
		return "", "", fmt.Errorf("%w: %s needs exactly one ID", errUsage, scope)
	}
	target := pos[1]
	if scope == lock.Tool {
		if s, t, ok := strings.Cut(target, "/"); !ok || s == "" || t == "" {
			return "", "", fmt.Errorf("%w: a tool is named SERVER/TOOL, not %q", errUsage, target)
		}
	}
	return scope, target, nil
}

func runKill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, killUsage)
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	admin := adminFlags(fs)
	reason := fs.String("reason", "", "why the lock is set (required; recorded in the audit log, never shown to agents)")
	ttl := fs.Duration("ttl", 0, "lift the lock automatically after this `duration` (default: never)")
	by := fs.String("by", os.Getenv("USER"), "who sets the lock (recorded in the audit log)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return usageError(err)
	}
	if len(pos) == 1 && pos[0] == "list" {
		c, err := admin()
		if err != nil {
			return err
		}
		var locks []lock.Lock
		if err := c.do(ctx, "GET", "/v1/locks", nil, &locks); err != nil {
			return err
		}
		return writeLocks(stdout, locks)
	}
	scope, target, err := lockTarget(pos)
	if err != nil {
		fmt.Fprintln(stderr, killUsage)
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: kill needs --reason", errUsage)
	}
	if *ttl < 0 {
		return fmt.Errorf("%w: --ttl must be positive", errUsage)
	}
	req := lock.Request{Scope: string(scope), Target: target, Reason: *reason, By: *by}
	if *ttl > 0 {
		req.TTL = ttl.String()
	}
	c, err := admin()
	if err != nil {
		return err
	}
	var l lock.Lock
	if err := c.do(ctx, "POST", "/v1/locks", req, &l); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "locked %s", lockDescription(l.Scope, l.Target))
	if !l.Expires.IsZero() {
		fmt.Fprintf(stdout, " until %s", l.Expires.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(stdout)
	return nil
}

func runUnlock(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("unlock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, unlockUsage)
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	admin := adminFlags(fs)
	by := fs.String("by", os.Getenv("USER"), "who removes the lock (recorded in the audit log)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return usageError(err)
	}
	scope, target, err := lockTarget(pos)
	if err != nil {
		fmt.Fprintln(stderr, unlockUsage)
		return err
	}
	c, err := admin()
	if err != nil {
		return err
	}
	t := target
	if t == "" {
		t = "-"
	}
	path := "/v1/locks/" + url.PathEscape(string(scope)) + "/" + url.PathEscape(t)
	if *by != "" {
		path += "?by=" + url.QueryEscape(*by)
	}
	if err := c.do(ctx, "DELETE", path, nil, nil); err != nil {
		if strings.Contains(err.Error(), "no such lock") {
			return errors.New("there is no such lock (see gatehouse kill list)")
		}
		return err
	}
	fmt.Fprintf(stdout, "unlocked %s\n", lockDescription(scope, target))
	return nil
}

func lockDescription(scope lock.Scope, target string) string {
	if scope == lock.Global {
		return "the whole gateway"
	}
	return string(scope) + " " + target
}

func writeLocks(w io.Writer, locks []lock.Lock) error {
	if len(locks) == 0 {
		_, err := fmt.Fprintln(w, "no locks")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tTARGET\tBY\tCREATED\tEXPIRES\tREASON")
	for _, l := range locks {
		target, expires := l.Target, "never"
		if target == "" {
			target = "-"
		}
		if !l.Expires.IsZero() {
			expires = l.Expires.UTC().Format(time.RFC3339)
		}
		reason := strings.Join(strings.Fields(l.Reason), " ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Scope, target, l.By, l.Created.UTC().Format(time.RFC3339), expires, reason)
	}
	return tw.Flush()
}
