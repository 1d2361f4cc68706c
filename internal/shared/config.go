package shared

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The defaults of [Config]'s zero fields.
const (
	DefaultTimeout       = 50 * time.Millisecond
	DefaultLeaseTTL      = 5 * time.Second
	DefaultPrefix        = "tb:v1:"
	DefaultProbeInterval = time.Second
	DefaultPollInterval  = 100 * time.Millisecond
)

// Config is the configuration of a [Store]. The zero value of every field but
// Addr and the Sentinel fields means its default.
//
// The Store reaches Redis in one of two ways: at Addr, or through Redis
// Sentinel, with SentinelMaster and SentinelAddrs set and Addr empty.
// Exactly one of them is configured. Username, Password, TLS and DB apply
// to the Redis master either way.
type Config struct {
	// Addr is the Redis server's host:port. It is required unless
	// SentinelMaster is set, and must then be empty.
	Addr string

	// SentinelMaster is the name under which the sentinels monitor the
	// Redis master (sentinel monitor NAME ...). Set, the Store asks the
	// sentinels at SentinelAddrs where the master is, whenever it opens a
	// connection, and follows failovers: when a sentinel announces a new
	// master (+switch-master), the pooled connections to the old one are
	// dropped, and a connection that fails is reopened to whichever
	// master the sentinels name then. A failover is an outage like any
	// other for the Store: calls fail with [ErrUnavailable] until the new
	// master answers, and it comes up empty unless it was a replica.
	SentinelMaster string
	// SentinelAddrs are the sentinels' host:port addresses: at least one,
	// when SentinelMaster is set. The sentinels they know of are asked
	// too.
	SentinelAddrs []string
	// SentinelUsername is the sentinels' own ACL user; empty means their
	// default user.
	SentinelUsername string
	// SentinelPassword is the sentinels' own password, already read from
	// its file by the caller; empty means none.
	SentinelPassword string

	// Username is the Redis master's ACL user; empty means the default
	// user.
	Username string
	// Password is the Redis master's password itself, already read from its
	// file by the caller; empty means none.
	Password string
	// TLS, when set, is the client TLS configuration; nil means plain TCP.
	// With Sentinel, the same configuration is used for the connections to
	// the sentinels too (go-redis's FailoverOptions has one TLSConfig for
	// both): the sentinels must then speak TLS as well, with certificates
	// that the same roots verify. A ServerName set in it is checked on the
	// master and on every sentinel alike; left empty, each connection
	// checks the host it dials, which for the master is the address the
	// sentinels report (an IP address, unless they announce hostnames).
	TLS *tls.Config
	// DB is the logical database number on the Redis master.
	DB int

	// Timeout bounds each operation (each round trip, including waiting for a
	// pooled connection). A Redis that does not answer within it counts as
	// down. Default [DefaultTimeout].
	Timeout time.Duration
	// LeaseTTL is how long a lease lasts unless its holder releases it or
	// renews it ([Lease.Extend]): it bounds how long the other replicas
	// wait for a holder that died. A live holder renews its lease while it
	// exchanges, so it need not exceed the longest exchange; it should
	// exceed a few Redis round trips, so that a renewal arrives in time.
	// Default [DefaultLeaseTTL].
	LeaseTTL time.Duration
	// Prefix namespaces every key and channel the Store uses, so several
	// brokers (or versions of the format) can share one Redis database.
	// Default [DefaultPrefix].
	Prefix string
	// ProbeInterval is how long the Store stays down after a failure before
	// the next call is let through to try Redis again; it also paces the
	// subscription's reconnection attempts. Default [DefaultProbeInterval].
	ProbeInterval time.Duration
	// PollInterval is the longest pause between two looks at Redis in
	// [Store.Wait], the fallback for a missed notification; each pause is
	// drawn uniformly between half of it and all of it. Default
	// [DefaultPollInterval].
	PollInterval time.Duration

	// Metrics receives the Store's events; nil means none.
	Metrics Metrics
	// Clock tells the time for the down/probe bookkeeping; nil means the
	// system clock. Timers (polling, reconnection) use real time.
	Clock Clock
}

// Metrics receives a [Store]'s events. Implementations must be cheap, safe for
// concurrent use, and must not call the Store's methods other than
// [Store.Healthy] (they run under the Store's health lock).
type Metrics interface {
	// Episode is called once when the Store goes down, with the failure
	// that took it down, and once when it is back up (cause nil). Calls
	// alternate, starting with down; the caller logs and counts them.
	Episode(down bool, cause error)
	// InvalidationDropped is called when an invalidation from another
	// replica is dropped because an [Store.Invalidations] channel was full.
	InvalidationDropped()
}

// Clock tells the time. Tests inject a fake one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

type noMetrics struct{}

func (noMetrics) Episode(bool, error)  {}
func (noMetrics) InvalidationDropped() {}

// withDefaults validates c and fills in its zero fields.
func (c Config) withDefaults() (Config, error) {
	sentinel := c.SentinelMaster != "" || len(c.SentinelAddrs) > 0 || c.SentinelUsername != "" || c.SentinelPassword != ""
	switch {
	case c.Addr != "" && sentinel:
		return c, errors.New("shared: config: addr and sentinel are both set; configure one of them")
	case c.Addr == "" && !sentinel:
		return c, errors.New("shared: config: addr is required, or a sentinel master and addrs")
	case sentinel && c.SentinelMaster == "":
		return c, errors.New("shared: config: sentinel master name is required with sentinel addrs, username or password")
	case sentinel && len(c.SentinelAddrs) == 0:
		return c, errors.New("shared: config: sentinel addrs are required with a sentinel master")
	case sentinel && slices.Contains(c.SentinelAddrs, ""):
		return c, errors.New("shared: config: a sentinel addr is empty")
	}
	if c.DB < 0 {
		return c, fmt.Errorf("shared: config: db %d is negative", c.DB)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"timeout", &c.Timeout, DefaultTimeout},
		{"lease ttl", &c.LeaseTTL, DefaultLeaseTTL},
		{"probe interval", &c.ProbeInterval, DefaultProbeInterval},
		{"poll interval", &c.PollInterval, DefaultPollInterval},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			return c, fmt.Errorf("shared: config: %s %s is negative", d.name, *d.v)
		}
	}
	if c.LeaseTTL < time.Millisecond {
		return c, fmt.Errorf("shared: config: lease ttl %s is below Redis's 1ms resolution", c.LeaseTTL)
	}
	if c.PollInterval < 2*time.Millisecond {
		return c, fmt.Errorf("shared: config: poll interval %s is too short", c.PollInterval)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	return c, nil
}
