package server

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Metrics is the broker's metrics hook, backed by Prometheus collectors. It
// implements [broker.Metrics].
type Metrics struct {
	hit, miss, shared prometheus.Counter
	exchanges         *prometheus.CounterVec
	exchangeErrors    *prometheus.CounterVec
	exchangeSeconds   *prometheus.HistogramVec
	limited           *prometheus.CounterVec
	wouldDenies       *prometheus.CounterVec
}

// NewMetrics registers the broker's collectors on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenbroker_cache_lookups_total",
		Help: "Token requests served, by how: hit (from cache), miss (caused an exchange), shared (waited on an exchange in flight).",
	}, []string{"result"})
	m := &Metrics{
		hit:    lookups.WithLabelValues("hit"),
		miss:   lookups.WithLabelValues("miss"),
		shared: lookups.WithLabelValues("shared"),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_exchanges_total",
			Help: "Upstream token exchanges attempted, by tenant.",
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
	}
	for _, c := range []prometheus.Collector{lookups, m.exchanges, m.exchangeErrors, m.exchangeSeconds, m.limited, m.wouldDenies} {
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
	}
}

// Exchange counts an exchange, its latency and its failure reason.
func (m *Metrics) Exchange(tenant string, d time.Duration, err error) {
	m.exchanges.WithLabelValues(tenant).Inc()
	m.exchangeSeconds.WithLabelValues(tenant).Observe(d.Seconds())
	if err != nil {
		m.exchangeErrors.WithLabelValues(tenant, errorReason(err)).Inc()
	}
}

func errorReason(err error) string {
	var xe *broker.ExchangeError
	switch {
	case errors.As(err, &xe):
		return string(xe.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		return string(broker.ReasonTimeout)
	case errors.Is(err, broker.ErrUnknownTenant):
		return "unknown_tenant"
	}
	return "other"
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
