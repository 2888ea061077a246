// Package approval is the governance layer: "should this proceed without
// human approval?" High-impact agent calls wait for authenticated humans;
// a grant authorises one exact call (or, for an elevation, a narrow
// capability) for a short time; and the record shows who approved what,
// having seen what, for how long.
//
// # Model
//
//   - An Approval is created by Manager.Request from an Evidence snapshot
//     of a challenged call: agent, owner, on-behalf-of user, task, server,
//     tool, canonical arguments and their hash, value, the verdict's
//     obligations (approver group and risk class per @challenge/@risk) and
//     reasons (policies, semantic findings), tool and session labels.
//   - The call is identified by its CallHash: SHA-256 of the canonical JSON
//     {"agent","arguments","policy_version","server","task","tool","user","v":1}
//     with the arguments canonicalized (Canonicalize: sorted keys, no
//     insignificant whitespace, exact decimal numbers in one form, minimal
//     string escaping; duplicate keys, invalid UTF-8 and lone surrogates
//     refused). Request dedupes: the identical call finds the open
//     approval (pending, or approved with uses left).
//   - Each obligation becomes a Requirement: Quorum distinct approvers of
//     the obligation's group, under the Rule of its risk class. Decide
//     enforces: humans only; never the requesting agent; not the owner
//     (unless OwnerMayApprove) nor the on-behalf-of user (unless
//     UserMayApprove); fresh, strong authentication where the rule demands
//     it (FreshAuth ~ OIDC max_age, ACR ~ acr_values) — admin-token
//     approvals never satisfy it; one review per approver; a deny vetoes;
//     a decision may narrow the grant (TTL, uses, value ceiling) but never
//     widen it.
//   - When every requirement has its quorum the Grant starts: bound to the
//     call hash, from now for the rule's GrantTTL, MaxUses uses (default
//     one). Consume uses it atomically (Store.Use is a conditional update:
//     of concurrent identical calls, on any number of replicas, at most
//     MaxUses succeed). Revoke ends it; RevokeAgent ends everything an
//     agent holds.
//   - Elevations (Elevate) are PIM-style grants of named tools of one
//     server, with argument constraints, for a window no longer than the
//     rule's ElevationTTL; the same separation of duties, quorum and
//     evidence rules apply; MatchElevation finds and uses one for a call.
//   - Break-glass: a member of BreakGlass.Group may self-approve (even as
//     owner or user, never as the agent) with a justification; the grant
//     lasts BreakGlass.TTL for one use, an alert (approval.break_glass)
//     goes out at once, and a ReviewItem is opened before the grant exists;
//     someone else must close it.
//   - Pending requests expire after the rule's PendingTTL, grants lapse
//     after their window (Sweep, run by Run; Wait, Consume and Request also
//     check deadlines themselves). A denial answers retries of the
//     identical call for the PendingTTL. Approval.Verdict tells the agent
//     where it stands with a public code (approval.pending, .denied,
//     .expired, .cancelled, .used, .lapsed, .revoked).
//
// # Invariants
//
//   - Fail closed: every state change is appended to the audit log
//     (Config.Audit) before it is stored; if the append fails the change is
//     not made (ErrAudit). A use whose record fails is given back. Every
//     error of Consume, MatchElevation and Gate means "do not forward".
//   - Changes are stored with a compare-and-swap on Version; a change that
//     loses a race is followed in the log by a "superseded" record stating
//     the actual state, so the last state record of an approval always
//     commits to its current state (SHA-256 of its canonical JSON).
//   - At most one open approval per call hash (a store invariant).
//   - A grant for arguments A never authorises arguments B: other
//     arguments, agent, user, task or policy version give another hash.
//   - Notifications are delivered by Run with retries and backoff; every
//     attempt is audited, then stored.
//
// # Evidence
//
// Manager.Bundle builds a self-contained evidence bundle: the approval
// (request, evidence, reviews with approver identities and how they
// authenticated, grant window, uses), deliveries, review items, the
// executed calls' record summaries, and every audit record behind them
// with its leaf bytes and an inclusion proof to one signed checkpoint.
// VerifyBundle checks it offline; any changed byte is detected.
//
// # Wiring
//
// The gateway calls Gate (or Consume, MatchElevation, Request and Wait) for
// a call the pipeline challenged, CancelHeld when the kill switch locks,
// RevokeAgent when an agent is retired, mounts Handler behind the admin
// credential and Page at /approvals/{id}, and runs Run. ReviewAgents is the
// logic of `gatehouse agents review`. See docs/governance.md.
package approval
