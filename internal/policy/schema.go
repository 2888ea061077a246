package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	sast "github.com/cedar-policy/cedar-go/x/exp/schema/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// Namespace is the Cedar namespace of every Gatehouse entity type and action.
const Namespace = "Gatehouse"

// Entity type names, fully qualified.
const (
	TypeAgent    types.EntityType = Namespace + "::Agent"
	TypeUser     types.EntityType = Namespace + "::User"
	TypeGroup    types.EntityType = Namespace + "::Group"
	TypeTask     types.EntityType = Namespace + "::Task"
	TypeServer   types.EntityType = Namespace + "::Server"
	TypeTool     types.EntityType = Namespace + "::Tool"
	TypeResource types.EntityType = Namespace + "::Resource"
	TypePrompt   types.EntityType = Namespace + "::Prompt"
	TypeAction   types.EntityType = Namespace + "::Action"
)

// maxArgDepth bounds how deep nested objects and arrays of a tool's input
// schema are typed; deeper values take the permissive form.
const maxArgDepth = 6

// ToolSchema describes one upstream tool for schema generation.
type ToolSchema struct {
	// Server is the upstream server's name; Name is the tool's name as the
	// server publishes it. The tool's entity id is Server + "__" + Name.
	Server string `json:"server" yaml:"server"`
	Name   string `json:"name" yaml:"name"`
	// InputSchema is the tool's JSON Schema for its arguments (an object).
	// Empty means no arguments are typed (context.arguments is {}).
	InputSchema json.RawMessage `json:"input_schema,omitempty" yaml:"-"`
	// Labels are the tool's risk labels from config. They are added to the
	// labels a Request carries for the tool.
	Labels []verdict.Label `json:"labels,omitempty" yaml:"labels"`
	// PathArgs names top-level string arguments that hold paths, in addition
	// to those recognised by name (see IsPathArgument).
	PathArgs []string `json:"path_args,omitempty" yaml:"path_args"`
}

// ToolID returns the entity id of a server's tool, prompt or resource:
// server + "__" + name, or name alone when server is empty.
func ToolID(server, name string) string {
	if server == "" {
		return name
	}
	return server + "__" + name
}

// Schema is the Cedar schema policies are validated against and the typing
// the engine uses to turn a request into a Cedar context. Build it with
// SchemaFor; a nil *Schema means no upstream tool is known, so no argument
// is typed. A Schema is immutable.
type Schema struct {
	totals []string
	tools  map[string]*toolType // by ToolID
	cedar  *sast.Schema         // base schema: call_tool arguments and paths are {}

	base     *validate.Validator
	variants map[string]*validate.Validator // per tool id

	cache *entityCache
}

type toolType struct {
	server, name string
	args         *argType // kind kRecord
	paths        []string // top-level path-like string arguments, sorted
	labels       []verdict.Label
}

// SchemaOptions are the parts of the schema that do not come from tools.
type SchemaOptions struct {
	// Totals names the running totals (context.totals.NAME, decimal) the
	// limits layer supplies. Zero value: none.
	Totals []string
}

// SchemaFor builds the schema for a set of upstream tools. It fails when two
// tools share an id or an input schema is not valid JSON.
func SchemaFor(tools []ToolSchema, opts SchemaOptions) (*Schema, error) {
	s := &Schema{tools: map[string]*toolType{}, totals: slices.Clone(opts.Totals), cache: &entityCache{}}
	sort.Strings(s.totals)
	for _, name := range s.totals {
		if name == "" {
			return nil, fmt.Errorf("empty total name")
		}
	}
	for _, t := range tools {
		id := ToolID(t.Server, t.Name)
		if t.Name == "" {
			return nil, fmt.Errorf("tool on server %q has no name", t.Server)
		}
		if _, dup := s.tools[id]; dup {
			return nil, fmt.Errorf("tool %s declared twice", id)
		}
		tt := &toolType{server: t.Server, name: t.Name, labels: slices.Clone(t.Labels)}
		args, err := parseInputSchema(t.InputSchema)
		if err != nil {
			return nil, fmt.Errorf("reading input schema of tool %s: %w", id, err)
		}
		tt.args = args
		for name, f := range args.fields {
			if f.t.kind == kString && (IsPathArgument(name) || slices.Contains(t.PathArgs, name)) {
				tt.paths = append(tt.paths, name)
			}
		}
		sort.Strings(tt.paths)
		s.tools[id] = tt
	}
	var err error
	s.cedar = s.build(nil)
	if s.base, err = newValidator(s.cedar); err != nil {
		return nil, fmt.Errorf("building base schema: %w", err)
	}
	s.variants = make(map[string]*validate.Validator, len(s.tools))
	for id, tt := range s.tools {
		if s.variants[id], err = newValidator(s.build(tt)); err != nil {
			return nil, fmt.Errorf("building schema for tool %s: %w", id, err)
		}
	}
	return s, nil
}

// emptySchema is the schema of a nil *Schema: no tools, no totals.
var emptySchema = func() *Schema {
	s, err := SchemaFor(nil, SchemaOptions{})
	if err != nil {
		panic(err)
	}
	return s
}()

func (s *Schema) orEmpty() *Schema {
	if s == nil {
		return emptySchema
	}
	return s
}

// Tools returns the ids of the tools the schema types, sorted.
func (s *Schema) Tools() []string {
	s = s.orEmpty()
	ids := make([]string, 0, len(s.tools))
	for id := range s.tools {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Cedar returns the schema in Cedar's human-readable schema format. With
// tool "" it is the base schema (call_tool's arguments and paths are
// empty records); with a tool id it is the schema policies that apply to
// that tool are checked against.
func (s *Schema) Cedar(tool string) ([]byte, error) {
	s = s.orEmpty()
	var tt *toolType
	if tool != "" {
		var ok bool
		if tt, ok = s.tools[tool]; !ok {
			return nil, fmt.Errorf("unknown tool %q", tool)
		}
	}
	return schema.NewSchemaFromAST(s.build(tt)).MarshalCedar()
}

func newValidator(a *sast.Schema) (*validate.Validator, error) {
	rs, err := resolved.Resolve(a)
	if err != nil {
		return nil, err
	}
	return validate.New(rs, validate.WithStrict()), nil
}

// build returns the Cedar schema with call_tool's context typed for tool tt
// (nil: arguments and paths are empty records).
func (s *Schema) build(tt *toolType) *sast.Schema {
	ref := func(name string) sast.EntityTypeRef { return sast.EntityTypeRef(name) }
	str, set := sast.String(), sast.Set(sast.String())
	labelled := func(extra sast.RecordType) sast.RecordType {
		extra["server"] = sast.Attribute{Type: str}
		extra["labels"] = sast.Attribute{Type: set}
		return extra
	}
	entities := sast.Entities{
		"Group": {},
		"Agent": {ParentTypes: []sast.EntityTypeRef{ref("Group")}, Shape: sast.RecordType{
			"owner":   {Type: str},
			"hosting": {Type: str},
			"groups":  {Type: set},
		}},
		"User": {ParentTypes: []sast.EntityTypeRef{ref("Group")}, Shape: sast.RecordType{
			"groups": {Type: set},
		}, Tags: set},
		"Task": {Shape: sast.RecordType{
			"purpose":    {Type: str},
			"not_before": {Type: sast.Datetime(), Optional: true},
			"not_after":  {Type: sast.Datetime(), Optional: true},
		}},
		"Server":   {Shape: sast.RecordType{"name": {Type: str}}},
		"Tool":     {ParentTypes: []sast.EntityTypeRef{ref("Server")}, Shape: labelled(sast.RecordType{"name": {Type: str}})},
		"Resource": {ParentTypes: []sast.EntityTypeRef{ref("Server")}, Shape: labelled(sast.RecordType{"uri": {Type: str}})},
		"Prompt":   {ParentTypes: []sast.EntityTypeRef{ref("Server")}, Shape: labelled(sast.RecordType{"name": {Type: str}})},
	}
	totals := sast.RecordType{}
	for _, name := range s.totals {
		totals[types.String(name)] = sast.Attribute{Type: sast.Decimal()}
	}
	listCtx := func() sast.RecordType {
		return sast.RecordType{
			"now":            {Type: sast.Datetime()},
			"session_labels": {Type: set},
			"user":           {Type: ref("User"), Optional: true},
			"task":           {Type: ref("Task"), Optional: true},
			"source": {Type: sast.RecordType{
				"trust_source": {Type: str},
				"kind":         {Type: str},
				"tenant":       {Type: str, Optional: true},
				"subject":      {Type: str},
			}, Optional: true},
			"totals": {Type: totals},
		}
	}
	callCtx := func() sast.RecordType {
		c := listCtx()
		c["findings"] = sast.Attribute{Type: sast.RecordType{
			"kinds":     {Type: set},
			"detectors": {Type: set},
			"max_score": {Type: sast.Decimal()},
		}}
		return c
	}
	tokenCtx := listCtx()
	tokenCtx["tools"] = sast.Attribute{Type: set}
	tokenCtx["lifetime"] = sast.Attribute{Type: sast.Long()}
	toolCtx := callCtx()
	args, paths := sast.RecordType{}, sast.RecordType{}
	if tt != nil {
		args = tt.args.cedarType().(sast.RecordType)
		for _, p := range tt.paths {
			paths[types.String(p)] = sast.Attribute{Type: str, Optional: !tt.args.fields[p].required}
		}
	}
	toolCtx["arguments"] = sast.Attribute{Type: args}
	toolCtx["paths"] = sast.Attribute{Type: paths}

	agent := []sast.EntityTypeRef{ref("Agent")}
	action := func(ctx sast.RecordType, resources ...string) sast.Action {
		rs := make([]sast.EntityTypeRef, len(resources))
		for i, r := range resources {
			rs[i] = ref(r)
		}
		return sast.Action{AppliesTo: &sast.AppliesTo{Principals: agent, Resources: rs, Context: ctx}}
	}
	actions := sast.Actions{
		types.String(ListTools):     action(listCtx(), "Tool"),
		types.String(ListResources): action(listCtx(), "Resource"),
		types.String(ListPrompts):   action(listCtx(), "Prompt"),
		types.String(CallTool):      action(toolCtx, "Tool"),
		types.String(ReadResource):  action(callCtx(), "Resource"),
		types.String(GetPrompt):     action(callCtx(), "Prompt"),
		types.String(Complete):      action(callCtx(), "Prompt", "Resource"),
		types.String(Sample):        action(callCtx(), "Server"),
		types.String(Elicit):        action(callCtx(), "Server"),
		types.String(RequestToken):  action(tokenCtx, "Server"),
	}
	return &sast.Schema{Namespaces: sast.Namespaces{Namespace: {Entities: entities, Actions: actions}}}
}

// argKind is the Cedar shape an argument takes.
type argKind uint8

const (
	kJSON    argKind = iota // permissive: String (strings as is, other values as compact JSON)
	kString                 // String
	kLong                   // Long (JSON Schema integer)
	kDecimal                // decimal (JSON Schema number)
	kBool                   // Bool
	kSet                    // Set<elem> (JSON Schema array)
	kRecord                 // record (JSON Schema object with properties)
	kSkip                   // an undeclared property: checked as JSON, not converted
)

type argType struct {
	kind   argKind
	elem   *argType             // kSet
	fields map[string]*argField // kRecord
}

type argField struct {
	name     string
	t        *argType
	required bool
}

func (a *argType) cedarType() sast.IsType {
	switch a.kind {
	case kString, kJSON:
		return sast.String()
	case kLong:
		return sast.Long()
	case kDecimal:
		return sast.Decimal()
	case kBool:
		return sast.Bool()
	case kSet:
		return sast.Set(a.elem.cedarType())
	}
	r := sast.RecordType{}
	for name, f := range a.fields {
		r[types.String(name)] = sast.Attribute{Type: f.t.cedarType(), Optional: !f.required}
	}
	return r
}

// jsonSchema is the subset of JSON Schema that typing reads.
type jsonSchema struct {
	Type       json.RawMessage        `json:"type"`
	Properties map[string]*jsonSchema `json:"properties"`
	Required   []string               `json:"required"`
	Items      *jsonSchema            `json:"items"`
	Enum       []json.RawMessage      `json:"enum"`
	Const      json.RawMessage        `json:"const"`
	AnyOf      []json.RawMessage      `json:"anyOf"`
	OneOf      []json.RawMessage      `json:"oneOf"`
	AllOf      []json.RawMessage      `json:"allOf"`
	Ref        string                 `json:"$ref"`
}

func parseInputSchema(raw json.RawMessage) (*argType, error) {
	top := &argType{kind: kRecord, fields: map[string]*argField{}}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return top, nil
	}
	var js jsonSchema
	if err := json.Unmarshal(raw, &js); err != nil {
		return nil, err
	}
	t := js.argType(0)
	if t.kind != kRecord {
		// An input schema that is not an object with properties types
		// nothing: its arguments are not visible to policy.
		return top, nil
	}
	return t, nil
}

// argType maps a JSON Schema to a Cedar shape. Anything it cannot map
// exactly (unions, combinators, references, open objects, mixed enums)
// takes the permissive form kJSON.
func (js *jsonSchema) argType(depth int) *argType {
	if js == nil || depth > maxArgDepth || js.Ref != "" || len(js.AnyOf)+len(js.OneOf)+len(js.AllOf) > 0 {
		return &argType{kind: kJSON}
	}
	typ, ok := js.singleType()
	if !ok {
		return &argType{kind: kJSON}
	}
	switch typ {
	case "string":
		return &argType{kind: kString}
	case "integer":
		return &argType{kind: kLong}
	case "number":
		return &argType{kind: kDecimal}
	case "boolean":
		return &argType{kind: kBool}
	case "array":
		return &argType{kind: kSet, elem: js.Items.argType(depth + 1)}
	case "object":
		if len(js.Properties) == 0 {
			return &argType{kind: kJSON}
		}
		r := &argType{kind: kRecord, fields: make(map[string]*argField, len(js.Properties))}
		for name, p := range js.Properties {
			r.fields[name] = &argField{name: name, t: p.argType(depth + 1), required: slices.Contains(js.Required, name)}
		}
		return r
	}
	return &argType{kind: kJSON}
}

// singleType returns the schema's one non-null type. A type list of one
// type and "null" counts as that type (null values are left out of the
// context, as absent optional attributes).
func (js *jsonSchema) singleType() (string, bool) {
	if len(js.Type) == 0 {
		return "", false
	}
	var one string
	if err := json.Unmarshal(js.Type, &one); err == nil {
		return one, true
	}
	var many []string
	if err := json.Unmarshal(js.Type, &many); err != nil {
		return "", false
	}
	many = slices.DeleteFunc(many, func(s string) bool { return s == "null" })
	if len(many) != 1 {
		return "", false
	}
	return many[0], true
}

// IsPathArgument reports whether a top-level string argument is treated as
// a path by name: "path", "file", "filename", "filepath", "dir", "directory", "folder",
// or a name ending in one of them after "_" or "-" or in camel case
// ("source_path", "targetFile", "outputDir"). Tools can name more in
// ToolSchema.PathArgs.
func IsPathArgument(name string) bool {
	lower := strings.ToLower(name)
	for _, w := range []string{"path", "file", "filename", "filepath", "dir", "directory", "folder"} {
		if lower == w {
			return true
		}
		if !strings.HasSuffix(lower, w) {
			continue
		}
		i := len(name) - len(w)
		if c := name[i-1]; c == '_' || c == '-' {
			return true
		}
		if c := name[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}
