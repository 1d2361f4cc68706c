// Package config owns the broker's YAML configuration: its types, its
// defaults and its validation, with one precise problem per wrong field.
//
// [Load] and [Parse] turn a file into a [Config] of typed values
// (time.Duration, *url.URL, [32]byte hashes) or return an [*Error] that
// lists every problem found, each naming the field by its YAML path and line:
//
//	tenants[0].upstream.token_url: must be an absolute URL (line 12)
//	callers[1].allow[0].tenant: unknown tenant "tn-other" (line 31)
//
// Unknown fields are refused. The package knows no keys and no network: it
// checks that each tenant's key file and each file of the server's TLS
// exists and is a regular file, but reading and parsing them is the
// keystore's and the server's work, and it never dials an upstream or Redis.
// The files of the shared cache (cache.shared: the Redis password and TLS
// files, the sentinels' password, the encryption keys) are only resolved;
// whoever connects to Redis reads and checks them. No secret value ever
// appears in a message.
package config
