package gateway

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/internal/pipeline"
)

// Which strings of an MCP message the semantic layer screens.
//
// Every string is screened except protocol fields, and those are known by
// their position in the MCP structure, never by a member name alone: a
// tool's arguments and structured content are the tool's own data, where
// "type", "data" or "uri" are ordinary names whose values an attacker
// chooses. Skipped are a result's _meta, resultType and cacheScope; a
// content block's type, mimeType, annotations and _meta, the base64 data
// of an image or audio block, and the icons of a resource link; the
// mimeType, base64 blob and _meta of resource contents; a message's role
// and _meta; a sampling request's includeContext and _meta; an elicitation
// request's mode and _meta. In data positions (arguments, structured
// content, tool_use input, members the protocol does not define) object
// keys are screened too.

// textRole says what a screened string is.
type textRole uint8

const (
	// dataText is a value of arguments or structured content, a name, a
	// title, a description or a URI.
	dataText textRole = iota
	// contentText is the text of a content block or of resource contents:
	// the prose a model reads, which spotlighting marks.
	contentText
)

// textShape is the MCP structure of a message.
type textShape uint8

const (
	shapeArguments textShape = iota // tool, prompt or completion arguments
	shapeToolResult
	shapeResourceResult
	shapePromptResult
	shapeSampling
	shapeElicitation
)

// inputShape is the shape of what a request of action carries in
// pipeline.Request.Arguments.
func inputShape(action string) textShape {
	switch action {
	case pipeline.ActionSample:
		return shapeSampling
	case pipeline.ActionElicit:
		return shapeElicitation
	}
	return shapeArguments
}

// outputShape is the shape of the result of action.
func outputShape(action string) textShape {
	switch action {
	case pipeline.ActionReadResource:
		return shapeResourceResult
	case pipeline.ActionGetPrompt:
		return shapePromptResult
	}
	return shapeToolResult
}

// textFunc is called with each string to screen and returns the string
// to keep in its place.
type textFunc func(s string, role textRole) string

// mcpDoc is a decoded MCP message whose strings can be screened and
// rewritten in place.
type mcpDoc struct {
	shape textShape
	v     any
}

// decodeMCP decodes raw, keeping numbers exact so that a rewritten
// document changes nothing but its strings.
func decodeMCP(shape textShape, raw json.RawMessage) (*mcpDoc, error) {
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return &mcpDoc{shape: shape, v: v}, nil
}

// texts returns the strings to screen, in a deterministic order (object
// members sorted by name), with their roles.
func (d *mcpDoc) texts() ([]string, []textRole) {
	var out []string
	var roles []textRole
	d.walk(func(s string, r textRole) string {
		out, roles = append(out, s), append(roles, r)
		return s
	})
	return out, roles
}

// walk calls f with every string to screen, in the order of texts, and
// puts back what f returns.
func (d *mcpDoc) walk(f textFunc) {
	w := walker{f: f}
	switch d.shape {
	case shapeToolResult:
		d.v = w.object(d.v, map[string]func(any) any{"content": w.blocks, "structuredContent": w.data}, "_meta", "resultType", "cacheScope")
	case shapeResourceResult:
		d.v = w.object(d.v, map[string]func(any) any{"contents": w.each(w.resourceContents)}, "_meta", "resultType", "cacheScope")
	case shapePromptResult:
		d.v = w.object(d.v, map[string]func(any) any{"messages": w.each(w.message)}, "_meta", "resultType", "cacheScope")
	case shapeSampling:
		d.v = w.object(d.v, map[string]func(any) any{"messages": w.each(w.message)}, "_meta", "includeContext")
	case shapeElicitation:
		d.v = w.object(d.v, nil, "_meta", "mode")
	default:
		d.v = w.data(d.v)
	}
}

// marshal encodes the (rewritten) document, without escaping HTML
// characters that the upstream did not escape.
func (d *mcpDoc) marshal() (json.RawMessage, error) {
	var b strings.Builder
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(d.v); err != nil {
		return nil, err
	}
	return json.RawMessage(strings.TrimSuffix(b.String(), "\n")), nil
}

type walker struct{ f textFunc }

// object walks a protocol object: members in known are walked by their
// function, members in skip are protocol fields, any other member is data.
// Member names are the protocol's and are not screened. A value that is
// not an object is data.
func (w walker) object(v any, known map[string]func(any) any, skip ...string) any {
	m, ok := v.(map[string]any)
	if !ok {
		return w.data(v)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch fn, isKnown := known[k]; {
		case slices.Contains(skip, k):
		case isKnown:
			m[k] = fn(m[k])
		default:
			m[k] = w.data(m[k])
		}
	}
	return m
}

// each walks every element of an array with fn (a single value as one
// element).
func (w walker) each(fn func(any) any) func(any) any {
	return func(v any) any {
		a, ok := v.([]any)
		if !ok {
			return fn(v)
		}
		for i := range a {
			a[i] = fn(a[i])
		}
		return a
	}
}

// blocks walks a content block or an array of them.
func (w walker) blocks(v any) any { return w.each(w.block)(v) }

// block walks one content block; its type says which members are binary.
func (w walker) block(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return w.data(v)
	}
	skip := []string{"_meta", "annotations", "mimeType"}
	t, isString := m["type"].(string)
	if isString {
		skip = append(skip, "type")
	}
	known := map[string]func(any) any{}
	switch t {
	case "text":
		known["text"] = w.str(contentText)
	case "image", "audio":
		skip = append(skip, "data") // base64
	case "resource":
		known["resource"] = w.resourceContents
	case "resource_link":
		skip = append(skip, "icons") // for the client's interface
	case "tool_result":
		known["content"] = w.blocks
	}
	return w.object(m, known, skip...)
}

// resourceContents walks text or blob resource contents.
func (w walker) resourceContents(v any) any {
	return w.object(v, map[string]func(any) any{"text": w.str(contentText)}, "_meta", "mimeType", "blob")
}

// message walks a prompt or sampling message.
func (w walker) message(v any) any {
	skip := []string{"_meta"}
	if m, ok := v.(map[string]any); ok {
		if _, ok := m["role"].(string); ok {
			skip = append(skip, "role")
		}
	}
	return w.object(v, map[string]func(any) any{"content": w.blocks}, skip...)
}

// str walks a member that should be a string of the given role.
func (w walker) str(role textRole) func(any) any {
	return func(v any) any {
		if s, ok := v.(string); ok {
			if s == "" {
				return s
			}
			return w.f(s, role)
		}
		return w.data(v)
	}
}

// data walks a value that is data throughout: every string and every
// object key is screened.
func (w walker) data(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			val := w.data(x[k])
			nk := k
			if k != "" {
				nk = w.f(k, dataText)
			}
			if nk != k {
				delete(x, k)
				for _, clash := x[nk]; clash; _, clash = x[nk] {
					nk += "_"
				}
			}
			x[nk] = val
		}
		return x
	case []any:
		for i := range x {
			x[i] = w.data(x[i])
		}
		return x
	case string:
		if x == "" {
			return x
		}
		return w.f(x, dataText)
	}
	return v
}
