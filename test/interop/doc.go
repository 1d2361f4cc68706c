// Package interop holds the client interop test: the example clients under
// examples/ (Python from stubs generated at run time, Node with
// @grpc/proto-loader) against the real broker binary, over plaintext, TLS with
// a bearer key, and mTLS, with GetAccessToken and WatchAccessToken. The test
// checks each client's printed fingerprint and expiry against the broker's
// audit trail and against the other language's.
//
// `make test-interop` builds the broker and runs it. A language whose runtime
// or packages are missing is skipped, saying so; with
// TOKENBROKER_REQUIRE_INTEROP=1 (CI) that is a failure.
package interop
