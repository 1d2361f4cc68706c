// Command tokenbroker holds private keys and hands out short-lived upstream
// access tokens to internal services over gRPC.
//
// Subcommands: serve, dev, emulate, keygen, hash-key, token, check-config,
// audit;
// run "tokenbroker help" for their use. This package only parses flags and
// wires the other packages together: every behaviour lives in them.
package main
