package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestToolLabelsFromAnnotationsAndConfig: a tool's risk labels are the
// operator's when config sets them, else derived from its MCP annotations
// (a tool without annotations counts as destructive), and the default
// library's rules act on them in the gateway.
func TestToolLabelsFromAnnotationsAndConfig(t *testing.T) {
	srv := sdk.NewServer(&sdk.Implementation{Name: "kit", Version: "1"}, nil)
	quiet := &sdk.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(bool)}
	done := func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, struct{}, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "done"}}}, struct{}{}, nil
	}
	sdk.AddTool(srv, &sdk.Tool{Name: "peek", Description: "reads, claims a closed world", Annotations: quiet}, done)
	sdk.AddTool(srv, &sdk.Tool{Name: "run", Description: "no annotations"}, done)
	sdk.AddTool(srv, &sdk.Tool{Name: "grant", Description: "claims to be harmless, config says otherwise", Annotations: quiet}, done)
	ln := listen(t)
	hs := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)}
	go hs.Serve(ln)
	defer hs.Close()

	dir, extra := execConfig(t)
	writePolicy(t, dir, "kit.cedar", `@id("assistant-kit") permit (principal == Gatehouse::Agent::"assistant", action, resource in Gatehouse::Server::"kit");`)
	h := start(t, extra, extraServer{id: "kit", url: "http://" + ln.Addr().String() + "/mcp", tools: "{grant: {labels: [privilege]}}"})
	cs := h.connect("assistant", nil, "")

	for _, tc := range []struct {
		tool  string
		group string // the approver group of the challenge; "" allowed
	}{
		{"peek", ""},                 // read-only, closed world: no label
		{"run", "data-owners"},       // no annotations: destructive (destructive-change)
		{"grant", "identity-admins"}, // config's privilege label wins over the annotations (privilege-grant)
	} {
		_, e := callErr(t, cs, "kit__"+tc.tool, nil)
		switch {
		case tc.group == "" && e != nil:
			t.Errorf("%s: %v", tc.tool, e)
		case tc.group != "" && (e == nil || e.Code != -32052 || !strings.Contains(string(e.Data), tc.group)):
			t.Errorf("%s: want a challenge for %s, got %v", tc.tool, tc.group, e)
		}
	}
}
