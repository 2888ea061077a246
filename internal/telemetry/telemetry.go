package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Config configures telemetry. The zero value is valid: metrics on,
// tracing off.
type Config struct {
	// ServiceName is the service.name resource attribute of spans. Default
	// "gatehouse".
	ServiceName string
	// Version is the gateway's version: the service.version resource
	// attribute and the version label of gatehouse_build_info. Default
	// "unknown".
	Version string
	// OTLPEndpoint is the OTLP/HTTP traces endpoint, "http://host:4318" or
	// "https://host:4318" (spans are posted to /v1/traces), or a full URL
	// with a path, used as is. Empty turns tracing off: span starters are
	// no-ops and cost nothing.
	OTLPEndpoint string
	// OTLPHeaders are sent with every export (collector credentials).
	OTLPHeaders map[string]string
	// SampleRatio is the fraction of new traces sampled, in (0, 1].
	// Default (0) 1. A trusted caller's sampling decision is followed
	// (parent-based sampling).
	SampleRatio float64
	// BatchTimeout is the longest a finished span waits before export.
	// Default 5s.
	BatchTimeout time.Duration
	// TrustIncoming makes a caller's W3C traceparent/tracestate the parent
	// of the request span, so the agent's trace continues through the
	// gateway (and is propagated upstream even with tracing off). Default
	// false: the incoming context becomes a span link and the gateway
	// starts its own trace, so callers cannot choose trace ids.
	TrustIncoming bool
	// MaxSeries bounds the label combinations of each metric vector.
	// Default 10000.
	MaxSeries int
	// Logger receives telemetry's own warnings (export failures); nil
	// discards them.
	Logger *slog.Logger
}

// T is the gateway's telemetry: metrics registry, tracer and helpers. A nil
// *T is valid and does nothing.
type T struct {
	cfg    Config
	log    *slog.Logger
	reg    *prometheus.Registry
	m      *metrics
	tp     *sdktrace.TracerProvider // nil when tracing is off
	tracer trace.Tracer             // nil when tracing is off
	// prop injects the trace context (and any baggage the gateway itself
	// set) into upstream requests.
	prop propagation.TextMapPropagator
}

// New builds telemetry from cfg. It contacts no collector: exports happen
// in the background and their failures are logged and counted.
func New(cfg Config) (*T, error) {
	if cfg.ServiceName == "" {
		cfg.ServiceName = "gatehouse"
	}
	if cfg.Version == "" {
		cfg.Version = "unknown"
	}
	switch {
	case cfg.SampleRatio == 0:
		cfg.SampleRatio = 1
	case math.IsNaN(cfg.SampleRatio) || cfg.SampleRatio < 0 || cfg.SampleRatio > 1:
		return nil, fmt.Errorf("telemetry: sample ratio %v is not in (0, 1]", cfg.SampleRatio)
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 5 * time.Second
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &T{
		cfg:  cfg,
		log:  cfg.Logger,
		reg:  prometheus.NewRegistry(),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	t.m = newMetrics(cfg.MaxSeries)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "gatehouse_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": runtime.Version()},
	})
	build.Set(1)
	cs := append([]prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build,
	}, t.m.collectors()...)
	for _, c := range cs {
		if err := t.reg.Register(c); err != nil {
			return nil, fmt.Errorf("telemetry: registering metrics: %w", err)
		}
	}
	if cfg.OTLPEndpoint != "" {
		if err := t.startTracing(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *T) startTracing() error {
	endpoint, path, insecure, err := parseEndpoint(t.cfg.OTLPEndpoint)
	if err != nil {
		return err
	}
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpoint(endpoint),
		otlptracehttp.WithURLPath(path),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression),
	}
	if insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if len(t.cfg.OTLPHeaders) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(t.cfg.OTLPHeaders))
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return fmt.Errorf("telemetry: creating the OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", t.cfg.ServiceName),
		attribute.String("service.version", t.cfg.Version),
	))
	if err != nil {
		return fmt.Errorf("telemetry: building the trace resource: %w", err)
	}
	t.tp = sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.cfg.SampleRatio))),
		sdktrace.WithBatcher(&exporter{SpanExporter: exp, t: t}, sdktrace.WithBatchTimeout(t.cfg.BatchTimeout)),
	)
	t.tracer = t.tp.Tracer("github.com/gatehouse/gatehouse/internal/telemetry", trace.WithInstrumentationVersion(t.cfg.Version))
	return nil
}

// parseEndpoint splits an OTLP/HTTP endpoint URL into host, path and
// whether it is plain HTTP.
func parseEndpoint(s string) (host, path string, insecure bool, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", false, fmt.Errorf("telemetry: parsing the OTLP endpoint: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", false, fmt.Errorf("telemetry: the OTLP endpoint %q must be an http or https URL with a host and no credentials, query or fragment", s)
	}
	path = u.Path
	if path == "" || path == "/" {
		path = "/v1/traces"
	}
	return u.Host, path, u.Scheme == "http", nil
}

// Tracing reports whether spans are recorded and exported.
func (t *T) Tracing() bool { return t != nil && t.tracer != nil }

// Registerer is the registry other components register their metrics on
// (audit, lock, limits, ...).
func (t *T) Registerer() prometheus.Registerer {
	if t == nil {
		return nil
	}
	return t.reg
}

// Gatherer is the registry, for tests and custom exposition.
func (t *T) Gatherer() prometheus.Gatherer {
	if t == nil {
		return prometheus.NewRegistry()
	}
	return t.reg
}

// Handler serves the registry in the Prometheus exposition formats
// (GET /metrics).
func (t *T) Handler() http.Handler {
	if t == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(t.reg, promhttp.HandlerOpts{
		Registry:          t.reg,
		ErrorLog:          slogPrinter{t.log},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	})
}

// Shutdown flushes buffered spans and stops the exporter. Spans started
// afterwards are dropped. It is safe to call more than once.
func (t *T) Shutdown(ctx context.Context) error {
	if t == nil || t.tp == nil {
		return nil
	}
	if err := t.tp.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("telemetry: flushing spans: %w", err)
	}
	return nil
}

// slogPrinter adapts a logger to promhttp's error log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("serving metrics", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}
