// Package guard holds the remote adapters of the semantic layer: cloud
// prompt-attack services and guard models, each implementing
// semantic.Remote. The engine wraps every adapter with its timeout, fail
// mode and cache (see semantic.RemoteConfig); an adapter's only duties are
// to speak its service's documented protocol, to honour the context, and
// to return an error whenever it did not get a real answer.
//
//   - Azure: Azure AI Content Safety Prompt Shields (text:shieldPrompt).
//   - Bedrock: Amazon Bedrock Guardrails ApplyGuardrail, signed with SigV4
//     by aws-sdk-go-v2's signer.
//   - Lakera: Lakera Guard /v2/guard.
//   - OpenAI: a guard model (Llama Guard and its kin) behind any
//     OpenAI-compatible chat-completions endpoint (vLLM, Ollama, ...).
//
// Adapters are safe for concurrent use. They never log text or keys.
package guard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// maxResponse bounds the response bodies the adapters read.
const maxResponse = 1 << 20

// StatusError reports a non-2xx answer from a service.
type StatusError struct {
	Service string
	Status  int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: HTTP status %d", e.Service, e.Status)
}

// ErrResponse reports an answer that does not follow the service's format.
var ErrResponse = errors.New("guard: malformed response")

func client(c *http.Client) *http.Client {
	if c == nil {
		return http.DefaultClient
	}
	return c
}

// postJSON sends body as JSON with the given headers (and an optional
// signing hook) and decodes a 2xx JSON answer into out.
func postJSON(ctx context.Context, hc *http.Client, service, url string, header http.Header, body, out any, sign func(*http.Request, []byte) error) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%s: encoding request: %w", service, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: building request: %w", service, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if sign != nil {
		if err := sign(req, b); err != nil {
			return fmt.Errorf("%s: signing request: %w", service, err)
		}
	}
	resp, err := client(hc).Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s: reading response: %w", service, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{Service: service, Status: resp.StatusCode}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: %w: %w", service, ErrResponse, err)
	}
	return nil
}
