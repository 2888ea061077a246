package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// askerPolicies let the assistant call the asker's tools and let the asker
// sample the assistant's model, but not elicit from its user.
const askerPolicies = `
@id("asker-tools")
permit (principal == Gatehouse::Agent::"assistant", action == Gatehouse::Action::"call_tool", resource in Gatehouse::Server::"asker");

@id("asker-may-sample")
permit (principal == Gatehouse::Agent::"assistant", action == Gatehouse::Action::"sample", resource == Gatehouse::Server::"asker");
`

// TestServerRequestsUnderPolicy: sampling/createMessage and
// elicitation/create, which a server sends the agent during a tool call,
// are the sample and elicit actions of policy: one the policy permits
// reaches the client, one it does not is refused before the client sees
// it, with "denied by policy" and a record naming the outcome.
func TestServerRequestsUnderPolicy(t *testing.T) {
	srv := sdk.NewServer(&sdk.Implementation{Name: "asker", Version: "1"}, nil)
	quiet := &sdk.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(bool)} // no risk label, no challenge
	sdk.AddTool(srv, &sdk.Tool{Name: "sample", Description: "asks the client's model", Annotations: quiet},
		func(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, map[string]string, error) {
			msg, err := req.Session.CreateMessage(ctx, &sdk.CreateMessageParams{MaxTokens: 10,
				Messages: []*sdk.SamplingMessage{{Role: "user", Content: &sdk.TextContent{Text: "hi"}}}})
			if err != nil {
				return nil, nil, err
			}
			return nil, map[string]string{"model": msg.Model}, nil
		})
	sdk.AddTool(srv, &sdk.Tool{Name: "elicit", Description: "asks the client's user", Annotations: quiet},
		func(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, map[string]string, error) {
			el, err := req.Session.Elicit(ctx, &sdk.ElicitParams{Message: "name?", RequestedSchema: json.RawMessage(`{"type":"object","properties":{"name":{"type":"string"}}}`)})
			if err != nil {
				return nil, nil, err
			}
			name, _ := el.Content["name"].(string)
			return nil, map[string]string{"name": name}, nil
		})
	ln := listen(t)
	hs := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)}
	go hs.Serve(ln)
	defer hs.Close()

	dir, extra := execConfig(t)
	writePolicy(t, dir, "asker.cedar", askerPolicies)
	h := start(t, extra, extraServer{id: "asker", url: "http://" + ln.Addr().String() + "/mcp"})
	var sampled, elicited atomic.Int32
	cs := h.connect("assistant", &sdk.ClientOptions{
		CreateMessageHandler: func(context.Context, *sdk.CreateMessageRequest) (*sdk.CreateMessageResult, error) {
			sampled.Add(1)
			return &sdk.CreateMessageResult{Model: "test-model", Role: "assistant", Content: &sdk.TextContent{Text: "hello"}}, nil
		},
		ElicitationHandler: func(context.Context, *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
			elicited.Add(1)
			return &sdk.ElicitResult{Action: "accept", Content: map[string]any{"name": "Dana"}}, nil
		},
	}, "")
	ctx := context.Background()

	// Permitted: the client's model answers.
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "asker__sample"})
	if err != nil || res.IsError {
		t.Fatalf("sample: %+v, %v", res, err)
	}
	if sc, _ := res.StructuredContent.(map[string]any); sc["model"] != "test-model" || sampled.Load() != 1 {
		t.Errorf("sample: result %v, client asked %d times", res.StructuredContent, sampled.Load())
	}

	// Not permitted: the server is told "denied by policy" and the client
	// is never asked.
	res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "asker__elicit"})
	if err == nil && !res.IsError {
		t.Fatalf("elicit went through: %+v", res)
	}
	var text string
	if err != nil {
		text = err.Error()
	} else {
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				text += tc.Text
			}
		}
	}
	if !strings.Contains(text, "denied by policy") {
		t.Errorf("elicit refusal: %q", text)
	}
	if elicited.Load() != 0 {
		t.Errorf("the client was asked to elicit %d times", elicited.Load())
	}
	if evs := h.events(audit.Filter{Agent: "assistant", Tool: "elicitation/create", Outcome: "block"}, 1); len(evs) == 0 {
		t.Error("the refused elicitation is not on record")
	}
}
