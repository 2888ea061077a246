package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/gatehouse/gatehouse/internal/telemetry"
)

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil)))

	tid, _ := trace.TraceIDFromHex(agentTrace)
	sid, _ := trace.SpanIDFromHex(agentSpan)
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))

	log.With("authorization", secret, "server", "bank").
		WithGroup("req").
		InfoContext(ctx, "forwarding",
			"token", secret, "token_id", "jti-1", "accessToken", secret, "api_key", "k", "apiKey", "k",
			"arguments", payload, "content_bytes", 57, "tool", "transfer",
			slog.Group("upstream", "body", payload, "status", 200),
		)
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	delete(got, "time")
	want := map[string]any{
		"level": "INFO", "msg": "forwarding",
		"authorization": "[redacted]", "server": "bank",
		"req": map[string]any{
			"token": "[redacted]", "token_id": "jti-1", "accessToken": "[redacted]", "api_key": "[redacted]", "apiKey": "[redacted]",
			"arguments": "[redacted]", "content_bytes": float64(57), "tool": "transfer",
			"upstream": map[string]any{"body": "[redacted]", "status": float64(200)},
			"trace_id": agentTrace, "span_id": agentSpan,
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log record (-want +got):\n%s", diff)
	}
	if strings.Contains(buf.String(), "s3cret") || strings.Contains(buf.String(), "DE89") {
		t.Errorf("a secret or payload reached the log: %s", buf.String())
	}

	// Without a span and without sensitive keys the record is untouched.
	buf.Reset()
	slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil))).Info("plain", "agent", "a")
	if s := buf.String(); strings.Contains(s, "trace_id") || !strings.Contains(s, `"agent":"a"`) {
		t.Errorf("plain record = %s", s)
	}
}

func TestLogHandlerEnabled(t *testing.T) {
	h := telemetry.LogHandler(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("LogHandler does not follow the wrapped handler's level")
	}
}
