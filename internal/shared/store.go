package shared

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// ErrUnavailable means Redis could not be used: it failed or was too slow just
// now, or the Store is in a down episode and did not try. Errors from a failed
// round trip wrap both ErrUnavailable and the cause. The caller falls back to
// its local cache and coalescing.
var ErrUnavailable = errors.New("shared: redis unavailable")

// ErrClosed is returned by the methods of a closed [Store].
var ErrClosed = errors.New("shared: store closed")

// ErrLeaseLost is returned by [Lease.Release] and [Lease.Extend] when the
// lease was no longer the caller's: it had expired, and perhaps another
// replica had taken it.
var ErrLeaseLost = errors.New("shared: lease lost")

// compareAndDelete deletes KEYS[1] if it holds exactly ARGV[1] and then
// publishes ARGV[3] on channel ARGV[2]; it returns 1 if it deleted. It
// evicts a rejected value (publishing the invalidation) and releases a
// lease (publishing on the set channel, so that waiters look again at once).
var compareAndDelete = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	redis.call('PUBLISH', ARGV[2], ARGV[3])
	return 1
end
return 0
`)

// extendLease resets the expiry of the lease KEYS[1] to ARGV[2]
// milliseconds if it holds the token ARGV[1]; it returns 1 if it did.
var extendLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return 1
end
return 0
`)

// Store is a replica's view of the cache shared through Redis. Its methods are
// safe for concurrent use. Every round trip is bounded by [Config].Timeout;
// a failure starts a down episode during which calls fail fast with
// [ErrUnavailable] until the probe interval has passed.
type Store struct {
	cfg Config
	rdb *redis.Client
	id  string // this Store's replica id, in its messages

	setChannel string // carries "<id> <name>" after each Set
	invChannel string // carries "<id> <name>" after each CompareAndDelete that deleted

	closed     atomic.Bool
	done       chan struct{} // closed by Close
	readerDone chan struct{} // closed when the subscription reader has returned
	cancel     context.CancelFunc

	down      atomic.Bool // mirrors health.down for the fast path
	healthMu  sync.Mutex  // guards probing, nextProbe, and Episode calls
	probing   bool        // a call is trying Redis during a down episode
	nextProbe time.Time   // when a call may next try Redis while down

	psMu sync.Mutex // guards ps
	ps   *redis.PubSub

	subscribed atomic.Bool // the subscription is confirmed on both channels

	subMu   sync.Mutex // guards waiters and invSubs
	waiters map[string]map[*waiter]struct{}
	invSubs map[*invSub]struct{}
}

// New validates cfg, fills in its defaults and returns a Store. It does not
// wait for Redis (nor ask the sentinels): a Store starts healthy and
// connects on first use, and its subscription connects (and reconnects) in
// the background. Close it when done.
func New(cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:        cfg,
		rdb:        newClient(cfg),
		id:         rand.Text(),
		setChannel: cfg.Prefix + "set",
		invChannel: cfg.Prefix + "inv",
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		cancel:     cancel,
		waiters:    make(map[string]map[*waiter]struct{}),
		invSubs:    make(map[*invSub]struct{}),
	}
	go s.subscribe(ctx)
	return s, nil
}

// newClient returns the go-redis client for cfg: one Redis at cfg.Addr, or
// the master that the sentinels name. Both get the same settings, which
// options holds.
func newClient(cfg Config) *redis.Client {
	o := options(cfg)
	if cfg.SentinelMaster == "" {
		return redis.NewClient(o)
	}
	return redis.NewFailoverClient(failoverOptions(o, cfg))
}

// options are the settings of every connection the Store opens, with
// cfg.Addr: the timeouts, the pool and the retries. Through Sentinel they
// also apply to the connections to the sentinels.
func options(cfg Config) *redis.Options {
	return &redis.Options{
		Addr:      cfg.Addr,
		Username:  cfg.Username,
		Password:  cfg.Password,
		DB:        cfg.DB,
		TLSConfig: cfg.TLS.Clone(),
		// A dial runs in the pool's background and may outlive the call
		// that asked for it; the connection then serves the next call.
		DialTimeout:   max(cfg.Timeout, time.Second),
		DialerRetries: 1,
		// No retries: one would not fit in a tight timeout, and a retried
		// SET NX or compare-and-delete could misreport its own success.
		MaxRetries:            -1,
		ReadTimeout:           cfg.Timeout,
		WriteTimeout:          cfg.Timeout,
		PoolTimeout:           cfg.Timeout,
		ContextTimeoutEnabled: true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
}

// failoverOptions carries o's settings, but its address, over to a client
// that asks the sentinels of cfg for the master. go-redis applies them to
// the master and to the sentinels alike, TLS included, and always disables
// maintenance notifications for a failover client.
func failoverOptions(o *redis.Options, cfg Config) *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName:       cfg.SentinelMaster,
		SentinelAddrs:    slices.Clone(cfg.SentinelAddrs),
		SentinelUsername: cfg.SentinelUsername,
		SentinelPassword: cfg.SentinelPassword,

		Username:  o.Username,
		Password:  o.Password,
		DB:        o.DB,
		TLSConfig: o.TLSConfig,

		DialTimeout:           o.DialTimeout,
		DialerRetries:         o.DialerRetries,
		MaxRetries:            o.MaxRetries,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		PoolTimeout:           o.PoolTimeout,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled,
	}
}

// Close ends the subscription, closes the channels returned by
// [Store.Invalidations], makes pending [Store.Wait] calls return [ErrClosed]
// and closes the connections. It waits for the subscription reader to
// return. Calls after Close return ErrClosed; a second Close does nothing.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	s.cancel()
	s.psMu.Lock()
	if s.ps != nil {
		_ = s.ps.Close()
	}
	s.psMu.Unlock()
	<-s.readerDone

	s.subMu.Lock()
	for sub := range s.invSubs {
		sub.stop()
		delete(s.invSubs, sub)
		close(sub.ch)
	}
	s.subMu.Unlock()

	if err := s.rdb.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("shared: close: %w", err)
	}
	return nil
}

// Healthy reports whether the Store is out of a down episode: false from
// the failure that started one until a call finds Redis working again.
func (s *Store) Healthy() bool { return !s.down.Load() }

// Ping asks Redis whether it is there, under the same timeout and health
// rules as every other call. A caller may use it to check the configuration
// at startup; a failure is not fatal, as the Store keeps trying.
func (s *Store) Ping(ctx context.Context) error {
	return s.do(ctx, "ping", func(ctx context.Context) error {
		return s.rdb.Ping(ctx).Err()
	})
}

// Get returns the value stored under name, and whether there is one.
func (s *Store) Get(ctx context.Context, name string) ([]byte, bool, error) {
	var (
		v     []byte
		found bool
	)
	err := s.do(ctx, "get", func(ctx context.Context) error {
		b, err := s.rdb.Get(ctx, s.valueKey(name)).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		v, found = b, err == nil
		return err
	})
	if err != nil || !found {
		return nil, false, err
	}
	return v, true, nil
}

// Set stores value under name for ttl (Redis keeps millisecond precision and
// rounds a positive ttl under 1ms up to 1ms), replacing any value there, and
// notifies the replicas waiting for name in [Store.Wait]. A ttl of zero or
// less stores nothing: the value would already be too old to serve.
func (s *Store) Set(ctx context.Context, name string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	return s.do(ctx, "set", func(ctx context.Context) error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, s.valueKey(name), value, ttl)
			p.Publish(ctx, s.setChannel, s.message(name))
			return nil
		})
		return err
	})
}

// CompareAndDelete deletes the value under name if it is exactly expected and
// then tells the other replicas, through [Store.Invalidations], to drop their
// copies of name; both happen atomically in one script. It reports whether it
// deleted. A value that is absent or different (already replaced) is left
// alone and nothing is published.
//
// expected must be the bytes as stored (as returned by [Store.Get] or given
// to [Store.Set]): values sealed with a random nonce differ every time they
// are sealed.
func (s *Store) CompareAndDelete(ctx context.Context, name string, expected []byte) (bool, error) {
	var deleted bool
	err := s.do(ctx, "compare-and-delete", func(ctx context.Context) error {
		n, err := compareAndDelete.Run(ctx, s.rdb,
			[]string{s.valueKey(name)}, expected, s.invChannel, s.message(name)).Int()
		deleted = n == 1
		return err
	})
	return deleted, err
}

func (s *Store) valueKey(name string) string { return s.cfg.Prefix + "v:" + name }
func (s *Store) leaseKey(name string) string { return s.cfg.Prefix + "l:" + name }

// message is the payload of a notification about name.
func (s *Store) message(name string) string { return s.id + " " + name }

// do runs one round trip f under the per-operation timeout and the health
// rules. f reports a missing key as success; any error it returns is Redis
// trouble, unless the caller's ctx ended first.
func (s *Store) do(ctx context.Context, op string, f func(ctx context.Context) error) error {
	probe, err := s.begin()
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	err = f(octx)
	cancel()
	return s.end(ctx, op, probe, err)
}

// begin admits a call: at once while up; while down, only one call at a
// time, once the probe interval has passed (the probe), and the rest fail
// with ErrUnavailable without touching the network.
func (s *Store) begin() (probe bool, err error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	if !s.down.Load() {
		return false, nil
	}
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if !s.down.Load() {
		return false, nil
	}
	if s.probing || s.cfg.Clock.Now().Before(s.nextProbe) {
		return false, ErrUnavailable
	}
	s.probing = true
	return true, nil
}

// end records the outcome of a call admitted by begin and returns its error.
func (s *Store) end(ctx context.Context, op string, probe bool, err error) error {
	switch {
	case err == nil:
		if probe {
			s.healthMu.Lock()
			s.probing = false
			s.down.Store(false)
			s.cfg.Metrics.Episode(false, nil)
			s.healthMu.Unlock()
		}
		return nil
	case s.closed.Load():
		s.endProbe(probe)
		return ErrClosed
	case ctx.Err() != nil:
		// The caller gave up; that says nothing about Redis.
		s.endProbe(probe)
		return fmt.Errorf("shared: %s: %w", op, ctx.Err())
	}
	err = fmt.Errorf("shared: %s: %w: %w", op, ErrUnavailable, err)
	s.healthMu.Lock()
	s.probing = false
	s.nextProbe = s.cfg.Clock.Now().Add(s.cfg.ProbeInterval)
	if !s.down.Load() {
		s.down.Store(true)
		s.cfg.Metrics.Episode(true, err)
	}
	s.healthMu.Unlock()
	return err
}

// endProbe ends a probe that learnt nothing; the next call probes again.
func (s *Store) endProbe(probe bool) {
	if probe {
		s.healthMu.Lock()
		s.probing = false
		s.healthMu.Unlock()
	}
}
