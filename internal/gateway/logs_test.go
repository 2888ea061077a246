package gateway_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestLogsCarryNoTokensOrPayloads runs the gateway with its operational
// log at debug level and makes requests that carry a token, payment
// details, a secret in an argument and a forged credential — allowed,
// blocked, challenged and refused — and checks that none of them reaches
// the log, while the log does record what an operator needs (here the
// approval request, with its correlation id).
func TestLogsCarryNoTokensOrPayloads(t *testing.T) {
	// The harness logs to os.Stderr at debug level when GATEHOUSE_TEST_LOG
	// is set; capture it.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&buf, r); close(copied) }()
	t.Setenv("GATEHOUSE_TEST_LOG", "1")
	stderr := os.Stderr
	os.Stderr = w
	h := start(t, labConfig(t), labServer(t))
	os.Stderr = stderr

	token := h.token("assistant")
	cs := h.connect("assistant", nil, "")
	const (
		iban   = "DE89 3704 0044 0532 0130 00"
		secret = "sk-live-0123456789abcdefSECRET"
		forged = "forged-credential-0123456789abcdef"
	)
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"bank__send_money", map[string]any{"from_account": "acc-checking", "to_iban": iban, "amount": 12.5}},   // allowed, side effect
		{"bank__send_money", map[string]any{"from_account": "acc-checking", "to_iban": iban, "amount": 1500.0}}, // challenged
		{"workspace__share_file", map[string]any{"path": "/hr/" + secret, "with": "x@example.com"}},             // blocked
		{"workspace__search_files", map[string]any{"query": secret}},                                            // allowed, read
		{"lab__boom", map[string]any{"note": secret}},                                                           // upstream error
	}
	for _, c := range calls {
		_, _ = cs.CallTool(context.Background(), &sdk.CallToolParams{Name: c.tool, Arguments: c.args})
	}
	req, _ := http.NewRequest("POST", h.url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
	req.Header.Set("Authorization", "Bearer "+forged)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	cs.Close()
	h.stop()
	w.Close()
	<-copied

	logs := buf.String()
	// The log is not empty: the held payment's approval request is logged,
	// structured, with its correlation id.
	if !strings.Contains(logs, `msg="approval requested"`) || !strings.Contains(logs, "correlation_id=") {
		t.Fatalf("the approval request is not in the log:\n%s", logs)
	}
	for what, s := range map[string]string{
		"the agent's token":           token,
		"the token's signature":       token[strings.LastIndex(token, ".")+1:],
		"the IBAN":                    iban,
		"the secret argument":         secret,
		"the forged credential":       forged,
		"part of the secret argument": "0123456789abcdef",
	} {
		if strings.Contains(logs, s) {
			i := strings.Index(logs, s)
			line := logs[strings.LastIndex(logs[:i], "\n")+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("%s is in the log:\n%s", what, line)
		}
	}
}
