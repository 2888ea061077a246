package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Notification events.
const (
	EventRequested  = "approval.requested"
	EventApproved   = "approval.approved"
	EventDenied     = "approval.denied"
	EventExpired    = "approval.expired"
	EventCancelled  = "approval.cancelled"
	EventRevoked    = "approval.revoked"
	EventBreakGlass = "approval.break_glass"
	EventElevated   = "elevation.requested"
)

// AllEvents lists every notification event.
var AllEvents = []string{EventRequested, EventApproved, EventDenied, EventExpired, EventCancelled, EventRevoked, EventBreakGlass, EventElevated}

// Notification is what notifiers send.
type Notification struct {
	// Delivery identifies this notification (the same on every attempt),
	// so that receivers can drop duplicates.
	Delivery string
	Event    string
	Time     time.Time
	// URL is the approval page.
	URL      string
	Approval Approval
}

// Notifier delivers notifications to approvers. Notify makes one attempt
// and returns the HTTP status it got (0 if none); the Manager retries with
// backoff and records every attempt. Implementations must be safe for
// concurrent use and honour ctx.
type Notifier interface {
	Name() string
	// Wants reports whether the notifier sends event.
	Wants(event string) bool
	Notify(ctx context.Context, n *Notification) (status int, err error)
}

// Summary is the short form of an approval that notifications and lists
// show.
type Summary struct {
	ID            string    `json:"id"`
	Kind          Kind      `json:"kind"`
	Status        Status    `json:"status"`
	Reason        string    `json:"reason,omitempty"`
	Risk          []string  `json:"risk,omitempty"`
	Groups        []string  `json:"groups"`
	Quorum        string    `json:"quorum"` // "approvals/required" over all requirements
	Agent         string    `json:"agent"`
	Owner         string    `json:"owner,omitempty"`
	User          string    `json:"user,omitempty"`
	Task          string    `json:"task,omitempty"`
	Server        string    `json:"server"`
	Tools         []string  `json:"tools"`
	CallHash      string    `json:"call_hash,omitempty"`
	ArgumentsHash string    `json:"arguments_hash,omitempty"`
	Value         string    `json:"value,omitempty"`
	Created       time.Time `json:"created"`
	Expires       time.Time `json:"expires"`
	GrantExpires  time.Time `json:"grant_expires,omitzero"`
	Uses          int       `json:"uses,omitempty"`
	MaxUses       int       `json:"max_uses,omitempty"`
	BreakGlass    bool      `json:"break_glass,omitempty"`
	// Justification is the break-glass or elevation justification.
	Justification string `json:"justification,omitempty"`
	URL           string `json:"url,omitempty"`
}

// Summarize returns a's summary; url is its approval page.
func Summarize(a *Approval, url string) Summary {
	s := Summary{ID: a.ID, Kind: a.Kind, Status: a.Status, Reason: a.Reason, Risk: a.Risks(), Groups: []string{},
		Agent: a.Agent(), Owner: a.Owner(), User: a.User(), Task: a.task(), Server: a.Server(), Tools: a.Tools(),
		CallHash: a.CallHash(), Created: a.Created, Expires: a.Expires, BreakGlass: a.BreakGlass, URL: url}
	have, need := 0, 0
	for _, r := range a.Requirements {
		if !slices.Contains(s.Groups, r.Group) {
			s.Groups = append(s.Groups, r.Group)
		}
		have += min(len(r.Approvals), r.Quorum)
		need += r.Quorum
	}
	s.Quorum = fmt.Sprintf("%d/%d", have, need)
	if e := a.Evidence; e != nil {
		s.ArgumentsHash, s.Value = e.ArgumentsHash, e.Value
	}
	if e := a.Elevation; e != nil {
		s.Justification = e.Justification
	}
	if g := a.Grant; g != nil {
		s.GrantExpires, s.Uses, s.MaxUses = g.Expires, g.Uses, g.MaxUses
	}
	for _, r := range a.Reviews {
		if r.BreakGlass {
			s.Justification = r.Justification
		}
	}
	return s
}

// SignatureHeader carries the webhook body's HMAC-SHA256:
// "sha256=" and the lower-case hex HMAC of the exact body bytes, keyed with
// the webhook's secret.
const SignatureHeader = "X-Gatehouse-Signature-256"

// Webhook POSTs each notification as JSON:
//
//	{"approval":{…summary…},"delivery":"dlv_…","event":"approval.requested",
//	 "evidence":{…},"time":"…","url":"https://…/approvals/apr_…"}
//
// with headers Content-Type application/json, X-Gatehouse-Event,
// X-Gatehouse-Delivery and, when Secret is set, X-Gatehouse-Signature-256:
// sha256=HEX(HMAC-SHA256(Secret, body)). Receivers verify the signature
// over the raw body, and reject old "time"s and repeated "delivery" ids to
// stop replays. Evidence (with the call's arguments) is included only when
// IncludeEvidence is set.
type Webhook struct {
	// ID names the webhook in delivery records (default "webhook").
	ID  string
	URL string
	// Secret keys the signature (read from a file by the gateway).
	Secret []byte
	// Events to send; nil means all.
	Events          []string
	IncludeEvidence bool
	// Client defaults to one with a 10 s timeout.
	Client *http.Client
}

// Name implements Notifier.
func (w *Webhook) Name() string {
	if w.ID == "" {
		return "webhook"
	}
	return w.ID
}

// Wants implements Notifier.
func (w *Webhook) Wants(event string) bool {
	return w.Events == nil || slices.Contains(w.Events, event)
}

type webhookBody struct {
	Approval Summary   `json:"approval"`
	Delivery string    `json:"delivery"`
	Event    string    `json:"event"`
	Evidence any       `json:"evidence,omitempty"`
	Reviews  []Review  `json:"reviews,omitempty"`
	Time     time.Time `json:"time"`
	URL      string    `json:"url"`
}

// Body returns the JSON body the webhook sends for n.
func (w *Webhook) Body(n *Notification) ([]byte, error) {
	body := webhookBody{Approval: Summarize(&n.Approval, n.URL), Delivery: n.Delivery, Event: n.Event, Time: n.Time, URL: n.URL, Reviews: n.Approval.Reviews}
	if w.IncludeEvidence {
		if n.Approval.Evidence != nil {
			body.Evidence = n.Approval.Evidence
		} else if n.Approval.Elevation != nil {
			body.Evidence = n.Approval.Elevation
		}
	}
	return json.Marshal(body)
}

// Sign returns the signature header value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a signature header value in constant time.
func VerifySignature(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// Notify implements Notifier.
func (w *Webhook) Notify(ctx context.Context, n *Notification) (int, error) {
	body, err := w.Body(n)
	if err != nil {
		return 0, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Gatehouse-Event", n.Event)
	h.Set("X-Gatehouse-Delivery", n.Delivery)
	if len(w.Secret) > 0 {
		h.Set(SignatureHeader, Sign(w.Secret, body))
	}
	return post(ctx, w.Client, w.URL, h, body)
}

// Slack posts a message to a Slack-compatible incoming webhook (Slack,
// Mattermost, Rocket.Chat): {"text": …, "blocks": [section, context]}
// with a link to the approval page. It never includes arguments.
type Slack struct {
	// ID names the notifier in delivery records (default "slack").
	ID string
	// URL is the incoming-webhook URL; it is a secret (read from a file).
	URL string
	// Events to send; nil means requested, break-glass and elevation.
	Events []string
	Client *http.Client
}

// Name implements Notifier.
func (s *Slack) Name() string {
	if s.ID == "" {
		return "slack"
	}
	return s.ID
}

// Wants implements Notifier.
func (s *Slack) Wants(event string) bool {
	if s.Events == nil {
		return event == EventRequested || event == EventBreakGlass || event == EventElevated
	}
	return slices.Contains(s.Events, event)
}

// slackEscaper escapes the three characters Slack's mrkdwn reserves.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackEscape(s string) string { return slackEscaper.Replace(s) }

var slackTitles = map[string]string{
	EventRequested:  "Approval required",
	EventApproved:   "Approved",
	EventDenied:     "Denied",
	EventExpired:    "Expired without a decision",
	EventCancelled:  "Cancelled",
	EventRevoked:    "Revoked",
	EventBreakGlass: ":rotating_light: BREAK-GLASS self-approval",
	EventElevated:   "Elevation requested",
}

// Message returns the JSON message Slack receives for n.
func (s *Slack) Message(n *Notification) ([]byte, error) {
	sum := Summarize(&n.Approval, n.URL)
	title := slackTitles[n.Event]
	if title == "" {
		title = n.Event
	}
	risk := strings.Join(sum.Risk, ", ")
	if risk == "" {
		risk = "unclassified"
	}
	lines := []string{
		fmt.Sprintf("*%s*: agent `%s` wants `%s/%s`", slackEscape(title), slackEscape(sum.Agent), slackEscape(sum.Server), slackEscape(strings.Join(sum.Tools, ","))),
		fmt.Sprintf("risk: %s · approvers: %s · quorum %s", slackEscape(risk), slackEscape(strings.Join(sum.Groups, ", ")), sum.Quorum),
	}
	if sum.User != "" {
		lines = append(lines, "on behalf of: "+slackEscape(sum.User))
	}
	if sum.Value != "" {
		lines = append(lines, "value: "+slackEscape(sum.Value))
	}
	if sum.Justification != "" {
		lines = append(lines, "justification: "+slackEscape(sum.Justification))
	}
	if n.URL != "" {
		lines = append(lines, fmt.Sprintf("<%s|Review %s>", n.URL, sum.ID))
	}
	text := strings.Join(lines, "\n")
	msg := map[string]any{
		"text": fmt.Sprintf("%s: %s/%s for agent %s (%s)", title, sum.Server, strings.Join(sum.Tools, ","), sum.Agent, sum.ID),
		"blocks": []any{
			map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": text}},
			map[string]any{"type": "context", "elements": []any{map[string]any{"type": "mrkdwn", "text": "expires " + sum.Expires.UTC().Format(time.RFC3339) + " · " + sum.ID}}},
		},
	}
	return json.Marshal(msg)
}

// Notify implements Notifier.
func (s *Slack) Notify(ctx context.Context, n *Notification) (int, error) {
	body, err := s.Message(n)
	if err != nil {
		return 0, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return post(ctx, s.Client, s.URL, h, body)
}

func post(ctx context.Context, c *http.Client, target string, h http.Header, body []byte) (int, error) {
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = h
	resp, err := c.Do(req)
	if err != nil {
		// The URL may hold a secret (Slack): report the failure without it.
		return 0, fmt.Errorf("delivering notification: %s", redactURL(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("notification endpoint answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// redactURL returns the error text of a failed request without the URL.
func redactURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return "request failed"
}
