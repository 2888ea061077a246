package gateway

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/internal/pipeline"
)

// TestMCPTexts pins which strings of each MCP structure are screened:
// everything but protocol fields, known by their position.
func TestMCPTexts(t *testing.T) {
	tests := []struct {
		name  string
		shape textShape
		msg   string
		want  []string // "d:" data, "c:" content text
	}{
		{"arguments: every string and key", shapeArguments,
			`{"type":"t1","data":"d1","uri":"u1","_meta":{"progressToken":"p1"},"n":[1,"x",{"mimeType":"m1"}],"ok":true}`,
			[]string{"d:p1", "d:progressToken", "d:_meta", "d:d1", "d:data", "d:x", "d:m1", "d:mimeType", "d:n", "d:ok", "d:t1", "d:type", "d:u1", "d:uri"}},
		{"tool result", shapeToolResult,
			`{"_meta":{"k":"m"},"resultType":"complete","isError":false,"content":[
				{"type":"text","text":"hello","annotations":{"audience":["user"]},"_meta":{"x":"y"}},
				{"type":"image","data":"iVBORw0K","mimeType":"image/png"},
				{"type":"audio","data":"UklGRg==","mimeType":"audio/wav"},
				{"type":"resource","resource":{"uri":"file:///a","mimeType":"text/plain","text":"embedded"}},
				{"type":"resource","resource":{"uri":"file:///b","blob":"AAAA"}},
				{"type":"resource_link","uri":"file:///c","name":"c","description":"link desc","icons":[{"src":"data:image/png;base64,AAAA"}]},
				{"type":"future","data":"unknown data","text":"unknown text"}],
			"structuredContent":{"data":"sd","type":"st","_meta":"sm"},"extension":{"type":"ext"}}`,
			[]string{"c:hello", "c:embedded", "d:file:///a", "d:file:///b", "d:link desc", "d:c", "d:file:///c",
				"d:unknown data", "d:unknown text", "d:ext", "d:type", "d:sm", "d:_meta", "d:sd", "d:data", "d:st", "d:type"}},
		{"resource contents", shapeResourceResult,
			`{"contents":[{"uri":"r://1","mimeType":"text/plain","text":"body"},{"uri":"r://2","blob":"AAAA","mimeType":"image/png"}]}`,
			[]string{"c:body", "d:r://1", "d:r://2"}},
		{"prompt", shapePromptResult,
			`{"description":"desc","messages":[{"role":"user","content":{"type":"text","text":"do it"}},{"role":"assistant","content":{"type":"image","data":"AAAA","mimeType":"image/png"}}]}`,
			[]string{"d:desc", "c:do it"}},
		{"sampling", shapeSampling,
			`{"messages":[{"role":"user","content":[{"type":"text","text":"q"},{"type":"tool_result","toolUseId":"u1","content":[{"type":"text","text":"r"}]}]}],
			  "systemPrompt":"sys","includeContext":"thisServer","maxTokens":10,"_meta":{"a":"b"}}`,
			[]string{"c:q", "c:r", "d:u1", "d:sys"}},
		{"elicitation", shapeElicitation,
			`{"mode":"form","message":"name?","requestedSchema":{"type":"object","properties":{"name":{"type":"string","description":"your name"}}}}`,
			[]string{"d:name?", "d:your name", "d:description", "d:string", "d:type", "d:name", "d:properties", "d:object", "d:type"}},
		{"not an object", shapeToolResult, `["a",{"type":"b"}]`, []string{"d:a", "d:b", "d:type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := decodeMCP(tt.shape, json.RawMessage(tt.msg))
			if err != nil {
				t.Fatal(err)
			}
			texts, roles := doc.texts()
			var got []string
			for i, s := range texts {
				p := "d:"
				if roles[i] == contentText {
					p = "c:"
				}
				got = append(got, p+s)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("texts (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMCPRewrite: rewriting changes the screened strings (keys included)
// and nothing else; numbers keep their exact form.
func TestMCPRewrite(t *testing.T) {
	msg := `{"content":[{"type":"text","text":"a <b> & c"},{"type":"image","data":"AAAA","mimeType":"image/png"}],"structuredContent":{"amount":12345678901234567890.10,"secret":"s1","s2":"x"}}`
	doc, err := decodeMCP(shapeToolResult, json.RawMessage(msg))
	if err != nil {
		t.Fatal(err)
	}
	doc.walk(func(s string, _ textRole) string {
		switch s {
		case "secret":
			return "s2" // clashes with an existing key
		case "s1":
			return "[masked]"
		}
		return s
	})
	out, err := doc.marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"content":[{"text":"a <b> & c","type":"text"},{"data":"AAAA","mimeType":"image/png","type":"image"}],"structuredContent":{"amount":12345678901234567890.10,"s2":"x","s2_":"[masked]"}}`
	if string(out) != want {
		t.Errorf("rewritten:\n got %s\nwant %s", out, want)
	}
}

func TestShapes(t *testing.T) {
	for action, want := range map[string]textShape{pipeline.ActionCallTool: shapeArguments, pipeline.ActionGetPrompt: shapeArguments,
		pipeline.ActionComplete: shapeArguments, pipeline.ActionSample: shapeSampling, pipeline.ActionElicit: shapeElicitation} {
		if got := inputShape(action); got != want {
			t.Errorf("inputShape(%s) = %v, want %v", action, got, want)
		}
	}
	for action, want := range map[string]textShape{pipeline.ActionCallTool: shapeToolResult, pipeline.ActionReadResource: shapeResourceResult,
		pipeline.ActionGetPrompt: shapePromptResult} {
		if got := outputShape(action); got != want {
			t.Errorf("outputShape(%s) = %v, want %v", action, got, want)
		}
	}
}

// FuzzMCPTexts: any JSON an upstream sends decodes, walks in the same
// order twice, and survives an identity rewrite unchanged in meaning.
func FuzzMCPTexts(f *testing.F) {
	for _, s := range []string{`{"content":[{"type":"text","text":"x"}]}`, `{"contents":[{"uri":"a","blob":"b"}]}`,
		`{"messages":[{"role":"user","content":{"type":"image","data":"x"}}]}`, `[1,"a",{"":""}]`, `"s"`, `{"a":{"b":["c",{"d":"e"}]}}`} {
		for shape := shapeArguments; shape <= shapeElicitation; shape++ {
			f.Add(uint8(shape), s)
		}
	}
	f.Fuzz(func(t *testing.T, shape uint8, msg string) {
		sh := textShape(shape % (uint8(shapeElicitation) + 1))
		doc, err := decodeMCP(sh, json.RawMessage(msg))
		if err != nil {
			return
		}
		texts, _ := doc.texts()
		i := 0
		doc.walk(func(s string, _ textRole) string {
			if i >= len(texts) || texts[i] != s {
				t.Fatalf("walk %d: %q, texts %q", i, s, texts)
			}
			i++
			return s
		})
		if i != len(texts) {
			t.Fatalf("walk visited %d of %d", i, len(texts))
		}
		out, err := doc.marshal()
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		if json.Unmarshal([]byte(msg), &a) != nil || json.Unmarshal(out, &b) != nil {
			return
		}
		if !cmp.Equal(a, b) {
			t.Errorf("identity rewrite changed %s into %s", msg, out)
		}
	})
}
