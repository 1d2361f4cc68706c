// Package broker is the core of tokenbroker: the token cache, the coalescing
// of concurrent misses into one upstream exchange, and compare-and-evict of
// tokens a downstream API refused.
//
// It knows no gRPC, no HTTP and no keys. It asks an [Exchanger] for new tokens
// and reports what it does through a [Metrics] hook; it never logs. Time comes
// from an injected [Clock], so expiry is testable without sleeping.
package broker
