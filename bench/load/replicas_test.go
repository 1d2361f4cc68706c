package main

import (
	"slices"
	"testing"
	"time"
)

func TestSplitConcurrency(t *testing.T) {
	for _, tc := range []struct {
		total, n int
		want     []int
	}{
		{16, 3, []int{6, 5, 5}},
		{16, 1, []int{16}},
		{3, 3, []int{1, 1, 1}},
		{17, 3, []int{6, 6, 5}},
	} {
		if got := splitConcurrency(tc.total, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("splitConcurrency(%d, %d) = %v, want %v", tc.total, tc.n, got, tc.want)
		}
	}
}

// TestRank checks ghz's rule: the element at rank p% of n, one lower when
// that rank is whole.
func TestRank(t *testing.T) {
	lats := make([]time.Duration, 200)
	for i := range lats {
		lats[i] = time.Duration(i+1) * time.Microsecond
	}
	for _, tc := range []struct {
		n, p int
		want time.Duration
	}{
		{200, 50, 100 * time.Microsecond}, // rank 100, whole: index 99
		{200, 99, 198 * time.Microsecond},
		{3, 50, 2 * time.Microsecond}, // rank 1.5: index 1
		{1, 99, time.Microsecond},
	} {
		if got := rank(lats[:tc.n], tc.p); got != tc.want {
			t.Errorf("rank(%d latencies, %d) = %s, want %s", tc.n, tc.p, got, tc.want)
		}
	}
}

func TestSumMetric(t *testing.T) {
	const page = `# HELP tokenbroker_exchanges_total Upstream token exchanges attempted, by tenant.
# TYPE tokenbroker_exchanges_total counter
tokenbroker_exchanges_total{tenant="a"} 12
tokenbroker_exchanges_total{tenant="b",x="}"} 3
tokenbroker_exchanges_total_other 100
tokenbroker_shared_cache_episodes_total 2
tokenbroker_refreshes_started_total{tenant="a"} 1.5e+02
`
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"tokenbroker_exchanges_total", 15},
		{"tokenbroker_shared_cache_episodes_total", 2},
		{"tokenbroker_refreshes_started_total", 150},
		{"tokenbroker_exchange_errors_total", 0},
	} {
		if got := sumMetric(page, tc.name); got != tc.want {
			t.Errorf("sumMetric(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCheckReplicas(t *testing.T) {
	ok := options{replicas: 3, keys: 100, concurrency: 16, lifetime: 20 * time.Second, skew: time.Second}
	if err := ok.checkReplicas(); err != nil {
		t.Fatalf("checkReplicas(%+v) = %v", ok, err)
	}
	for name, edit := range map[string]func(*options){
		"no keys":            func(o *options) { o.keys = 0 },
		"too few workers":    func(o *options) { o.concurrency = 2 },
		"fractional seconds": func(o *options) { o.lifetime = 1500 * time.Millisecond },
		"skew past lifetime": func(o *options) { o.skew = o.lifetime },
		"negative skew":      func(o *options) { o.skew = -time.Second },
	} {
		o := ok
		edit(&o)
		if err := o.checkReplicas(); err == nil {
			t.Errorf("%s: checkReplicas(%+v) = nil, want an error", name, o)
		}
	}
}
