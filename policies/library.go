// Package policies embeds Gatehouse's default Cedar policy library (the
// *.cedar files of this directory) and its templates, so that the binary
// can install them (the demo does) without the source tree.
package policies

import "embed"

// Library holds the default library (*.cedar) and its fixtures.
//
//go:embed *.cedar *.test.yaml
var Library embed.FS

// Templates holds policies/templates: rules to copy and adapt.
//
//go:embed templates
var Templates embed.FS
