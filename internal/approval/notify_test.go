package approval_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
)

func TestWebhookSignedAndRetried(t *testing.T) {
	f := newFixture(t, nil)
	f.hook.failFirst = 2
	a, err := f.m.Request(ctx, evidence(sendArgs))
	if err != nil {
		t.Fatal(err)
	}
	r := f.hook.waitFor(t, approval.EventRequested)
	if sig := r.header.Get(approval.SignatureHeader); !approval.VerifySignature(f.secret, r.body, sig) || !strings.HasPrefix(sig, "sha256=") {
		t.Errorf("signature %q does not verify over the body", sig)
	}
	if approval.VerifySignature([]byte("other"), r.body, r.header.Get(approval.SignatureHeader)) {
		t.Error("the signature verifies with another secret")
	}
	var body struct {
		Event    string           `json:"event"`
		Delivery string           `json:"delivery"`
		URL      string           `json:"url"`
		Approval approval.Summary `json:"approval"`
		Evidence json.RawMessage  `json:"evidence"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Event != approval.EventRequested || body.URL != "https://gw.example/approvals/"+a.ID || body.Approval.ID != a.ID ||
		body.Approval.Agent != "payments-agent" || body.Approval.Quorum != "0/1" || r.header.Get("X-Gatehouse-Delivery") != body.Delivery {
		t.Errorf("webhook body %s", r.body)
	}
	if body.Evidence != nil || strings.Contains(string(r.body), "DE89") {
		t.Error("the webhook carries the arguments without IncludeEvidence")
	}
	// Three attempts, every one recorded and audited.
	ds := f.waitDeliveries(t, a.ID, 3)
	if len(ds) != 3 || ds[0].OK || ds[0].Status != 503 || ds[1].OK || !ds[2].OK || ds[2].Attempt != 3 || ds[0].Notifier != "hook" {
		t.Fatalf("deliveries %+v", ds)
	}
	audited := 0
	for _, rec := range f.records(t, a.ID) {
		if rec["change"] == "delivery" {
			audited++
		}
	}
	if audited != 3 {
		t.Errorf("%d delivery attempts audited, want 3", audited)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	f := newFixture(t, nil)
	f.hook.failFirst = 100
	a, _ := f.m.Request(ctx, evidence(sendArgs))
	deadline := time.Now().Add(5 * time.Second)
	var ds []approval.Delivery
	for time.Now().Before(deadline) {
		if ds, _ = f.m.Deliveries(ctx, a.ID); len(ds) == 4 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if ds, _ = f.m.Deliveries(ctx, a.ID); len(ds) != 4 {
		t.Fatalf("%d attempts, want NotifyAttempts = 4", len(ds))
	}
	for _, d := range ds {
		if d.OK || d.Error == "" {
			t.Errorf("failed attempt recorded as %+v", d)
		}
	}
}

func TestSlack(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = b
		mu.Unlock()
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	f := newFixture(t, func(c *approval.Config) {
		c.Notifiers = []approval.Notifier{&approval.Slack{URL: srv.URL + "/services/T000/B000/secret"}}
	})
	ev := evidence(sendArgs)
	ev.Agent = "agent<script>"
	a, _ := f.m.Request(ctx, ev)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ds, _ := f.m.Deliveries(ctx, a.ID); len(ds) == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"text"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(got, &msg); err != nil {
		t.Fatalf("slack message %s: %v", got, err)
	}
	if msg.Text == "" || len(msg.Blocks) != 2 || msg.Blocks[0].Text.Type != "mrkdwn" {
		t.Fatalf("slack message %s", got)
	}
	sec := msg.Blocks[0].Text.Text
	if !strings.Contains(sec, "<https://gw.example/approvals/"+a.ID+"|Review "+a.ID+">") {
		t.Errorf("no link to the approval page: %s", sec)
	}
	if strings.Contains(sec, "<script>") || !strings.Contains(sec, "agent&lt;script&gt;") {
		t.Errorf("mrkdwn not escaped: %s", sec)
	}
	if strings.Contains(string(got), "DE89") {
		t.Error("the Slack message carries arguments")
	}
	// Slack's default events: requests, break-glass and elevations only.
	s := &approval.Slack{}
	if !s.Wants(approval.EventRequested) || !s.Wants(approval.EventBreakGlass) || s.Wants(approval.EventApproved) {
		t.Error("Slack default events")
	}
}

func TestDeliveryErrorHidesURL(t *testing.T) {
	s := &approval.Slack{URL: "http://127.0.0.1:1/services/T/B/very-secret-token"}
	_, err := s.Notify(ctx, &approval.Notification{Event: approval.EventRequested})
	if err == nil || strings.Contains(err.Error(), "very-secret-token") {
		t.Errorf("delivery error %v leaks the webhook URL", err)
	}
}
