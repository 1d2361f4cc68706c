package resilience

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// ErrCircuitOpen is wrapped by the Err of the [*broker.ExchangeError] a call
// gets when the breaker refuses it before its first attempt.
var ErrCircuitOpen = errors.New("resilience: circuit open")

// Upstream guards one token endpoint: retries, a circuit breaker and a limit
// on exchanges in flight, shared by every exchanger it wraps. It is safe for
// concurrent use.
type Upstream struct {
	name    string
	p       Policy
	clock   Clock
	metrics Metrics
	b       *breaker
	slots   chan struct{} // a semaphore: one token per attempt in flight

	randMu sync.Mutex
	rand   *rand.Rand // nil: the top-level functions
}

// NewUpstream returns the guard for the endpoint cfg names. Make one per
// endpoint and wrap with it every tenant's exchanger that posts there.
func NewUpstream(cfg Config) *Upstream {
	u := &Upstream{name: cfg.Name, p: cfg.Policy.withDefaults(), clock: cfg.Clock, metrics: cfg.Metrics}
	if u.clock == nil {
		u.clock = SystemClock{}
	}
	if u.metrics == nil {
		u.metrics = noMetrics{}
	}
	if cfg.Rand != nil {
		u.rand = rand.New(cfg.Rand)
	}
	u.b = newBreaker(u.name, &u.p, u.metrics)
	u.slots = make(chan struct{}, u.p.MaxInFlight)
	return u
}

// Name returns the endpoint's name.
func (u *Upstream) Name() string { return u.name }

// State returns the breaker's state as the next call would find it, and,
// while it is open, when it will let a probe through (zero otherwise). An
// open breaker whose interval has passed is reported [HalfOpen]. For
// readiness reports and metrics.
func (u *Upstream) State() (State, time.Time) { return u.b.current(u.clock.Now()) }

// Wrap returns x guarded by u. Its Exchange:
//
//   - fails fast, without calling x, while the breaker is open (or half-open
//     with its probe in flight), with an [*broker.ExchangeError] of reason
//     unavailable that names the endpoint, carries the time until the next
//     try as RetryAfter (one second while a probe is in flight, whose end
//     is not known) and wraps [ErrCircuitOpen];
//   - waits for a free slot, as long as ctx allows; if ctx ends first it
//     returns an error wrapping ctx.Err();
//   - retries an error of reason unavailable or timeout while the policy's
//     attempts and budget and ctx's deadline allow, sleeping for the backoff
//     plus any RetryAfter the upstream asked for; a sleep that would end
//     after the deadline or the budget is not started, and the last error
//     is returned at once;
//   - stops retrying when the breaker opens, and returns the last error with
//     its RetryAfter raised to the time until the breaker's next try (also
//     after a last attempt, or a bad_response, that found it open).
//
// Other errors (refused, bad_response, signing, internal,
// [broker.ErrNotSupported], [broker.ErrUnknownTenant], and any error once
// ctx is done) are returned as they are, after one attempt.
func (u *Upstream) Wrap(x broker.Exchanger) broker.Exchanger {
	return &guarded{u: u, x: x}
}

type guarded struct {
	u *Upstream
	x broker.Exchanger
}

func (g *guarded) Exchange(ctx context.Context, req broker.Request) (broker.Token, error) {
	return g.u.exchange(ctx, g.x, req)
}

func (u *Upstream) exchange(ctx context.Context, x broker.Exchanger, req broker.Request) (broker.Token, error) {
	if err := ctx.Err(); err != nil {
		return broker.Token{}, fmt.Errorf("resilience: upstream %s: %w", u.name, err)
	}
	budgetEnd := u.clock.Now().Add(u.p.Budget)
	var last error // the last attempt's error, once there was one
	for n := 1; ; n++ {
		// Look before waiting for a slot: an open breaker fails fast.
		if d, refused := u.b.refuses(u.clock.Now()); refused {
			return broker.Token{}, u.refused(last, d)
		}
		if err := u.acquire(ctx); err != nil {
			if last != nil {
				return broker.Token{}, last // the upstream's failure says more
			}
			return broker.Token{}, fmt.Errorf("resilience: upstream %s: waiting for a free slot: %w", u.name, err)
		}
		gen, d, ok := u.b.allow(u.clock.Now())
		if !ok {
			<-u.slots
			return broker.Token{}, u.refused(last, d)
		}
		if n > 1 {
			u.metrics.Retry(u.name)
		}
		tok, o, retry, err := u.attempt(ctx, x, req, gen)
		if err == nil {
			return tok, nil
		}
		now := u.clock.Now()
		if o == failure {
			if d, refused := u.b.refuses(now); refused {
				// This failure or others opened the breaker: stop, and
				// say when it lets the next attempt through.
				return broker.Token{}, withRetryAfter(err, d)
			}
		}
		if !retry || n >= u.p.MaxAttempts {
			return broker.Token{}, err
		}
		last = err
		wait := u.backoff(n-1) + retryAfter(err)
		limit := budgetEnd
		if dl, ok := ctx.Deadline(); ok && dl.Before(limit) {
			limit = dl
		}
		if !now.Add(wait).Before(limit) {
			return broker.Token{}, err
		}
		if u.clock.Sleep(ctx, wait) != nil {
			return broker.Token{}, err
		}
	}
}

// attempt calls x once, holding a slot (taken by the caller) and recording
// the outcome in the breaker's generation gen, also if x panics.
func (u *Upstream) attempt(ctx context.Context, x broker.Exchanger, req broker.Request, gen uint64) (tok broker.Token, o outcome, retry bool, err error) {
	recorded := false
	defer func() {
		if !recorded { // x panicked: release a probe without a verdict
			u.b.record(gen, neutral, u.clock.Now())
		}
		<-u.slots
	}()
	tok, err = x.Exchange(ctx, req)
	o, retry = classify(ctx, err)
	u.b.record(gen, o, u.clock.Now())
	recorded = true
	return tok, o, retry, err
}

// classify says what err, the result of an attempt on ctx, tells about the
// upstream, and whether the attempt may be retried.
func classify(ctx context.Context, err error) (o outcome, retry bool) {
	if err == nil {
		return success, false
	}
	if ctx.Err() != nil || errors.Is(err, ErrCircuitOpen) {
		// The caller gave up (whatever the exchanger made of it), or an
		// inner guard refused: nothing learnt about the upstream.
		return neutral, false
	}
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) {
		return neutral, false // ErrNotSupported, ErrUnknownTenant, a foreign error
	}
	switch xe.Reason {
	case broker.ReasonUnavailable, broker.ReasonTimeout:
		return failure, true
	case broker.ReasonBadResponse:
		return failure, false
	case broker.ReasonRefused:
		return answered, false
	}
	return neutral, false // signing, internal: the broker's problem
}

// acquire takes a slot, waiting while ctx allows.
func (u *Upstream) acquire(ctx context.Context) error {
	select {
	case u.slots <- struct{}{}:
		return nil
	default:
	}
	u.metrics.Waiting(u.name, 1)
	defer u.metrics.Waiting(u.name, -1)
	select {
	case u.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refused is the error of a call the breaker refused, d before its next try.
func (u *Upstream) refused(last error, d time.Duration) error {
	u.metrics.FastFail(u.name)
	if last != nil {
		return withRetryAfter(last, d)
	}
	return &broker.ExchangeError{Reason: broker.ReasonUnavailable, Upstream: u.name, RetryAfter: d,
		Err: fmt.Errorf("%w: next try in %s", ErrCircuitOpen, d)}
}

// backoff is the full-jitter sleep before retry n (from 0): uniformly random
// in [0, min(MaxDelay, BaseDelay·2ⁿ)).
func (u *Upstream) backoff(n int) time.Duration {
	ceiling := u.p.BaseDelay
	for i := 0; i < n && ceiling < u.p.MaxDelay; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, u.p.MaxDelay)
	if u.rand == nil {
		return rand.N(ceiling)
	}
	u.randMu.Lock()
	defer u.randMu.Unlock()
	return time.Duration(u.rand.Int64N(int64(ceiling)))
}

// retryAfter is the wait err's upstream asked for, or 0.
func retryAfter(err error) time.Duration {
	var xe *broker.ExchangeError
	if errors.As(err, &xe) {
		return max(xe.RetryAfter, 0)
	}
	return 0
}

// withRetryAfter returns err with its RetryAfter raised to at least d. The
// exchanger's error is copied, not changed.
func withRetryAfter(err error, d time.Duration) error {
	xe, ok := err.(*broker.ExchangeError)
	if !ok || xe.RetryAfter >= d {
		return err
	}
	c := *xe
	c.RetryAfter = d
	return &c
}
