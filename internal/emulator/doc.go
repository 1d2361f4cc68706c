// Package emulator is a strict, faithful Pismo-compatible OpenID token endpoint for development and tests.
//
// It owns one thing: answering POST [TokenPath] the way Pismo's
// "Get OpenID access token" endpoint does. A client posts {"token": "<JWT>"},
// a JWT assertion signed RS256 with a tenant's private key; the emulator
// checks it against the tenant's registration (issuer, subject, audience and
// public keys, as Pismo's Control Center holds them) and every claim of
// Pismo's claim table, and answers 201 Created with
// {"access_token", "refresh_token", "expires_in"} where expires_in is a JSON
// string, as the reference shows. The access token is a JWT the emulator signs
// with its own RSA key, published at GET /.well-known/jwks.json and by
// [Emulator.PublicKeys], so tests can verify what a client received.
//
// It is stricter than necessary on purpose: an assertion it accepts is one the
// real endpoint accepts, so a broker bug shows up in development and in tests
// rather than against a sandbox. Refusals are OAuth-style JSON errors whose
// descriptions name the claim or the reason but never echo the token or a
// value the client sent.
//
// For tests it counts exchanges and refusals, records the header and claims
// of the last accepted assertion per tenant, and can be told to fail the next
// requests with [Emulator.FailNext].
//
// The emulator is for `tokenbroker dev`, `tokenbroker emulate` and tests
// only. It is never a production component: it keeps no state worth keeping,
// generates its issuing key at start, and the tokens it issues grant nothing.
package emulator
