// Package policy owns the callers and their allowlists: who a bearer key
// belongs to, and whether that caller may have a token for a tenant, a set of
// groups and an account. It denies by default and knows nothing of gRPC,
// keys or upstreams.
package policy
