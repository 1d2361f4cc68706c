// Package resilience protects an upstream token endpoint from the broker and
// the broker from it, so that the broker is never the reason an outage
// spreads. It owns, per endpoint ([Upstream]), the three guards that wrap
// every tenant's [broker.Exchanger] for that endpoint ([Upstream.Wrap]):
//
//   - Retries of retryable failures (an [*broker.ExchangeError] with reason
//     unavailable or timeout: network errors, 5xx, 429), with exponential
//     backoff and full jitter, at least the upstream's Retry-After, never
//     past the caller's deadline and within a per-exchange budget of
//     attempts and time. Each attempt calls the wrapped exchanger again, so
//     it signs a fresh assertion.
//   - A circuit breaker shared by all tenants of the endpoint: it opens after
//     consecutive failures that say the upstream is unwell (unavailable,
//     timeout, bad_response), fails calls fast while open, and lets one probe
//     through once the open interval has passed. Refusals (4xx) say the
//     upstream is up and answering and never trip it; neither does a caller
//     giving up.
//   - A limit on the exchanges in flight at once, whose wait counts against
//     the caller's deadline. A slot is held per attempt, not during backoff.
//
// The package starts no goroutines and holds no global state: time and
// randomness are injected ([Clock], [Config].Rand), state changes happen on
// calls, and events go to a [Metrics] hook. Like broker, it never logs.
package resilience
