// Package policy owns the callers and their allowlists: who a bearer key or
// a client certificate identity belongs to, and whether that caller may have
// a token for a tenant, a set of groups, an account, a set of custom claims
// and a minimum lifetime. It denies by default and knows nothing of gRPC,
// keys or upstreams.
package policy
