package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/identity"
)

func init() {
	commands["agents"] = command{summary: "manage registered agents (list, show, add, update, suspend, resume, retire, review)", run: runAgents}
}

const agentsUsage = `usage: gatehouse agents <list|show|add|update|suspend|resume|retire|review> [flags] [ID]

  list                       registered agents and their status
  show ID                    one agent as JSON
  add --id ID [flags]        register an agent (or --file agent.json)
      --name, --owner, --hosting azure-native|aws-native|kubernetes|spiffe|external
      --server S (repeat)    servers it may use
      --tool S/T (repeat)    baseline tools (default: all tools of its servers)
      --tenant T (repeat)    allowed Entra tenants / AWS accounts
      --group G (repeat)     the agent's groups (policy: principal in Gatehouse::Group::"G")
      --credential source=NAME,subject=SUB[,tenant=T] (repeat)
      --expires 2027-01-01T00:00:00Z or a duration such as 2160h
  update ID [flags]          change a registered agent: the add flags given replace
                             those fields (a repeated flag, its whole list); --file
                             replaces the definition. Refused if the agent changed
                             since it was read (its version)
  suspend ID --reason R      refuse the agent at once (its tokens become useless)
  resume ID                  lift a suspension
  retire ID                  retire for good: release its credentials, revoke its grants
  review [--days 30] [--format markdown|json]
                             lifecycle review: owners, expiry, tools permitted
                             versus used in the last N days, unused privileges,
                             last activity, expired or orphaned agents

Every change names who makes it (--by, default $USER) and is audited.`

// repeated collects a repeated string flag.
type repeated []string

func (l *repeated) String() string     { return strings.Join(*l, ",") }
func (l *repeated) Set(v string) error { *l = append(*l, v); return nil }

func runAgents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_, _ = fmt.Fprintln(stderr, agentsUsage)
		return fmt.Errorf("%w: agents needs a subcommand", errUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("agents "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := adminFlags(fs)
	by := fs.String("by", os.Getenv("USER"), "who makes the change (recorded in the audit log)")
	reason := fs.String("reason", "", "why (recorded in the audit log)")
	id := fs.String("id", "", "agent id (add)")
	name := fs.String("name", "", "display name (add)")
	owner := fs.String("owner", "", "accountable human (add)")
	hosting := fs.String("hosting", "", "hosting pattern (add)")
	expires := fs.String("expires", "", "expiry: RFC 3339 time or duration from now (add)")
	file := fs.String("file", "", "agent definition as JSON (add)")
	days := fs.Int("days", 30, "review window in days (review)")
	format := fs.String("format", "markdown", "review output: markdown or json (review)")
	var servers, tools, tenants, groups, creds repeated
	fs.Var(&servers, "server", "server the agent may use (add; repeat)")
	fs.Var(&tools, "tool", "baseline tool server/tool (add; repeat)")
	fs.Var(&tenants, "tenant", "allowed Entra tenant or AWS account (add; repeat)")
	fs.Var(&groups, "group", "group of the agent, for policy (add; repeat)")
	fs.Var(&creds, "credential", "federated credential source=NAME,subject=SUB[,tenant=T] (add; repeat)")
	// Flags may come before or after the positional ID.
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err)
	}
	var pos []string
	for fs.NArg() > 0 {
		pos = append(pos, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return usageError(err)
		}
	}
	needID := func() (string, error) {
		if len(pos) != 1 {
			_, _ = fmt.Fprintln(stderr, agentsUsage)
			return "", fmt.Errorf("%w: agents %s needs one agent ID", errUsage, sub)
		}
		return pos[0], nil
	}
	switch sub {
	case "list", "show", "add", "update", "suspend", "resume", "retire":
	case "review":
		if *format != "markdown" && *format != "json" {
			return fmt.Errorf("%w: --format must be markdown or json", errUsage)
		}
		if *days < 1 || *days > 3660 {
			return fmt.Errorf("%w: --days must be between 1 and 3660", errUsage)
		}
	default:
		_, _ = fmt.Fprintln(stderr, agentsUsage)
		return fmt.Errorf("%w: unknown agents subcommand %q", errUsage, sub)
	}
	var fcs []identity.FederatedCredential
	for _, s := range creds {
		fc, err := parseCredential(s)
		if err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		fcs = append(fcs, fc)
	}
	var exp time.Time
	if *expires != "" {
		t, err := parseExpiry(*expires, time.Now())
		if err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		exp = t
	}
	var def *identity.Agent // --file
	if *file != "" {
		b, err := readFile(*file)
		if err != nil {
			return err
		}
		def = new(identity.Agent)
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(def); err != nil {
			return fmt.Errorf("reading %s: %w", *file, err)
		}
	}
	var updateID string
	if sub == "update" {
		aid, err := needID()
		if err != nil {
			return err
		}
		updateID = aid
		if def == nil && *name+*owner+*hosting+*expires == "" && len(servers)+len(tools)+len(tenants)+len(groups)+len(creds) == 0 {
			return fmt.Errorf("%w: agents update needs a change (flags or --file)", errUsage)
		}
	}
	c, err := admin()
	if err != nil {
		return err
	}
	switch sub {
	case "update":
		var a identity.Agent
		if err := c.do(ctx, "GET", "/v1/agents/"+url.PathEscape(updateID), nil, &a); err != nil {
			return err
		}
		if def != nil {
			n := *def
			n.ID, n.Version, n.Status, n.Enabled = a.ID, a.Version, a.Status, a.Enabled
			a = n
		}
		setIf(&a.Name, *name)
		setIf(&a.Owner, *owner)
		setIf(&a.Hosting, *hosting)
		for _, f := range []struct {
			dst *[]string
			v   repeated
		}{{&a.Servers, servers}, {&a.Tools, tools}, {&a.Tenants, tenants}, {&a.Groups, groups}} {
			if len(f.v) > 0 {
				*f.dst = f.v
			}
		}
		if len(fcs) > 0 {
			a.Credentials = fcs
		}
		if !exp.IsZero() {
			a.Expires = exp
		}
		if err := identity.ValidateAgent(&a); err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		body := struct {
			identity.Agent
			identity.ChangeInfo
		}{a, identity.ChangeInfo{By: *by, Reason: *reason}}
		var out identity.Agent
		if err := c.do(ctx, "PUT", "/v1/agents/"+url.PathEscape(updateID), body, &out); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "updated %s (version %d)\n", out.ID, out.Version)
		return nil
	case "review":
		var rep approval.LifecycleReport
		if err := c.do(ctx, "GET", fmt.Sprintf("/v1/agents/review?days=%d", *days), nil, &rep); err != nil {
			return err
		}
		if *format == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}
		return rep.Markdown(stdout)
	case "list":
		var list []identity.Agent
		if err := c.do(ctx, "GET", "/v1/agents", nil, &list); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		_, _ = fmt.Fprintln(tw, "ID\tSTATUS\tHOSTING\tOWNER\tSERVERS\tCREDENTIALS\tEXPIRES")
		for _, a := range list {
			exp := "-"
			if !a.Expires.IsZero() {
				exp = a.Expires.Format(time.DateOnly)
			}
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", a.ID, a.Status, dash(a.Hosting), dash(a.Owner), dash(strings.Join(a.Servers, ",")), len(a.Credentials), exp)
		}
		return tw.Flush()
	case "show":
		aid, err := needID()
		if err != nil {
			return err
		}
		var a identity.Agent
		if err := c.do(ctx, "GET", "/v1/agents/"+url.PathEscape(aid), nil, &a); err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(a)
	case "add":
		var a identity.Agent
		if def != nil {
			a = *def
		}
		if *id != "" {
			a.ID = *id
		}
		if len(pos) == 1 && a.ID == "" {
			a.ID = pos[0]
		}
		setIf(&a.Name, *name)
		setIf(&a.Owner, *owner)
		setIf(&a.Hosting, *hosting)
		a.Servers = append(a.Servers, servers...)
		a.Tools = append(a.Tools, tools...)
		a.Tenants = append(a.Tenants, tenants...)
		a.Groups = append(a.Groups, groups...)
		a.Credentials = append(a.Credentials, fcs...)
		if !exp.IsZero() {
			a.Expires = exp
		}
		if a.ID == "" {
			return fmt.Errorf("%w: agents add needs --id", errUsage)
		}
		if err := identity.ValidateAgent(&a); err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		body := struct {
			identity.Agent
			identity.ChangeInfo
		}{a, identity.ChangeInfo{By: *by, Reason: *reason}}
		var out identity.Agent
		if err := c.do(ctx, "POST", "/v1/agents", body, &out); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "added %s (%s)\n", out.ID, out.Status)
		return nil
	default: // suspend, resume, retire
		aid, err := needID()
		if err != nil {
			return err
		}
		if sub == "suspend" && *reason == "" {
			return fmt.Errorf("%w: agents suspend needs --reason", errUsage)
		}
		var out identity.Agent
		if err := c.do(ctx, "POST", "/v1/agents/"+url.PathEscape(aid)+"/"+sub, identity.ChangeInfo{By: *by, Reason: *reason}, &out); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "%s is %s\n", out.ID, out.Status)
		return nil
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// parseCredential parses source=NAME,subject=SUB[,tenant=T][,description=D].
func parseCredential(s string) (identity.FederatedCredential, error) {
	var fc identity.FederatedCredential
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return fc, fmt.Errorf("credential %q: %q is not key=value", s, part)
		}
		switch strings.TrimSpace(k) {
		case "source":
			fc.Source = v
		case "subject":
			fc.Subject = v
		case "tenant":
			fc.Tenant = v
		case "description":
			fc.Description = v
		default:
			return fc, fmt.Errorf("credential %q: unknown key %q", s, k)
		}
	}
	if fc.Source == "" || fc.Subject == "" {
		return fc, fmt.Errorf("credential %q needs source= and subject=", s)
	}
	return fc, nil
}

func parseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--expires %q is neither an RFC 3339 time nor a positive duration", s)
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}
