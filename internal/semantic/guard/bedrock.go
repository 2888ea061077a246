package guard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/gatehouse/gatehouse/internal/semantic"
)

// Bedrock calls Amazon Bedrock Guardrails' ApplyGuardrail:
//
//	POST {Endpoint}/guardrail/{GuardrailID}/version/{Version}/apply
//	{"source": "INPUT"|"OUTPUT", "content": [{"text": {"text": "..."}}]}
//
// signed with SigV4 for the service "bedrock". The answer's "action" is
// "GUARDRAIL_INTERVENED" or "NONE"; its assessments' content-policy
// filters name what matched (PROMPT_ATTACK, with a confidence). Model
// outputs are sent as OUTPUT, everything else as INPUT.
type Bedrock struct {
	// Region is the AWS region, such as "us-east-1".
	Region string
	// Endpoint defaults to https://bedrock-runtime.{Region}.amazonaws.com.
	Endpoint string
	// GuardrailID is the guardrail's identifier or ARN.
	GuardrailID string
	// Version is the guardrail version, such as "1" or "DRAFT".
	Version string
	// Credentials provides AWS credentials (for example from
	// config.LoadDefaultConfig in the gateway's composition root).
	Credentials aws.CredentialsProvider
	// Client defaults to http.DefaultClient.
	Client *http.Client
	// Now defaults to time.Now (for signing).
	Now func() time.Time
}

// Name implements semantic.Remote.
func (b *Bedrock) Name() string { return "bedrock" }

type bedrockText struct {
	Text bedrockTextBlock `json:"text"`
}

type bedrockTextBlock struct {
	Text string `json:"text"`
}

type bedrockRequest struct {
	Source  string        `json:"source"`
	Content []bedrockText `json:"content"`
}

type bedrockResponse struct {
	Action      *string `json:"action"`
	Assessments []struct {
		ContentPolicy *struct {
			Filters []struct {
				Type       string `json:"type"`
				Confidence string `json:"confidence"`
				Action     string `json:"action"`
			} `json:"filters"`
		} `json:"contentPolicy"`
		TopicPolicy *struct {
			Topics []struct {
				Name   string `json:"name"`
				Action string `json:"action"`
			} `json:"topics"`
		} `json:"topicPolicy"`
	} `json:"assessments"`
}

// confidenceScore maps a Bedrock filter confidence to a score.
var confidenceScore = map[string]float64{"NONE": 0, "LOW": 0.4, "MEDIUM": 0.7, "HIGH": 0.95}

// Check implements semantic.Remote.
func (b *Bedrock) Check(ctx context.Context, req semantic.RemoteRequest) (semantic.RemoteVerdict, error) {
	if b.Credentials == nil {
		return semantic.RemoteVerdict{}, errors.New("bedrock guardrails: no credentials")
	}
	endpoint := b.Endpoint
	if endpoint == "" {
		endpoint = "https://bedrock-runtime." + b.Region + ".amazonaws.com"
	}
	u := strings.TrimRight(endpoint, "/") + "/guardrail/" + url.PathEscape(b.GuardrailID) + "/version/" + url.PathEscape(b.Version) + "/apply"
	source := "INPUT"
	if req.Surface == semantic.SurfaceModelOutput {
		source = "OUTPUT"
	}
	body := bedrockRequest{Source: source, Content: []bedrockText{{Text: bedrockTextBlock{Text: req.Text}}}}
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	sign := func(r *http.Request, payload []byte) error {
		creds, err := b.Credentials.Retrieve(r.Context())
		if err != nil {
			return fmt.Errorf("retrieving credentials: %w", err)
		}
		sum := sha256.Sum256(payload)
		return v4.NewSigner().SignHTTP(r.Context(), creds, r, hex.EncodeToString(sum[:]), "bedrock", b.Region, now())
	}
	var out bedrockResponse
	if err := postJSON(ctx, b.Client, "bedrock guardrails", u, nil, body, &out, sign); err != nil {
		return semantic.RemoteVerdict{}, err
	}
	if out.Action == nil {
		return semantic.RemoteVerdict{}, fmt.Errorf("bedrock guardrails: %w: no action", ErrResponse)
	}
	var v semantic.RemoteVerdict
	for _, a := range out.Assessments {
		if a.ContentPolicy != nil {
			for _, f := range a.ContentPolicy.Filters {
				if f.Action == "BLOCKED" || f.Action == "" && confidenceScore[f.Confidence] >= 0.7 {
					v.Kinds = append(v.Kinds, strings.ToLower(f.Type))
					v.Score = max(v.Score, confidenceScore[f.Confidence])
				}
			}
		}
		if a.TopicPolicy != nil {
			for _, t := range a.TopicPolicy.Topics {
				if t.Action == "BLOCKED" {
					v.Kinds = append(v.Kinds, "topic:"+t.Name)
				}
			}
		}
	}
	switch *out.Action {
	case "GUARDRAIL_INTERVENED":
		v.Flagged = true
		if v.Score < 0.5 {
			v.Score = 1
		}
	case "NONE":
		v.Flagged = false
	default:
		return semantic.RemoteVerdict{}, fmt.Errorf("bedrock guardrails: %w: action %q", ErrResponse, *out.Action)
	}
	return v, nil
}
