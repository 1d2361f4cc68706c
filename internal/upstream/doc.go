// Package upstream holds the exchangers, which implement [broker.Exchanger]:
// each turns a [broker.Request] into a token request (building and signing
// an assertion where its kind needs one), posts it to the tenant's token
// endpoint and parses the answer into a [broker.Token].
//
// The kinds:
//
//   - pismo_oidc ([Pismo]): a signed assertion with Pismo's claims, posted
//     as JSON to Pismo's OpenID endpoint.
//   - pismo_oauth2 ([OAuth]): Pismo's client-credentials endpoint, client id
//     and secret in the form, with an optional uid.
//   - private_key_jwt, client_secret_post, client_secret_basic ([OAuth]):
//     the standard client-credentials grant (RFC 6749 §4.4), the client
//     authenticated by a signed assertion (RFC 7523 §2.2, OIDC Core §9) or
//     by its secret (RFC 6749 §2.3.1).
//   - jwt_bearer ([OAuth]): the JWT bearer grant (RFC 7523 §2.1), as Google
//     service accounts use it.
//
// A standard kind's token endpoint is configured ([StaticEndpoint]) or found
// through OpenID Connect Discovery ([Discovery]), which caches the provider's
// document and looks it up again when it ages or an exchange fails.
//
// A request a kind cannot carry (an account id, custom claims) fails with an
// error wrapping [broker.ErrNotSupported] that says what and why. Other
// failures are *broker.ExchangeError values that say whether the upstream
// refused (a configuration problem) or was unavailable (retryable), with the
// upstream's OAuth error code but never its raw body.
//
// The package never logs, and never puts a key, client secret, assertion or
// token in an error. It knows keys only as a [jose.Signer] and holds client
// secrets as a [Secret], which prints as "[redacted]".
package upstream
