package policy_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

func TestDefaultLabels(t *testing.T) {
	yes, no := new(bool), new(bool)
	*yes = true
	tests := []struct {
		name string
		a    *policy.Annotations
		want []verdict.Label
	}{
		{"no annotations: MCP defaults", nil, []verdict.Label{verdict.Destructive, verdict.ExternalSink, verdict.UntrustedContent}},
		{"empty annotations", &policy.Annotations{}, []verdict.Label{verdict.Destructive, verdict.ExternalSink, verdict.UntrustedContent}},
		{"read-only, closed world", &policy.Annotations{ReadOnlyHint: yes, OpenWorldHint: no}, nil},
		{"read-only, open world (web fetch)", &policy.Annotations{ReadOnlyHint: yes}, []verdict.Label{verdict.ExternalSink, verdict.UntrustedContent}},
		{"writes, not destructive, closed world", &policy.Annotations{DestructiveHint: no, OpenWorldHint: no}, nil},
		{"writes, destructive, closed world", &policy.Annotations{DestructiveHint: yes, OpenWorldHint: no}, []verdict.Label{verdict.Destructive}},
		{"read-only wins over destructive", &policy.Annotations{ReadOnlyHint: yes, DestructiveHint: yes, OpenWorldHint: no}, nil},
		{"read-only false is the default", &policy.Annotations{ReadOnlyHint: no, OpenWorldHint: no}, []verdict.Label{verdict.Destructive}},
		{"idempotent changes nothing", &policy.Annotations{IdempotentHint: yes, OpenWorldHint: no, DestructiveHint: no}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, policy.DefaultLabels(tt.a)); diff != "" {
				t.Errorf("DefaultLabels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSessionLabels(t *testing.T) {
	tests := []struct {
		tool, want []verdict.Label
	}{
		{nil, nil},
		{[]verdict.Label{verdict.ExternalSink, verdict.Destructive}, nil},
		{[]verdict.Label{verdict.ReadsPrivate}, []verdict.Label{verdict.SessionPrivateData}},
		{[]verdict.Label{verdict.UntrustedContent, verdict.ReadsPrivate, verdict.ReadsPrivate}, []verdict.Label{verdict.SessionPrivateData, verdict.SessionUntrustedContent}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, policy.SessionLabels(tt.tool)); diff != "" {
			t.Errorf("SessionLabels(%v) (-want +got):\n%s", tt.tool, diff)
		}
	}
}
