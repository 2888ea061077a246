package gateway

import (
	"os"
	"path/filepath"
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

// TestValidateTrustSources: serve --check builds the trust sources as a
// start does and reports every one that would stop it, without network.
func TestValidateTrustSources(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"jwks.json": "not json", "bundle.json": `{"keys": []}`} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse([]byte(`
servers:
  - {id: bank, url: "http://127.0.0.1:1/mcp"}
identity:
  trust_sources:
    - {name: ci, kind: oidc, issuer: "https://ci.example", audience: gatehouse, jwks_file: jwks.json}
    - {name: mesh, kind: spiffe, trust_domain: "not a domain", audience: gatehouse, bundle_file: bundle.json}
    - {name: spire, kind: spiffe, trust_domain: example.org, audience: gatehouse, workload_api: "unix:///nonexistent.sock"}
    - {name: cloud, kind: oidc, issuer: "https://login.example", audience: gatehouse}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(cfg)
	if err == nil {
		t.Fatal("Validate accepted an unreadable JWKS file and a bad trust domain")
	}
	for _, want := range []string{"identity.trust_sources[0] (ci)", "identity.trust_sources[1] (mesh)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not mention %s", err, want)
		}
	}
	for _, unwanted := range []string{"spire", "cloud"} {
		if strings.Contains(err.Error(), unwanted) {
			t.Errorf("Validate error %q mentions %s, which a check cannot judge offline or which is valid", err, unwanted)
		}
	}
}
