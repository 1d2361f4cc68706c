// Package shared is the cache that the broker's replicas share through one
// Redis, so that a token is exchanged once per name and token lifetime across
// all of them, not once per replica. It is the Redis side only: the broker
// decides what to store and keeps its own local cache in front.
//
// Names and values are opaque. The caller names an entry (a keyed hash of the
// request, so Redis never sees tenants or subjects) and seals its value
// (encrypted and authenticated), and the Store moves strings and bytes. It
// never logs and never sees a token.
//
// # Operations
//
//   - [Store.Get] and [Store.Set]: the entry lives in Redis for the TTL the
//     caller gives (the token's expiry minus the broker's skew margin).
//   - [Store.TryLease], [Lease.Extend], [Lease.Release] and [Store.Wait]:
//     before exchanging, a replica takes a short lease on the name (SET NX
//     with an expiry and a random token); the others wait for the value. A
//     waiter is woken by the notification that Set publishes and also polls,
//     so a lost notification costs at most a poll interval. The holder
//     renews its lease with Extend (every third of [Config].LeaseTTL, say)
//     for as long as it exchanges, so an exchange may take longer than the
//     lease TTL; if the holder dies, its lease expires within one TTL, the
//     waiters see it gone with no value and one of them takes over. Extend
//     and Release touch the lease only if it still holds the holder's token.
//   - [Store.CompareAndDelete]: a token a downstream API rejected is removed
//     from Redis only if the entry is still exactly it (one Lua script, which
//     also publishes the invalidation), and the other replicas receive the
//     name on [Store.Invalidations] to drop their local copies.
//
// The intended flow for a miss in the local cache:
//
//	v, ok, err := s.Get(ctx, name)       // a hit: use v
//	l, won, err := s.TryLease(ctx, name)
//	if won {                              // look again, exchange, store, release
//		defer l.Release(ctx)
//		// meanwhile, every s.LeaseTTL()/3: l.Extend(ctx), until ErrLeaseLost
//		...
//		s.Set(ctx, name, sealed, ttl)
//	} else {
//		v, ok, err = s.Wait(ctx, name)    // !ok: the holder gave up; try the lease again
//	}
//
// and on any error the broker carries on alone: local cache, local
// coalescing.
//
// # Redis trouble is not an outage
//
// Every round trip is bounded by [Config].Timeout (tight: 50ms by default),
// and any failure other than the caller giving up starts a down episode:
// [Store.Healthy] turns false, [Metrics].Episode(true, cause) is called once,
// and calls fail with [ErrUnavailable] at once, without touching the network.
// Once [Config].ProbeInterval has passed, the next call (one at a time) tries
// Redis again; when one succeeds, the episode ends with one Episode(false,
// nil). There is no background health check: the probe is the next call.
//
// # Sentinel
//
// With [Config].SentinelMaster set instead of Addr, the Store finds the
// Redis master through Redis Sentinel: each new connection asks a sentinel
// (SENTINEL GET-MASTER-ADDR-BY-NAME) where the master is, and the Store
// listens on the sentinel for +switch-master to drop its connections to a
// master that was replaced. A failover is one more down episode: calls fail
// with [ErrUnavailable] until the new master answers (the probe and the
// subscription's reconnection find it), and what the old master held and
// the new one had not replicated is lost, which costs exchanges, not
// correctness. Sentinels that do not answer count like a Redis that does
// not: the call fails within [Config].Timeout.
//
// # Redis layout
//
// With the default prefix "tb:v1:", the value of name is the string key
// "tb:v1:v:<name>" and its lease "tb:v1:l:<name>". [Store.Set] publishes
// "<replica id> <name>" on "tb:v1:set" and [Store.CompareAndDelete] on
// "tb:v1:inv"; the replica id is random per Store, which is how a Store
// ignores its own invalidations. The keys of one name are in different hash
// slots, and every script touches one key, so nothing assumes a single node
// beyond the pub/sub channels.
//
// # Goroutines and state
//
// A Store has one goroutine of its own, the subscription reader: one
// connection subscribed to both channels, shared by all of the Store's
// waiters and Invalidations channels, reconnected after a failure every
// ProbeInterval. [Store.Close] ends it. The package holds no global state.
package shared
