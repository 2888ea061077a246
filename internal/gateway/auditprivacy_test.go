package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/audit"
)

// TestAuditPrivacyModes runs the gateway with audit.privacy metadata (the
// default) and full, makes a payment and a search whose argument carries
// an AWS key, and reads the store's files byte by byte: in neither mode is
// the key stored in clear; in metadata mode the payment's details are not
// stored either (the records hold salted hashes), in full mode they are.
func TestAuditPrivacyModes(t *testing.T) {
	const (
		iban   = "DE89 3704 0044 0532 0130 00"
		awsKey = "AKIA" + "Z7QW3ERT5YUI8OPL"
	)
	for _, mode := range []string{"", "metadata", "full"} {
		t.Run("privacy="+mode, func(t *testing.T) {
			yaml := ""
			if mode != "" {
				yaml = "audit: {privacy: " + mode + "}\n"
			}
			h := start(t, yaml)
			cs := h.connect("assistant", nil, "")
			ctx := context.Background()
			if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "bank__send_money", Arguments: map[string]any{
				"from_account": "acc-checking", "to_iban": iban, "amount": 12.5}}); err != nil {
				t.Fatal(err)
			}
			_, _ = cs.CallTool(ctx, &sdk.CallToolParams{Name: "workspace__search_files", Arguments: map[string]any{"query": "aws " + awsKey}})
			evs := h.events(audit.Filter{Agent: "assistant", Tool: "send_money"}, 2)
			searches := h.events(audit.Filter{Agent: "assistant", Tool: "search_files"}, 1)
			if len(searches) == 0 {
				t.Fatal("the search is not on record")
			}
			// In full mode the search's arguments are kept, the key redacted.
			if args := fmt.Sprint(field(searches[0], "unmapped.arguments")); (mode == "full") != strings.Contains(args, "[REDACTED") {
				t.Errorf("search record arguments: %s", args)
			}
			h.stop()

			var stored []byte
			files, _ := filepath.Glob(filepath.Join(h.dataDir, "gatehouse.db*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				stored = append(stored, b...)
			}
			if len(files) == 0 || len(evs) < 2 {
				t.Fatalf("store files %v, %d payment records", files, len(evs))
			}
			if bytes.Contains(stored, []byte(awsKey)) {
				t.Error("the AWS key is stored in clear")
			}
			full := mode == "full"
			if got := bytes.Contains(stored, []byte(iban)); got != full {
				t.Errorf("payment details stored: %v, want %v", got, full)
			}
			for _, ev := range evs {
				if unmapped(ev, "phase") != "intent" {
					continue
				}
				hash, _ := unmapped(ev, "arguments_hash").(string)
				_, hasArgs := ev["unmapped"].(map[string]any)["arguments"]
				if !strings.HasPrefix(hash, "hmac-sha256:") || hasArgs != full {
					t.Errorf("intent record: arguments_hash %q, arguments present %v (want %v)", hash, hasArgs, full)
				}
			}
		})
	}
}
