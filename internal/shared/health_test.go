package shared

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

func TestOutageAndRecovery(t *testing.T) {
	r := redistest.Start(t)
	m := &metrics{}
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	const probe = time.Second
	s := newStore(t, r.Addr(), func(c *Config) {
		c.Metrics = m
		c.Clock = clock
		c.ProbeInterval = probe
	})
	other := newStore(t, r.Addr(), nil)
	ctx := t.Context()
	inv := s.Invalidations(ctx)
	if err := s.Set(ctx, "a", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}

	r.Stop()
	// The first call finds Redis gone: the failure, wrapped.
	_, _, err := s.Get(ctx, "a")
	if !errors.Is(err, ErrUnavailable) || err == ErrUnavailable {
		t.Fatalf("Get with Redis stopped: %v, want a wrapped ErrUnavailable", err)
	}
	if s.Healthy() {
		t.Fatal("Healthy after a failure")
	}
	// The rest fail fast, without trying, many at once: the bare sentinel.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, _, err := s.Get(ctx, "a"); err != ErrUnavailable {
				t.Errorf("Get while down: %v, want ErrUnavailable at once", err)
			}
			if _, _, err := s.TryLease(ctx, "a"); err != ErrUnavailable {
				t.Errorf("TryLease while down: %v, want ErrUnavailable at once", err)
			}
			if _, _, err := s.Wait(ctx, "a"); err != ErrUnavailable {
				t.Errorf("Wait while down: %v, want ErrUnavailable at once", err)
			}
		})
	}
	wg.Wait()
	if got := m.Episodes(); !slices.Equal(got, []bool{true}) {
		t.Fatalf("episodes %v, want [true]", got)
	}
	if m.causes[0] == nil || !errors.Is(m.causes[0], ErrUnavailable) {
		t.Fatalf("Episode(true) cause %v, want the failure", m.causes[0])
	}

	// A probe after the interval, with Redis still gone, fails and keeps
	// the episode going.
	clock.Add(probe)
	if _, _, err := s.Get(ctx, "a"); !errors.Is(err, ErrUnavailable) || err == ErrUnavailable {
		t.Fatalf("probe with Redis stopped: %v, want a wrapped ErrUnavailable", err)
	}
	if _, _, err := s.Get(ctx, "a"); err != ErrUnavailable {
		t.Fatalf("Get after a failed probe: %v, want ErrUnavailable at once", err)
	}

	r.Restart()
	// Back, but the Store does not know before the interval has passed.
	if _, _, err := s.Get(ctx, "a"); err != ErrUnavailable {
		t.Fatalf("Get before the probe interval: %v, want ErrUnavailable at once", err)
	}
	clock.Add(probe)
	if v, ok, err := s.Get(ctx, "a"); err != nil || ok || v != nil {
		t.Fatalf("Get after the restart = %q, %v, %v; want nil, false, nil (Redis restarted empty)", v, ok, err)
	}
	if !s.Healthy() {
		t.Fatal("not Healthy after a successful probe")
	}
	if err := s.Set(ctx, "a", []byte("w"), time.Minute); err != nil {
		t.Fatalf("Set after recovery: %v", err)
	}
	if got := m.Episodes(); !slices.Equal(got, []bool{true, false}) {
		t.Fatalf("episodes %v, want [true false]", got)
	}
	if m.causes[1] != nil {
		t.Fatalf("Episode(false) cause %v, want nil", m.causes[1])
	}

	// The subscription reconnects on its own.
	subscribed(t, s)
	subscribed(t, other)
	if ok, err := other.CompareAndDelete(ctx, "a", []byte("w")); err != nil || !ok {
		t.Fatalf("CompareAndDelete after recovery = %v, %v", ok, err)
	}
	if got := <-inv; got != "a" {
		t.Fatalf("invalidation after recovery %q, want a", got)
	}
}

func TestSlowRedisIsDown(t *testing.T) {
	r := redistest.Start(t)
	m := &metrics{}
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	s := newStore(t, r.Addr(), func(c *Config) {
		c.Metrics = m
		c.Clock = clock
		c.Timeout = 50 * time.Millisecond
	})
	ctx := t.Context()
	c := direct(t, r.Addr())
	if err := s.Set(ctx, "a", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	// Redis stops answering writes for a while: they wait (the test's own
	// UNPAUSE is not a write, so it gets through).
	if err := c.Do(ctx, "CLIENT", "PAUSE", time.Minute.Milliseconds(), "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "a", []byte("v"), time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Set while Redis is paused: %v, want ErrUnavailable", err)
	}
	if s.Healthy() || !slices.Equal(m.Episodes(), []bool{true}) {
		t.Fatalf("Healthy %v, episodes %v; want false, [true]", s.Healthy(), m.Episodes())
	}
	if err := c.ClientUnpause(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	clock.Add(DefaultProbeInterval)
	if err := s.Set(ctx, "a", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Set after unpause: %v", err)
	}
	if !s.Healthy() || !slices.Equal(m.Episodes(), []bool{true, false}) {
		t.Fatalf("Healthy %v, episodes %v; want true, [true false]", s.Healthy(), m.Episodes())
	}
}

func TestUnreachableAtStart(t *testing.T) {
	r := redistest.Start(t)
	r.Stop()
	m := &metrics{}
	s := newStore(t, r.Addr(), func(c *Config) { c.Metrics = m })
	if !s.Healthy() {
		t.Fatal("a new Store starts down")
	}
	if err := s.Ping(t.Context()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping with no Redis: %v, want ErrUnavailable", err)
	}
	if !slices.Equal(m.Episodes(), []bool{true}) {
		t.Fatalf("episodes %v, want [true]", m.Episodes())
	}
}

// A replica whose calls are all local hits makes no call to probe Redis
// with: the subscription's reconnection ends the episode instead.
func TestSubscriptionEndsTheEpisode(t *testing.T) {
	r := redistest.Start(t)
	m := &metrics{}
	s := newStore(t, r.Addr(), func(c *Config) {
		c.Metrics = m
		c.ProbeInterval = 100 * time.Millisecond
	})
	subscribed(t, s)
	r.Stop()
	if _, _, err := s.Get(t.Context(), "a"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with Redis stopped: %v", err)
	}
	r.Restart()
	testkit.WaitFor(t, s.Healthy) // no call in between
	if got := m.Episodes(); !slices.Equal(got, []bool{true, false}) {
		t.Errorf("episodes %v, want [true false]", got)
	}
}
