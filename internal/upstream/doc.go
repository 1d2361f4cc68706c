// Package upstream holds the exchangers: each builds an assertion's claims,
// has the tenant's key sign it, posts it to the tenant's token endpoint and
// parses the answer into a [broker.Token]. Failures are *broker.ExchangeError
// values that say whether the upstream refused (a configuration problem) or
// was unavailable (retryable), with the upstream's OAuth error code but never
// its raw body.
//
// Exchangers never log. They know keys only as a [jose.Signer].
package upstream
