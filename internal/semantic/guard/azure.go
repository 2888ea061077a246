package guard

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/semantic"
)

// Azure calls Azure AI Content Safety Prompt Shields:
//
//	POST {Endpoint}/contentsafety/text:shieldPrompt?api-version={APIVersion}
//	Ocp-Apim-Subscription-Key: {Key}
//	{"userPrompt": "...", "documents": ["...", ...]}
//
// answered by {"userPromptAnalysis": {"attackDetected": bool},
// "documentsAnalysis": [{"attackDetected": bool}, ...]}. Text from a
// principal (prompts, tool arguments) is sent as the user prompt; data
// (tool results, documents) as documents, so that the service applies its
// document-attack model. Text longer than the service's per-field limit is
// split into several documents.
type Azure struct {
	// Endpoint is the resource endpoint, such as
	// "https://<name>.cognitiveservices.azure.com".
	Endpoint string
	// Key is the subscription key.
	Key string
	// APIVersion defaults to "2024-09-01".
	APIVersion string
	// Client defaults to http.DefaultClient.
	Client *http.Client
}

// azureChunk is the most text sent in one field (the service accepts up to
// 10,000 characters per prompt or document).
const azureChunk = 10000

// Name implements semantic.Remote.
func (a *Azure) Name() string { return "azure" }

type azureRequest struct {
	UserPrompt string   `json:"userPrompt"`
	Documents  []string `json:"documents"`
}

type azureResponse struct {
	UserPromptAnalysis *struct {
		AttackDetected bool `json:"attackDetected"`
	} `json:"userPromptAnalysis"`
	DocumentsAnalysis []struct {
		AttackDetected bool `json:"attackDetected"`
	} `json:"documentsAnalysis"`
}

// chunks splits s into pieces of at most n characters.
func chunks(s string, n int) []string {
	var out []string
	for utf8.RuneCountInString(s) > n {
		i, k := 0, 0
		for k < n {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
			k++
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return append(out, s)
}

// Check implements semantic.Remote.
func (a *Azure) Check(ctx context.Context, req semantic.RemoteRequest) (semantic.RemoteVerdict, error) {
	ver := a.APIVersion
	if ver == "" {
		ver = "2024-09-01"
	}
	url := strings.TrimRight(a.Endpoint, "/") + "/contentsafety/text:shieldPrompt?api-version=" + ver
	body := azureRequest{Documents: []string{}}
	parts := chunks(req.Text, azureChunk)
	if req.Surface.Untrusted() {
		body.Documents = parts
	} else {
		body.UserPrompt = parts[0]
		body.Documents = parts[1:]
	}
	var out azureResponse
	h := http.Header{"Ocp-Apim-Subscription-Key": {a.Key}}
	if err := postJSON(ctx, a.Client, "azure prompt shields", url, h, body, &out, nil); err != nil {
		return semantic.RemoteVerdict{}, err
	}
	if out.UserPromptAnalysis == nil && body.UserPrompt != "" || len(out.DocumentsAnalysis) != len(body.Documents) {
		return semantic.RemoteVerdict{}, fmt.Errorf("azure prompt shields: %w: analysis missing", ErrResponse)
	}
	var v semantic.RemoteVerdict
	if out.UserPromptAnalysis != nil && out.UserPromptAnalysis.AttackDetected {
		v.Kinds = append(v.Kinds, "user_prompt_attack")
	}
	for _, d := range out.DocumentsAnalysis {
		if d.AttackDetected {
			v.Kinds = append(v.Kinds, "document_attack")
			break
		}
	}
	if len(v.Kinds) > 0 {
		v.Flagged, v.Score = true, 1
	}
	return v, nil
}
