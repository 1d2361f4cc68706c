package resilience

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults for the zero values of [Policy].
const (
	DefaultMaxAttempts      = 3
	DefaultBaseDelay        = 100 * time.Millisecond
	DefaultMaxDelay         = 2 * time.Second
	DefaultBudget           = 10 * time.Second
	DefaultFailureThreshold = 5
	DefaultOpenFor          = 10 * time.Second
	DefaultMaxOpenFor       = 2 * time.Minute
	DefaultMaxInFlight      = 16
)

// Policy sets the limits for one endpoint. A zero or negative field takes
// its default.
type Policy struct {
	// MaxAttempts bounds the attempts of one exchange, the first included;
	// 1 disables retries. Default [DefaultMaxAttempts].
	MaxAttempts int
	// BaseDelay and MaxDelay shape the backoff: before retry n (from 0) the
	// exchange sleeps a uniformly random time in [0, min(MaxDelay,
	// BaseDelay·2ⁿ)) ("full jitter"), on top of any Retry-After. Defaults
	// [DefaultBaseDelay] and [DefaultMaxDelay]; MaxDelay is raised to
	// BaseDelay if smaller.
	BaseDelay, MaxDelay time.Duration
	// Budget bounds the time one exchange may spend retrying: no backoff
	// sleep may end later than Budget after the exchange started. It does
	// not cut short an attempt in flight (the exchanger's own timeout and
	// the caller's deadline do). Default [DefaultBudget].
	Budget time.Duration
	// FailureThreshold is the number of consecutive failed attempts
	// (unavailable, timeout, bad_response) that opens the breaker; a
	// success starts the count again, while refusals and errors that say
	// nothing about the upstream leave it as it is. Default
	// [DefaultFailureThreshold].
	FailureThreshold int
	// OpenFor is how long the breaker stays open before it lets a probe
	// through; each failed probe doubles it, up to MaxOpenFor, and a
	// success resets it. Defaults [DefaultOpenFor] and [DefaultMaxOpenFor];
	// MaxOpenFor is raised to OpenFor if smaller.
	OpenFor, MaxOpenFor time.Duration
	// MaxInFlight bounds the attempts in flight at once across all tenants
	// of the endpoint. Default [DefaultMaxInFlight].
	MaxInFlight int
}

// withDefaults returns p with its zero and negative fields defaulted.
func (p Policy) withDefaults() Policy {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	def(&p.BaseDelay, DefaultBaseDelay)
	def(&p.MaxDelay, DefaultMaxDelay)
	p.MaxDelay = max(p.MaxDelay, p.BaseDelay)
	def(&p.Budget, DefaultBudget)
	if p.FailureThreshold <= 0 {
		p.FailureThreshold = DefaultFailureThreshold
	}
	def(&p.OpenFor, DefaultOpenFor)
	def(&p.MaxOpenFor, DefaultMaxOpenFor)
	p.MaxOpenFor = max(p.MaxOpenFor, p.OpenFor)
	if p.MaxInFlight <= 0 {
		p.MaxInFlight = DefaultMaxInFlight
	}
	return p
}

// Clock tells the time and sleeps. It must tell the same time as the
// deadlines of the contexts passed to the exchangers (the wall clock in
// production), since a backoff sleep is checked against them. Tests inject
// a fake one.
type Clock interface {
	Now() time.Time
	// Sleep waits for d, or returns ctx.Err() as soon as ctx is done.
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the wall [Clock].
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits for d on a timer, or until ctx is done.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Metrics receives an endpoint's events. Implementations must be cheap, safe
// for concurrent use, and must not call back into the [Upstream]:
// BreakerState is called with the breaker's lock held, so that transitions
// are reported in order.
type Metrics interface {
	// Retry is called for each attempt after the first.
	Retry(upstream string)
	// BreakerState is called on every transition, with the new state.
	BreakerState(upstream string, s State)
	// FastFail is called when the breaker refuses an attempt, which then
	// does not reach the upstream.
	FastFail(upstream string)
	// Waiting is called with +1 when an attempt starts waiting for a free
	// slot and with -1 when it stops waiting.
	Waiting(upstream string, delta int)
}

type noMetrics struct{}

func (noMetrics) Retry(string)               {}
func (noMetrics) BreakerState(string, State) {}
func (noMetrics) FastFail(string)            {}
func (noMetrics) Waiting(string, int)        {}

// Config configures an [Upstream].
type Config struct {
	// Name names the endpoint in errors and metrics, such as its host.
	// Required.
	Name string
	// Policy sets the limits; its zero fields take defaults.
	Policy Policy
	// Clock defaults to [SystemClock].
	Clock Clock
	// Rand is the source of the backoff jitter; the Upstream serialises its
	// use. Nil uses math/rand/v2's top-level functions.
	Rand rand.Source
	// Metrics receives events; nil means none.
	Metrics Metrics
}
