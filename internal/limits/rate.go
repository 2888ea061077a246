package limits

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ParseRate parses "N/DURATION" ("100/1m", "5/s", "10000/24h"): N events
// per duration. A bare unit means one of it ("s" = "1s").
func ParseRate(s string) (n int, per time.Duration, err error) {
	ns, ds, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, 0, fmt.Errorf("rate %q: want N/DURATION, e.g. 100/1m", s)
	}
	n, err = strconv.Atoi(strings.TrimSpace(ns))
	if err != nil || n <= 0 {
		return 0, 0, fmt.Errorf("rate %q: the count must be a positive integer", s)
	}
	ds = strings.TrimSpace(ds)
	if ds != "" && (ds[0] < '0' || ds[0] > '9') {
		ds = "1" + ds
	}
	if ds == "1d" {
		ds = "24h"
	}
	per, err = time.ParseDuration(ds)
	if err != nil || per <= 0 {
		return 0, 0, fmt.Errorf("rate %q: the period must be a positive duration", s)
	}
	return n, per, nil
}

// rateRule is one compiled Rate with its per-key token buckets. Limiters
// are kept in memory, per replica.
type rateRule struct {
	cfg     Rate
	limit   rate.Limit
	burst   int
	actions map[string]bool
	// idle is how long an unused limiter takes to refill: after that it is
	// equivalent to a new one and may be dropped.
	idle time.Duration

	mu sync.Mutex
	m  map[string]*keyed
}

type keyed struct {
	lim  *rate.Limiter
	used atomic.Int64 // UnixNano of the last use
}

func (rr *rateRule) applies(r *requestView) bool {
	if !rr.actions[r.action] {
		return false
	}
	c := &rr.cfg
	return (c.Agent == "" || c.Agent == r.agent) && (c.Server == "" || c.Server == r.server) && (c.Tool == "" || c.Tool == r.target)
}

// key builds the rule's key for r.
func (rr *rateRule) key(r *requestView) string {
	switch len(rr.cfg.Per) {
	case 0:
		return ""
	case 1:
		return r.dim(rr.cfg.Per[0])
	}
	var b strings.Builder
	for i, d := range rr.cfg.Per {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(r.dim(d))
	}
	return b.String()
}

func (rr *rateRule) limiter(key string, now time.Time) *rate.Limiter {
	rr.mu.Lock()
	k := rr.m[key]
	if k == nil {
		k = &keyed{lim: rate.NewLimiter(rr.limit, rr.burst)}
		rr.m[key] = k
	}
	rr.mu.Unlock()
	k.used.Store(now.UnixNano())
	return k.lim
}

// sweep drops limiters unused for longer than their refill time.
func (rr *rateRule) sweep(now time.Time) {
	cut := now.Add(-rr.idle - time.Second).UnixNano()
	rr.mu.Lock()
	for key, k := range rr.m {
		if k.used.Load() < cut {
			delete(rr.m, key)
		}
	}
	rr.mu.Unlock()
}

func (rr *rateRule) size() int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return len(rr.m)
}
