package gateway

import (
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/config"
)

// TestValidateSemantic: serve --check reports the semantic settings the
// gateway would refuse at start.
func TestValidateSemantic(t *testing.T) {
	cfg, err := config.Parse([]byte(`
servers:
  - {id: bank, url: "http://127.0.0.1:1/mcp"}
semantic:
  detectors: {nonsense: true}
  secrets: {actions: {tool_output: bogus}}
  remotes: [{type: nope}]
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(cfg)
	if err == nil {
		t.Fatal("Validate accepted invalid semantic settings")
	}
	for _, want := range []string{`unknown detector "nonsense"`, `unknown action "bogus"`, `"nope" is not azure_prompt_shields`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not mention %s", err, want)
		}
	}
	cfg.Semantic.Disabled = true
	if err := Validate(cfg); err != nil {
		t.Errorf("with semantic.disabled: %v", err)
	}
}
