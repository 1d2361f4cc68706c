package broker

import (
	"context"
	"time"
)

// Shared is a cache tier that several brokers (replicas) share behind their
// own caches, so that a token one replica obtained serves them all and one
// replica exchanges for all. The broker looks in its own cache, then in the
// shared tier, and only then takes the key's lease and exchanges.
//
// Every method gets the tenant and the broker's cache key for the request;
// what an implementation stores, and under which name, is its own business
// (internal/sharedtoken seals tokens and hashes keys so that Redis sees
// neither). Implementations bound each call tightly and fail fast while
// their store is unavailable: on any error the broker carries on alone, with
// its own cache and coalescing.
type Shared interface {
	// ID names key's entry, as Invalidations reports it. It is kept with
	// each locally cached token that the shared tier holds too.
	ID(tenant string, key []byte) string
	// Get returns the token stored for key, if there is one.
	Get(ctx context.Context, tenant string, key []byte) (SharedToken, bool, error)
	// Lease takes the right to exchange key's token on behalf of all
	// replicas; won is false while another replica holds it. The broker
	// calls release, once, when it has stored the token or given up; until
	// then the implementation keeps the lease alive.
	Lease(ctx context.Context, tenant string, key []byte) (release func(), won bool, err error)
	// Wait waits, while another replica holds key's lease, for a token
	// that accept takes: false when the lease ended without one. A token
	// accept refuses (the one a refresh is replacing, or one too short-lived
	// for the caller) is waited past, not returned.
	Wait(ctx context.Context, tenant string, key []byte, accept func(Token) bool) (SharedToken, bool, error)
	// Put stores tok for key for ttl, and wakes the replicas waiting for it.
	Put(ctx context.Context, tenant string, key []byte, tok SharedToken, ttl time.Duration) error
	// Evict removes key's token if it is still exactly rejected, and tells
	// the other replicas to drop their copies.
	Evict(ctx context.Context, tenant string, key []byte, rejected string) error
	// Invalidations delivers the IDs of entries that other replicas
	// evicted, until ctx ends. Delivery may be lossy: local copies expire
	// on their own.
	Invalidations(ctx context.Context) <-chan string
}

// SharedToken is a token as the shared tier holds it.
type SharedToken struct {
	Token
	// Obtained is when the replica that exchanged for it received it, so
	// that every replica places the refresh point by the token's whole life.
	Obtained time.Time
}

// maxLeaseRounds bounds how often one lookup goes round the shared tier
// (look, lease, wait) before exchanging alone: each round ends because a
// holder gave up or stored a token this caller cannot use.
const maxLeaseRounds = 3

// fromShared looks for key's token in the shared tier, waiting while another
// replica exchanges for it. It returns a token another replica obtained that
// accept takes, with how it was had: [StatusRemote] (it was stored) or
// [StatusShared] (this call waited for it). Otherwise, once this replica
// holds the key's lease, it returns a release to call after exchanging and
// storing; nil when the tier failed and the broker exchanges alone. Its only
// error is ctx's end.
func (b *Broker) fromShared(ctx context.Context, key []byte, tenant string, accept func(Token) bool) (tok SharedToken, via Status, release func(), err error) {
	for range maxLeaseRounds {
		t, ok, err := b.shared.Get(ctx, tenant, key)
		if err != nil {
			return SharedToken{}, 0, nil, ctx.Err()
		}
		if ok && accept(t.Token) {
			return t, StatusRemote, nil, nil
		}
		release, won, err := b.shared.Lease(ctx, tenant, key)
		if err != nil {
			return SharedToken{}, 0, nil, ctx.Err()
		}
		if won {
			// The previous holder may have stored a token and released
			// between our look and our lease.
			if t, ok, err := b.shared.Get(ctx, tenant, key); err == nil && ok && accept(t.Token) {
				release()
				return t, StatusRemote, nil, nil
			}
			return SharedToken{}, 0, release, nil
		}
		t, ok, err = b.shared.Wait(ctx, tenant, key, accept)
		if err != nil {
			return SharedToken{}, 0, nil, ctx.Err()
		}
		if ok {
			return t, StatusShared, nil, nil
		}
	}
	return SharedToken{}, 0, nil, nil
}

// putShared stores a token this replica exchanged in the shared tier, until
// its expiry less the skew margin. On failure the other replicas exchange
// for themselves.
func (b *Broker) putShared(ctx context.Context, key []byte, tenant string, tok SharedToken) {
	if ttl := tok.Expiry.Add(-b.skew).Sub(b.clock.Now()); ttl > 0 {
		_ = b.shared.Put(ctx, tenant, key, tok, ttl)
	}
}

// invalidations drops the local copies of entries other replicas evicted
// from the shared tier, until the broker closes.
func (b *Broker) invalidations(ch <-chan string) {
	defer b.work.Done()
	for id := range ch {
		b.dropShared(id)
	}
}

// dropShared removes the entry whose shared ID is id. Invalidations are rare
// (a downstream API refused a token), so it scans rather than keep an index.
func (b *Broker) dropShared(id string) {
	now := b.clock.Now()
	for i := range b.shards {
		s := &b.shards[i]
		for _, e := range *s.m.Load() {
			if e.sharedID != id {
				continue
			}
			s.update(now, nil, func(m map[string]*entry) {
				for k, e := range m {
					if e.sharedID == id {
						delete(m, k)
					}
				}
			})
			break
		}
	}
}
