// Package policy is the execution layer's authorization engine: Cedar
// policies (github.com/cedar-policy/cedar-go) over agents, tools and the
// information flow of their sessions, with a list phase and a call phase,
// a three-way outcome, shadow evaluation and replay.
//
// # Model
//
// Every entity type and action lives in the Cedar namespace "Gatehouse".
//
//   - Principal: Gatehouse::Agent::"<agent id>", attributes owner, hosting,
//     groups; member of Gatehouse::Group::"<group>" for each group.
//   - Resource, by action: Gatehouse::Tool::"<server>__<tool>",
//     Gatehouse::Resource::"<server>__<uri>" or Gatehouse::Prompt::"<server>__<name>"
//     (attributes name or uri, server, labels; member of
//     Gatehouse::Server::"<server>"), or the Gatehouse::Server itself for
//     sample and elicit.
//   - Actions: list_tools, list_resources, list_prompts (the list phase);
//     call_tool, read_resource, get_prompt, complete, sample, elicit (the
//     call phase).
//   - Context: now (datetime), session_labels, user and task (optional
//     Gatehouse::User and Gatehouse::Task entities; users carry groups and
//     string-set tags), totals (declared running totals, decimal); in the
//     call phase also findings (kinds, detectors, max_score); for call_tool
//     also arguments (typed from the tool's input schema) and paths
//     (normalised copies of path-like string arguments, see NormalizePath).
//
// SchemaFor turns the upstream tools' input schemas into a Cedar schema.
// LoadFiles validates every policy against it with cedar-go's validator
// (x/exp/schema/validate, strict mode); a policy whose scope admits a list
// action but reads arguments, paths or findings is rejected with a message
// naming the policy and the attribute, and one that reads an argument is
// checked against the input schema of every tool its resource scope admits.
//
// # Outcomes
//
// A forbid annotated @challenge("group") is a challenge: it holds a
// permitted request for approval by that group instead of blocking it.
// A matching forbid blocks (policy.forbid); an evaluation error blocks
// (policy.error); with no matching permit the request is blocked
// (policy.no_permit) whatever challenges matched; otherwise matching
// challenges challenge (policy.challenge, one approval obligation per
// group, @risk as its detail) and no challenge allows (policy.permit).
// A blocked decision's public message is always "denied by policy".
//
// # Invariants
//
//   - Decide never fails: every problem with a request or its evaluation is
//     a Block, with the detail in Decision.Diagnostics.
//   - A Set is immutable; Engine swaps whole sets atomically, and a set that
//     fails to load never replaces the one in force.
//   - A Set's Version is a hash of its files' names and contents.
//   - Requests are plain JSON values: replay is decide(recorded request)
//     under a candidate set, compared with Differs to the recorded decision.
//   - The context holds only what the candidate policies (those whose scope
//     admits the request) read: arguments are decoded only for a policy
//     that reads context.arguments, and paths normalised (an unnormalisable
//     one blocks) only for a policy that reads context.paths.
//
// See docs/policy.md for the operator's view: writing policies, the
// challenge annotation, the default library and the fixture format.
package policy
