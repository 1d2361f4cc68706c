// Package seal owns the cryptography that lets replicas share cached
// upstream tokens through Redis without Redis ever seeing a usable token:
// the sealing key ([Key], [LoadKeyFile]), sealing and opening values
// ([Sealer.Seal], [Sealer.Open]) and naming the Redis keys they are stored
// under ([Sealer.Name], [Sealer.Names]). It knows nothing of Redis, tokens
// or tenants: it seals bytes bound to a cache key. It never logs.
//
// A key is 32 random bytes in a file, in base64 as `openssl rand -base64 32`
// prints them, that only its owner may read. From it are derived, under
// distinct labels, a public id (a truncated SHA-256) and two subkeys
// (HKDF-SHA256): one for AES-256-GCM and one for HMAC-SHA256 names. A Key
// and a Sealer print only key ids.
//
// A sealed value is
//
//	version (1 byte) | key id (8) | random nonce (12) | AES-256-GCM ciphertext and tag
//
// with the version, key id and cache key as additional authenticated data.
// Its name ([Sealer.Name]) is the unpadded base64url HMAC-SHA256 of the
// cache key, 43 characters with no prefix: the store that keeps it
// (internal/shared) namespaces its Redis keys itself.
//
// Rotation: configure the new key as current and the old as older
// ([NewSealer]); values sealed under either open. Names change with the
// current key, so readers look a value up under each of [Sealer.Names].
// Once the old values' TTLs have passed, drop the old key.
//
// Threat model. Whoever can read Redis (or its backups or traffic) sees
// neither tokens nor tenants, account ids or groups: only ciphertexts,
// HMACs, sizes, TTLs, key ids and which names are used when. An attacker
// who can write to Redis can delete a value, or replay an older value under
// the same Redis key, but cannot forge, alter or move one: such a value
// fails to open with [ErrInvalid], which callers treat as a cache miss.
// Redis TTLs are that attacker's to change too, so callers must seal each
// token's expiry with it and check it on open: that bounds a replay to the
// token's own lifetime. Anyone with the key file can read and forge every
// value: guard it like the tokens themselves.
package seal
