package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

// noTrip is a policy whose breaker does not get in the way.
var noTrip = resilience.Policy{FailureThreshold: 1000}

func TestRetriesByErrorClass(t *testing.T) {
	notSupported := fmt.Errorf("%w: account ids", broker.ErrNotSupported)
	for _, tc := range []struct {
		name      string
		results   []error
		policy    resilience.Policy
		wantCalls int
		wantErr   error // when not nil, errors.Is(err, wantErr)
	}{
		{"success", []error{nil}, noTrip, 1, nil},
		{"5xx retried up to MaxAttempts", []error{unavailable}, noTrip, resilience.DefaultMaxAttempts, unavailable},
		{"5xx then success", []error{unavailable, unavailable, nil}, noTrip, 3, nil},
		{"429 retried", []error{xerr(broker.ReasonUnavailable, 429)}, noTrip, 3, nil},
		{"timeout retried", []error{xerr(broker.ReasonTimeout, 0)}, noTrip, 3, nil},
		{"network error retried", []error{xerr(broker.ReasonUnavailable, 0)}, noTrip, 3, nil},
		{"MaxAttempts 5", []error{unavailable}, resilience.Policy{MaxAttempts: 5, FailureThreshold: 1000}, 5, unavailable},
		{"MaxAttempts 1", []error{unavailable}, resilience.Policy{MaxAttempts: 1, FailureThreshold: 1000}, 1, unavailable},
		{"refused once", []error{refused}, noTrip, 1, refused},
		{"bad_response once", []error{badResponse}, noTrip, 1, badResponse},
		{"signing once", []error{xerr(broker.ReasonSigning, 0)}, noTrip, 1, nil},
		{"internal once", []error{xerr(broker.ReasonInternal, 0)}, noTrip, 1, nil},
		{"ErrNotSupported once", []error{notSupported}, noTrip, 1, notSupported},
		{"ErrUnknownTenant once", []error{broker.ErrUnknownTenant}, noTrip, 1, broker.ErrUnknownTenant},
		{"foreign error once", []error{errors.New("something else")}, noTrip, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, clock, m := newUpstream(tc.policy)
			x := &script{results: tc.results}
			tok, err := u.Wrap(x).Exchange(context.Background(), req)
			if got := x.Calls(); got != tc.wantCalls {
				t.Errorf("upstream calls = %d, want %d", got, tc.wantCalls)
			}
			last := tc.results[min(tc.wantCalls, len(tc.results))-1]
			switch {
			case last == nil && (err != nil || tok.AccessToken == ""):
				t.Errorf("Exchange = %v, %v; want a token", tok, err)
			case last != nil && err != last:
				t.Errorf("Exchange error = %v, want the last attempt's error %v, unchanged", err, last)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("Exchange error = %v, want %v", err, tc.wantErr)
			}
			if got := len(clock.Sleeps()); got != tc.wantCalls-1 {
				t.Errorf("sleeps = %d, want %d", got, tc.wantCalls-1)
			}
			if got := m.snapshot().retries; got != tc.wantCalls-1 {
				t.Errorf("Retry metric = %d, want %d", got, tc.wantCalls-1)
			}
		})
	}
}

// TestEachAttemptCallsTheExchanger: a retry is a new exchange, not a replay,
// so an exchanger that signs signs anew (a fresh jti).
func TestEachAttemptCallsTheExchanger(t *testing.T) {
	u, _, _ := newUpstream(noTrip)
	var seen []string
	x := broker.ExchangerFunc(func(_ context.Context, r broker.Request) (broker.Token, error) {
		seen = append(seen, fmt.Sprintf("assertion-%d", len(seen)+1))
		if len(seen) < 3 {
			return broker.Token{}, unavailable
		}
		return broker.Token{AccessToken: seen[len(seen)-1], Expiry: start.Add(time.Hour)}, nil
	})
	tok, err := u.Wrap(x).Exchange(context.Background(), req)
	if err != nil || tok.AccessToken != "assertion-3" || len(seen) != 3 {
		t.Fatalf("Exchange = %q, %v after %v; want the third attempt's token", tok.AccessToken, err, seen)
	}
}

func TestFullJitterBounds(t *testing.T) {
	p := resilience.Policy{MaxAttempts: 7, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Budget: time.Hour, FailureThreshold: 1 << 30}
	ceilings := []time.Duration{100, 200, 400, 800, 1000, 1000} // ms: min(MaxDelay, BaseDelay·2ⁿ)
	for i := range ceilings {
		ceilings[i] *= time.Millisecond
	}
	u, clock, _ := newUpstream(p)
	g := u.Wrap(&script{results: []error{unavailable}})
	const runs = 500
	for range runs {
		if _, err := g.Exchange(context.Background(), req); err != unavailable {
			t.Fatalf("Exchange error = %v, want %v", err, unavailable)
		}
	}
	sleeps := clock.Sleeps()
	if len(sleeps) != runs*len(ceilings) {
		t.Fatalf("%d sleeps, want %d", len(sleeps), runs*len(ceilings))
	}
	lo := make([]time.Duration, len(ceilings))
	hi := make([]time.Duration, len(ceilings))
	for i := range lo {
		lo[i] = time.Hour
	}
	for i, s := range sleeps {
		n := i % len(ceilings)
		if s.d < 0 || s.d >= ceilings[n] {
			t.Fatalf("retry %d slept %v, want it in [0, %v)", n, s.d, ceilings[n])
		}
		lo[n], hi[n] = min(lo[n], s.d), max(hi[n], s.d)
	}
	// Full jitter spreads over the whole range, not just near the ceiling.
	for n, c := range ceilings {
		if lo[n] > c/20 || hi[n] < c*19/20 {
			t.Errorf("retry %d slept within [%v, %v] over %d runs; want it to cover [0, %v)", n, lo[n], hi[n], runs, c)
		}
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	for _, ra := range []time.Duration{time.Millisecond, 3 * time.Second} {
		t.Run(ra.String(), func(t *testing.T) {
			u, clock, _ := newUpstream(noTrip)
			e := xerr(broker.ReasonUnavailable, 429)
			e.RetryAfter = ra
			x := &script{results: []error{e, e, nil}}
			if _, err := u.Wrap(x).Exchange(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			sleeps := clock.Sleeps()
			if len(sleeps) != 2 {
				t.Fatalf("%d sleeps, want 2", len(sleeps))
			}
			for n, s := range sleeps {
				ceiling := resilience.DefaultBaseDelay << n
				if s.d < ra || s.d >= ra+ceiling {
					t.Errorf("retry %d slept %v, want it in [%v, %v)", n, s.d, ra, ra+ceiling)
				}
			}
		})
	}
}

// TestDeadlineRespected: no sleep ends after the caller's deadline, and the
// exchange returns the last attempt's error as soon as the next sleep would.
func TestDeadlineRespected(t *testing.T) {
	t.Run("retry after beyond the deadline", func(t *testing.T) {
		u, clock, _ := newUpstream(noTrip)
		e := xerr(broker.ReasonUnavailable, 503)
		e.RetryAfter = time.Second
		x := &script{results: []error{e, nil}}
		ctx, cancel := context.WithDeadline(context.Background(), start.Add(500*time.Millisecond))
		defer cancel()
		_, err := u.Wrap(x).Exchange(ctx, req)
		if err != e || x.Calls() != 1 || len(clock.Sleeps()) != 0 || !clock.Now().Equal(start) {
			t.Fatalf("Exchange = %v after %d calls and sleeps %v; want the 503 at once, without sleeping", err, x.Calls(), clock.Sleeps())
		}
	})
	t.Run("jittered sleeps", func(t *testing.T) {
		p := resilience.Policy{MaxAttempts: 100, BaseDelay: 50 * time.Millisecond, MaxDelay: 50 * time.Millisecond, FailureThreshold: 1000}
		for seed := range 50 {
			u, clock, _ := newUpstream(p)
			var errs []error
			deadline := start.Add(300*time.Millisecond + time.Duration(seed)*time.Millisecond)
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			_, err := u.Wrap(broker.ExchangerFunc(func(context.Context, broker.Request) (broker.Token, error) {
				clock.Advance(20 * time.Millisecond) // the attempt takes time
				e := *unavailable                    // a distinct error per attempt
				errs = append(errs, &e)
				return broker.Token{}, &e
			})).Exchange(ctx, req)
			cancel()
			if err != errs[len(errs)-1] {
				t.Fatalf("seed %d: Exchange error is not the last attempt's", seed)
			}
			for _, s := range clock.Sleeps() {
				if end := s.at.Add(s.d); !end.Before(deadline) {
					t.Fatalf("seed %d: a sleep from %v for %v ends after the deadline %v", seed, s.at, s.d, deadline)
				}
			}
			// It gave up only when a further sleep could not fit: with at
			// most 50 ms of jitter and 20 ms per attempt, it is close.
			if left := deadline.Sub(clock.Now()); left > 50*time.Millisecond {
				t.Fatalf("seed %d: gave up with %v left before the deadline, after %d attempts", seed, left, len(errs))
			}
		}
	})
}

func TestBudgetRespected(t *testing.T) {
	p := resilience.Policy{MaxAttempts: 10, BaseDelay: time.Millisecond, Budget: time.Second, FailureThreshold: 1000}
	u, clock, _ := newUpstream(p)
	e := xerr(broker.ReasonUnavailable, 503)
	e.RetryAfter = 400 * time.Millisecond
	x := &script{results: []error{e}}
	if _, err := u.Wrap(x).Exchange(context.Background(), req); err != e {
		t.Fatalf("Exchange error = %v, want %v", err, e)
	}
	// Sleeps end at about 0.4 s and 0.8 s; a third would end at 1.2 s.
	if x.Calls() != 3 || len(clock.Sleeps()) != 2 {
		t.Fatalf("%d calls, %d sleeps; want 3 and 2", x.Calls(), len(clock.Sleeps()))
	}
	if spent := clock.Now().Sub(start); spent > time.Second {
		t.Errorf("spent %v, more than the 1 s budget", spent)
	}
}

// TestCancelledWhileSleeping: a sleep cut short by the caller's context
// ends the exchange with the last error.
func TestCancelledWhileSleeping(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := resilience.NewUpstream(resilience.Config{Name: host, Policy: noTrip, Clock: sleepFunc(func(context.Context, time.Duration) error {
		cancel()
		return ctx.Err()
	})})
	x := &script{results: []error{unavailable, nil}}
	if _, err := u.Wrap(x).Exchange(ctx, req); err != unavailable || x.Calls() != 1 {
		t.Fatalf("Exchange = %v after %d calls; want %v after 1", err, x.Calls(), unavailable)
	}
	// A context done from the start stops the exchange before any call.
	_, err := u.Wrap(x).Exchange(ctx, req)
	if !errors.Is(err, context.Canceled) || x.Calls() != 1 {
		t.Fatalf("Exchange on a cancelled context = %v after %d calls; want context.Canceled, no call", err, x.Calls())
	}
}

// sleepFunc is a Clock that tells the fake epoch and sleeps with f.
type sleepFunc func(ctx context.Context, d time.Duration) error

func (sleepFunc) Now() time.Time                                     { return start }
func (f sleepFunc) Sleep(ctx context.Context, d time.Duration) error { return f(ctx, d) }

func TestPolicyDefaults(t *testing.T) {
	// Zero and nonsense values take defaults: the default attempts and a
	// breaker that opens at the default threshold.
	u, clock, _ := newUpstream(resilience.Policy{MaxAttempts: -1, BaseDelay: -time.Second, FailureThreshold: -3, OpenFor: -1, MaxInFlight: -2})
	x := &script{results: []error{unavailable}}
	g := u.Wrap(x)
	for range 2 {
		g.Exchange(context.Background(), req)
	}
	if x.Calls() != 5 { // 3 + 2: the fifth failure opens the breaker
		t.Fatalf("%d calls, want 5", x.Calls())
	}
	wantState(t, u, resilience.Open, clock.Now().Add(resilience.DefaultOpenFor))
}
