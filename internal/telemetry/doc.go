// Package telemetry gives the gateway its Prometheus metrics, OpenTelemetry
// traces and the trace-aware, redacting slog handler of its operational
// logs. It is a leaf: it imports no sibling except the shared verdict
// value types, and the composition root (internal/gateway) hands its
// methods to the pipeline and the MCP proxy as hooks.
//
// # Model
//
// A T owns one prometheus.Registry (Go and process collectors,
// gatehouse_build_info, the request metrics below, and whatever other
// components register on Registerer) served by Handler, and one
// OpenTelemetry TracerProvider exporting over OTLP/HTTP with a batch span
// processor. With no OTLP endpoint, tracing is off: span starters return
// the context unchanged and a no-op span, and nothing is allocated.
//
// One mediated request is one server span (StartRequest) with one child
// span per pipeline stage (StartStage) and a client span for the upstream
// call (StartUpstream), whose W3C trace context Inject writes into the
// upstream request's headers.
//
// # Invariants
//
//   - Label cardinality is bounded. Methods, layers and outcomes are mapped
//     onto fixed sets ("other" for anything else); every vector keeps at
//     most Config.MaxSeries label combinations, past which the
//     request-derived labels (agent, server, tool, code, ...) of a new
//     combination read "other" and gatehouse_telemetry_series_overflow_total
//     counts the observation. Values that are not valid UTF-8 or longer
//     than 128 bytes read "other".
//   - Spans carry only the method, agent id, server, tool, stage, outcome,
//     correlation id and an error kind: never a token, an argument, a
//     result or an error message (which may quote either). Errors are
//     recorded as a fixed kind (ErrorKind), not as text.
//   - A caller's trace context is trusted only when Config.TrustIncoming
//     is set; otherwise it becomes a span link, so an agent cannot choose
//     the trace id the audit log and the upstream servers see. Incoming
//     baggage is never extracted, so nothing an agent sends travels to an
//     upstream server unscreened in a header.
//   - Every method is safe for concurrent use, and a nil *T is valid and
//     does nothing, so components can be wired without telemetry.
package telemetry
