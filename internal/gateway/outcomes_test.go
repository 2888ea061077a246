package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// labServer is an upstream for outcome tests: wait blocks until its call
// is cancelled, boom fails at the HTTP level (an upstream error), and the
// resource lab://handbook carries an indirect prompt injection.
func labServer(t *testing.T) extraServer {
	t.Helper()
	srv := sdk.NewServer(&sdk.Implementation{Name: "lab", Version: "1"}, nil)
	quiet := &sdk.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(bool)} // no risk label, no challenge
	sdk.AddTool(srv, &sdk.Tool{Name: "wait", Description: "waits until cancelled", Annotations: quiet}, func(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, struct{}, error) {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Second):
		}
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "done"}}}, struct{}{}, nil
	})
	sdk.AddTool(srv, &sdk.Tool{Name: "boom", Description: "fails", Annotations: quiet}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, struct{}, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "unreachable"}}}, struct{}{}, nil
	})
	srv.AddResource(&sdk.Resource{Name: "handbook", URI: "lab://handbook", MIMEType: "text/plain"},
		func(_ context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
			return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain",
				Text: "Expense handbook, section 4.\n\n" + injection}}}, nil
		})
	inner := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)
	ln := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"name":"boom"`)) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		inner.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return extraServer{id: "lab", url: "http://" + ln.Addr().String() + "/mcp"}
}

// otlpSink is a loopback OTLP/HTTP collector that accepts every export:
// with tracing on, every request has a trace id.
func otlpSink(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// labConfig is the demo's execution layer, the lab server permitted to the
// assistant, governance that answers challenged calls at once (approval
// pending), and tracing to a loopback collector.
func labConfig(t *testing.T) string {
	t.Helper()
	dir, extra := execConfig(t)
	if err := os.WriteFile(filepath.Join(dir, "lab.cedar"), []byte(`@id("assistant-lab") permit (principal == Gatehouse::Agent::"assistant", action, resource in Gatehouse::Server::"lab");`), 0o600); err != nil {
		t.Fatal(err)
	}
	return extra + fmt.Sprintf(`governance:
  hold_timeout: 0s
  sweep_interval: 200ms
  approvers:
    alice: {groups: [finance-approvers]}
telemetry: {otlp_endpoint: %q}
`, otlpSink(t))
}

// taskSession connects as the assistant with a task token on behalf of a
// user, obtained (as the token records) with a Kubernetes workload
// identity.
func taskSession(t *testing.T, h *harness) *sdk.ClientSession {
	t.Helper()
	m := h.g.Minter()
	tok, _, err := m.MintClaims(identity.Claims{Claims: jwt.Claims{Subject: "assistant", Audience: jwt.Audience{m.Audience}}, Txn: "task-42",
		Request: &identity.ReqContext{User: "https://idp.example#dana", Workload: &identity.Source{TrustSource: "k8s", Kind: "kubernetes", Subject: "system:serviceaccount:ai:assistant"}}},
		5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-test", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: h.url, HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// field reads a nested member of an event ("unmapped.verdict.outcome").
func field(ev map[string]any, path string) any {
	var v any = ev
	for _, k := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// TestAuditEventPerOutcome makes one call for each way the pipeline can end
// and checks that the audit log holds its event with the right outcome and
// status, and that every event carries the agent, its instance, the user,
// the task, a correlation id and a trace id, and its verdict's reasons per
// layer with policy ids and versions.
func TestAuditEventPerOutcome(t *testing.T) {
	h := start(t, labConfig(t), labServer(t))
	cs := taskSession(t, h)
	ctx := context.Background()

	// list
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// allow: a side-effecting call, with its write-ahead intent
	if res, e := callErr(t, cs, "bank__send_money", payment(40.55)); e != nil || res.IsError {
		t.Fatalf("allowed call: %+v %v", res, e)
	}
	// block: policy share-only-notes
	if _, e := callErr(t, cs, "workspace__share_file", map[string]any{"path": "/hr/salaries.csv", "with": "x@example.com"}); e == nil {
		t.Fatal("share_file outside /notes was allowed")
	}
	// challenge: policy payments-over-1000; approval pending (no hold)
	if _, e := callErr(t, cs, "bank__send_money", payment(1500)); e == nil || e.Code != -32052 {
		t.Fatalf("challenged call: %v", e)
	}
	// upstream error
	if _, e := callErr(t, cs, "lab__boom", map[string]any{}); e == nil || !strings.Contains(e.Message, "upstream server lab") {
		t.Fatalf("failing upstream: %v", e)
	}
	// cancelled: the client gives up on a slow call
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := cs.CallTool(cctx, &sdk.CallToolParams{Name: "lab__wait", Arguments: map[string]any{}})
	cancel()
	if err == nil {
		t.Fatal("the cancelled call returned a result")
	}

	outcome := func(ev map[string]any) string { s, _ := field(ev, "unmapped.verdict.outcome").(string); return s }
	find := func(what string, f audit.Filter, match func(ev map[string]any) bool) map[string]any {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			for _, ev := range h.events(f, 1) {
				if match(ev) {
					return ev
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no event in %v", what, h.events(f, 0))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	phase := func(p string) func(map[string]any) bool {
		return func(ev map[string]any) bool { return field(ev, "unmapped.phase") == p }
	}
	events := map[string]map[string]any{
		"list": find("list", audit.Filter{Agent: "assistant", Class: audit.ClassAPIActivity}, func(ev map[string]any) bool {
			return field(ev, "unmapped.phase") == "list" && field(ev, "api.operation") == "tools/list"
		}),
		"allow intent":  find("allow intent", audit.Filter{Agent: "assistant", Tool: "send_money", Outcome: "allow"}, phase("intent")),
		"allow outcome": find("allow outcome", audit.Filter{Agent: "assistant", Tool: "send_money", Outcome: "allow"}, phase("outcome")),
		"block":         find("block", audit.Filter{Agent: "assistant", Tool: "share_file", Outcome: "block"}, phase("decision")),
		"challenge":     find("challenge", audit.Filter{Agent: "assistant", Tool: "send_money", Outcome: "challenge"}, phase("decision")),
		"error intent":  find("error intent", audit.Filter{Agent: "assistant", Tool: "boom"}, phase("intent")),
		"error outcome": find("error outcome", audit.Filter{Agent: "assistant", Tool: "boom"}, phase("outcome")),
		"cancelled": find("cancelled", audit.Filter{Agent: "assistant", Tool: "wait"}, func(ev map[string]any) bool {
			return field(ev, "unmapped.phase") == "outcome" && strings.HasPrefix(fmt.Sprint(field(ev, "api.response.error")), "cancelled")
		}),
	}

	// Outcome and status of each.
	for name, want := range map[string]struct {
		verdict, status, detail string
	}{
		"list":          {"allow", "Success", ""},
		"allow intent":  {"allow", "Success", ""},
		"allow outcome": {"allow", "Success", ""},
		"block":         {"block", "Failure", "policy.forbid"},
		"challenge":     {"challenge", "Failure", "policy.challenge"},
		"error intent":  {"allow", "Success", ""},
		"error outcome": {"allow", "Failure", "upstream_error"},
		"cancelled":     {"allow", "Failure", "upstream_error"},
	} {
		ev := events[name]
		if outcome(ev) != want.verdict || ev["status"] != want.status || fmt.Sprint(ev["status_detail"]) != fmt.Sprint(or(want.detail, "<nil>")) {
			t.Errorf("%s: verdict %q, status %v, detail %v; want %q, %q, %q", name, outcome(ev), ev["status"], ev["status_detail"], want.verdict, want.status, want.detail)
		}
	}
	if e := fmt.Sprint(field(events["error outcome"], "api.response.error")); !strings.HasPrefix(e, "upstream_error") {
		t.Errorf("error outcome: api.response.error %q", e)
	}
	// Outcomes link to their intents.
	for _, pair := range [][2]string{{"allow intent", "allow outcome"}, {"error intent", "error outcome"}} {
		in, out := events[pair[0]], events[pair[1]]
		if field(in, "metadata.correlation_uid") != field(out, "metadata.correlation_uid") {
			t.Errorf("%s and %s have different correlation ids", pair[0], pair[1])
		}
	}
	if field(events["allow outcome"], "unmapped.intent_index") == nil {
		t.Error("the write-ahead intent's outcome does not carry intent_index")
	}

	// Every event carries who, for whom, in which task, and how to join it
	// with the others and with traces.
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	instance := ""
	for name, ev := range events {
		for path, want := range map[string]string{
			"unmapped.agent": "assistant", "actor.app_name": "assistant", "unmapped.on_behalf_of": "https://idp.example#dana",
			"actor.user.uid": "https://idp.example#dana", "unmapped.task": "task-42", "unmapped.source": "k8s:system:serviceaccount:ai:assistant",
		} {
			if got := fmt.Sprint(field(ev, path)); got != want {
				t.Errorf("%s: %s = %q, want %q", name, path, got, want)
			}
		}
		inst := fmt.Sprint(field(ev, "unmapped.instance"))
		if !strings.HasPrefix(inst, "session:") || field(ev, "actor.app_uid") != inst {
			t.Errorf("%s: instance %q, actor.app_uid %v", name, inst, field(ev, "actor.app_uid"))
		}
		if instance != "" && inst != instance {
			t.Errorf("%s: instance %q, other events of the session %q", name, inst, instance)
		}
		instance = inst
		if !hex32.MatchString(fmt.Sprint(field(ev, "metadata.correlation_uid"))) {
			t.Errorf("%s: correlation id %v", name, field(ev, "metadata.correlation_uid"))
		}
		if !hex32.MatchString(fmt.Sprint(field(ev, "unmapped.trace_id"))) {
			t.Errorf("%s: trace id %v", name, field(ev, "unmapped.trace_id"))
		}
	}
	// An identity event (a refused authentication) has its own
	// correlation id and the trace id of the authentication's span.
	if resp, _ := h.rawPost(t, "POST", map[string]string{"Authorization": "Bearer not-a-token"}, initBody); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: HTTP %d", resp.StatusCode)
	}
	auth := find("refused authentication", audit.Filter{Class: audit.ClassAuthentication}, func(ev map[string]any) bool { return ev["status"] == "Failure" })
	if !hex32.MatchString(fmt.Sprint(field(auth, "metadata.correlation_uid"))) || !hex32.MatchString(fmt.Sprint(field(auth, "unmapped.trace_id"))) {
		t.Errorf("authentication event: correlation %v, trace %v", field(auth, "metadata.correlation_uid"), field(auth, "unmapped.trace_id"))
	}

	// Per-layer reasons with policy ids and versions.
	for name, policy := range map[string]string{"block": "share-only-notes", "challenge": "payments-over-1000", "allow intent": "assistant-bank"} {
		ev := events[name]
		reasons, _ := field(ev, "unmapped.verdict.reasons").([]any)
		policies, _ := field(ev, "unmapped.policies").([]any)
		layered, versioned := false, false
		for _, r := range reasons {
			r := r.(map[string]any)
			layered = layered || r["layer"] == "execution" && strings.Contains(fmt.Sprint(r["policies"]), policy)
		}
		for _, p := range policies {
			p := p.(map[string]any)
			versioned = versioned || p["id"] == policy && p["version"] != nil && p["version"] != ""
		}
		if !layered || !versioned {
			t.Errorf("%s: reasons %v, policies %v; want an execution reason naming %s and its version", name, reasons, policies, policy)
		}
	}

	// Every event recorded, of every outcome, is a valid OCSF event of its
	// class (the refused authentication included).
	sch := ocsfSchema(t)
	for _, ev := range h.events(audit.Filter{}, 1) {
		if err := sch.Validate(ev); err != nil {
			t.Errorf("event does not validate against OCSF 1.3.0: %v\n%v", err, ev)
		}
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
