package demo

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gatehouse/gatehouse/policies"
)

//go:embed policies/*.cedar
var demoPolicies embed.FS

// WritePolicies writes the demo's policy directory: the default library
// and the demo's own policies. Files of an earlier run are replaced.
func WritePolicies(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating policy directory: %w", err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.cedar"))
	for _, f := range old {
		os.Remove(f)
	}
	for _, src := range []struct {
		fsys fs.FS
		glob string
	}{{policies.Library, "*.cedar"}, {demoPolicies, "policies/*.cedar"}} {
		names, err := fs.Glob(src.fsys, src.glob)
		if err != nil {
			return err
		}
		for _, n := range names {
			b, err := fs.ReadFile(src.fsys, n)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, strings.TrimPrefix(n, "policies/")), b, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}
