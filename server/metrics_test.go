package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
	"github.com/tokenbroker/tokenbroker/server"
)

// TestExchangeMetrics: every failure gets its reason, and only exchanges
// that reached the upstream count as attempted.
func TestExchangeMetrics(t *testing.T) {
	for _, tc := range []struct {
		err       error
		reason    string // "" for a success
		attempted bool
	}{
		{nil, "", true},
		{&broker.ExchangeError{Reason: broker.ReasonRefused, Err: errors.New("invalid_client")}, "refused", true},
		{fmt.Errorf("exchange: %w", context.DeadlineExceeded), "timeout", true},
		{errors.New("something else"), "other", true},
		{fmt.Errorf("guard: %w", resilience.ErrCircuitOpen), "circuit_open", false},
		{fmt.Errorf("%w: an account id for a client-credentials upstream", broker.ErrNotSupported), "not_supported", false},
		{broker.ErrUnknownTenant, "unknown_tenant", false},
	} {
		reg := prometheus.NewRegistry()
		m, err := server.NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		m.Exchange("tn-a", time.Millisecond, tc.err)
		attempted := counter(t, reg, "tokenbroker_exchanges_total", map[string]string{"tenant": "tn-a"})
		if want := map[bool]float64{true: 1}[tc.attempted]; attempted != want {
			t.Errorf("%v: exchanges_total %v, want %v", tc.err, attempted, want)
		}
		if tc.reason != "" {
			if n := counter(t, reg, "tokenbroker_exchange_errors_total", map[string]string{"tenant": "tn-a", "reason": tc.reason}); n != 1 {
				t.Errorf("%v: exchange_errors_total{reason=%q} %v, want 1", tc.err, tc.reason, n)
			}
		}
	}
}

// counter reads the value of the counter name with exactly these labels, 0
// if there is none.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
