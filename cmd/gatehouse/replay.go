package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"iter"
	"sort"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// runPolicyReplay re-decides the calls recorded in the audit log under a
// candidate policy directory and prints the decisions that would change.
func runPolicyReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "gatehouse.yaml", "gateway configuration `file` (locates the store)")
	candidate := fs.String("candidate", "", "candidate policy `directory`")
	since := fs.Duration("since", 24*time.Hour, "replay the calls recorded in this last period")
	asJSON := fs.Bool("json", false, "print the changes as JSON")
	if err := fs.Parse(args); err != nil {
		return usageError(err)
	}
	if *candidate == "" && fs.NArg() == 1 {
		*candidate = fs.Arg(0)
	}
	if *candidate == "" {
		return fmt.Errorf("%w: policy replay needs --candidate DIR", errUsage)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	dsn, err := configDSN(cfg)
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()

	// The schema comes from the tool definitions the gateway pinned.
	pins, err := store.NewPins(ctx, db, nil)
	if err != nil {
		return err
	}
	pinned, err := pins.List(ctx)
	if err != nil {
		return err
	}
	var tools []policy.ToolSchema
	for _, p := range pinned {
		var def struct {
			InputSchema json.RawMessage `json:"inputSchema"`
		}
		_ = json.Unmarshal(p.ApprovedDef, &def)
		ts := policy.ToolSchema{Server: p.Server, Name: p.Tool, InputSchema: def.InputSchema}
		for _, s := range cfg.Servers {
			if tc, ok := s.Tools[p.Tool]; ok && s.ID == p.Server {
				ts.PathArgs = tc.PathArgs
				for _, l := range tc.Labels {
					ts.Labels = append(ts.Labels, verdict.Label(l))
				}
			}
		}
		tools = append(tools, ts)
	}
	schema, err := policy.SchemaFor(tools, policy.SchemaOptions{})
	if err != nil {
		return err
	}
	set, err := policy.Load(*candidate, schema)
	if err != nil {
		return err
	}

	backend, err := store.OpenAuditLog(ctx, db)
	if err != nil {
		return err
	}
	agents := map[string]config.Agent{}
	for _, a := range cfg.Agents {
		agents[a.ID] = a
	}
	var replayed, skipped, noArgs, undecidable int
	cutoff := time.Now().Add(-*since)
	records := func(yield func(policy.Request, policy.Decision) bool) {
		from := int64(0)
		for {
			recs, err := audit.Search(ctx, backend, audit.Filter{Class: audit.ClassAPIActivity, Since: cutoff, From: from, Limit: 1000})
			if err != nil {
				fmt.Fprintf(stderr, "gatehouse: reading the audit log: %v\n", err)
				return
			}
			for _, rec := range recs {
				from = rec.Index + 1
				req, was, ok, args := recordedDecision(rec.Event, agents)
				if !ok {
					skipped++
					continue
				}
				if !args {
					noArgs++
					// Without the arguments a decision that needs them is
					// an error, not a change.
					if d := set.Decide(req); d.Code() == policy.CodeError && was.Code() != policy.CodeError {
						undecidable++
						continue
					}
				}
				replayed++
				if !yield(req, was) {
					return
				}
			}
			if len(recs) < 1000 {
				return
			}
		}
	}
	changes := policy.Replay(set, iter.Seq2[policy.Request, policy.Decision](records))
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"candidate_version": set.Version(), "replayed": replayed, "changes": changes,
			"skipped": skipped, "without_arguments": noArgs, "undecidable": undecidable})
	}
	for _, c := range changes {
		target := c.Request.Tool + c.Request.Resource + c.Request.Prompt
		fmt.Fprintf(stdout, "%s  %-14s %-10s %s/%s\n    recorded:  %s\n    candidate: %s\n", c.Request.Now.UTC().Format(time.RFC3339),
			c.Request.Agent.ID, c.Request.Action, c.Request.Server, target, describeDecision(c.Recorded), describeDecision(c.Candidate))
	}
	fmt.Fprintf(stdout, "%d recorded decisions replayed under candidate %s: %d would change", replayed, set.Version(), len(changes))
	if skipped > 0 {
		fmt.Fprintf(stdout, " (%d records had no policy decision)", skipped)
	}
	fmt.Fprintln(stdout)
	if noArgs > 0 {
		fmt.Fprintf(stdout, "note: %d records carry no arguments (audit.privacy is metadata); %d of them could not be re-decided because the candidate reads arguments\n", noArgs, undecidable)
	}
	return nil
}

func describeDecision(d policy.Decision) string {
	s := d.Outcome.String() + " (" + d.Code()
	if len(d.Policies) > 0 {
		s += " by " + strings.Join(d.Policies, ", ")
	}
	return s + ")"
}

// actionOf maps a recorded MCP method to its Cedar action.
var actionOf = map[string]policy.Action{
	"tools/call": policy.CallTool, "resources/read": policy.ReadResource, "prompts/get": policy.GetPrompt,
	"completion/complete": policy.Complete, "sampling/createMessage": policy.Sample, "elicitation/create": policy.Elicit,
}

// recordedDecision rebuilds the policy request and the policy decision of
// a recorded call. ok is false for records without a policy decision;
// args reports whether the arguments were recorded.
func recordedDecision(ev *audit.Event, agents map[string]config.Agent) (req policy.Request, was policy.Decision, ok, args bool) {
	u := ev.Unmapped
	if u == nil || u.Verdict == nil || ev.API == nil || (u.Phase != "intent" && u.Phase != "decision") {
		return req, was, false, false
	}
	act, known := actionOf[ev.API.Operation]
	if !known {
		return req, was, false, false
	}
	var reason *audit.Reason
	for i := range u.Verdict.Reasons {
		if strings.HasPrefix(u.Verdict.Reasons[i].Code, "policy.") {
			reason = &u.Verdict.Reasons[i]
			break
		}
	}
	if reason == nil {
		return req, was, false, false
	}
	a := agents[u.Agent]
	req = policy.Request{Action: act, Agent: policy.Agent{ID: u.Agent, Owner: a.Owner, Hosting: a.Hosting, Groups: a.Groups},
		Server: u.Server, Now: time.UnixMilli(ev.Time)}
	if act == policy.Sample || act == policy.Elicit {
		// The target of a server-initiated request is the server itself.
	} else if act == policy.ReadResource || strings.Contains(u.Tool, "://") {
		req.Resource = u.Tool
	} else if act == policy.GetPrompt {
		req.Prompt = u.Tool
	} else {
		req.Tool = u.Tool
	}
	for _, l := range u.Labels {
		req.Labels = append(req.Labels, verdict.Label(l))
	}
	for _, l := range u.SessionLabels {
		req.SessionLabels = append(req.SessionLabels, verdict.Label(l))
	}
	if u.OnBehalfOf != "" {
		req.User = &policy.User{ID: u.OnBehalfOf}
	}
	if u.Task != "" {
		req.Task = &policy.Task{ID: u.Task}
	}
	if w := u.SourceIdentity; w != nil {
		// Records from before the source was recorded in parts carry none:
		// to policy, a call without a source.
		req.Source = &policy.Source{TrustSource: w.TrustSource, Kind: w.Kind, Tenant: w.Tenant, Subject: w.Subject}
	}
	req.Arguments = u.Arguments
	args = len(u.Arguments) > 0
	if !args && act == policy.CallTool {
		req.Arguments = json.RawMessage(`{}`)
	}
	out, err := verdict.ParseOutcome(reason.Outcome)
	if err != nil {
		return req, was, false, false
	}
	policies := append([]string(nil), reason.Policies...)
	sort.Strings(policies)
	was = policy.Decision{Outcome: out, Policies: policies,
		Reasons: []verdict.Reason{{Layer: verdict.Execution, Code: reason.Code, Policies: policies, Outcome: out}}}
	for _, o := range u.Verdict.Obligations {
		if o.Kind == verdict.ObligationApproval {
			was.Obligations = append(was.Obligations, verdict.Obligation{Kind: o.Kind, Group: o.Group, Detail: o.Detail})
		}
	}
	for _, p := range u.Policies {
		if p.Version != "" {
			was.Version = p.Version
			break
		}
	}
	return req, was, true, args
}
