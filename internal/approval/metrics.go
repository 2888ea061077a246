package approval

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec
	decisions     *prometheus.CounterVec
	transitions   *prometheus.CounterVec
	uses          *prometheus.CounterVec
	notifications *prometheus.CounterVec
	auditFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatehouse_approval_requests_total",
			Help: "Approval requests created, by risk class (\"elevation\" for elevations)."}, []string{"risk"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatehouse_approval_decisions_total",
			Help: "Approver decisions by vote (approve, deny, break_glass) and resulting status (or refused)."}, []string{"vote", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatehouse_approval_transitions_total",
			Help: "Approval state changes by the status reached."}, []string{"status"}),
		uses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatehouse_approval_grant_uses_total",
			Help: "Attempts to use a grant, by result (granted, none, or the approval's status)."}, []string{"result"}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatehouse_approval_notifications_total",
			Help: "Notification delivery attempts by notifier and result."}, []string{"notifier", "result"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_approval_audit_failures_total",
			Help: "Approval changes refused because their audit record failed."}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.decisions = register(reg, m.decisions)
		m.transitions = register(reg, m.transitions)
		m.uses = register(reg, m.uses)
		m.notifications = register(reg, m.notifications)
		m.auditFailures = register(reg, m.auditFailures)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name (several Managers on one registry share their metrics).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if ex, ok := are.ExistingCollector.(T); ok {
				return ex
			}
		}
		panic(fmt.Sprintf("approval: registering metrics: %v", err))
	}
	return c
}
