package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
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
	// Metrics receives events; nil discards them.
	Metrics Metrics
}

// numShards is a power of two. Shards bound the cost of a copy-on-write store:
// at 100,000 cached tokens a miss copies about 400 entries, negligible next to
// the RSA signature the miss needs anyway.
const numShards = 256

// Broker serves tokens from its cache and coalesces misses. It is safe for
// concurrent use.
type Broker struct {
	exchanger       Exchanger
	clock           Clock
	skew            time.Duration
	exchangeTimeout time.Duration
	metrics         Metrics

	seed    maphash.Seed
	shards  [numShards]shard
	flights singleflight.Group
}

// shard is a copy-on-write map: readers load it with one atomic read and
// write nothing shared, so cache hits on many cores do not contend. Writers
// serialise on mu and publish a new map.
type shard struct {
	m  atomic.Pointer[map[string]Token]
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
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	b := &Broker{
		exchanger:       cfg.Exchanger,
		clock:           cfg.Clock,
		skew:            cfg.Skew,
		exchangeTimeout: cfg.ExchangeTimeout,
		metrics:         cfg.Metrics,
		seed:            maphash.MakeSeed(),
	}
	for i := range b.shards {
		b.shards[i].m.Store(&map[string]Token{})
	}
	return b
}

// Token returns a token for req with at least opt.MinTTL (plus the skew
// margin) of life left: from cache when it holds one, otherwise from an
// exchange that all concurrent callers for the same key share. The shared
// exchange runs on its own context bounded by the exchange timeout, so a
// caller that gives up never fails the others; each caller still returns as
// soon as its own ctx is done.
func (b *Broker) Token(ctx context.Context, req Request, opt Options) (Token, Status, error) {
	// The key is built on the stack: a cache hit allocates nothing.
	var groupBuf [32]string
	groups := normalizeGroups(groupBuf[:0], req.Groups)
	var claimBuf [16]string
	claimKeys := sortedKeys(claimBuf[:0], req.CustomClaims)
	var keyBuf [320]byte
	key := appendKey(keyBuf[:0], &req, groups, claimKeys)

	sh := &b.shards[maphash.Bytes(b.seed, key)&(numShards-1)]
	tok, ok := (*sh.m.Load())[string(key)]
	if ok && opt.RejectedToken != "" && tok.AccessToken == opt.RejectedToken {
		sh.compareAndDelete(string(key), opt.RejectedToken, b.clock.Now())
		ok = false
	}
	if ok && b.fresh(tok, opt.MinTTL) {
		b.metrics.Lookup(StatusHit)
		return tok, StatusHit, nil
	}
	req.Groups = slices.Clone(groups)
	return b.miss(ctx, sh, string(key), req, opt, false)
}

// miss joins or starts the one exchange in flight for key. With force, a
// flight it starts exchanges even if the cache holds a token by then.
func (b *Broker) miss(ctx context.Context, sh *shard, key string, req Request, opt Options, force bool) (Token, Status, error) {
	var started bool // written by the flight goroutine, read after its result arrives
	ch := b.flights.DoChan(key, func() (any, error) {
		started = true
		return b.exchange(ctx, sh, key, req, opt, force)
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
	cached bool // another flight stored it between our miss and our start
}

// exchange runs in the flight's own goroutine, on a context detached from the
// caller that started it.
func (b *Broker) exchange(parent context.Context, sh *shard, key string, req Request, opt Options, force bool) (res flightResult, err error) {
	// A flight that finished between our lookup and our start may have
	// stored a token already.
	tok, ok := (*sh.m.Load())[key]
	if ok && !force && tok.AccessToken != opt.RejectedToken && b.fresh(tok, opt.MinTTL) {
		return flightResult{tok: tok, cached: true}, nil
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), b.exchangeTimeout)
	defer cancel()
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = &ExchangeError{Reason: ReasonInternal, Upstream: req.Tenant, Err: fmt.Errorf("exchanger panicked: %v", p)}
		}
		b.metrics.Exchange(req.Tenant, time.Since(start), err)
	}()

	tok, err = b.exchanger.Exchange(ctx, req)
	if err != nil {
		return flightResult{}, err
	}
	if tok.AccessToken == "" || !tok.Expiry.After(b.clock.Now()) {
		return flightResult{}, &ExchangeError{Reason: ReasonBadResponse, Upstream: req.Tenant,
			Err: fmt.Errorf("exchanger returned an empty or expired token (expiry %s)", tok.Expiry)}
	}
	if tok.TokenType == "" {
		tok.TokenType = "Bearer"
	}
	sh.store(key, tok, b.clock.Now())
	return flightResult{tok: tok}, nil
}

// fresh reports whether tok has more than minTTL plus the skew margin left.
func (b *Broker) fresh(tok Token, minTTL time.Duration) bool {
	return tok.Expiry.Sub(b.clock.Now()) > minTTL+b.skew
}

// store caches tok under key.
func (s *shard) store(key string, tok Token, now time.Time) {
	s.update(now, func(m map[string]Token) { m[key] = tok })
}

// compareAndDelete drops the entry for key only if it still holds rejected.
func (s *shard) compareAndDelete(key, rejected string, now time.Time) {
	s.update(now, func(m map[string]Token) {
		if t, ok := m[key]; ok && t.AccessToken == rejected {
			delete(m, key)
		}
	})
}

// update publishes a copy of the shard's map, without its expired entries,
// changed by fn.
func (s *shard) update(now time.Time, fn func(map[string]Token)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.m.Load()
	m := make(map[string]Token, len(old)+1)
	for k, t := range old {
		if t.Expiry.After(now) {
			m[k] = t
		}
	}
	fn(m)
	s.m.Store(&m)
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

// Len reports how many tokens the cache holds. Expired entries are dropped
// from a shard whenever a token is stored in it.
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
		s.update(now, func(m map[string]Token) {
			for k := range m {
				if strings.HasPrefix(k, prefix) {
					delete(m, k)
				}
			}
		})
	}
}
