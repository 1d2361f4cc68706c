package main

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
	"github.com/tokenbroker/tokenbroker/server"
)

// guards keeps one resilience.Upstream (retries, circuit breaker, in-flight
// limit) per upstream endpoint, shared by the tenants that use it and kept
// across reloads, so that a config change does not reset an open breaker.
type guards struct {
	metrics resilience.Metrics
	mu      sync.Mutex
	m       map[string]*resilience.Upstream
}

func newGuards(reg prometheus.Registerer) *guards {
	return &guards{metrics: newUpstreamMetrics(reg), m: map[string]*resilience.Upstream{}}
}

// endpointName names a tenant's upstream endpoint: the host of its token
// URL, or of its issuer when the endpoint is discovered.
func endpointName(up config.Upstream) string {
	if up.TokenURL != nil {
		return up.TokenURL.Host
	}
	return up.Issuer.Host
}

// get returns the endpoint's guard, made on first use.
func (g *guards) get(name string) *resilience.Upstream {
	g.mu.Lock()
	defer g.mu.Unlock()
	u, ok := g.m[name]
	if !ok {
		u = resilience.NewUpstream(resilience.Config{Name: name, Metrics: g.metrics})
		g.m[name] = u
		g.metrics.BreakerState(name, resilience.Closed)
	}
	return u
}

// states reports every endpoint's breaker for /readyz.
func (g *guards) states() []server.UpstreamState {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]server.UpstreamState, 0, len(g.m))
	for name, u := range g.m {
		st, retryAt := u.State()
		out = append(out, server.UpstreamState{Name: name, State: st.String(), RetryAt: retryAt})
	}
	return out
}

// upstreamMetrics exports the guards' events to Prometheus.
type upstreamMetrics struct {
	retries, fastFails *prometheus.CounterVec
	state, waiting     *prometheus.GaugeVec
}

func newUpstreamMetrics(reg prometheus.Registerer) *upstreamMetrics {
	m := &upstreamMetrics{
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_upstream_retries_total",
			Help: "Exchange attempts after the first, by upstream endpoint.",
		}, []string{"upstream"}),
		fastFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_upstream_fast_failures_total",
			Help: "Exchanges refused at once because the upstream's circuit breaker is open, by upstream endpoint.",
		}, []string{"upstream"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenbroker_upstream_breaker_state",
			Help: "The circuit breaker of each upstream endpoint: 1 for its current state (closed, open or half_open), 0 for the others.",
		}, []string{"upstream", "state"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenbroker_upstream_waiting",
			Help: "Exchanges waiting for one of the upstream endpoint's in-flight slots.",
		}, []string{"upstream"}),
	}
	reg.MustRegister(m.retries, m.fastFails, m.state, m.waiting)
	return m
}

func (m *upstreamMetrics) Retry(upstream string)    { m.retries.WithLabelValues(upstream).Inc() }
func (m *upstreamMetrics) FastFail(upstream string) { m.fastFails.WithLabelValues(upstream).Inc() }
func (m *upstreamMetrics) Waiting(upstream string, delta int) {
	m.waiting.WithLabelValues(upstream).Add(float64(delta))
}

func (m *upstreamMetrics) BreakerState(upstream string, s resilience.State) {
	for _, st := range []resilience.State{resilience.Closed, resilience.Open, resilience.HalfOpen} {
		v := 0.0
		if st == s {
			v = 1
		}
		m.state.WithLabelValues(upstream, st.String()).Set(v)
	}
}
