package guard

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gatehouse/gatehouse/internal/semantic"
)

// Lakera calls Lakera Guard:
//
//	POST {Endpoint}   (default https://api.lakera.ai/v2/guard)
//	Authorization: Bearer {Key}
//	{"messages": [{"role": "user", "content": "..."}], "project_id": "...", "breakdown": true}
//
// answered by {"flagged": bool, "breakdown": [{"detector_type": "...",
// "detected": bool, ...}], "metadata": {...}}. Guard screens the last
// message: prompts go as a user message, model outputs as an assistant
// message, and data as a user message too (Lakera's prompt-attack detector
// is meant to see retrieved content on the input side).
type Lakera struct {
	// Endpoint defaults to "https://api.lakera.ai/v2/guard"; self-hosted
	// deployments use their own.
	Endpoint string
	// Key is the API key; empty for self-hosted deployments without
	// authentication.
	Key string
	// ProjectID selects the project whose policy applies; optional.
	ProjectID string
	// Client defaults to http.DefaultClient.
	Client *http.Client
}

// Name implements semantic.Remote.
func (l *Lakera) Name() string { return "lakera" }

type lakeraMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type lakeraRequest struct {
	Messages  []lakeraMessage `json:"messages"`
	ProjectID string          `json:"project_id,omitempty"`
	Breakdown bool            `json:"breakdown"`
}

type lakeraResponse struct {
	Flagged   *bool `json:"flagged"`
	Breakdown []struct {
		DetectorType string `json:"detector_type"`
		Detected     bool   `json:"detected"`
	} `json:"breakdown"`
}

// Check implements semantic.Remote.
func (l *Lakera) Check(ctx context.Context, req semantic.RemoteRequest) (semantic.RemoteVerdict, error) {
	url := l.Endpoint
	if url == "" {
		url = "https://api.lakera.ai/v2/guard"
	}
	role := "user"
	if req.Surface == semantic.SurfaceModelOutput {
		role = "assistant"
	}
	body := lakeraRequest{Messages: []lakeraMessage{{Role: role, Content: req.Text}}, ProjectID: l.ProjectID, Breakdown: true}
	h := http.Header{}
	if l.Key != "" {
		h.Set("Authorization", "Bearer "+l.Key)
	}
	var out lakeraResponse
	if err := postJSON(ctx, l.Client, "lakera guard", url, h, body, &out, nil); err != nil {
		return semantic.RemoteVerdict{}, err
	}
	if out.Flagged == nil {
		return semantic.RemoteVerdict{}, fmt.Errorf("lakera guard: %w: no flagged field", ErrResponse)
	}
	v := semantic.RemoteVerdict{Flagged: *out.Flagged}
	for _, d := range out.Breakdown {
		if d.Detected {
			v.Kinds = append(v.Kinds, d.DetectorType)
		}
	}
	if v.Flagged {
		v.Score = 1
	}
	return v, nil
}
