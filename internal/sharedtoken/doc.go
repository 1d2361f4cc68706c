// Package sharedtoken is the broker's shared cache tier ([broker.Shared])
// over Redis: it turns the broker's tokens and cache keys into the sealed
// values and keyed names that [shared.Store] keeps, so that replicas share
// tokens through a Redis that sees neither. It owns the value format, the
// names, the checks on what it reads back, and the renewal of the leases it
// wins. Redis itself is internal/shared's business, and the cryptography
// internal/seal's. It never logs, and its errors never name a token, tenant
// or key.
//
// # Names
//
// Every method gets a tenant and the broker's cache key (which starts with
// the tenant). Both are bound to the tenant's scope ([Config].Scope: where
// and as whom its tokens are obtained) as
//
//	full = uvarint(len(scope)) | scope | key
//
// which is the additional authenticated data of every value sealed for the
// entry and what its name is computed from: the name ([Tier.ID]) is
// [seal.Sealer.Name](full), an HMAC under the current sealing key, which
// the Store prefixes into its Redis keys. Replicas whose scopes for a tenant
// differ (one of them has reloaded a changed upstream) therefore neither
// find nor open each other's values.
//
// # Values
//
// A value is sealed ([seal.Sealer.Seal], bound to full) from the plaintext
//
//	format 1 (1 byte) | expiry, unix ms (int64 BE) | obtained, unix ms (int64 BE) |
//	uvarint length of the token type | token type | access token (the rest)
//
// decoded strictly: another format byte, a short or overlong value, or an
// empty access token does not decode. A value that does not open or decode
// is a miss, counted by [Metrics].Unreadable. A value whose sealed expiry has
// passed is a miss too, whatever its TTL in Redis says.
//
// # Threat model
//
// As in internal/seal: whoever reads Redis sees no token, tenant, account
// or group, only ciphertexts, HMAC names and TTLs; whoever writes to it can
// delete values, or replay an older value of the same entry, but not forge,
// alter or move one. Because such an attacker also controls TTLs, the expiry
// is sealed with the token and checked on every read, which bounds a replay
// to the token's own lifetime.
//
// # Key rotation
//
// Writes seal under the current key and store under its name. Reads
// ([Tier.Get], and the compare-and-delete of [Tier.Evict]) try the names
// under each configured key in turn ([seal.Sealer.Names]), the current key's
// first, and take the first readable, unexpired value: a replica configured
// with the new key as current and the old one as older reads what replicas
// still on the old key write, and they, once the new key is configured as
// older there, read its values. [Tier.Lease] and [Tier.Wait] use the
// current name only, so during a rotation replicas on different current keys
// do not coalesce their exchanges with each other, and an eviction under an
// older name reaches on [Tier.Invalidations] only the replicas whose current
// key that is; the others' local copies expire on their own, as with any
// lost invalidation.
//
// # Leases
//
// A won lease ([Tier.Lease]) is renewed every third of the Store's lease
// TTL ([shared.Lease.Extend]) by one goroutine, so an exchange may take
// longer than the TTL while a replica that dies holds its lease for at most
// one TTL. The release function stops that goroutine, waits for it, and
// releases the lease; no goroutine of this package outlives it.
package sharedtoken
