package resilience

import (
	"sync"
	"time"
)

// State is a circuit breaker's state.
type State int

// The breaker's states.
const (
	// Closed lets every attempt through and counts consecutive failures.
	Closed State = iota
	// Open refuses every attempt until the open interval has passed.
	Open
	// HalfOpen lets one probe through; the others are refused until the
	// probe's outcome closes or reopens the breaker.
	HalfOpen
)

// String is the lowercase name used in logs and metric labels.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "unknown"
}

// probeRetryAfter is the RetryAfter of a call refused while a probe is in
// flight: the next try is when the probe ends, which is not known.
const probeRetryAfter = time.Second

// outcome is what an attempt says about the upstream's health.
type outcome uint8

const (
	// neutral says nothing: the request never reached the upstream, or the
	// caller gave up first.
	neutral outcome = iota
	// success: a token.
	success
	// failure counts towards opening: unavailable, timeout, bad response.
	failure
	// answered: the upstream refused, which shows it is up. It neither
	// counts nor resets the count while closed, and closes a half-open
	// breaker.
	answered
)

// breaker is the circuit breaker of one endpoint. Every state change starts a
// new generation; an outcome is recorded only against the generation its
// attempt started in, so attempts that were already in flight when the
// breaker opened cannot stretch or close it.
type breaker struct {
	name    string
	p       *Policy
	metrics Metrics

	mu       sync.Mutex
	state    State
	gen      uint64
	failures int           // consecutive, while closed
	interval time.Duration // the current open interval
	until    time.Time     // while open: when a probe may go
	probing  bool          // while half-open: a probe is in flight
}

func newBreaker(name string, p *Policy, m Metrics) *breaker {
	return &breaker{name: name, p: p, metrics: m, interval: p.OpenFor}
}

// refuses reports, without changing anything, whether an attempt at now
// would be refused, and if so how long until the next try.
func (b *breaker) refuses(now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refusesLocked(now)
}

func (b *breaker) refusesLocked(now time.Time) (time.Duration, bool) {
	switch b.state {
	case Open:
		if now.Before(b.until) {
			return b.until.Sub(now), true
		}
	case HalfOpen:
		if b.probing {
			return probeRetryAfter, true
		}
	}
	return 0, false
}

// allow admits an attempt at now and returns its generation, or refuses it
// with the time until the next try. An open breaker whose interval has
// passed turns half-open and admits this attempt as its probe.
func (b *breaker) allow(now time.Time) (gen uint64, retryAfter time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, refused := b.refusesLocked(now); refused {
		return 0, d, false
	}
	if b.state == Open {
		b.setLocked(HalfOpen)
	}
	if b.state == HalfOpen {
		b.probing = true
	}
	return b.gen, 0, true
}

// record takes the outcome of an attempt admitted in generation gen.
func (b *breaker) record(gen uint64, o outcome, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.gen {
		return
	}
	switch b.state {
	case Closed:
		switch o {
		case success:
			b.failures = 0
		case failure:
			b.failures++
			if b.failures >= b.p.FailureThreshold {
				b.openLocked(now, b.p.OpenFor)
			}
		}
	case HalfOpen: // gen matches, so this is the probe
		switch o {
		case success, answered:
			b.setLocked(Closed)
		case failure:
			b.openLocked(now, min(2*b.interval, b.p.MaxOpenFor))
		default:
			b.probing = false // no verdict: the next attempt probes
		}
	}
}

// current returns the state as an attempt at now would find it, and when an
// open breaker lets the next probe through (zero unless open). An open
// breaker whose interval has passed is reported half-open; the change
// itself waits for the next attempt.
func (b *breaker) current(now time.Time) (State, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == Open {
		if now.Before(b.until) {
			return Open, b.until
		}
		return HalfOpen, time.Time{}
	}
	return b.state, time.Time{}
}

func (b *breaker) openLocked(now time.Time, interval time.Duration) {
	b.interval = interval
	b.until = now.Add(interval)
	b.setLocked(Open)
}

func (b *breaker) setLocked(s State) {
	b.state = s
	b.gen++
	b.failures = 0
	b.probing = false
	if s == Closed {
		b.interval = b.p.OpenFor
		b.until = time.Time{}
	}
	b.metrics.BreakerState(b.name, s)
}
