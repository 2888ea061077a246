package gateway

import (
	"bytes"
	"encoding/json"
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
	d := json.NewDecoder(bytes.NewReader(raw))
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
		d.v = w.object(d.v, toolResultMember)
	case shapeResourceResult:
		d.v = w.object(d.v, resourceResultMember)
	case shapePromptResult:
		d.v = w.object(d.v, promptResultMember)
	case shapeSampling:
		d.v = w.object(d.v, samplingMember)
	case shapeElicitation:
		d.v = w.object(d.v, elicitationMember)
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

// how says how a member of a protocol object is walked.
type how uint8

const (
	asData      how = iota // data throughout: every string and key
	asSkip                 // a protocol field
	asText                 // content text (a string)
	asBlocks               // a content block or an array of them
	asResource             // resource contents
	asResources            // an array of resource contents
	asMessages             // an array of prompt or sampling messages
)

// The members of each protocol object, by name; any other member is data.
// (typ is the object's "type" when it is a string, for content blocks.)
func toolResultMember(k, _ string) how {
	switch k {
	case "content":
		return asBlocks
	case "_meta", "resultType", "cacheScope":
		return asSkip
	}
	return asData // structuredContent, and members the protocol does not define
}

func resourceResultMember(k, _ string) how {
	switch k {
	case "contents":
		return asResources
	case "_meta", "resultType", "cacheScope":
		return asSkip
	}
	return asData
}

func promptResultMember(k, _ string) how {
	switch k {
	case "messages":
		return asMessages
	case "_meta", "resultType", "cacheScope":
		return asSkip
	}
	return asData
}

func samplingMember(k, _ string) how {
	switch k {
	case "messages":
		return asMessages
	case "_meta", "includeContext":
		return asSkip
	}
	return asData
}

func elicitationMember(k, _ string) how {
	if k == "_meta" || k == "mode" {
		return asSkip
	}
	return asData
}

func messageMember(k, _ string) how {
	switch k {
	case "content":
		return asBlocks
	case "_meta", "role":
		return asSkip
	}
	return asData
}

func resourceContentsMember(k, _ string) how {
	switch k {
	case "text":
		return asText
	case "_meta", "mimeType", "blob": // blob: base64
		return asSkip
	}
	return asData
}

// blockMember: a content block's type says which members are binary.
func blockMember(k, typ string) how {
	switch k {
	case "type":
		if typ != "" {
			return asSkip
		}
	case "_meta", "annotations", "mimeType":
		return asSkip
	case "text":
		if typ == "text" {
			return asText
		}
	case "data":
		if typ == "image" || typ == "audio" { // base64
			return asSkip
		}
	case "resource":
		if typ == "resource" {
			return asResource
		}
	case "icons":
		if typ == "resource_link" { // for the client's interface
			return asSkip
		}
	case "content":
		if typ == "tool_result" {
			return asBlocks
		}
	}
	return asData
}

type walker struct {
	f textFunc
	// keys holds one buffer of sorted member names per nesting depth.
	keys  [][]string
	depth int
}

// sortedKeys returns m's keys in order, in a buffer reused at this depth.
func (w *walker) sortedKeys(m map[string]any) []string {
	for len(w.keys) <= w.depth {
		w.keys = append(w.keys, nil)
	}
	ks := w.keys[w.depth][:0]
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	w.keys[w.depth] = ks
	return ks
}

// object walks a protocol object whose members member classifies; member
// names are the protocol's and are not screened. A value that is not an
// object is data.
func (w *walker) object(v any, member func(k, typ string) how) any {
	m, ok := v.(map[string]any)
	if !ok {
		return w.data(v)
	}
	typ, _ := m["type"].(string)
	ks := w.sortedKeys(m)
	w.depth++
	for _, k := range ks {
		if h := member(k, typ); h != asSkip {
			m[k] = w.as(h, m[k])
		}
	}
	w.depth--
	return m
}

func (w *walker) as(h how, v any) any {
	switch h {
	case asText:
		if s, ok := v.(string); ok {
			if s == "" {
				return s
			}
			return w.f(s, contentText)
		}
	case asBlocks:
		return w.each(v, blockMember)
	case asResource:
		return w.object(v, resourceContentsMember)
	case asResources:
		return w.each(v, resourceContentsMember)
	case asMessages:
		return w.each(v, messageMember)
	}
	return w.data(v)
}

// each walks every element of an array as an object of member (a single
// value as one element).
func (w *walker) each(v any, member func(k, typ string) how) any {
	a, ok := v.([]any)
	if !ok {
		return w.object(v, member)
	}
	for i := range a {
		a[i] = w.object(a[i], member)
	}
	return a
}

// data walks a value that is data throughout: every string and every
// object key is screened.
func (w *walker) data(v any) any {
	switch x := v.(type) {
	case map[string]any:
		ks := w.sortedKeys(x)
		w.depth++
		for _, k := range ks {
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
		w.depth--
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
