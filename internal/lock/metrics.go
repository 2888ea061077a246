package lock

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Manager's Prometheus metrics. With a nil Registerer they
// are created but not registered.
type metrics struct {
	failures      *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	up            prometheus.Gauge
	auditFailures prometheus.Counter
}

// controlFailuresHelp is the help text of gatehouse_control_failures_total,
// which several packages register (the first registration wins, the others
// share it); it must be identical everywhere.
const controlFailuresHelp = "Requests that a control could not decide because a dependency failed, by control and fail mode (closed: refused, open: allowed)."

// newMetrics creates the metrics; active is read at every scrape and
// returns the number of locks in force.
func newMetrics(reg prometheus.Registerer, log *slog.Logger, active func() float64) *metrics {
	m := &metrics{
		failures: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_control_failures_total", Help: controlFailuresHelp}, []string{"control", "fail_mode"})),
		refusals: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_locks_refusals_total", Help: "Requests refused by a kill-switch lock, by the lock's scope."}, []string{"scope"})),
		up: register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_locks_store_up", Help: "1 if the last refresh of the locks succeeded, 0 if the lock store is failing (alert)."})),
		auditFailures: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_locks_audit_failures_total", Help: "Lock changes refused because their audit record failed."})),
	}
	// Computed when scraped: a lock whose TTL has run out stops counting
	// at once, although it stays in the store until someone removes it.
	register(reg, log, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_locks_active", Help: "Kill-switch locks in force (expired ones excluded)."}, active))
	return m
}

// register registers c, or returns the collector already registered under
// the same description (several Managers may share a registry).
func register[T prometheus.Collector](reg prometheus.Registerer, log *slog.Logger, c T) T {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if ex, ok := are.ExistingCollector.(T); ok {
				return ex
			}
		}
		log.Warn("registering lock metric", "err", err)
	}
	return c
}
