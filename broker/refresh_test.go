package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Under continuous calls, refresh-ahead keeps the cache warm: after the
// first miss no caller waits for the upstream, however long the calls go
// on, and the upstream sees about one exchange per refresh interval. The
// refresh point is measured past the caller's min_ttl, so callers that need
// most of a token's life never wait either.
func TestRefreshAheadNoCallerWaits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      time.Duration
		minTTL   time.Duration
		interval [2]int // seconds between exchanges, lowest and highest
	}{
		// Usable 90 s; refreshed with 18-22.5 s beyond min_ttl left.
		{"small min_ttl", 100 * time.Second, time.Second, [2]int{66, 71}},
		// Usable 110 s, 60 s of it needed by the callers: refreshed with
		// 22-27.5 s beyond min_ttl left, every 22.5-28 s.
		{"min_ttl half the lifetime", 120 * time.Second, 60 * time.Second, [2]int{22, 28}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			up := &upstream{clock: clock, ttl: tc.ttl}
			m := &countingMetrics{lookups: map[broker.Status]int{}}
			b := broker.New(broker.Config{Exchanger: up, Clock: clock, Skew: 10 * time.Second, Metrics: m})
			t.Cleanup(b.Close)
			ctx := context.Background()
			const calls = 3000 // a call a second: 50 minutes
			waited := 0
			for i := range calls {
				before := m.get(&m.refreshes)
				_, st, err := b.Token(ctx, req("g"), broker.Options{MinTTL: tc.minTTL})
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if st != broker.StatusHit && i > 0 {
					waited++
				}
				if m.get(&m.refreshes) != before {
					// A refresh started: it runs in the background, and
					// completes (its token stored, then its exchange
					// counted) long before the token it replaces expires.
					waitFor(t, func() bool { return m.get(&m.exchanges) == m.get(&m.refreshes)+1 })
				}
				clock.Advance(time.Second)
			}
			if waited != 0 {
				t.Errorf("%d callers waited for an exchange after warm-up, want 0", waited)
			}
			if n := int(up.calls.Load()); n < calls/tc.interval[1] || n > calls/tc.interval[0]+2 {
				t.Errorf("%d exchanges for %d s of calls, want one every %d-%d s", n, calls, tc.interval[0], tc.interval[1])
			}
			if f := m.get(&m.refreshFailures); f != 0 {
				t.Errorf("%d refreshes failed", f)
			}
		})
	}
}

// Keys nobody asks for are not refreshed; refresh points are jittered per
// key, so tokens fetched together are not refreshed at the same moment.
func TestRefreshOnlyAskedKeysAndJittered(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: 1010 * time.Second} // usable 1000 s
	m := &countingMetrics{lookups: map[broker.Status]int{}}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Skew: 10 * time.Second, Metrics: m})
	t.Cleanup(b.Close)
	ctx := context.Background()
	const keys = 50
	for i := range keys {
		if _, _, err := b.Token(ctx, req(fmt.Sprint("g", i)), broker.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	// The refresh points lie in [750 s, 800 s]: no refresh before 750 s.
	clock.Advance(749 * time.Second)
	for i := range keys {
		b.Token(ctx, req(fmt.Sprint("g", i)), broker.Options{})
	}
	if n := m.get(&m.refreshes); n != 0 {
		t.Fatalf("%d refreshes before the earliest refresh point", n)
	}
	// Step through the window, asking for the even keys only.
	steps := map[int]bool{}
	for s := range 52 {
		clock.Advance(time.Second)
		before := m.get(&m.refreshes)
		for i := 0; i < keys; i += 2 {
			b.Token(ctx, req(fmt.Sprint("g", i)), broker.Options{})
		}
		if m.get(&m.refreshes) > before {
			steps[s] = true
		}
	}
	waitFor(t, func() bool { return int(up.calls.Load()) == keys+m.get(&m.refreshes) })
	if n := m.get(&m.refreshes); n != keys/2 {
		t.Errorf("%d refreshes, want %d: one per key asked for, none for the others", n, keys/2)
	}
	if len(steps) < 5 {
		t.Errorf("refreshes started at only %d distinct moments, want them spread by jitter", len(steps))
	}
}

// When refreshes fail, the cached token is served while it can meet the
// caller's min_ttl; refresh is retried with backoff meanwhile; then callers
// see the upstream's error.
func TestServeWhileValid(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: 110 * time.Second} // usable 100 s, refresh at 75-80 s
	m := &countingMetrics{lookups: map[broker.Status]int{}}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Skew: 10 * time.Second, Metrics: m})
	t.Cleanup(b.Close)
	ctx := context.Background()
	first, _, err := b.Token(ctx, req("g"), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	up.setErr(&broker.ExchangeError{Reason: broker.ReasonUnavailable, Upstream: "up", HTTPStatus: 503})
	clock.Advance(80 * time.Second)
	for range 15 { // 80 s .. 94 s: 16 s to 2 s of usable life left
		tok, st, err := b.Token(ctx, req("g"), broker.Options{})
		if err != nil || st != broker.StatusHit || tok.AccessToken != first.AccessToken {
			t.Fatalf("at %s: %v %v, want the cached token", clock.Now(), st, err)
		}
		waitFor(t, func() bool { return m.get(&m.refreshes) == m.get(&m.refreshFailures) })
		clock.Advance(time.Second)
	}
	attempts := m.get(&m.refreshes)
	if attempts < 2 || attempts > 6 {
		t.Errorf("%d refresh attempts in 15 s of failures, want a few, backing off (1 s, 2 s, 4 s, 8 s)", attempts)
	}
	if n := m.get(&m.staleServes); n < 10 {
		t.Errorf("%d stale serves counted, want one per hit after the first failure", n)
	}
	// A caller that needs more life than is left waits for an exchange,
	// and gets the upstream's error.
	_, _, err = b.Token(ctx, req("g"), broker.Options{MinTTL: 30 * time.Second})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonUnavailable {
		t.Fatalf("with more min_ttl than is left: %v, want the upstream's error", err)
	}
	// The upstream recovers: the next refresh succeeds and serves the new token.
	up.setErr(nil)
	clock.Advance(8 * time.Second)
	tok, _, err := b.Token(ctx, req("g"), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == first.AccessToken {
		// The refresh ran in the background: the next call gets it.
		waitFor(t, func() bool { return m.get(&m.refreshes) > m.get(&m.refreshFailures) && b.Len() == 1 })
		waitFor(t, func() bool {
			tok, _, err = b.Token(ctx, req("g"), broker.Options{})
			return err == nil && tok.AccessToken != first.AccessToken
		})
	}
}

// A refusal (4xx) is remembered for its key for NegativeTTL: a crowd of
// callers with a broken configuration makes one upstream call.
func TestNegativeCache(t *testing.T) {
	clock := newFakeClock()
	refused := &broker.ExchangeError{Reason: broker.ReasonRefused, Upstream: "up", HTTPStatus: 401, Code: "invalid_client"}
	up := &upstream{clock: clock, ttl: time.Hour, err: refused}
	m := &countingMetrics{lookups: map[broker.Status]int{}}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Metrics: m, NegativeTTL: 5 * time.Second})
	t.Cleanup(b.Close)
	ctx := context.Background()
	for range 1000 {
		if _, _, err := b.Token(ctx, req("g"), broker.Options{}); !errors.Is(err, refused) {
			t.Fatalf("err = %v, want the refusal", err)
		}
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("%d upstream calls for 1000 refused callers, want 1", n)
	}
	if n := m.get(&m.negativeHits); n != 999 {
		t.Errorf("%d negative hits, want 999", n)
	}
	// Another key is asked for on its own.
	b.Token(ctx, req("other"), broker.Options{})
	// After NegativeTTL the upstream is asked again; fixed, it answers.
	up.setErr(nil)
	clock.Advance(5 * time.Second)
	if _, st, err := b.Token(ctx, req("g"), broker.Options{}); err != nil || st != broker.StatusMiss {
		t.Fatalf("after the negative TTL: %v %v, want a miss that succeeds", st, err)
	}
	if n := up.calls.Load(); n != 3 {
		t.Errorf("%d upstream calls, want 3", n)
	}
}

// A refusal during a background refresh does not take the valid cached
// token away.
func TestRefusedRefreshKeepsTheToken(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: 110 * time.Second}
	m := &countingMetrics{lookups: map[broker.Status]int{}}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Skew: 10 * time.Second, Metrics: m})
	t.Cleanup(b.Close)
	ctx := context.Background()
	first, _, _ := b.Token(ctx, req("g"), broker.Options{})
	up.setErr(&broker.ExchangeError{Reason: broker.ReasonRefused, Upstream: "up", HTTPStatus: 400, Code: "invalid_grant"})
	clock.Advance(81 * time.Second)
	b.Token(ctx, req("g"), broker.Options{})
	waitFor(t, func() bool { return m.get(&m.refreshFailures) == 1 })
	if tok, st, err := b.Token(ctx, req("g"), broker.Options{}); err != nil || st != broker.StatusHit || tok.AccessToken != first.AccessToken {
		t.Errorf("after a refused refresh: %v %v, want the cached token", st, err)
	}
}

// The cache holds at most MaxEntries; the least recently used go first.
func TestBoundedCacheEvictsLeastRecentlyUsed(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: time.Hour}
	m := &countingMetrics{lookups: map[broker.Status]int{}}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Metrics: m, MaxEntries: 10})
	t.Cleanup(b.Close)
	ctx := context.Background()
	get := func(i int) broker.Status {
		t.Helper()
		_, st, err := b.Token(ctx, req(fmt.Sprint("g", i)), broker.Options{})
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Second) // use times a second apart and more
		return st
	}
	for i := range 10 {
		get(i)
	}
	get(0) // key 0 is now the most recently used
	for i := 10; i < 15; i++ {
		get(i)
	}
	if n := b.Len(); n != 10 {
		t.Errorf("Len = %d, want 10", n)
	}
	if n := m.get(&m.evicted); n != 5 {
		t.Errorf("%d evictions counted, want 5", n)
	}
	// Hits first: each miss evicts again.
	for _, c := range []struct {
		key  int
		want broker.Status
	}{{0, broker.StatusHit}, {6, broker.StatusHit}, {14, broker.StatusHit}, {1, broker.StatusMiss}, {5, broker.StatusMiss}} {
		if got := get(c.key); got != c.want {
			t.Errorf("key %d: %v, want %v", c.key, got, c.want)
		}
	}
}

// Sweep drops expired entries from shards nothing is stored in.
func TestSweep(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: time.Minute}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock})
	t.Cleanup(b.Close)
	for i := range 100 {
		b.Token(context.Background(), req(fmt.Sprint("g", i)), broker.Options{})
	}
	b.Sweep()
	if n := b.Len(); n != 100 {
		t.Fatalf("Len = %d before expiry, want 100", n)
	}
	clock.Advance(time.Minute)
	b.Sweep()
	if n := b.Len(); n != 0 {
		t.Errorf("Len = %d after expiry and Sweep, want 0", n)
	}
}

// Close stops a refresh in flight and waits for it; afterwards hits are
// still served and misses fail with ErrClosed.
func TestClose(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: 110 * time.Second}
	m := &countingMetrics{lookups: map[broker.Status]int{}}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Skew: 10 * time.Second, Metrics: m})
	ctx := context.Background()
	b.Token(ctx, req("g"), broker.Options{})
	up.mu.Lock()
	up.gate = make(chan struct{}) // the refresh blocks in the upstream
	up.mu.Unlock()
	clock.Advance(81 * time.Second)
	b.Token(ctx, req("g"), broker.Options{})
	waitFor(t, func() bool { return up.calls.Load() == 2 })
	b.Close() // returns only once the blocked refresh gave up
	if n := m.get(&m.refreshFailures); n != 1 {
		t.Errorf("%d refresh failures after Close, want the cancelled one", n)
	}
	if _, st, err := b.Token(ctx, req("g"), broker.Options{}); err != nil || st != broker.StatusHit {
		t.Errorf("hit after Close: %v %v", st, err)
	}
	if _, _, err := b.Token(ctx, req("new"), broker.Options{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("miss after Close: %v, want ErrClosed", err)
	}
}
