package gateway_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// listingPolicies let intern-bot see and read the workspace's notes as
// resources, and nothing else of what the workspace publishes besides its
// tools (the demo's triage-bot-read-only rule).
const listingPolicies = `
@id("intern-notes")
permit (
  principal == Gatehouse::Agent::"intern-bot",
  action in [Gatehouse::Action::"list_resources", Gatehouse::Action::"read_resource"],
  resource in Gatehouse::Server::"workspace"
)
when { resource.uri like "file:///notes/*" };
`

// TestListFilteringResourcesAndPrompts: resources/list,
// resources/templates/list and prompts/list show an agent only the items
// policy lets it use, item by item, and what it cannot see it cannot use
// either (get, read, complete), with "denied by policy" rather than "not
// found".
func TestListFilteringResourcesAndPrompts(t *testing.T) {
	dir, extra := execConfig(t)
	writePolicy(t, dir, "listing.cedar", listingPolicies)
	h := start(t, extra)
	ctx := context.Background()

	type view struct{ resources, templates, prompts []string }
	list := func(cs *sdk.ClientSession) view {
		t.Helper()
		var v view
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				t.Fatal(err)
			}
			v.resources = append(v.resources, r.Name)
		}
		for r, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				t.Fatal(err)
			}
			v.templates = append(v.templates, r.Name)
		}
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				t.Fatal(err)
			}
			v.prompts = append(v.prompts, p.Name)
		}
		return v
	}

	// The assistant may use the whole workspace: it sees everything.
	assistant := h.connect("assistant", nil, "")
	if got := list(assistant); !slices.Equal(got.resources, []string{"offsite-agenda"}) || !slices.Equal(got.templates, []string{"file"}) ||
		!slices.Equal(got.prompts, []string{"workspace__triage_inbox"}) {
		t.Errorf("assistant sees %+v", got)
	}

	// intern-bot sees the notes resource only: the template (whose URI is
	// not under /notes) and the prompt (no permit) are left out.
	intern := h.connect("intern-bot", nil, "")
	got := list(intern)
	if !slices.Equal(got.resources, []string{"offsite-agenda"}) || len(got.templates) != 0 || len(got.prompts) != 0 {
		t.Errorf("intern-bot sees %+v", got)
	}
	var uri string
	for r, err := range intern.Resources(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		uri = r.URI
	}
	if _, err := intern.ReadResource(ctx, &sdk.ReadResourceParams{URI: uri}); err != nil {
		t.Errorf("reading the listed resource: %v", err)
	}
	// What it cannot see it cannot use.
	hidden := strings.Replace(uri, "/notes/offsite-agenda.md", "/hr/salaries-2026.csv", 1)
	if _, err := intern.ReadResource(ctx, &sdk.ReadResourceParams{URI: hidden}); err == nil || !strings.Contains(err.Error(), "denied by policy: policy.no_permit") {
		t.Errorf("reading %s through the hidden template: %v", hidden, err)
	}
	if _, err := intern.GetPrompt(ctx, &sdk.GetPromptParams{Name: "workspace__triage_inbox"}); err == nil || !strings.Contains(err.Error(), "denied by policy: policy.no_permit") {
		t.Errorf("getting the hidden prompt: %v", err)
	}
	if _, err := assistant.GetPrompt(ctx, &sdk.GetPromptParams{Name: "workspace__triage_inbox"}); err != nil {
		t.Errorf("assistant getting the prompt: %v", err)
	}
	// Completing a hidden prompt's argument is the complete action on the
	// prompt: refused the same way.
	_, err := intern.Complete(ctx, &sdk.CompleteParams{Ref: &sdk.CompleteReference{Type: "ref/prompt", Name: "workspace__triage_inbox"},
		Argument: sdk.CompleteParamsArgument{Name: "focus", Value: "fin"}})
	if err == nil || !strings.Contains(err.Error(), "denied by policy: policy.no_permit") {
		t.Errorf("completing the hidden prompt's argument: %v", err)
	}
}
