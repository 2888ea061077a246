package limits

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// controlFailuresHelp is the help text of gatehouse_control_failures_total,
// which several packages register (the first registration wins, the others
// share it); it must be identical everywhere.
const controlFailuresHelp = "Requests that a control could not decide because a dependency failed, by control and fail mode (closed: refused, open: allowed)."

// metrics are the package's Prometheus metrics. With a nil Registerer they
// are created but not registered.
type metrics struct {
	failures       *prometheus.CounterVec
	refusals       *prometheus.CounterVec
	settleFailures prometheus.Counter
	leaked         prometheus.Counter
	keys           *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	return &metrics{
		failures: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_control_failures_total", Help: controlFailuresHelp}, []string{"control", "fail_mode"})),
		refusals: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_limits_refusals_total", Help: "Calls refused by a limit, by reason code and rule."}, []string{"code", "rule"})),
		settleFailures: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_limits_settle_failures_total", Help: "Reservations that could not be committed or released (they stay counted until their window ends)."})),
		leaked: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_limits_leaked_holds_total", Help: "Calls that held a limit longer than max_hold without finishing (released by the sweeper; a bug or a stuck upstream)."})),
		keys: register(reg, log, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_limits_rate_buckets", Help: "Token buckets kept in memory, by rate rule."}, []string{"rule"})),
	}
}

// register registers c, or returns the collector already registered under
// the same description (several components may share a registry).
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
		log.Warn("registering limits metric", "err", err)
	}
	return c
}
