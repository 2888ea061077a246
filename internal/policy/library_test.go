package policy_test

import (
	"bytes"
	"testing"

	"github.com/gatehouse/gatehouse/internal/policy"
)

// TestLibrary runs the fixtures of the shipped policy library and templates.
func TestLibrary(t *testing.T) {
	for _, dir := range []string{"../../policies", "../../policies/templates"} {
		t.Run(dir, func(t *testing.T) {
			rep, err := policy.RunFixtures(dir)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			rep.Print(&buf, false)
			if rep.Failed > 0 || rep.Passed == 0 {
				t.Errorf("fixtures in %s:\n%s", dir, buf.String())
			}
		})
	}
}
