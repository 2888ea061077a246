package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/gatehouse/gatehouse/internal/approval"
)

func init() {
	commands["approvals"] = command{summary: "list, show, approve, deny, revoke approvals; grant elevations; export and verify evidence bundles", run: runApprovals}
}

const approvalsUsage = `usage: gatehouse approvals <command> [flags]

  list [--status S | --all] [--agent A] [--json]   approvals (default: pending)
  show ID [--json]                                 evidence, reviews, grant, deliveries
  approve ID --as NAME [--comment T] [--ttl D] [--max-uses N] [--value-ceiling V]
  approve ID --as NAME --break-glass --justification T
  deny ID --as NAME [--comment T]
  revoke ID [--as NAME] [--comment T]              end a grant (or cancel a request)
  elevate --as NAME --agent A --server S --tool T [--tool T2] --ttl D
          --justification T [--where ARG=JSON] [--prefix ARG=P] [--max ARG=N]
          [--user U] [--task T] [--risk R] [--max-uses N]
  reviews [--all] [--json]                         break-glass review items (default: open)
  close-review ID --as NAME --comment T
  export ID [--out FILE]                           write the evidence bundle
  verify FILE [--key KEY]                          check a bundle offline

Every command but verify talks to the gateway's admin API (--config, or
--admin and --admin-token-file). --as names the approver, who must be listed
in the governance approvers; the decision is recorded with the method
"admin-token", which does not count for risk classes that demand fresh
strong authentication.`

func runApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, _ = fmt.Fprintln(stdout, approvalsUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: missing command", errUsage)
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("gatehouse approvals "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintln(stderr, approvalsUsage)
		_, _ = fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	switch sub {
	case "list":
		return approvalsList(ctx, fs, rest, stdout)
	case "show":
		return approvalsShow(ctx, fs, rest, stdout)
	case "approve", "deny":
		return approvalsDecide(ctx, fs, sub, rest, stdout)
	case "revoke":
		return approvalsRevoke(ctx, fs, rest, stdout)
	case "elevate":
		return approvalsElevate(ctx, fs, rest, stdout)
	case "reviews":
		return approvalsReviews(ctx, fs, rest, stdout)
	case "close-review":
		return approvalsCloseReview(ctx, fs, rest, stdout)
	case "export":
		return approvalsExport(ctx, fs, rest, stdout, stderr)
	case "verify":
		return approvalsVerify(fs, rest, stdout, stderr)
	}
	_, _ = fmt.Fprintln(stderr, approvalsUsage)
	return fmt.Errorf("%w: unknown approvals command %q", errUsage, sub)
}

// oneID parses the flags and returns the single positional argument.
func oneID(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return "", usageError(err)
	}
	if len(pos) != 1 || pos[0] == "" {
		return "", fmt.Errorf("%w: %s needs exactly one %s", errUsage, strings.TrimPrefix(fs.Name(), "gatehouse approvals "), what)
	}
	return pos[0], nil
}

func noArgs(fs *flag.FlagSet, args []string) error {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return usageError(err)
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	return nil
}

func approvalsList(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	admin := adminFlags(fs)
	status := fs.String("status", "pending", "list approvals in this `status` (pending, approved, denied, expired, cancelled, revoked, used, lapsed)")
	all := fs.Bool("all", false, "list approvals in any status")
	agent := fs.String("agent", "", "only this `agent`'s approvals")
	limit := fs.Int("limit", 100, "at most `N` approvals, newest first")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	q := url.Values{}
	if !*all {
		q.Set("status", *status)
	}
	if *agent != "" {
		q.Set("agent", *agent)
	}
	q.Set("limit", fmt.Sprint(*limit))
	c, err := admin()
	if err != nil {
		return err
	}
	var vs []approval.View
	if err := c.do(ctx, "GET", "/v1/approvals?"+q.Encode(), nil, &vs); err != nil {
		return err
	}
	if *asJSON {
		return writeJSONOut(stdout, vs)
	}
	if len(vs) == 0 {
		_, err := fmt.Fprintln(stdout, "no approvals")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "ID\tSTATUS\tRISK\tAGENT\tTOOL\tQUORUM\tEXPIRES")
	for _, v := range vs {
		s := approval.Summarize(&v.Approval, v.URL)
		exp := s.Expires
		if !s.GrantExpires.IsZero() {
			exp = s.GrantExpires
		}
		risk := strings.Join(s.Risk, ",")
		if risk == "" {
			risk = "-"
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\n", s.ID, s.Status, risk, s.Agent, s.Server, strings.Join(s.Tools, ","), s.Quorum, exp.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func approvalsShow(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	admin := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	id, err := oneID(fs, args, "approval ID")
	if err != nil {
		return err
	}
	c, err := admin()
	if err != nil {
		return err
	}
	var v approval.View
	if err := c.do(ctx, "GET", "/v1/approvals/"+url.PathEscape(id), nil, &v); err != nil {
		return err
	}
	if *asJSON {
		return writeJSONOut(stdout, v)
	}
	return writeApproval(stdout, &v)
}

func writeApproval(w io.Writer, v *approval.View) error {
	a := &v.Approval
	s := approval.Summarize(a, v.URL)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, val string) {
		if val != "" {
			_, _ = fmt.Fprintf(tw, "%s\t%s\n", k, strings.Join(strings.Fields(val), " "))
		}
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	row("approval", a.ID)
	row("kind", string(a.Kind))
	row("status", string(a.Status)+" "+a.Reason)
	row("agent", s.Agent)
	row("owner", s.Owner)
	row("on behalf of", s.User)
	row("task", s.Task)
	row("server/tool", s.Server+"/"+strings.Join(s.Tools, ","))
	row("risk", strings.Join(s.Risk, ", "))
	row("approvers", strings.Join(s.Groups, ", ")+" (quorum "+s.Quorum+")")
	if e := a.Evidence; e != nil {
		row("arguments", string(e.Arguments))
		row("arguments hash", e.ArgumentsHash)
		row("call hash", e.CallHash)
		row("value", e.Value)
		row("policy version", e.PolicyVersion)
		for _, r := range e.Reasons {
			row("held by", fmt.Sprintf("%s %s %s %s", r.Layer, r.Code, strings.Join(r.Policies, ","), r.Message))
		}
		var labels []string
		for _, l := range e.SessionLabels {
			labels = append(labels, string(l))
		}
		row("session labels", strings.Join(labels, ", "))
	}
	if e := a.Elevation; e != nil {
		for _, c := range e.Constraints {
			b, _ := json.Marshal(c)
			row("constraint", string(b))
		}
		row("window", e.TTL.String())
		row("justification", e.Justification)
	}
	row("requested", when(a.Created))
	row("decide by", when(a.Expires))
	for _, r := range a.Reviews {
		how := r.Approver.Method
		if r.Approver.ACR != "" {
			how += ", acr " + r.Approver.ACR
		}
		if !r.Approver.AuthTime.IsZero() {
			how += ", authenticated " + when(r.Approver.AuthTime)
		}
		line := fmt.Sprintf("%s %s by %s (%s)", when(r.Time), r.Vote, r.Approver.Subject, how)
		if r.BreakGlass {
			line += " BREAK-GLASS: " + r.Justification
		}
		if r.Comment != "" {
			line += ": " + r.Comment
		}
		row("review", line)
	}
	if g := a.Grant; g != nil {
		uses := fmt.Sprintf("%d", g.Uses)
		if g.MaxUses > 0 {
			uses += fmt.Sprintf(" of %d", g.MaxUses)
		}
		row("grant", when(g.Start)+" – "+when(g.Expires)+", used "+uses)
		row("value ceiling", g.ValueCeiling)
		if !g.Revoked.IsZero() {
			row("revoked", when(g.Revoked)+" by "+g.RevokedBy)
		}
	}
	for _, u := range a.Uses {
		row("use", fmt.Sprintf("#%d %s correlation %s", u.Seq, when(u.Time), u.Correlation))
	}
	row("review item", a.ReviewItem)
	for _, d := range v.Deliveries {
		res := "ok"
		if !d.OK {
			res = "failed: " + d.Error
		}
		row("notification", fmt.Sprintf("%s %s to %s attempt %d: %s", when(d.Time), d.Event, d.Notifier, d.Attempt, res))
	}
	row("page", v.URL)
	return tw.Flush()
}

func approvalsDecide(ctx context.Context, fs *flag.FlagSet, vote string, args []string, stdout io.Writer) error {
	admin := adminFlags(fs)
	as := fs.String("as", os.Getenv("USER"), "the approver's `name` (listed in the governance approvers)")
	comment := fs.String("comment", "", "comment recorded with the decision")
	var breakGlass *bool
	var justification, ceiling *string
	var ttl *time.Duration
	var maxUses *int
	if vote == "approve" {
		breakGlass = fs.Bool("break-glass", false, "self-approve as a member of the break-glass group (alerts at once, opens a review item)")
		justification = fs.String("justification", "", "why (required with --break-glass)")
		ttl = fs.Duration("ttl", 0, "narrow the grant window to this `duration`")
		maxUses = fs.Int("max-uses", 0, "narrow the grant to `N` uses")
		ceiling = fs.String("value-ceiling", "", "cap the call's value at this `decimal`")
	}
	id, err := oneID(fs, args, "approval ID")
	if err != nil {
		return err
	}
	q := approval.DecisionRequest{Approver: *as, Comment: *comment}
	if vote == "approve" {
		q.BreakGlass, q.Justification, q.MaxUses, q.ValueCeiling = *breakGlass, *justification, *maxUses, *ceiling
		if *ttl < 0 || *maxUses < 0 {
			return fmt.Errorf("%w: --ttl and --max-uses must be positive", errUsage)
		}
		if *ttl > 0 {
			q.TTL = ttl.String()
		}
		if q.BreakGlass && strings.TrimSpace(q.Justification) == "" {
			return fmt.Errorf("%w: --break-glass needs --justification", errUsage)
		}
	}
	c, err := admin()
	if err != nil {
		return err
	}
	var v approval.View
	if err := c.do(ctx, "POST", "/v1/approvals/"+url.PathEscape(id)+"/"+vote, q, &v); err != nil {
		return err
	}
	switch v.Status {
	case approval.Approved:
		_, _ = fmt.Fprintf(stdout, "approved %s: the grant is in force until %s\n", v.ID, v.Grant.Expires.UTC().Format(time.RFC3339))
	case approval.Pending:
		_, _ = fmt.Fprintf(stdout, "recorded your approval of %s; quorum %s\n", v.ID, approval.Summarize(&v.Approval, v.URL).Quorum)
	default:
		_, _ = fmt.Fprintf(stdout, "%s is %s\n", v.ID, v.Status)
	}
	return nil
}

func approvalsRevoke(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	admin := adminFlags(fs)
	as := fs.String("as", os.Getenv("USER"), "who revokes (`name` in the governance approvers; empty: the admin credential)")
	comment := fs.String("comment", "", "why (recorded in the audit log)")
	id, err := oneID(fs, args, "approval ID")
	if err != nil {
		return err
	}
	c, err := admin()
	if err != nil {
		return err
	}
	var v approval.View
	if err := c.do(ctx, "POST", "/v1/approvals/"+url.PathEscape(id)+"/revoke", approval.RevokeRequest{Approver: *as, Comment: *comment}, &v); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "%s is %s\n", v.ID, v.Status)
	return nil
}

func approvalsElevate(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	admin := adminFlags(fs)
	as := fs.String("as", os.Getenv("USER"), "the approver's `name` (listed in the governance approvers)")
	q := approval.ElevationRequest{}
	fs.StringVar(&q.Agent, "agent", "", "the agent to elevate (required)")
	fs.StringVar(&q.Server, "server", "", "the upstream server (required)")
	fs.StringVar(&q.User, "user", "", "only calls on behalf of this user")
	fs.StringVar(&q.Task, "task", "", "only calls of this task")
	fs.StringVar(&q.Risk, "risk", "", "the risk class whose rule applies")
	fs.StringVar(&q.Group, "group", "", "the approver group (default: the rule's first)")
	fs.StringVar(&q.Justification, "justification", "", "why (required)")
	fs.StringVar(&q.ValueCeiling, "value-ceiling", "", "cap each call's value at this `decimal`")
	fs.IntVar(&q.MaxUses, "max-uses", 0, "at most `N` calls (default: unlimited within the window)")
	ttl := fs.Duration("ttl", 0, "the window (required; at most the rule's elevation TTL)")
	var tools, where, prefix, maxArg repeated
	fs.Var(&tools, "tool", "a tool the agent may call (repeatable; exact names)")
	fs.Var(&where, "where", "`ARG=JSON`: the argument must equal this value (repeatable; a bare word is a string)")
	fs.Var(&prefix, "prefix", "`ARG=PREFIX`: the argument must be a string starting with PREFIX (repeatable)")
	fs.Var(&maxArg, "max", "`ARG=N`: the argument must be a number at most N (repeatable)")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if q.Agent == "" || q.Server == "" || len(tools) == 0 || *ttl <= 0 || strings.TrimSpace(q.Justification) == "" {
		return fmt.Errorf("%w: elevate needs --agent, --server, --tool, --ttl and --justification", errUsage)
	}
	q.Approver, q.Tools, q.TTL = *as, tools, ttl.String()
	split := func(s, flagName string) (string, string, error) {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return "", "", fmt.Errorf("%w: --%s wants ARG=VALUE, not %q", errUsage, flagName, s)
		}
		return k, v, nil
	}
	for _, w := range where {
		k, v, err := split(w, "where")
		if err != nil {
			return err
		}
		raw := json.RawMessage(v)
		if !json.Valid(raw) {
			raw, _ = json.Marshal(v)
		}
		q.Constraints = append(q.Constraints, approval.Constraint{Argument: k, Equals: raw})
	}
	for _, p := range prefix {
		k, v, err := split(p, "prefix")
		if err != nil {
			return err
		}
		q.Constraints = append(q.Constraints, approval.Constraint{Argument: k, Prefix: v})
	}
	for _, m := range maxArg {
		k, v, err := split(m, "max")
		if err != nil {
			return err
		}
		q.Constraints = append(q.Constraints, approval.Constraint{Argument: k, Max: v})
	}
	c, err := admin()
	if err != nil {
		return err
	}
	var v approval.View
	if err := c.do(ctx, "POST", "/v1/elevations", q, &v); err != nil {
		return err
	}
	if v.Status == approval.Approved {
		_, _ = fmt.Fprintf(stdout, "elevated %s on %s/%s until %s (%s)\n", q.Agent, q.Server, strings.Join(q.Tools, ","), v.Grant.Expires.UTC().Format(time.RFC3339), v.ID)
		return nil
	}
	_, _ = fmt.Fprintf(stdout, "elevation %s is %s; quorum %s\n", v.ID, v.Status, approval.Summarize(&v.Approval, v.URL).Quorum)
	return nil
}

func approvalsReviews(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	admin := adminFlags(fs)
	all := fs.Bool("all", false, "list closed items too")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	c, err := admin()
	if err != nil {
		return err
	}
	path := "/v1/reviews?status=open"
	if *all {
		path = "/v1/reviews"
	}
	var items []approval.ReviewItem
	if err := c.do(ctx, "GET", path, nil, &items); err != nil {
		return err
	}
	if *asJSON {
		return writeJSONOut(stdout, items)
	}
	if len(items) == 0 {
		_, err := fmt.Fprintln(stdout, "no review items")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "ID\tSTATUS\tAPPROVAL\tBY\tCREATED\tJUSTIFICATION")
	for _, it := range items {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.ID, it.Status, it.Approval, it.By, it.Created.UTC().Format(time.RFC3339), strings.Join(strings.Fields(it.Justification), " "))
	}
	return tw.Flush()
}

func approvalsCloseReview(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	admin := adminFlags(fs)
	as := fs.String("as", os.Getenv("USER"), "the reviewer's `name` (not the one who broke the glass)")
	comment := fs.String("comment", "", "the review's conclusion (required)")
	id, err := oneID(fs, args, "review item ID")
	if err != nil {
		return err
	}
	if strings.TrimSpace(*comment) == "" {
		return fmt.Errorf("%w: close-review needs --comment", errUsage)
	}
	c, err := admin()
	if err != nil {
		return err
	}
	var it approval.ReviewItem
	if err := c.do(ctx, "POST", "/v1/reviews/"+url.PathEscape(id)+"/close", approval.CloseRequest{Approver: *as, Comment: *comment}, &it); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "closed review item %s of %s\n", it.ID, it.Approval)
	return nil
}

func approvalsExport(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	admin := adminFlags(fs)
	out := fs.String("out", "", "write the bundle to `file` (default: ID.bundle.json; - for standard output)")
	id, err := oneID(fs, args, "approval ID")
	if err != nil {
		return err
	}
	c, err := admin()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.do(ctx, "GET", "/v1/approvals/"+url.PathEscape(id)+"/bundle", nil, &raw); err != nil {
		return err
	}
	// Keep the bytes as served: the bundle is verified byte for byte.
	var b approval.Bundle
	if err := json.Unmarshal(raw, &b); err != nil || b.Format != approval.BundleFormat {
		return errors.New("the admin API did not answer with an evidence bundle")
	}
	data, err := b.Encode()
	if err != nil {
		return err
	}
	path := *out
	if path == "" {
		path = id + ".bundle.json"
	}
	if path == "-" {
		_, err := stdout.Write(data)
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	_, _ = fmt.Fprintf(stdout, "wrote the evidence bundle of %s (%d records) to %s\n", id, len(b.Records), path)
	if b.Key == "" {
		_, _ = fmt.Fprintln(stderr, "warning: the bundle names no verifier key; verify it with --key")
	}
	return nil
}

func approvalsVerify(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	key := fs.String("key", "", "trusted checkpoint verifier `key` (name+hash+base64, or @file); default: the bundle's own key")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	path, err := oneID(fs, args, "bundle file")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading bundle: %w", err)
	}
	var v note.Verifier
	if *key != "" {
		if v, err = loadVerifier(*key); err != nil {
			return err
		}
	}
	rep, err := approval.VerifyBundle(data, v)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := writeJSONOut(stdout, rep); err != nil {
			return err
		}
	} else {
		_, _ = fmt.Fprintf(stdout, "approval %s (%s): %d records, checkpoint %s size %d\n", rep.Approval, rep.Status, rep.Records, rep.Origin, rep.TreeSize)
		for _, r := range rep.Reviews {
			_, _ = fmt.Fprintln(stdout, "  "+r)
		}
		for _, p := range rep.Problems {
			_, _ = fmt.Fprintln(stdout, "FAIL: "+p)
		}
		if rep.OK() {
			_, _ = fmt.Fprintln(stdout, "OK: the bundle verifies")
		}
	}
	if rep.KeyFromBundle {
		_, _ = fmt.Fprintln(stderr, "warning: verified with the key recorded in the bundle; pass --key with a key obtained independently to rule out a forged bundle")
	}
	if !rep.OK() {
		return exitError{code: 1}
	}
	return nil
}
