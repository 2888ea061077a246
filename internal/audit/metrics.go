package audit

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the log's Prometheus metrics. With a nil Registerer they are
// created but not registered, so the code paths stay the same.
type metrics struct {
	reg                prometheus.Registerer
	collectors         []prometheus.Collector
	commit             prometheus.Histogram
	append             prometheus.Histogram
	batch              prometheus.Histogram
	records            prometheus.Counter
	failures           prometheus.Counter
	checkpointFailures prometheus.Counter
	checkpointSize     prometheus.Gauge
	up                 prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, l *Log) *metrics {
	latency := []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}
	m := &metrics{
		reg: reg,
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gatehouse_audit_commit_duration_seconds", Help: "Time to make one batch of audit records durable.", Buckets: latency}),
		append: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gatehouse_audit_append_duration_seconds", Help: "Time an Append waited until its record was durable (queue and commit).", Buckets: latency}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gatehouse_audit_batch_records", Help: "Records per group commit.", Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_audit_records_total", Help: "Audit records made durable."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_audit_failures_total", Help: "Audit records that could not be made durable (alert on any increase: the audited actions were refused)."}),
		checkpointFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_audit_checkpoint_failures_total", Help: "Checkpoints that could not be stored or published."}),
		checkpointSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_audit_checkpoint_size", Help: "Tree size of the latest signed checkpoint."}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_audit_store_up", Help: "1 if the last audit commit succeeded, 0 if the audit store is failing (alert)."}),
	}
	m.up.Set(1)
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_audit_queue_depth", Help: "Audit records waiting for the writer."},
		func() float64 { return float64(len(l.queue)) })
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_audit_log_size", Help: "Durable audit records."},
		func() float64 { return float64(l.Size()) })
	m.collectors = []prometheus.Collector{m.commit, m.append, m.batch, m.records, m.failures, m.checkpointFailures, m.checkpointSize, m.up, queue, size}
	if reg != nil {
		for _, c := range m.collectors {
			if err := reg.Register(c); err != nil {
				l.logger.Warn("registering audit metric", "err", err)
			}
		}
	}
	return m
}

func (m *metrics) observeCommit(d time.Duration, n int, err error) {
	m.commit.Observe(d.Seconds())
	m.batch.Observe(float64(n))
	if err != nil {
		m.failures.Add(float64(n))
		m.up.Set(0)
		return
	}
	m.records.Add(float64(n))
	m.up.Set(1)
}

func (m *metrics) observeAppend(d time.Duration) { m.append.Observe(d.Seconds()) }

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
