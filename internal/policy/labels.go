package policy

import (
	"slices"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Annotations are an MCP tool's behavioural hints (MCP ToolAnnotations). A
// nil field is an absent hint, which takes the MCP default: readOnlyHint
// false, destructiveHint true, openWorldHint true.
type Annotations struct {
	ReadOnlyHint    *bool `json:"readOnlyHint,omitempty" yaml:"readOnlyHint"`
	DestructiveHint *bool `json:"destructiveHint,omitempty" yaml:"destructiveHint"`
	IdempotentHint  *bool `json:"idempotentHint,omitempty" yaml:"idempotentHint"`
	OpenWorldHint   *bool `json:"openWorldHint,omitempty" yaml:"openWorldHint"`
}

// DefaultLabels derives a tool's default risk labels from its MCP
// annotations, for tools whose labels config does not set. An absent hint
// takes the MCP default, which is the cautious one, so a tool without
// annotations gets every label annotations can give:
//
//   - destructive, unless readOnlyHint is true or destructiveHint is false;
//   - untrusted_content and external_sink, unless openWorldHint is false:
//     a tool that reaches the open world returns content nobody vouches for
//     and can carry data out (a URL, a message, a query).
//
// reads_private, financial, privilege, policy_change and bulk_export cannot
// be derived from annotations; they come from config only. Annotations are
// the server's own claims: a server can only lower its labels by claiming
// to be read-only or closed-world, so label untrusted servers in config.
// The result is sorted and has no duplicates.
func DefaultLabels(a *Annotations) []verdict.Label {
	if a == nil {
		a = &Annotations{}
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	isFalse := func(b *bool) bool { return b != nil && !*b }
	var out []verdict.Label
	if !isTrue(a.ReadOnlyHint) && !isFalse(a.DestructiveHint) {
		out = append(out, verdict.Destructive)
	}
	if !isFalse(a.OpenWorldHint) {
		out = append(out, verdict.UntrustedContent, verdict.ExternalSink)
	}
	slices.Sort(out)
	return out
}

// SessionLabels returns the information-flow labels a session or task
// acquires by using a tool with the given risk labels: private_data after
// a reads_private tool, untrusted_content after an untrusted_content tool.
// (A semantic finding in retrieved content also adds untrusted_content;
// the semantic layer says so.) The result is sorted, without duplicates.
func SessionLabels(toolLabels []verdict.Label) []verdict.Label {
	var out []verdict.Label
	for _, l := range toolLabels {
		switch l {
		case verdict.ReadsPrivate:
			out = append(out, verdict.SessionPrivateData)
		case verdict.UntrustedContent:
			out = append(out, verdict.SessionUntrustedContent)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
