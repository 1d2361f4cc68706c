// Package oidcprovider runs panva's oidc-provider, an OpenID-certified
// OAuth 2.0 / OpenID Connect provider, on loopback for interop tests. It owns
// the Go side of the harness; the Node side is test/oidc-provider (provider.js
// and its locked dependencies).
//
// [Start] writes the given clients to a file, runs provider.js with node,
// waits for the issuer it prints and stops it when the test ends. The provider
// issues client-credentials access tokens (JWTs with audience [Resource]) to
// clients that authenticate with client_secret_post, client_secret_basic or
// private_key_jwt. Its refusals are deliberately vague (every client
// authentication failure is a 401 invalid_client); the reason is in
// [Provider.Events], which Start also logs when the test fails.
//
// When node or the installed package is missing, Start skips the test, unless
// TOKENBROKER_REQUIRE_INTEROP=1, in which case it fails it. Install with
// "npm ci" in test/oidc-provider.
//
// The package is imported only by tests.
package oidcprovider
