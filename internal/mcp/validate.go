package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Argument validation: every tools/call's arguments are validated against
// the tool's input schema before any policy runs. Schemas follow JSON
// Schema 2020-12 unless their $schema names another draft (draft-07 is
// common). External references are never fetched or read: a tool
// definition comes from an upstream server and must not make the gateway
// load URLs or local files.

// noLoader refuses every external $ref.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("external schema reference %q is not allowed", url)
}

// argSchema is a tool's compiled input schema.
type argSchema struct {
	once   sync.Once
	schema *jsonschema.Schema
	err    error
}

func (t *toolInfo) compiled() (*jsonschema.Schema, error) {
	t.schema.once.Do(func() {
		raw := t.InputSchema
		if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
			raw = json.RawMessage(`{"type":"object"}`)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.schema.err = fmt.Errorf("the tool's input schema is not valid JSON: %w", err)
			return
		}
		c := jsonschema.NewCompiler()
		c.UseLoader(noLoader{})
		c.DefaultDraft(jsonschema.Draft2020)
		const loc = "urn:gatehouse:tool-input-schema"
		if err := c.AddResource(loc, doc); err != nil {
			t.schema.err = fmt.Errorf("the tool's input schema is invalid: %w", err)
			return
		}
		t.schema.schema, t.schema.err = c.Compile(loc)
		if t.schema.err != nil {
			t.schema.err = fmt.Errorf("the tool's input schema is invalid: %w", t.schema.err)
		}
	})
	return t.schema.schema, t.schema.err
}

// errSchema marks a tool whose own schema is unusable (the gateway cannot
// validate its arguments, so it refuses the call).
var errSchema = errors.New("invalid tool schema")

// validateArgs checks a call's arguments against the tool's input schema.
// A missing arguments member is validated as {}.
func (t *toolInfo) validateArgs(args json.RawMessage) error {
	sch, err := t.compiled()
	if err != nil {
		return fmt.Errorf("%w: %w", errSchema, err)
	}
	if len(bytes.TrimSpace(args)) == 0 || string(args) == "null" {
		args = json.RawMessage(`{}`)
	}
	if args[0] != '{' {
		return errors.New("arguments must be a JSON object")
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(args))
	if err != nil {
		return fmt.Errorf("arguments are not valid JSON: %w", err)
	}
	if err := sch.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return errors.New(validationMessage(ve))
		}
		return err
	}
	return nil
}

// validationMessage flattens a validation error into one line naming each
// failing location.
func validationMessage(ve *jsonschema.ValidationError) string {
	out := ve.BasicOutput()
	var parts []string
	for _, e := range out.Errors {
		if e.Error == nil {
			continue
		}
		loc := e.InstanceLocation
		if loc == "" {
			loc = "/"
		}
		parts = append(parts, loc+": "+e.Error.String())
		if len(parts) == 5 {
			break
		}
	}
	if len(parts) == 0 {
		return strings.ReplaceAll(ve.Error(), "\n", "; ")
	}
	return strings.Join(parts, "; ")
}
