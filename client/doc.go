// Package client is the Go client kit for tokenbroker: what a Go service
// needs to get upstream access tokens from the broker and put them on its
// own calls, so that no service writes token plumbing by hand.
//
// It owns:
//
//   - calling the broker with the caller's bearer key ([Client], [Config]);
//   - keeping a token fresh ([TokenSource]): a background WatchAccessToken
//     stream feeds a cache, so that [TokenSource.Token] answers from memory
//     once the first token has arrived; when the stream cannot be opened or
//     ends (an older broker, a restart) it falls back to GetAccessToken and
//     re-opens the stream with jittered, capped exponential backoff;
//   - putting the token on outgoing gRPC calls ([PerRPCCredentials]) and
//     HTTP requests ([Transport]), where a 401 from the upstream API makes
//     the broker replace the refused token (compare-and-evict) and the
//     request is retried once.
//
// It does not own the connection to the broker: the caller dials it and
// chooses its transport security (TLS, mTLS, or plaintext on loopback). It
// never logs; it returns errors, which wrap the broker's gRPC status
// (status.Code works on them) and never contain the bearer key or a token.
//
// A [TokenSource] is an [oauth2.TokenSource] (golang.org/x/oauth2), safe
// for concurrent use, and already caches: wrapping it in
// oauth2.ReuseTokenSource only delays the pick-up of renewals.
//
// The examples (ExampleClient_TokenSource, ExamplePerRPCCredentials,
// ExampleTransport) run against an in-process fake broker; pkgsite shows
// them, and `go test -run Example -v` runs them.
package client
