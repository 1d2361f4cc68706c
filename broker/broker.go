package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults for the zero values of [Config].
const (
	DefaultSkew            = 10 * time.Second
	DefaultExchangeTimeout = 30 * time.Second
	DefaultRefreshFraction = 0.2
	DefaultNegativeTTL     = 5 * time.Second
	DefaultMaxEntries      = 100_000
)

// Refresh retries after a failed background refresh back off from
// refreshBackoffBase, doubling, up to refreshBackoffMax, with jitter.
const (
	refreshBackoffBase = time.Second
	refreshBackoffMax  = time.Minute
)

// Config is what [New] needs. Zero fields take defaults.
type Config struct {
	// Exchanger fetches new tokens. Required.
	Exchanger Exchanger
	// Clock defaults to the system clock.
	Clock Clock
	// Skew is the clock-skew margin: a token counts as expired this long
	// before its expiry. Default [DefaultSkew]; negative means 0.
	Skew time.Duration
	// ExchangeTimeout bounds one shared exchange, whatever its callers'
	// deadlines. Default [DefaultExchangeTimeout].
	ExchangeTimeout time.Duration
	// RefreshFraction is the share of a token's usable life (up to its
	// expiry less the skew) left when a hit starts its background refresh:
	// default [DefaultRefreshFraction]; negative disables refresh-ahead; at
	// most 0.9.
	RefreshFraction float64
	// NegativeTTL is how long an upstream's refusal (4xx) is remembered for
	// its key, so that a crowd of callers with a broken configuration makes
	// one upstream call: default [DefaultNegativeTTL]; negative disables.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache: default [DefaultMaxEntries]. Past it,
	// storing a token evicts the least recently used entry of its shard.
	MaxEntries int
	// Metrics receives events; nil discards them.
	Metrics Metrics
	// Shared is the cache tier shared with other replicas; nil for none.
	Shared Shared
}

// maxShards is a power of two. Shards bound the cost of a copy-on-write
// store: at 100,000 cached tokens a store copies about 400 entries,
// negligible next to the signature the exchange needed. Smaller caches get
// fewer shards (at least minPerShard entries each), so that eviction, which
// is least-recently-used within a shard, stays close to exact.
const (
	maxShards   = 256
	minPerShard = 64
)

// Broker serves tokens from its cache, coalesces misses, refreshes tokens
// ahead of their expiry in the background and keeps serving a valid token
// while its refresh fails. It is safe for concurrent use; [Broker.Close]
// stops its background work.
type Broker struct {
	exchanger       Exchanger
	clock           Clock
	skew            time.Duration
	exchangeTimeout time.Duration
	refreshFraction float64
	negativeTTL     time.Duration
	metrics         Metrics
	shared          Shared

	seed     maphash.Seed
	shards   []shard
	mask     uint64
	perShard int
	flights  singleflight.Group

	// ctx ends when the broker closes: background refreshes and the
	// exchanges in flight stop. work counts the goroutines Close waits for;
	// closed (under mu) stops new ones from starting.
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.RWMutex
	closed bool
	work   sync.WaitGroup
}

// entry is a cached token, or a remembered refusal (err set, until
// tok.Expiry). Its atomic fields are written by hits and refreshes; the
// rest never changes once the entry is published.
type entry struct {
	tok Token
	err error // a refusal, for the negative cache
	// sharedID is the entry's ID in the shared tier ("" without one).
	sharedID string
	// refreshLeft is the refresh point, as the life a token has left beyond
	// the skew margin and the caller's min_ttl: a hit that finds no more than
	// this left starts a refresh. Measured past each caller's own min_ttl,
	// so a caller that needs much of a token's life still finds it
	// refreshed before it stops being fresh enough for it.
	refreshLeft time.Duration

	lastUsed   atomic.Int64 // unix nanoseconds, kept to about a second
	refreshing atomic.Bool  // a refresh is in flight
	failures   atomic.Int32 // refreshes failed in a row
	retryAt    atomic.Int64 // unix nanoseconds: no refresh before this
}

// touch records a use, writing only when the last one is a second old, so
// that hits on a hot key from many cores do not contend on its cache line.
func (e *entry) touch(now int64) {
	if now-e.lastUsed.Load() > int64(time.Second) {
		e.lastUsed.Store(now)
	}
}

// shard is a copy-on-write map: readers load it with one atomic read and
// write nothing shared but an entry's use time, so cache hits on many cores
// do not contend. Writers serialise on mu and publish a new map.
type shard struct {
	m  atomic.Pointer[map[string]*entry]
	mu sync.Mutex
	_  [48]byte // keep shards on separate cache lines
}

// New returns a Broker. It panics if cfg.Exchanger is nil: that is a wiring
// bug, not a runtime condition.
func New(cfg Config) *Broker {
	if cfg.Exchanger == nil {
		panic("broker: Config.Exchanger is nil")
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Skew == 0 {
		cfg.Skew = DefaultSkew
	} else if cfg.Skew < 0 {
		cfg.Skew = 0
	}
	if cfg.ExchangeTimeout <= 0 {
		cfg.ExchangeTimeout = DefaultExchangeTimeout
	}
	switch {
	case cfg.RefreshFraction == 0:
		cfg.RefreshFraction = DefaultRefreshFraction
	case cfg.RefreshFraction < 0:
		cfg.RefreshFraction = 0
	case cfg.RefreshFraction > 0.9:
		cfg.RefreshFraction = 0.9
	}
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	n := 1
	for n < maxShards && n*2*minPerShard <= cfg.MaxEntries {
		n *= 2
	}
	b := &Broker{
		exchanger:       cfg.Exchanger,
		clock:           cfg.Clock,
		skew:            cfg.Skew,
		exchangeTimeout: cfg.ExchangeTimeout,
		refreshFraction: cfg.RefreshFraction,
		negativeTTL:     cfg.NegativeTTL,
		metrics:         cfg.Metrics,
		shared:          cfg.Shared,
		seed:            maphash.MakeSeed(),
		shards:          make([]shard, n),
		mask:            uint64(n - 1),
		perShard:        (cfg.MaxEntries + n - 1) / n,
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	for i := range b.shards {
		b.shards[i].m.Store(&map[string]*entry{})
	}
	if b.shared != nil {
		b.work.Add(1)
		go b.invalidations(b.shared.Invalidations(b.ctx))
	}
	return b
}

// Close stops the background refreshes and the exchanges in flight, and
// waits for them to end. Calls after Close still serve cached tokens; a miss
// fails with [ErrClosed].
func (b *Broker) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.work.Wait()
}

// ErrClosed is the error of a miss after [Broker.Close].
var ErrClosed = errors.New("broker: closed")

// begin registers a goroutine's work with Close, or reports that the broker
// is closed.
func (b *Broker) begin() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return false
	}
	b.work.Add(1)
	return true
}

// Token returns a token for req with at least opt.MinTTL (plus the skew
// margin) of life left: from cache when it holds one, otherwise from an
// exchange that all concurrent callers for the same key share. The shared
// exchange runs on its own context bounded by the exchange timeout, so a
// caller that gives up never fails the others; each caller still returns as
// soon as its own ctx is done. A hit on a token past its refresh point
// starts one background refresh of it and returns at once; a recent refusal
// for the key is returned without asking the upstream again.
func (b *Broker) Token(ctx context.Context, req Request, opt Options) (Token, Status, error) {
	// The key is built on the stack: a cache hit allocates nothing.
	var groupBuf [32]string
	groups := normalizeGroups(groupBuf[:0], req.Groups)
	var claimBuf [16]string
	claimKeys := sortedKeys(claimBuf[:0], req.CustomClaims)
	var keyBuf [320]byte
	key := appendKey(keyBuf[:0], &req, groups, claimKeys)

	sh := &b.shards[maphash.Bytes(b.seed, key)&b.mask]
	now := b.clock.Now()
	e, ok := (*sh.m.Load())[string(key)]
	if ok && e.err != nil {
		if e.tok.Expiry.After(now) {
			b.metrics.NegativeHit()
			return Token{}, 0, e.err
		}
		ok = false
	}
	if ok && opt.RejectedToken != "" && e.tok.AccessToken == opt.RejectedToken {
		sh.compareAndDelete(string(key), opt.RejectedToken, now)
		ok = false
	}
	if ok {
		// The life left beyond the skew margin and the caller's min_ttl.
		if left := e.tok.Expiry.Sub(now) - b.skew - opt.MinTTL; left > 0 {
			nowNano := now.UnixNano()
			e.touch(nowNano)
			if left <= e.refreshLeft {
				b.refreshAhead(sh, e, key, &req, groups, nowNano)
			}
			b.metrics.Lookup(StatusHit)
			return e.tok, StatusHit, nil
		}
	}
	req.Groups = slices.Clone(groups)
	return b.miss(ctx, sh, string(key), req, opt, false)
}

// refreshAhead serves a hit past its entry's refresh point: it counts a
// stale serve when the entry's refresh has been failing, and starts the one
// background refresh of the entry unless one is in flight or backing off.
func (b *Broker) refreshAhead(sh *shard, e *entry, key []byte, req *Request, groups []string, now int64) {
	if e.failures.Load() > 0 {
		b.metrics.StaleServe()
	}
	if now < e.retryAt.Load() || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	if !b.begin() {
		e.refreshing.Store(false)
		return
	}
	b.metrics.RefreshStarted(req.Tenant)
	r := *req
	r.Groups = slices.Clone(groups)
	go b.refresh(sh, e, string(key), r)
}

// refresh exchanges a new token for an entry in the background, through
// the key's flight, so callers that miss meanwhile share it. When it fails
// the entry keeps being served while it is fresh enough, and the next
// refresh waits a backoff.
func (b *Broker) refresh(sh *shard, e *entry, key string, req Request) {
	defer b.work.Done()
	ch := b.flights.DoChan(key, func() (any, error) {
		return b.exchange(b.ctx, sh, key, req, Options{}, true, e.tok.Expiry)
	})
	var err error
	select {
	case res := <-ch:
		err = res.Err
		if err == nil && res.Val.(flightResult).cached {
			// It joined a flight that found this entry fresh enough
			// for its leader and replaced nothing: stay ready to refresh.
			e.refreshing.Store(false)
			return
		}
	case <-b.ctx.Done():
		err = b.ctx.Err()
	}
	if err == nil {
		// The entry is replaced; it stays marked, so that a hit that
		// loaded it before the replacement cannot refresh it again.
		return
	}
	n := e.failures.Add(1)
	e.retryAt.Store(b.clock.Now().Add(refreshBackoff(n)).UnixNano())
	e.refreshing.Store(false)
	b.metrics.RefreshFailed(req.Tenant)
}

// refreshBackoff is the wait before the next refresh after n failures in a
// row: doubling from refreshBackoffBase up to refreshBackoffMax, each drawn
// from its upper half so that keys that failed together spread out.
func refreshBackoff(n int32) time.Duration {
	d := refreshBackoffMax
	if n < 7 {
		d = min(refreshBackoffMax, refreshBackoffBase<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}

// miss joins or starts the one exchange in flight for key. With force, a
// flight it starts exchanges even if the cache holds a token by then.
func (b *Broker) miss(ctx context.Context, sh *shard, key string, req Request, opt Options, force bool) (Token, Status, error) {
	var started bool // written by the flight goroutine, read after its result arrives
	ch := b.flights.DoChan(key, func() (any, error) {
		started = true
		return b.exchange(ctx, sh, key, req, opt, force, time.Time{})
	})
	select {
	case <-ctx.Done():
		return Token{}, 0, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return Token{}, 0, res.Err
		}
		fr := res.Val.(flightResult)
		status := StatusShared
		if started {
			status = StatusMiss
			if fr.cached {
				status = StatusHit
			} else if fr.via != 0 {
				status = fr.via
			}
		}
		if !b.fresh(fr.tok, opt.MinTTL) {
			if fr.cached && !force {
				// The flight served a cached token that was fresh enough
				// for its leader but not for us: exchange for real.
				return b.miss(ctx, sh, key, req, opt, true)
			}
			return Token{}, 0, ErrTTLUnattainable
		}
		b.metrics.Lookup(status)
		return fr.tok, status, nil
	}
}

type flightResult struct {
	tok    Token
	cached bool   // another flight stored it between our miss and our start
	via    Status // how another replica's token was had; 0 for this replica's exchange
}

// exchange runs in the flight's own goroutine, on a context that keeps the
// values of the caller that started it but not its deadline: it ends at the
// exchange timeout or when the broker closes. With a shared tier it first
// looks there for a token that another replica obtained, expiring after
// stale (the token a refresh replaces), and exchanges only under the key's
// lease, storing what it gets for the others.
func (b *Broker) exchange(parent context.Context, sh *shard, key string, req Request, opt Options, force bool, stale time.Time) (res flightResult, err error) {
	if !b.begin() {
		return flightResult{}, ErrClosed
	}
	defer b.work.Done()
	// A flight that finished between our lookup and our start may have
	// stored a token, or a refusal, already.
	if e, ok := (*sh.m.Load())[key]; ok && !force {
		switch {
		case e.err != nil && e.tok.Expiry.After(b.clock.Now()):
			b.metrics.NegativeHit()
			return flightResult{}, e.err
		case e.err == nil && e.tok.AccessToken != opt.RejectedToken && b.fresh(e.tok, opt.MinTTL):
			return flightResult{tok: e.tok, cached: true}, nil
		}
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), b.exchangeTimeout)
	defer cancel()
	defer context.AfterFunc(b.ctx, cancel)()
	var kb []byte
	if b.shared != nil {
		kb = []byte(key)
		if opt.RejectedToken != "" {
			_ = b.shared.Evict(ctx, req.Tenant, kb, opt.RejectedToken) // on failure the others keep it until it expires
		}
		st, via, release, err := b.fromShared(ctx, kb, req.Tenant, func(t Token) bool {
			return t.AccessToken != "" && t.AccessToken != opt.RejectedToken && t.Expiry.After(stale) && b.fresh(t, opt.MinTTL)
		})
		if err != nil {
			if b.ctx.Err() != nil {
				return flightResult{}, ErrClosed
			}
			return flightResult{}, &ExchangeError{Reason: ReasonTimeout, Upstream: req.Tenant,
				Err: fmt.Errorf("waiting for another replica's exchange: %w", err)}
		}
		if via != 0 {
			now := b.clock.Now()
			e := b.newEntry(st.Token, st.Obtained, now, req.Tenant, kb)
			sh.store(key, e, now, b)
			b.flights.Forget(key)
			return flightResult{tok: e.tok, via: via}, nil
		}
		if release != nil {
			defer release() // after storing: a waiter that sees the lease gone looks once more
		}
	}
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = &ExchangeError{Reason: ReasonInternal, Upstream: req.Tenant, Err: fmt.Errorf("exchanger panicked: %v", p)}
		}
		b.metrics.Exchange(req.Tenant, time.Since(start), err)
	}()

	tok, err := b.exchanger.Exchange(ctx, req)
	if err != nil {
		var xe *ExchangeError
		if errors.As(err, &xe) && xe.Reason == ReasonRefused && b.negativeTTL > 0 {
			sh.storeRefusal(key, err, b.clock.Now(), b.negativeTTL, b.skew, b)
		}
		return flightResult{}, err
	}
	now := b.clock.Now()
	if tok.AccessToken == "" || !tok.Expiry.After(now) {
		return flightResult{}, &ExchangeError{Reason: ReasonBadResponse, Upstream: req.Tenant,
			Err: fmt.Errorf("exchanger returned an empty or expired token (expiry %s)", tok.Expiry)}
	}
	if tok.TokenType == "" {
		tok.TokenType = "Bearer"
	}
	e := b.newEntry(tok, now, now, req.Tenant, kb)
	sh.store(key, e, now, b)
	// The flight is over once its token is in the cache: a refresh or miss
	// that starts from here on must not join it and take its result for a
	// new one (singleflight forgets the key only after this returns).
	b.flights.Forget(key)
	if b.shared != nil {
		b.putShared(ctx, kb, req.Tenant, SharedToken{Token: e.tok, Obtained: now})
	}
	return flightResult{tok: e.tok}, nil
}

// newEntry wraps a token obtained (by this replica or another) at obtained,
// found at now, with its refresh point: when RefreshFraction of its usable
// life (from obtained to its expiry less the skew) is left beyond a caller's
// min_ttl, plus up to a quarter of that again, drawn per entry, so that
// tokens fetched together are not refreshed together. key is the cache key,
// for the entry's shared ID.
func (b *Broker) newEntry(tok Token, obtained, now time.Time, tenant string, key []byte) *entry {
	tok.fp = Fingerprint(tok.AccessToken)
	e := &entry{tok: tok, refreshLeft: -1}
	if b.shared != nil {
		e.sharedID = b.shared.ID(tenant, key)
	}
	if obtained.After(now) {
		obtained = now // another replica's clock runs ahead
	}
	if usable := tok.Expiry.Add(-b.skew).Sub(obtained); b.refreshFraction > 0 && usable > 0 {
		window := time.Duration(float64(usable) * b.refreshFraction)
		e.refreshLeft = window + rand.N(window/4+1)
	}
	e.lastUsed.Store(now.UnixNano())
	return e
}

// fresh reports whether tok has more than minTTL plus the skew margin left.
func (b *Broker) fresh(tok Token, minTTL time.Duration) bool {
	return b.freshAt(tok, minTTL, b.clock.Now())
}

func (b *Broker) freshAt(tok Token, minTTL time.Duration, now time.Time) bool {
	return tok.Expiry.Sub(now) > minTTL+b.skew
}

// store caches e under key.
func (s *shard) store(key string, e *entry, now time.Time, b *Broker) {
	s.update(now, b, func(m map[string]*entry) { m[key] = e })
}

// storeRefusal remembers a refusal for key for ttl, unless the shard still
// holds a token for it that is fresh enough to serve: a failing refresh must
// not take a valid token away.
func (s *shard) storeRefusal(key string, err error, now time.Time, ttl, skew time.Duration, b *Broker) {
	s.update(now, b, func(m map[string]*entry) {
		if e, ok := m[key]; ok && e.err == nil && e.tok.Expiry.Sub(now) > skew {
			return
		}
		e := &entry{tok: Token{Expiry: now.Add(ttl)}, err: err, refreshLeft: -1}
		e.lastUsed.Store(now.UnixNano())
		m[key] = e
	})
}

// compareAndDelete drops the entry for key only if it still holds rejected.
func (s *shard) compareAndDelete(key, rejected string, now time.Time) {
	s.update(now, nil, func(m map[string]*entry) {
		if e, ok := m[key]; ok && e.err == nil && e.tok.AccessToken == rejected {
			delete(m, key)
		}
	})
}

// update publishes a copy of the shard's map, without its expired entries,
// changed by fn; then, with b, it evicts the least recently used entries
// beyond the shard's share of MaxEntries.
func (s *shard) update(now time.Time, b *Broker, fn func(map[string]*entry)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.m.Load()
	m := make(map[string]*entry, len(old)+1)
	for k, e := range old {
		if e.tok.Expiry.After(now) {
			m[k] = e
		}
	}
	fn(m)
	if b != nil && len(m) > b.perShard {
		evicted := 0
		for len(m) > b.perShard {
			var oldest string
			at := int64(math.MaxInt64)
			for k, e := range m {
				if t := e.lastUsed.Load(); t < at {
					oldest, at = k, t
				}
			}
			delete(m, oldest)
			evicted++
		}
		b.metrics.Evicted(evicted)
	}
	s.m.Store(&m)
}

// Sweep drops the expired entries of every shard that holds one. Storing a
// token drops its shard's expired entries anyway; Sweep is for the shards
// nothing is stored in for a while.
func (b *Broker) Sweep() {
	now := b.clock.Now()
	for i := range b.shards {
		s := &b.shards[i]
		for _, e := range *s.m.Load() {
			if !e.tok.Expiry.After(now) {
				s.update(now, nil, func(map[string]*entry) {})
				break
			}
		}
	}
}

// normalizeGroups appends the sorted, unique groups to dst.
func normalizeGroups(dst, groups []string) []string {
	dst = append(dst, groups...)
	slices.Sort(dst)
	return slices.Compact(dst)
}

// sortedKeys appends the sorted keys of m to dst.
func sortedKeys(dst []string, m map[string]string) []string {
	for k := range m {
		dst = append(dst, k)
	}
	slices.Sort(dst)
	return dst
}

// appendKey encodes the cache key: every field length-prefixed, so distinct
// requests can never encode alike. uid and external account ids are tagged
// apart.
func appendKey(b []byte, req *Request, groups, claimKeys []string) []byte {
	b = appendString(b, req.Tenant)
	switch {
	case req.UID != "":
		b = append(b, 'u')
		b = appendString(b, req.UID)
	case req.ExternalAccountID != "":
		b = append(b, 'x')
		b = appendString(b, req.ExternalAccountID)
	default:
		b = append(b, '-')
	}
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		b = appendString(b, g)
	}
	b = binary.AppendUvarint(b, uint64(len(claimKeys)))
	for _, k := range claimKeys {
		b = appendString(b, k)
		b = appendString(b, req.CustomClaims[k])
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Len reports how many entries the cache holds, remembered refusals
// included. Expired entries are dropped from a shard whenever a token is
// stored in it, and by [Broker.Sweep].
func (b *Broker) Len() int {
	n := 0
	for i := range b.shards {
		n += len(*b.shards[i].m.Load())
	}
	return n
}

// DropTenant removes every cached token of tenant, for when its key,
// endpoint or identity changed. Exchanges in flight still complete and are
// cached: they were started under the old settings a moment ago, and the
// next compare-and-evict or expiry replaces them.
func (b *Broker) DropTenant(tenant string) {
	prefix := string(appendString(nil, tenant))
	now := b.clock.Now()
	for i := range b.shards {
		s := &b.shards[i]
		held := false
		for k := range *s.m.Load() {
			if strings.HasPrefix(k, prefix) {
				held = true
				break
			}
		}
		if !held {
			continue
		}
		s.update(now, nil, func(m map[string]*entry) {
			for k := range m {
				if strings.HasPrefix(k, prefix) {
					delete(m, k)
				}
			}
		})
	}
}
