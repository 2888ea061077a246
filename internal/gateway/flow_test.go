package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// taskToken mints a gateway token for agent scoped to task, as the token
// endpoint does (txn claim).
func (h *harness) taskToken(agent, task string) string {
	h.t.Helper()
	tok, _, err := h.g.Minter().MintClaims(identity.Claims{Claims: jwt.Claims{Subject: agent}, ClientID: agent, Txn: task}, 5*time.Minute)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// connectToken opens a client session with token on the endpoint at path
// ("" for /mcp), speaking protocol version ("" for the SDK's default).
func (h *harness) connectToken(token, path, version string) *sdk.ClientSession {
	h.t.Helper()
	url := h.url
	if path != "" {
		url = h.g.MCPURL(path)
	}
	var opts *sdk.ClientSessionOptions
	if version != "" {
		opts = &sdk.ClientSessionOptions{ProtocolVersion: version}
	}
	c := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-test", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{token}}}, opts)
	if err != nil {
		h.t.Fatalf("connecting: %v", err)
	}
	h.t.Cleanup(func() { cs.Close() })
	return cs
}

// TestInformationFlowOutlivesSessions: the lethal trifecta cannot be
// bypassed by reading in one place and sending from another — a stateless
// endpoint keeps labels per token, and every session of a task shares the
// task's labels.
func TestInformationFlowOutlivesSessions(t *testing.T) {
	_, extra := execConfig(t)
	h := start(t, extra+"endpoints:\n  - {path: /mcp, servers: [bank, workspace]}\n  - {path: /stateless, servers: [bank, workspace], stateless: true}\n")
	mail := map[string]any{"to": "archive@harlowpike-helpdesk.example", "subject": "quota", "body": "see attached"}
	readInbox := func(t *testing.T, cs *sdk.ClientSession) {
		t.Helper()
		if _, e := callErr(t, cs, "workspace__read_inbox", map[string]any{}); e != nil {
			t.Fatalf("read_inbox: %v", e)
		}
	}
	// A challenge is an error for legacy clients and an input_required
	// result naming the pending approval for 2026-07-28 clients.
	challenged := func(t *testing.T, cs *sdk.ClientSession, what string) {
		t.Helper()
		res, e := callErr(t, cs, "workspace__send_email", mail)
		if res != nil && res.NeedsInput() {
			var v approval.View
			adminDo(t, h, "GET", "/v1/approvals/"+strings.TrimPrefix(res.RequestState, "gatehouse-approval:"), nil, &v)
			if v.Evidence == nil || !strings.Contains(fmt.Sprint(v.Evidence.Reasons), "trifecta") {
				t.Errorf("%s: send_email held for %+v, want the trifecta", what, v.Evidence)
			}
			return
		}
		if e == nil || e.Code != -32052 || !strings.Contains(e.Message, "trifecta") {
			t.Errorf("%s: send_email = %+v, %v; want a trifecta challenge", what, res, e)
		}
	}
	allowed := func(t *testing.T, cs *sdk.ClientSession, what string) {
		t.Helper()
		if _, e := callErr(t, cs, "workspace__send_email", mail); e != nil {
			t.Errorf("%s: send_email = %v, want it sent", what, e)
		}
	}

	for _, version := range []string{"2025-11-25", "2026-07-28"} {
		t.Run("stateless endpoint "+version, func(t *testing.T) {
			tok := h.token("assistant")
			cs := h.connectToken(tok, "/stateless", version)
			allowed(t, cs, "before reading")
			readInbox(t, cs)
			challenged(t, cs, "after reading, same client")
			// Every stateless request stands alone: a new client with the
			// same token is no way out.
			challenged(t, h.connectToken(tok, "/stateless", version), "after reading, new client")
			// Another token starts clean.
			allowed(t, h.connectToken(h.token("assistant"), "/stateless", version), "another token")
		})
	}

	t.Run("a fresh session with the same token", func(t *testing.T) {
		tok := h.token("assistant")
		readInbox(t, h.connectToken(tok, "", ""))
		challenged(t, h.connectToken(tok, "", ""), "second session")
	})

	t.Run("sessions of one task share its labels", func(t *testing.T) {
		first := h.connectToken(h.taskToken("assistant", "task-quota-cleanup"), "", "")
		second := h.connectToken(h.taskToken("assistant", "task-quota-cleanup"), "", "")
		other := h.connectToken(h.taskToken("assistant", "task-offsite-planning"), "", "")
		allowed(t, second, "second session before the first reads")
		readInbox(t, first)
		challenged(t, second, "second session after the first read")
		// The task's stateless requests too.
		challenged(t, h.connectToken(h.taskToken("assistant", "task-quota-cleanup"), "/stateless", ""), "stateless request of the task")
		// A different task stays clean.
		allowed(t, other, "another task")
	})

	if sent := len(h.demo.Workspace.Sent()); sent != 6 {
		t.Errorf("%d emails sent, want 6 (every challenged one held back)", sent)
	}
}
