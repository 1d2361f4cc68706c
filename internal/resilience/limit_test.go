package resilience_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

// counting is an exchanger that counts the calls in it at once and blocks
// them until release is closed.
type counting struct {
	release       chan struct{}
	now, most, in atomic.Int64
}

func (c *counting) Exchange(context.Context, broker.Request) (broker.Token, error) {
	c.in.Add(1)
	n := c.now.Add(1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
	defer c.now.Add(-1)
	<-c.release
	return broker.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}, nil
}

func TestInFlightLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMetrics{}
		// Different tenants, one endpoint: one limit.
		u := resilience.NewUpstream(resilience.Config{Name: host, Policy: resilience.Policy{MaxInFlight: 3}, Metrics: m})
		x := &counting{release: make(chan struct{})}
		a, b := u.Wrap(x), u.Wrap(x)
		const callers = 20
		var wg sync.WaitGroup
		var ok atomic.Int64
		for i := range callers {
			wg.Go(func() {
				g := a
				if i%2 == 1 {
					g = b
				}
				if _, err := g.Exchange(context.Background(), req); err == nil {
					ok.Add(1)
				}
			})
		}
		synctest.Wait() // everyone is in the exchanger or waiting for a slot
		if got, waiting := x.now.Load(), m.snapshot().waiting; got != 3 || waiting != callers-3 {
			t.Fatalf("%d in flight and %d waiting, want 3 and %d", got, waiting, callers-3)
		}
		close(x.release)
		wg.Wait()
		got := m.snapshot()
		if x.most.Load() != 3 || ok.Load() != callers || got.waiting != 0 || got.maxWaiting != callers-3 {
			t.Errorf("at most %d in flight, %d succeeded, waiting %d (at most %d); want 3, %d, 0, %d",
				x.most.Load(), ok.Load(), got.waiting, got.maxWaiting, callers, callers-3)
		}
	})
}

// TestWaitRespectsContext: a caller that cannot get a slot before its
// deadline gets a deadline error, without reaching the upstream.
func TestWaitRespectsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMetrics{}
		u := resilience.NewUpstream(resilience.Config{Name: host, Policy: resilience.Policy{MaxInFlight: 1}, Metrics: m})
		x := &counting{release: make(chan struct{})}
		done := make(chan struct{})
		go func() {
			defer close(done)
			u.Wrap(x).Exchange(context.Background(), req)
		}()
		synctest.Wait()

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		t0 := time.Now()
		_, err := u.Wrap(x).Exchange(ctx, req)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) != 2*time.Second {
			t.Fatalf("Exchange = %v after %v; want context.DeadlineExceeded after 2s", err, time.Since(t0))
		}
		if x.in.Load() != 1 {
			t.Errorf("%d calls reached the upstream, want 1", x.in.Load())
		}
		if got := m.snapshot(); got.waiting != 0 || got.maxWaiting != 1 {
			t.Errorf("waiting %d (at most %d), want 0 (at most 1)", got.waiting, got.maxWaiting)
		}
		// A waiting failure says nothing about the upstream.
		if s, _ := u.State(); s != resilience.Closed {
			t.Errorf("breaker %s, want closed", s)
		}
		close(x.release)
		<-done
	})
}

// TestSlotReleasedDuringBackoff: a caller sleeping before its retry does
// not hold its slot.
func TestSlotReleasedDuringBackoff(t *testing.T) {
	sleeping, wake := make(chan struct{}), make(chan struct{})
	clock := sleepFunc(func(ctx context.Context, d time.Duration) error {
		close(sleeping)
		<-wake
		return nil
	})
	u := resilience.NewUpstream(resilience.Config{Name: host, Policy: resilience.Policy{MaxInFlight: 1}, Clock: clock})
	x := &script{results: []error{unavailable, nil}}
	done := make(chan error)
	go func() {
		_, err := u.Wrap(x).Exchange(context.Background(), req)
		done <- err
	}()
	<-sleeping
	// The only slot is free: another caller goes through at once.
	y := &script{results: []error{nil}}
	if _, err := u.Wrap(y).Exchange(context.Background(), req); err != nil || y.Calls() != 1 {
		t.Fatalf("Exchange during the other's backoff = %v after %d calls, want a token", err, y.Calls())
	}
	close(wake)
	if err := <-done; err != nil || x.Calls() != 2 {
		t.Fatalf("the retrying caller got %v after %d calls, want a token after 2", err, x.Calls())
	}
}
