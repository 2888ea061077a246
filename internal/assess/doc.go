// Package assess turns the deployment decision tree for enterprise agents
// into a check of a real deployment.
//
// A Descriptor (version 1, YAML, strictly decoded) states the facts of a
// deployment: where each agent runs and which clouds it reaches, its
// workload identity and trust relationships, the tools it calls with
// their risk, the data it reads, its autonomy, the preview capabilities it
// relies on, and how the deployment is observed and stopped. Assess walks
// six questions for every agent — where it runs, high-risk actions,
// cross-boundary data, autonomy, preview capabilities, observe-and-stop —
// recommends the identity the hierarchy puts first for its hosting
// pattern, names the implementation pattern that fits the deployment, and,
// given a Gateway (the live configuration and policy directory), runs the
// gap Checks over it.
//
// Invariants:
//
//   - Every finding has a severity; the verdict is the worst of them
//     (blocker → not ready, condition → ready with conditions).
//   - A control the gateway's configuration format has no key for is
//     reported as not configured, never as satisfied.
//   - Every statement about a cloud platform cites a documentation page
//     from Sources, and a trust-policy binding is recommended only for the
//     kind of trust its cloud documents it for.
//   - Assess is a pure function of its inputs: the same descriptor,
//     configuration, policies and reference date give the same report,
//     byte for byte, in every format.
//   - Descriptor and configuration text is data: the HTML report escapes
//     it and fetches nothing; the Markdown report escapes its markup.
package assess
