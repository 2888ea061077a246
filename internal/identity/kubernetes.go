package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// KubernetesConfig configures a Kubernetes trust source: projected
// service-account tokens whose audience is the gateway, verified offline
// against the cluster's service-account issuer keys, optionally confirmed
// with a TokenReview for prompt revocation (a deleted pod or service
// account invalidates its tokens at once).
type KubernetesConfig struct {
	Name string
	// Policy.Issuer is the cluster's service-account issuer
	// (--service-account-issuer); Policy.Audience the gateway. Default
	// SubjectPrefixes: none (any service account with a registered
	// credential).
	Policy TrustPolicy
	// Keys: default discovered from the issuer; use StaticKeys (the
	// cluster's /openid/v1/jwks saved to a file) for offline verification.
	Keys KeySource
	// TokenReviewURL, when set, is the API server's base URL; every token
	// not reviewed within ReviewTTL is sent to
	// /apis/authentication.k8s.io/v1/tokenreviews.
	TokenReviewURL string
	// TokenReviewBearer returns the gateway's own credential for the
	// TokenReview call (e.g. reads its service-account token file).
	TokenReviewBearer func() (string, error)
	// ReviewTTL caches a positive review. Default 10s.
	ReviewTTL time.Duration
	Client    *http.Client
	Now       func() time.Time
}

// KubernetesVerifier verifies projected service-account tokens.
type KubernetesVerifier struct {
	cfg KubernetesConfig

	mu      sync.Mutex
	reviews map[string]time.Time // token → reviewed until
}

// NewKubernetesVerifier checks cfg and returns a verifier.
func NewKubernetesVerifier(cfg KubernetesConfig) (*KubernetesVerifier, error) {
	if cfg.Name == "" {
		return nil, errors.New("kubernetes trust source needs a name")
	}
	if len(cfg.Policy.Algorithms) == 0 {
		cfg.Policy.Algorithms = []string{"RS256", "ES256"}
	}
	if err := cfg.Policy.check(); err != nil {
		return nil, fmt.Errorf("trust source %s: %w", cfg.Name, err)
	}
	if cfg.Keys == nil {
		cfg.Keys = &RemoteKeys{Issuer: cfg.Policy.Issuer, Client: cfg.Client, Now: cfg.Now}
	}
	if cfg.TokenReviewURL != "" && cfg.TokenReviewBearer == nil {
		return nil, fmt.Errorf("trust source %s: token review needs the gateway's own credential", cfg.Name)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: noRedirect}
	}
	return &KubernetesVerifier{cfg: cfg, reviews: map[string]time.Time{}}, nil
}

// Name implements Verifier.
func (v *KubernetesVerifier) Name() string { return v.cfg.Name }

// Issuer returns the cluster issuer.
func (v *KubernetesVerifier) Issuer() string { return v.cfg.Policy.Issuer }

// Verify implements Verifier.
func (v *KubernetesVerifier) Verify(ctx context.Context, token string) (*Identity, error) {
	now := nowOr(v.cfg.Now)
	c, err := verifyJWT(ctx, token, &v.cfg.Policy, v.cfg.Keys, now)
	if err != nil {
		return nil, err
	}
	var k struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
		Pod *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
		Node *struct {
			Name string `json:"name"`
		} `json:"node"`
	}
	if b, ok := c.raw["kubernetes.io"]; !ok || json.Unmarshal(b, &k) != nil || k.Namespace == "" || k.ServiceAccount.Name == "" {
		return nil, fail(CodeClaims, "the token is not a Kubernetes service-account token", nil)
	}
	if c.Subject != "system:serviceaccount:"+k.Namespace+":"+k.ServiceAccount.Name {
		return nil, fail(CodeSubject, "the token's subject does not match its service account", nil)
	}
	if v.cfg.TokenReviewURL != "" {
		if err := v.review(ctx, token, c.Subject, now); err != nil {
			return nil, err
		}
	}
	id := &Identity{Source: v.cfg.Name, Kind: "kubernetes", Issuer: c.Issuer, Subject: c.Subject, TokenID: c.ID,
		IssuedAt: c.IssuedAt.Time(), Expiry: c.Expiry.Time(),
		Attributes: map[string]string{"namespace": k.Namespace, "service_account": k.ServiceAccount.Name, "service_account_uid": k.ServiceAccount.UID}}
	if k.Pod != nil {
		id.Attributes["pod"], id.Attributes["pod_uid"] = k.Pod.Name, k.Pod.UID
	}
	if k.Node != nil {
		id.Attributes["node"] = k.Node.Name
	}
	return id, nil
}

// review asks the API server whether the token is still valid.
func (v *KubernetesVerifier) review(ctx context.Context, token, subject string, now time.Time) error {
	v.mu.Lock()
	until, ok := v.reviews[token]
	v.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	bearer, err := v.cfg.TokenReviewBearer()
	if err != nil {
		return fail(CodeRevoked, "the token could not be reviewed", err)
	}
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": token, "audiences": []string{v.cfg.Policy.Audience}},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(v.cfg.TokenReviewURL, "/")+"/apis/authentication.k8s.io/v1/tokenreviews", bytes.NewReader(body))
	if err != nil {
		return fail(CodeRevoked, "the token could not be reviewed", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := v.cfg.Client.Do(req)
	if err != nil {
		return fail(CodeRevoked, "the token could not be reviewed", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode/100 != 2 {
		return fail(CodeRevoked, "the token could not be reviewed", fmt.Errorf("token review: HTTP %d: %w", resp.StatusCode, err))
	}
	var tr struct {
		Status struct {
			Authenticated bool     `json:"authenticated"`
			Audiences     []string `json:"audiences"`
			Error         string   `json:"error"`
			User          struct {
				Username string `json:"username"`
			} `json:"user"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		return fail(CodeRevoked, "the token could not be reviewed", err)
	}
	if !tr.Status.Authenticated || tr.Status.User.Username != subject {
		return fail(CodeRevoked, "the cluster no longer accepts the token", errors.New(tr.Status.Error))
	}
	v.mu.Lock()
	if len(v.reviews) > 1<<14 {
		for t, u := range v.reviews {
			if !now.Before(u) {
				delete(v.reviews, t)
			}
		}
	}
	v.reviews[token] = now.Add(orDefault(v.cfg.ReviewTTL, 10*time.Second))
	v.mu.Unlock()
	return nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
