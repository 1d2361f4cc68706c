package server

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

// Metrics is the broker's metrics hook, backed by Prometheus collectors. It
// implements [broker.Metrics].
type Metrics struct {
	hit, miss, shared, remote prometheus.Counter
	exchanges                 *prometheus.CounterVec
	exchangeErrors            *prometheus.CounterVec
	exchangeSeconds           *prometheus.HistogramVec
	limited                   *prometheus.CounterVec
	wouldDenies               *prometheus.CounterVec
	refreshes                 *prometheus.CounterVec
	refreshFailures           *prometheus.CounterVec
	staleServes               prometheus.Counter
	negativeHits              prometheus.Counter
	evictions                 prometheus.Counter
}

// NewMetrics registers the broker's collectors on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenbroker_cache_lookups_total",
		Help: "Token requests served, by how: hit (from cache), miss (caused an exchange), shared (waited on an exchange in flight, this replica's or another's), remote (from the cache the replicas share).",
	}, []string{"result"})
	m := &Metrics{
		hit:    lookups.WithLabelValues("hit"),
		miss:   lookups.WithLabelValues("miss"),
		shared: lookups.WithLabelValues("shared"),
		remote: lookups.WithLabelValues("remote"),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_exchanges_total",
			Help: "Upstream token exchanges attempted, by tenant (not those refused before any request: circuit_open, not_supported, unknown_tenant).",
		}, []string{"tenant"}),
		exchangeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_exchange_errors_total",
			Help: "Upstream token exchanges that failed, by tenant and reason.",
		}, []string{"tenant", "reason"}),
		exchangeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenbroker_exchange_duration_seconds",
			Help:    "Time taken by upstream token exchanges, signing included, by tenant.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"tenant"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_rate_limited_total",
			Help: "Calls refused because the caller was over its rate limit, by caller.",
		}, []string{"caller"}),
		wouldDenies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_would_deny_total",
			Help: "Calls of callers in audit mode that were served although enforce mode would deny them, by caller.",
		}, []string{"caller"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_refreshes_started_total",
			Help: "Background refreshes started by hits on tokens past their refresh point, by tenant.",
		}, []string{"tenant"}),
		refreshFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_refresh_failures_total",
			Help: "Background refreshes that failed, by tenant; the old token keeps being served while valid.",
		}, []string{"tenant"}),
		staleServes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_stale_serves_total",
			Help: "Hits served with a still-valid token whose refresh has been failing.",
		}),
		negativeHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_negative_cache_hits_total",
			Help: "Calls answered with an upstream refusal remembered for their key, without asking the upstream again.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_cache_evictions_total",
			Help: "Cache entries evicted, least recently used first, to keep the cache within cache.max_entries.",
		}),
	}
	for _, c := range []prometheus.Collector{lookups, m.exchanges, m.exchangeErrors, m.exchangeSeconds, m.limited, m.wouldDenies,
		m.refreshes, m.refreshFailures, m.staleServes, m.negativeHits, m.evictions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Lookup counts a served token.
func (m *Metrics) Lookup(st broker.Status) {
	switch st {
	case broker.StatusHit:
		m.hit.Inc()
	case broker.StatusMiss:
		m.miss.Inc()
	case broker.StatusShared:
		m.shared.Inc()
	case broker.StatusRemote:
		m.remote.Inc()
	}
}

// Exchange counts an exchange, its latency and its failure reason. One
// refused before any request (an open circuit breaker, a request the
// tenant's upstream kind cannot carry, an unknown tenant) never reached the
// upstream: it counts only as an error, with that reason.
func (m *Metrics) Exchange(tenant string, d time.Duration, err error) {
	if err != nil {
		reason, attempted := errorReason(err)
		m.exchangeErrors.WithLabelValues(tenant, reason).Inc()
		if !attempted {
			return
		}
	}
	m.exchanges.WithLabelValues(tenant).Inc()
	m.exchangeSeconds.WithLabelValues(tenant).Observe(d.Seconds())
}

// RefreshStarted counts a background refresh.
func (m *Metrics) RefreshStarted(tenant string) { m.refreshes.WithLabelValues(tenant).Inc() }

// RefreshFailed counts a failed background refresh.
func (m *Metrics) RefreshFailed(tenant string) { m.refreshFailures.WithLabelValues(tenant).Inc() }

// StaleServe counts a hit on a token whose refresh has been failing.
func (m *Metrics) StaleServe() { m.staleServes.Inc() }

// NegativeHit counts a call answered by a remembered refusal.
func (m *Metrics) NegativeHit() { m.negativeHits.Inc() }

// Evicted counts evicted cache entries.
func (m *Metrics) Evicted(n int) { m.evictions.Add(float64(n)) }

// errorReason is a failed exchange's reason label, and whether it was
// attempted: sent to the upstream, rather than refused before any request.
func errorReason(err error) (reason string, attempted bool) {
	var xe *broker.ExchangeError
	switch {
	case errors.Is(err, resilience.ErrCircuitOpen):
		return "circuit_open", false
	case errors.As(err, &xe):
		return string(xe.Reason), true
	case errors.Is(err, context.DeadlineExceeded):
		return string(broker.ReasonTimeout), true
	case errors.Is(err, broker.ErrUnknownTenant):
		return "unknown_tenant", false
	case errors.Is(err, broker.ErrNotSupported):
		return "not_supported", false
	}
	return "other", true
}

func (m *Metrics) rateLimited(caller string) {
	if m != nil {
		m.limited.WithLabelValues(caller).Inc()
	}
}

func (m *Metrics) wouldDeny(caller string) {
	if m != nil {
		m.wouldDenies.WithLabelValues(caller).Inc()
	}
}
