package telemetry

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"
)

// Redacted replaces the value of a log attribute that names a secret or a
// payload.
const Redacted = "[redacted]"

// LogHandler wraps h for the gateway's operational logs:
//
//   - a record logged with a context that carries a span (InfoContext,
//     ...) gets trace_id and span_id, so logs join traces and audit
//     records;
//   - an attribute whose key names a secret or a payload has its value
//     replaced by "[redacted]", in groups and in attributes added with
//     With. A key names one when one of its words (split at anything but
//     letters and digits) is token, authorization, password, passwd,
//     secret, cookie, credential(s), bearer, jwt, apikey, arguments,
//     args, payload, body, result(s), content, prompt or text, or has the
//     words api key or private key; keys ending in id, count, len, size or
//     bytes describe such a value and are kept (token_id,
//     content_bytes).
//
// The redaction is a safety net for mistakes, not the control: code must
// not log tokens or payloads in the first place (payloads belong in the
// audit log).
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ h slog.Handler }

func (l logHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	dirty := false
	r.Attrs(func(a slog.Attr) bool {
		dirty = needsRedaction(a)
		return !dirty
	})
	if dirty {
		nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool {
			nr.AddAttrs(redact(a))
			return true
		})
		r = nr
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		if !dirty {
			r = r.Clone()
		}
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.h.Handle(ctx, r)
}

func (l logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = redact(a)
	}
	return logHandler{l.h.WithAttrs(out)}
}

func (l logHandler) WithGroup(name string) slog.Handler { return logHandler{l.h.WithGroup(name)} }

func needsRedaction(a slog.Attr) bool {
	if sensitiveKey(a.Key) {
		return true
	}
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			if needsRedaction(g) {
				return true
			}
		}
	}
	return false
}

func redact(a slog.Attr) slog.Attr {
	if sensitiveKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	v := a.Value.Resolve()
	if v.Kind() != slog.KindGroup {
		return slog.Attr{Key: a.Key, Value: v}
	}
	g := v.Group()
	out := make([]slog.Attr, len(g))
	for i := range g {
		out[i] = redact(g[i])
	}
	return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
}

var (
	sensitiveWords = map[string]bool{
		"token": true, "authorization": true, "password": true, "passwd": true, "secret": true,
		"cookie": true, "credential": true, "credentials": true, "bearer": true, "jwt": true,
		"apikey": true, "arguments": true, "args": true, "payload": true, "body": true,
		"result": true, "results": true, "content": true, "prompt": true, "text": true,
	}
	metaWords = map[string]bool{"id": true, "count": true, "len": true, "size": true, "bytes": true}
)

// keyCache remembers sensitiveKey's answers: log keys are a small set of
// constants, so after warm-up a record costs map look-ups, not word
// splitting. It stops growing at maxCachedKeys.
var (
	keyCache   sync.Map // string → bool
	cachedKeys atomic.Int64
)

const maxCachedKeys = 4096

// sensitiveKey reports whether a log key names a secret or a payload.
func sensitiveKey(key string) bool {
	if v, ok := keyCache.Load(key); ok {
		return v.(bool)
	}
	s := classifyKey(key)
	if cachedKeys.Load() < maxCachedKeys {
		if _, loaded := keyCache.LoadOrStore(key, s); !loaded {
			cachedKeys.Add(1)
		}
	}
	return s
}

func classifyKey(key string) bool {
	words := keyWords(key)
	if len(words) == 0 || metaWords[words[len(words)-1]] {
		return false
	}
	for i, w := range words {
		if sensitiveWords[w] {
			return true
		}
		if w == "key" && i > 0 && (words[i-1] == "api" || words[i-1] == "private") {
			return true
		}
	}
	return false
}

// keyWords splits a key into lowercase words at anything but letters and
// digits and at camelCase boundaries ("accessToken" → access, token).
func keyWords(key string) []string {
	var words []string
	var b strings.Builder
	prevLower := false
	flush := func() {
		if b.Len() > 0 {
			words = append(words, b.String())
			b.Reset()
		}
	}
	for _, r := range key {
		switch {
		case r >= 'A' && r <= 'Z':
			if prevLower {
				flush()
			}
			b.WriteRune(r + ('a' - 'A'))
			prevLower = false
		case (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
			prevLower = true
		default:
			flush()
			prevLower = false
		}
	}
	flush()
	return words
}
