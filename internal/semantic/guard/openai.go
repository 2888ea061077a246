package guard

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/gatehouse/gatehouse/internal/semantic"
)

// OpenAI asks a guard model served behind an OpenAI-compatible
// chat-completions endpoint (vLLM, Ollama, TGI, LiteLLM, ...):
//
//	POST {BaseURL}/chat/completions
//	Authorization: Bearer {Key}
//	{"model": "...", "messages": [{"role": "user", "content": "..."}], "temperature": 0, "max_tokens": 20}
//
// and reads choices[0].message.content in Llama Guard's format: a first
// line "safe" or "unsafe", and for unsafe a second line of comma-separated
// category codes (such as "S14"). The text is sent as the user turn, or as
// the assistant turn after an empty user turn for model outputs, which is
// how Llama Guard's chat template classifies responses.
type OpenAI struct {
	// BaseURL is the API base, such as "http://localhost:8000/v1" (vLLM)
	// or "http://localhost:11434/v1" (Ollama).
	BaseURL string
	// Model is the served model name, such as
	// "meta-llama/Llama-Guard-3-8B" or "llama-guard3".
	Model string
	// Key is the bearer token, if the endpoint needs one.
	Key string
	// Categories, when set, limits flagging to these category codes; an
	// "unsafe" answer naming only other categories is not flagged.
	Categories []string
	// Client defaults to http.DefaultClient.
	Client *http.Client
}

// Name implements semantic.Remote.
func (o *OpenAI) Name() string { return "openai:" + o.Model }

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model       string        `json:"model"`
	Messages    []chatMessage `json:"messages"`
	Temperature float64       `json:"temperature"`
	MaxTokens   int           `json:"max_tokens"`
}

type chatResponse struct {
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
}

// Check implements semantic.Remote.
func (o *OpenAI) Check(ctx context.Context, req semantic.RemoteRequest) (semantic.RemoteVerdict, error) {
	url := strings.TrimRight(o.BaseURL, "/") + "/chat/completions"
	msgs := []chatMessage{{Role: "user", Content: req.Text}}
	if req.Surface == semantic.SurfaceModelOutput {
		msgs = []chatMessage{{Role: "user", Content: ""}, {Role: "assistant", Content: req.Text}}
	}
	body := chatRequest{Model: o.Model, Messages: msgs, Temperature: 0, MaxTokens: 20}
	h := http.Header{}
	if o.Key != "" {
		h.Set("Authorization", "Bearer "+o.Key)
	}
	var out chatResponse
	if err := postJSON(ctx, o.Client, "guard model", url, h, body, &out, nil); err != nil {
		return semantic.RemoteVerdict{}, err
	}
	if len(out.Choices) == 0 {
		return semantic.RemoteVerdict{}, fmt.Errorf("guard model: %w: no choices", ErrResponse)
	}
	return parseLlamaGuard(out.Choices[0].Message.Content, o.Categories)
}

// parseLlamaGuard reads a Llama Guard answer.
func parseLlamaGuard(s string, only []string) (semantic.RemoteVerdict, error) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	switch strings.ToLower(strings.TrimSpace(lines[0])) {
	case "safe":
		return semantic.RemoteVerdict{}, nil
	case "unsafe":
	default:
		return semantic.RemoteVerdict{}, fmt.Errorf("guard model: %w: answer %q is neither safe nor unsafe", ErrResponse, truncate(lines[0], 40))
	}
	var cats []string
	if len(lines) > 1 {
		for _, c := range strings.Split(lines[1], ",") {
			if c = strings.TrimSpace(c); c != "" {
				cats = append(cats, c)
			}
		}
	}
	v := semantic.RemoteVerdict{Flagged: true, Score: 1, Kinds: cats}
	if len(only) > 0 {
		hit := false
		for _, c := range cats {
			for _, w := range only {
				if strings.EqualFold(c, w) {
					hit = true
				}
			}
		}
		if !hit {
			return semantic.RemoteVerdict{Kinds: cats}, nil
		}
	}
	return v, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
