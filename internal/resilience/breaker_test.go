package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

// oneShot has no retries, so each call is one attempt.
var oneShot = resilience.Policy{MaxAttempts: 1, FailureThreshold: 3, OpenFor: 10 * time.Second, MaxOpenFor: 35 * time.Second}

// trip opens u's breaker with threshold failing calls.
func trip(t *testing.T, u *resilience.Upstream, threshold int) {
	t.Helper()
	x := &script{results: []error{unavailable}}
	for range threshold {
		u.Wrap(x).Exchange(context.Background(), req)
	}
	if s, _ := u.State(); s != resilience.Open {
		t.Fatalf("after %d failures the breaker is %s, want open", threshold, s)
	}
}

// wantFastFail checks that a call fails fast without reaching the upstream,
// naming it, with RetryAfter d.
func wantFastFail(t *testing.T, g broker.Exchanger, x *script, d time.Duration) {
	t.Helper()
	before := x.Calls()
	_, err := g.Exchange(context.Background(), req)
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Fatalf("Exchange error = %v, want an *ExchangeError wrapping ErrCircuitOpen", err)
	}
	if xe.Reason != broker.ReasonUnavailable || xe.Upstream != host || xe.RetryAfter != d {
		t.Errorf("got reason %s, upstream %q, RetryAfter %v; want unavailable, %q, %v", xe.Reason, xe.Upstream, xe.RetryAfter, host, d)
	}
	if msg := err.Error(); !strings.Contains(msg, host) || strings.Contains(msg, "circuit") {
		t.Errorf("Error() = %q: want the upstream named, the cause kept for logs", msg)
	}
	if x.Calls() != before {
		t.Errorf("the upstream was called %d times while the breaker was open", x.Calls()-before)
	}
}

func TestBreakerOpensAfterThreshold(t *testing.T) {
	u, clock, m := newUpstream(oneShot)
	x := &script{results: []error{unavailable, unavailable, nil, unavailable}}
	g := u.Wrap(x)
	// A success resets the count: fail, fail, succeed, fail, fail stays closed.
	for range 5 {
		g.Exchange(context.Background(), req)
	}
	wantState(t, u, resilience.Closed, time.Time{})
	g.Exchange(context.Background(), req) // the third consecutive failure
	wantState(t, u, resilience.Open, start.Add(10*time.Second))
	if x.Calls() != 6 {
		t.Fatalf("%d upstream calls, want 6", x.Calls())
	}
	wantFastFail(t, g, x, 10*time.Second)
	clock.Advance(4 * time.Second)
	wantFastFail(t, g, x, 6*time.Second)
	// Another tenant on the same endpoint is refused too.
	other := &script{results: []error{nil}}
	wantFastFail(t, u.Wrap(other), other, 6*time.Second)

	got := m.snapshot()
	if !slices.Equal(got.states, []resilience.State{resilience.Open}) || got.fastFails != 3 || len(got.names) != 1 || !got.names[host] {
		t.Errorf("metrics: states %v, fast fails %d, names %v; want [open], 3, only %q", got.states, got.fastFails, got.names, host)
	}
}

func TestBadResponseCounts(t *testing.T) {
	u, _, _ := newUpstream(oneShot)
	x := &script{results: []error{badResponse}}
	var err error
	for range 3 {
		_, err = u.Wrap(x).Exchange(context.Background(), req)
	}
	wantState(t, u, resilience.Open, start.Add(10*time.Second))
	// The call that opened it says when the next try is, on a copy.
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonBadResponse || xe.RetryAfter != 10*time.Second || badResponse.RetryAfter != 0 {
		t.Errorf("the third call got %#v, want the bad response with RetryAfter 10s", err)
	}
}

// TestRetriesStopWhenTheBreakerOpens: attempts count one by one, and the
// attempt that opens the breaker is the last; the caller gets its error with
// RetryAfter raised to the open interval.
func TestRetriesStopWhenTheBreakerOpens(t *testing.T) {
	p := oneShot
	p.MaxAttempts = 10
	u, clock, m := newUpstream(p)
	e := xerr(broker.ReasonUnavailable, 429)
	e.RetryAfter = time.Second
	x := &script{results: []error{e}}
	_, err := u.Wrap(x).Exchange(context.Background(), req)
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.HTTPStatus != 429 || errors.Is(err, resilience.ErrCircuitOpen) {
		t.Fatalf("Exchange error = %v, want the last attempt's 429", err)
	}
	if xe.RetryAfter != 10*time.Second || e.RetryAfter != time.Second {
		t.Errorf("RetryAfter = %v (exchanger's now %v), want 10s on a copy", xe.RetryAfter, e.RetryAfter)
	}
	if x.Calls() != 3 || len(clock.Sleeps()) != 2 {
		t.Errorf("%d calls and %d sleeps, want 3 and 2", x.Calls(), len(clock.Sleeps()))
	}
	if got := m.snapshot(); got.retries != 2 || got.fastFails != 0 {
		t.Errorf("metrics: %d retries, %d fast fails; want 2, 0", got.retries, got.fastFails)
	}
}

// TestRetryMeetsAnOpenBreaker: a retry finds the breaker opened by other
// callers while it slept, and stops.
func TestRetryMeetsAnOpenBreaker(t *testing.T) {
	p := oneShot
	p.MaxAttempts = 3
	var u *resilience.Upstream
	clock, m := newClock(), &fakeMetrics{}
	var slept bool
	u = resilience.NewUpstream(resilience.Config{Name: host, Policy: p, Metrics: m, Rand: newSource(),
		Clock: sleepFunc(func(ctx context.Context, d time.Duration) error {
			if !slept {
				// Another caller fails twice while this one sleeps, which
				// makes three in a row; it stops retrying itself then.
				slept = true
				u.Wrap(&script{results: []error{unavailable}}).Exchange(context.Background(), req)
				if s, _ := u.State(); s != resilience.Open {
					t.Errorf("the breaker is %s, want open", s)
				}
			}
			return clock.Sleep(ctx, d)
		})})
	x := &script{results: []error{unavailable, nil}}
	_, err := u.Wrap(x).Exchange(context.Background(), req)
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.HTTPStatus != 503 || xe.RetryAfter != 10*time.Second {
		t.Fatalf("Exchange error = %#v, want the 503 with RetryAfter 10s", err)
	}
	if x.Calls() != 1 || m.snapshot().fastFails != 1 {
		t.Errorf("%d calls, %d fast fails; want 1, 1", x.Calls(), m.snapshot().fastFails)
	}
}

func TestRefusalsDontTrip(t *testing.T) {
	u, _, m := newUpstream(oneShot)
	x := &script{results: []error{refused}}
	for range 10 {
		if _, err := u.Wrap(x).Exchange(context.Background(), req); err != refused {
			t.Fatalf("Exchange error = %v, want %v", err, refused)
		}
	}
	if x.Calls() != 10 {
		t.Errorf("%d upstream calls, want 10", x.Calls())
	}
	wantState(t, u, resilience.Closed, time.Time{})
	if s := m.snapshot().states; len(s) != 0 {
		t.Errorf("transitions %v, want none", s)
	}
}

func TestNeutralErrorsDontTrip(t *testing.T) {
	for _, e := range []error{
		fmt.Errorf("%w: account ids", broker.ErrNotSupported),
		broker.ErrUnknownTenant,
		xerr(broker.ReasonSigning, 0),
		xerr(broker.ReasonInternal, 0),
	} {
		u, _, _ := newUpstream(oneShot)
		x := &script{results: []error{e}}
		for range 10 {
			u.Wrap(x).Exchange(context.Background(), req)
		}
		if x.Calls() != 10 {
			t.Errorf("%v: %d upstream calls, want 10", e, x.Calls())
		}
		wantState(t, u, resilience.Closed, time.Time{})
	}
}

// TestCallerCancellationDoesNotCount: when the caller gives up, whatever
// error the exchanger makes of it says nothing about the upstream.
func TestCallerCancellationDoesNotCount(t *testing.T) {
	p := oneShot
	p.MaxAttempts = 3
	u, _, _ := newUpstream(p)
	for range 10 {
		ctx, cancel := context.WithCancel(context.Background())
		x := broker.ExchangerFunc(func(ctx context.Context, _ broker.Request) (broker.Token, error) {
			cancel()
			return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonTimeout, Upstream: host, Err: ctx.Err()}
		})
		var calls int
		counted := broker.ExchangerFunc(func(ctx context.Context, r broker.Request) (broker.Token, error) {
			calls++
			return x(ctx, r)
		})
		_, err := u.Wrap(counted).Exchange(ctx, req)
		if !errors.Is(err, context.Canceled) || calls != 1 {
			t.Fatalf("Exchange = %v after %d calls; want the exchanger's error after 1, not retried", err, calls)
		}
	}
	wantState(t, u, resilience.Closed, time.Time{})
}

func TestHalfOpenProbe(t *testing.T) {
	t.Run("success closes", func(t *testing.T) {
		u, clock, m := newUpstream(oneShot)
		trip(t, u, 3)
		clock.Advance(10 * time.Second)
		wantState(t, u, resilience.HalfOpen, time.Time{})
		x := &script{results: []error{nil}}
		if _, err := u.Wrap(x).Exchange(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		wantState(t, u, resilience.Closed, time.Time{})
		want := []resilience.State{resilience.Open, resilience.HalfOpen, resilience.Closed}
		if got := m.snapshot().states; !slices.Equal(got, want) {
			t.Errorf("transitions %v, want %v", got, want)
		}
	})
	t.Run("refusal closes", func(t *testing.T) {
		u, clock, _ := newUpstream(oneShot)
		trip(t, u, 3)
		clock.Advance(10 * time.Second)
		u.Wrap(&script{results: []error{refused}}).Exchange(context.Background(), req)
		wantState(t, u, resilience.Closed, time.Time{})
	})
	t.Run("failure reopens for twice as long, up to the cap", func(t *testing.T) {
		u, clock, m := newUpstream(oneShot) // OpenFor 10 s, MaxOpenFor 35 s
		trip(t, u, 3)
		x := &script{results: []error{unavailable}}
		g := u.Wrap(x)
		for _, want := range []time.Duration{20 * time.Second, 35 * time.Second, 35 * time.Second} {
			_, next := u.State()
			clock.Advance(next.Sub(clock.Now()))
			calls := x.Calls()
			g.Exchange(context.Background(), req)
			if x.Calls() != calls+1 {
				t.Fatalf("the probe made %d calls, want 1", x.Calls()-calls)
			}
			wantState(t, u, resilience.Open, clock.Now().Add(want))
			wantFastFail(t, g, x, want)
		}
		// A success resets the interval: the next opening is 10 s again.
		clock.Advance(35 * time.Second)
		u.Wrap(&script{results: []error{nil}}).Exchange(context.Background(), req)
		trip(t, u, 3)
		wantState(t, u, resilience.Open, clock.Now().Add(10*time.Second))
		want := []resilience.State{resilience.Open, resilience.HalfOpen, resilience.Open, resilience.HalfOpen, resilience.Open,
			resilience.HalfOpen, resilience.Open, resilience.HalfOpen, resilience.Closed, resilience.Open}
		if got := m.snapshot().states; !slices.Equal(got, want) {
			t.Errorf("transitions %v, want %v", got, want)
		}
	})
	t.Run("a probe without a verdict lets the next call probe", func(t *testing.T) {
		u, clock, _ := newUpstream(oneShot)
		trip(t, u, 3)
		clock.Advance(10 * time.Second)
		u.Wrap(&script{results: []error{broker.ErrNotSupported}}).Exchange(context.Background(), req)
		wantState(t, u, resilience.HalfOpen, time.Time{})
		x := &script{results: []error{nil}}
		if _, err := u.Wrap(x).Exchange(context.Background(), req); err != nil || x.Calls() != 1 {
			t.Fatalf("Exchange = %v after %d calls, want a token from the new probe", err, x.Calls())
		}
		wantState(t, u, resilience.Closed, time.Time{})
	})
	t.Run("a panicking probe is released", func(t *testing.T) {
		p := oneShot
		p.MaxInFlight = 1
		u, clock, _ := newUpstream(p)
		trip(t, u, 3)
		clock.Advance(10 * time.Second)
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("the exchanger's panic did not propagate")
				}
			}()
			u.Wrap(broker.ExchangerFunc(func(context.Context, broker.Request) (broker.Token, error) { panic("boom") })).Exchange(context.Background(), req)
		}()
		// Both the probe and the one slot are free again.
		x := &script{results: []error{nil}}
		if _, err := u.Wrap(x).Exchange(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		wantState(t, u, resilience.Closed, time.Time{})
	})
}

// TestHalfOpenLetsExactlyOneProbe: many callers arrive together at a
// half-open breaker; one probes, the others fail fast while it is in flight.
func TestHalfOpenLetsExactlyOneProbe(t *testing.T) {
	u, clock, m := newUpstream(oneShot)
	trip(t, u, 3)
	clock.Advance(10 * time.Second)
	entered, release := make(chan struct{}), make(chan struct{})
	x := &script{results: []error{nil}, onCall: func(int) {
		entered <- struct{}{}
		<-release
	}}
	g := u.Wrap(x)

	const callers = 50
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			_, err := g.Exchange(context.Background(), req)
			errs <- err
		})
	}
	<-entered // the probe is in flight
	for range callers - 1 {
		if err := <-errs; !errors.Is(err, resilience.ErrCircuitOpen) {
			t.Fatalf("a caller besides the probe got %v, want a fast failure", err)
		}
	}
	wantState(t, u, resilience.HalfOpen, time.Time{})
	close(release)
	if err := <-errs; err != nil {
		t.Fatalf("the probe got %v, want a token", err)
	}
	wg.Wait()
	if x.Calls() != 1 {
		t.Errorf("%d upstream calls, want 1", x.Calls())
	}
	wantState(t, u, resilience.Closed, time.Time{})
	if got := m.snapshot().fastFails; got != callers-1 {
		t.Errorf("FastFail metric = %d, want %d", got, callers-1)
	}
	// The half-open fast failures say when to look again.
	var xe *broker.ExchangeError
	trip(t, u, 3)
	clock.Advance(10 * time.Second)
	release = make(chan struct{})
	go g.Exchange(context.Background(), req)
	<-entered
	_, err := g.Exchange(context.Background(), req)
	close(release)
	if !errors.As(err, &xe) || xe.RetryAfter <= 0 {
		t.Errorf("a call refused during the probe got %v, want a positive RetryAfter", err)
	}
}

// TestLateOutcomesIgnored: attempts already in flight when the breaker
// opened neither stretch nor close it.
func TestLateOutcomesIgnored(t *testing.T) {
	for _, late := range []error{nil, unavailable} {
		u, clock, _ := newUpstream(oneShot)
		entered, release := make(chan struct{}), make(chan struct{})
		slow := &script{results: []error{late}, onCall: func(int) {
			entered <- struct{}{}
			<-release
		}}
		done := make(chan struct{})
		go func() {
			defer close(done)
			u.Wrap(slow).Exchange(context.Background(), req)
		}()
		<-entered
		trip(t, u, 3)
		clock.Advance(time.Second)
		close(release)
		<-done
		wantState(t, u, resilience.Open, start.Add(10*time.Second))
	}
}
