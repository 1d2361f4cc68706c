package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Request names a token. Every field is part of the cache key.
type Request struct {
	// Tenant is the tenant id as configured.
	Tenant string
	// UID asks for an account-specific token; empty for a tenant-level one.
	UID string
	// ExternalAccountID asks for an account-id token (instead of UID).
	ExternalAccountID string
	// Groups are the permission groups or scopes. Callers may pass them in any
	// order and with repeats; an [Exchanger] receives them sorted and unique.
	Groups []string
	// CustomClaims are sent upstream as they are; nil and empty are the same.
	CustomClaims map[string]string
}

// Options steer one lookup without being part of the cache key.
type Options struct {
	// MinTTL is the life the returned token must have left, on top of the
	// broker's clock-skew margin.
	MinTTL time.Duration
	// RejectedToken is a token a downstream API refused: if the cache holds
	// exactly it, it is evicted and a new one exchanged (compare-and-evict).
	RejectedToken string
}

// Token is an upstream access token. Its String, GoString and LogValue show
// only a fingerprint, so it cannot be logged by accident.
type Token struct {
	AccessToken string
	TokenType   string
	Expiry      time.Time
	fp          string // the fingerprint, computed once when the broker caches the token
}

// Fingerprint is the token's [Fingerprint]. A token the broker returns has
// it computed already, once per exchange: calls that log or audit it do not
// hash the token again.
func (t Token) Fingerprint() string {
	if t.fp != "" {
		return t.fp
	}
	return Fingerprint(t.AccessToken)
}

// String describes the token by its fingerprint and expiry, never its value.
func (t Token) String() string {
	return fmt.Sprintf("token(fp=%s, expires=%s)", t.Fingerprint(), t.Expiry.UTC().Format(time.RFC3339))
}

// GoString is String, so %#v cannot print the token either.
func (t Token) GoString() string { return t.String() }

// LogValue renders the token for slog by its fingerprint and expiry.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("fp", t.Fingerprint()), slog.Time("expires", t.Expiry))
}

// Fingerprint is the first 12 hex digits of the SHA-256 of a secret: enough to
// correlate log lines and audit records, useless to an attacker.
func Fingerprint(secret string) string {
	if secret == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:6])
}

// Status says how [Broker.Token] obtained a token.
type Status uint8

// The statuses of a successful lookup.
const (
	StatusHit    Status = iota + 1 // served from cache
	StatusMiss                     // this call started the exchange
	StatusShared                   // this call joined an exchange in flight, this replica's or another's
	StatusRemote                   // served from the cache shared with other replicas
)

// String is the lowercase name used in logs and metric labels.
func (s Status) String() string {
	switch s {
	case StatusHit:
		return "hit"
	case StatusMiss:
		return "miss"
	case StatusShared:
		return "shared"
	case StatusRemote:
		return "remote"
	}
	return "unknown"
}

// Exchanger obtains a new access token from an upstream. Implementations must
// be safe for concurrent use and should return an [*ExchangeError] so the edge
// can tell a refusal from an outage.
type Exchanger interface {
	Exchange(ctx context.Context, req Request) (Token, error)
}

// ExchangerFunc adapts a function to [Exchanger].
type ExchangerFunc func(ctx context.Context, req Request) (Token, error)

// Exchange calls f.
func (f ExchangerFunc) Exchange(ctx context.Context, req Request) (Token, error) { return f(ctx, req) }

// Clock tells the time. Tests inject a fake one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Metrics receives the broker's events. Implementations must be cheap and safe
// for concurrent use; Lookup is on the hot path.
type Metrics interface {
	// Lookup is called once per successful [Broker.Token] call.
	Lookup(Status)
	// Exchange is called once per upstream exchange, with its duration and
	// its error (nil on success).
	Exchange(tenant string, d time.Duration, err error)
	// RefreshStarted is called when a hit starts a background refresh.
	RefreshStarted(tenant string)
	// RefreshFailed is called when a background refresh fails; the old
	// token keeps being served while it is fresh enough.
	RefreshFailed(tenant string)
	// StaleServe is called for each hit on a token whose refresh has been
	// failing: the broker is serving while valid.
	StaleServe()
	// NegativeHit is called when a lookup is answered with a remembered
	// refusal instead of asking the upstream again.
	NegativeHit()
	// Evicted is called with the number of entries evicted to keep the
	// cache within its bound.
	Evicted(n int)
}

type noMetrics struct{}

func (noMetrics) Lookup(Status)                         {}
func (noMetrics) Exchange(string, time.Duration, error) {}
func (noMetrics) RefreshStarted(string)                 {}
func (noMetrics) RefreshFailed(string)                  {}
func (noMetrics) StaleServe()                           {}
func (noMetrics) NegativeHit()                          {}
func (noMetrics) Evicted(int)                           {}

// ErrUnknownTenant is returned by exchangers for a tenant they do not serve.
var ErrUnknownTenant = errors.New("broker: unknown tenant")

// ErrNotSupported is returned (wrapped, with what and why) by exchangers
// for a request their upstream cannot carry, such as an account id for an
// upstream that issues client tokens only.
var ErrNotSupported = errors.New("broker: the tenant's upstream cannot carry this request")

// ErrTTLUnattainable means even a freshly exchanged token has less life than
// the caller's min_ttl plus the skew margin: the caller asks for more than the
// upstream grants.
var ErrTTLUnattainable = errors.New("broker: the upstream's token lifetime is shorter than the requested min_ttl")

// Reason classifies an exchange failure. Its string is a metric label.
type Reason string

// The reasons an exchange fails.
const (
	ReasonRefused     Reason = "refused"      // the upstream refused the credentials (4xx): configuration, not retryable
	ReasonUnavailable Reason = "unavailable"  // 5xx, 429 or a network error: retryable
	ReasonTimeout     Reason = "timeout"      // the exchange ran out of time
	ReasonBadResponse Reason = "bad_response" // a success status with an unusable body
	ReasonSigning     Reason = "signing"      // the assertion could not be signed
	ReasonInternal    Reason = "internal"     // a bug: the exchanger panicked
)

// ExchangeError reports a failed exchange in terms that can be shown safely:
// Error() never includes Err, whose detail is for logs only.
type ExchangeError struct {
	Reason     Reason
	Upstream   string // the upstream's host, to name it in messages
	HTTPStatus int    // 0 when no response arrived
	Code       string // the upstream's OAuth error code, already sanitised
	// RetryAfter is how long the upstream asked to be left alone (a 429's
	// or 503's Retry-After), or how long until a circuit breaker lets the
	// next attempt through; 0 when unknown.
	RetryAfter time.Duration
	Err        error // the cause; for logs, never for callers
}

// Error is safe to show to a caller: reason, upstream, status and OAuth code.
func (e *ExchangeError) Error() string {
	msg := fmt.Sprintf("upstream %s: %s", e.Upstream, e.Reason)
	if e.HTTPStatus != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	if e.Code != "" {
		msg += ": " + e.Code
	}
	return msg
}

// Unwrap returns the cause.
func (e *ExchangeError) Unwrap() error { return e.Err }
