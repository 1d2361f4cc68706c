package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/config"
)

// The base config is valid in the test's key directory.
func TestBaseIsValid(t *testing.T) {
	if _, err := config.Parse([]byte(base), keyDir(t)); err != nil {
		t.Fatalf("Parse(base): %v", err)
	}
}

// Each row makes exactly one thing wrong and expects exactly one problem:
// no problem may drag others along.
func TestParseProblems(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	const tenantB = "    upstream:\n      kind: pismo_oidc\n      token_url: https://sandbox.example/b/token\n"
	tests := []struct {
		name string
		doc  string
		path string
		line int
		msg  string // a part of the message
	}{
		// YAML syntax.
		{"syntax", edit(t, "timeout: 10s\n", "timeout: 10s: x\n"), "", 12, "invalid YAML: mapping values are not allowed"},
		{"syntax: unclosed flow", edit(t, `groups: [a]`, `groups: [a`), "", -1, "invalid YAML"},
		{"second document", base + "---\nlisten: {}\n", "", 41, "single YAML document"},

		// Unknown fields, at every depth.
		{"unknown top-level", base + "metrics: {path: /m}\n", "metrics", 41, "unknown field"},
		{"refresh_fraction too big", edit(t, "  skew: 10s\n", "  skew: 10s\n  refresh_fraction: 1\n"), "cache.refresh_fraction", 7, "must be from 0 (no refresh-ahead) to 0.9, got 1"},
		{"refresh_fraction negative", edit(t, "  skew: 10s\n", "  skew: 10s\n  refresh_fraction: -0.1\n"), "cache.refresh_fraction", 7, "got -0.1"},
		{"refresh_fraction NaN", edit(t, "  skew: 10s\n", "  skew: 10s\n  refresh_fraction: .nan\n"), "cache.refresh_fraction", 7, "got NaN"},
		{"max_entries zero", edit(t, "  skew: 10s\n", "  skew: 10s\n  max_entries: 0\n"), "cache.max_entries", 7, "must be from 1 to 10000000, got 0"},
		{"negative_ttl too long", edit(t, "  skew: 10s\n", "  skew: 10s\n  negative_ttl: 2m\n"), "cache.negative_ttl", 7, "from 0s to 1m"},
		{"unknown later field", edit(t, "  skew: 10s\n", "  skew: 10s\n  refresh_ahead: 0.2\n"), "cache.refresh_ahead", 7, "unknown field"},
		{"unknown nested", edit(t, "timeout: 10s\n", "timeout: 10s\n      tokn_url: x\n"), "tenants[0].upstream.tokn_url", 13, "unknown field"},
		{"unknown in list item", edit(t, "account_tokens: true\n", "account_tokens: true\n        groupz: [x]\n"), "callers[0].allow[0].groupz", 34, "unknown field"},
		{"unknown odd name", base + "\"a b\\nc\": 1\n", `"a b\nc"`, 41, "unknown field"},
		{"repeated field", edit(t, "  skew: 10s\n", "  skew: 10s\n  skew: 20s\n"), "cache.skew", 7, "repeated field (first at line 6)"},
		{"key not a string", edit(t, "  skew: 10s\n", "  skew: 10s\n  [a]: b\n"), "cache", 7, "key that is not a string"},
		{"bad merge", edit(t, "  skew: 10s\n", "  skew: 10s\n  <<: 5\n"), "cache.<<", 7, "must be a mapping or a list of mappings"},

		// Wrong types; the value's own checks do not pile on.
		{"not a mapping", "- a\n", "", 1, "the config must be a mapping, got a list"},
		{"section not a mapping", edit(t, "  grpc: 127.0.0.1:7443\n  http: 127.0.0.1:7080\n", "  - 127.0.0.1:7443\n"), "listen", 2, "must be a mapping, got a list"},
		{"scalar not a string", edit(t, "shutdown_grace: 15s", "shutdown_grace: [15s]"), "shutdown_grace", 4, "must be a string, got a list"},
		{"upstream not a mapping", edit(t, tenantB, "    upstream: pismo_oidc\n"), "tenants[1].upstream", 20, "must be a mapping, got a string"},
		{"groups not a list", edit(t, "groups: [a]", "groups: a"), "callers[1].allow[0].groups", 40, "must be a list, got a string"},
		{"bool: yes", edit(t, "account_tokens: true", "account_tokens: yes"), "callers[0].allow[0].account_tokens", 33, "must be true or false, got a string"},
		{"bool: quoted", edit(t, "account_tokens: true", `account_tokens: "true"`), "callers[0].allow[0].account_tokens", 33, "must be true or false"},

		// Missing required fields: the line is the enclosing item's.
		{"no issuer", edit(t, "    issuer: iss\n", ""), "tenants[0].issuer", 8, "required"},
		{"no subject", edit(t, "    subject: sub-b\n", ""), "tenants[1].subject", 19, "required"},
		{"empty audience", edit(t, "audience: aud\n", "audience: \"\"\n"), "tenants[0].audience", 15, "required"},
		{"no upstream", edit(t, tenantB, ""), "tenants[1].upstream", 19, "required"},
		{"no kind", edit(t, "      kind: pismo_oidc\n      token_url: https://sandbox.example/token\n", "      token_url: https://sandbox.example/token\n"), "tenants[0].upstream.kind", 9, "required"},
		{"no token_url", edit(t, "      token_url: https://sandbox.example/token\n", ""), "tenants[0].upstream.token_url", 9, "required"},
		{"no key_file", edit(t, "    key_file: k.pem\n", ""), "tenants[0].key_file", 8, "required"},
		{"no tenant id", edit(t, "  - id: tn-a\n    upstream:", "  - upstream:", "tenant: tn-a", "tenant: tn-b"), "tenants[0].id", 8, "required"},
		{"no caller name", edit(t, "  - name: payments-api\n    api_key_sha256", "  - api_key_sha256"), "callers[0].name", 28, "required"},
		{"no api key hash", edit(t, "    api_key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n", ""), "callers[0]", 28, "needs api_key_sha256 (a bearer key), tls_identity (a client certificate), or both"},
		{"neither key nor identity", editFull(t, "    tls_identity: spiffe://corp/batch\n", ""), "callers[2]", 41, "needs api_key_sha256 (a bearer key), tls_identity (a client certificate), or both"},
		{"no allow", edit(t, "    allow:\n      - tenant: tn-b\n        groups: [a]\n", ""), "callers[1].allow", 36, "at least one grant"},
		{"empty allow", edit(t, "    allow:\n      - tenant: tn-b\n        groups: [a]\n", "    allow: []\n"), "callers[1].allow", 38, "at least one grant"},
		{"no grant tenant", edit(t, "      - tenant: tn-b\n        groups: [a]\n", "      - groups: [a]\n"), "callers[1].allow[0].tenant", 39, "required"},
		{"no groups", edit(t, "groups: [a]", "account_tokens: false"), "callers[1].allow[0].groups", 39, "at least one group"},
		{"empty groups", edit(t, "groups: [a]", "groups: []"), "callers[1].allow[0].groups", 40, "at least one group"},

		// Durations.
		{"bad duration", edit(t, "skew: 10s", "skew: 10 seconds"), "cache.skew", 6, `invalid duration "10 seconds": `},
		{"duration without unit", edit(t, "skew: 10s", "skew: 10"), "cache.skew", 6, `invalid duration "10": missing unit`},
		{"empty duration", edit(t, "shutdown_grace: 15s", `shutdown_grace: ""`), "shutdown_grace", 4, `invalid duration ""`},
		{"grace zero", edit(t, "shutdown_grace: 15s", "shutdown_grace: 0s"), "shutdown_grace", 4, `must be more than 0s and at most 5m, got "0s"`},
		{"grace too long", edit(t, "shutdown_grace: 15s", "shutdown_grace: 5m1s"), "shutdown_grace", 4, "at most 5m"},
		{"skew negative", edit(t, "skew: 10s", "skew: -1s"), "cache.skew", 6, `must be from 0s to 5m, got "-1s"`},
		{"skew too long", edit(t, "skew: 10s", "skew: 6m"), "cache.skew", 6, "from 0s to 5m"},
		{"timeout zero", edit(t, "timeout: 10s", "timeout: 0s"), "tenants[0].upstream.timeout", 12, "more than 0s"},
		{"timeout too long", edit(t, "timeout: 10s", "timeout: 2m1s"), "tenants[0].upstream.timeout", 12, "at most 2m"},
		{"lifetime too long", edit(t, "assertion_lifetime: 5m", "assertion_lifetime: 61m"), "tenants[0].assertion_lifetime", 17, "at most 1h"},
		{"lifetime negative", edit(t, "assertion_lifetime: 5m", "assertion_lifetime: -5m"), "tenants[0].assertion_lifetime", 17, "more than 0s"},

		// Names, ids and values out of range.
		{"tenant id chars", edit(t, "id: tn-a", "id: tn/a", "tenant: tn-a", "tenant: tn/a"), "tenants[0].id", 8, `must be 1-128 of A-Z a-z 0-9 . _ -, got "tn/a"`},
		{"tenant id too long", edit(t, "id: tn-a", "id: "+long(129), "tenant: tn-a", "tenant: "+long(129)), "tenants[0].id", 8, "must be 1-128"},
		{"caller name chars", edit(t, "name: reports", "name: reports api"), "callers[1].name", 36, "must be 1-64"},
		{"caller name too long", edit(t, "name: reports", "name: "+long(65)), "callers[1].name", 36, "must be 1-64"},
		{"issuer too long", edit(t, "issuer: iss\n", "issuer: "+long(1025)+"\n"), "tenants[0].issuer", 13, "at most 1024 bytes, got 1025"},
		{"uid_mode", edit(t, "uid_mode: omit", "uid_mode: always"), "tenants[0].uid_mode", 18, `unknown uid_mode "always", want omit or tenant`},
		{"uid_mode empty", edit(t, "uid_mode: omit", `uid_mode: ""`), "tenants[0].uid_mode", 18, "unknown uid_mode"},
		{"kind unknown", edit(t, "kind: pismo_oidc\n      token_url: https://sandbox.example/token", "kind: oidc\n      token_url: https://sandbox.example/token"), "tenants[0].upstream.kind", 10, `unknown kind "oidc", want one of pismo_oidc`},
		{"hash length", edit(t, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "9f86d0"), "callers[0].api_key_sha256", 29, "must be 64 hex digits"},
		{"hash not hex", edit(t, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", long(64)), "callers[0].api_key_sha256", 29, "not a hex digit"},
		{"empty hash", edit(t, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", `""`), "callers[0].api_key_sha256", 29, "must be 64 hex digits, the SHA-256 of the caller's key (tokenbroker hash-key prints it); got 0 characters"},
		{"hash of empty key", edit(t, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "callers[0].api_key_sha256", 29, "empty key"},
		{"http no port", edit(t, "http: 127.0.0.1:7080", "http: 127.0.0.1"), "listen.http", 3, `must be host:port, got "127.0.0.1"`},
		{"http named port", edit(t, "http: 127.0.0.1:7080", "http: 127.0.0.1:http"), "listen.http", 3, "port must be a number"},
		{"http port too big", edit(t, "http: 127.0.0.1:7080", "http: 127.0.0.1:65536"), "listen.http", 3, "port must be a number"},
		{"http same as grpc", edit(t, "http: 127.0.0.1:7080", "http: 127.0.0.1:7443"), "listen.http", 3, "must differ from listen.grpc"},
		{"grpc not loopback", edit(t, "grpc: 127.0.0.1:7443", "grpc: 0.0.0.0:7443"), "listen.grpc", 2, "without a tls block gRPC is served in plaintext, which is allowed only on loopback"},
		{"token_url relative", edit(t, "token_url: https://sandbox.example/token", "token_url: /token"), "tenants[0].upstream.token_url", 11, "must be an absolute URL"},
		{"token_url http", edit(t, "token_url: https://sandbox.example/token", "token_url: http://sandbox.example/token"), "tenants[0].upstream.token_url", 11, "http is allowed only on loopback"},
		{"bad group", edit(t, "groups: [a]", "groups: [a, b*]"), "callers[1].allow[0].groups[1]", 40, `may use "*" only as the whole last`},

		// Duplicates and references.
		{"duplicate tenant", edit(t, "callers:\n", "  - {id: tn-a, upstream: {kind: pismo_oidc, token_url: \"https://x.example\"}, issuer: i, subject: s, audience: a, key_file: k.pem}\ncallers:\n"), "tenants[2].id", 27, `duplicate tenant id "tn-a" (first at tenants[0])`},
		{"duplicate caller", edit(t, "name: reports", "name: payments-api"), "callers[1].name", 36, `duplicate caller name "payments-api" (first at callers[0])`},
		{"duplicate hash", edit(t, "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752", "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"), "callers[1].api_key_sha256", 37, "same key hash as callers[0]"},
		{"unknown tenant", edit(t, "      - tenant: tn-b\n        groups: [a]", "      - tenant: tn-zz\n        groups: [a]"), "callers[1].allow[0].tenant", 39, `unknown tenant "tn-zz"`},
		{"duplicate tls_identity", editFull(t, "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752\n", "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752\n    tls_identity: spiffe://corp/batch\n"), "callers[2].tls_identity", 43, "same tls_identity as callers[1]: a certificate must name one caller"},

		// TLS.
		{"tls not a mapping", base + "tls: server.crt\n", "tls", 41, "must be a mapping, got a string"},
		{"tls not a mapping, with certificate callers", editFull(t, "tls:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n", "tls: [server.crt]\n"), "tls", 52, "must be a mapping, got a list"},
		{"tls without cert_file", editFull(t, "  cert_file: server.crt\n", ""), "tls.cert_file", 52, "required"},
		{"tls without key_file", editFull(t, "  key_file: server.key\n", ""), "tls.key_file", 52, "required"},
		{"tls cert_file missing", editFull(t, "cert_file: server.crt", "cert_file: nope.crt"), "tls.cert_file", 53, `nope.crt" does not exist`},
		{"tls key_file a directory", editFull(t, "key_file: server.key", "key_file: ."), "tls.key_file", 54, "is not a regular file"},
		{"client_ca_file missing", editFull(t, "client_ca_file: ca.crt", "client_ca_file: nope.crt"), "tls.client_ca_file", 55, `nope.crt" does not exist`},
		{"client_ca_file empty", editFull(t, "client_ca_file: ca.crt", `client_ca_file: ""`), "tls.client_ca_file", 55, "must name a file; leave the field out to serve callers without client certificates"},
		{"tls unknown field", editFull(t, "  client_ca_file: ca.crt\n", "  client_ca_file: ca.crt\n  min_version: \"1.3\"\n"), "tls.min_version", 56, "unknown field"},
		{"tls_identity without client_ca_file", editFull(t, "  client_ca_file: ca.crt\n", ""), "callers[2].tls_identity", 42, "needs tls.client_ca_file: without it callers present no certificate to name them"},
		{"tls_identity without tls", editFull(t, "tls:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n", ""), "callers[2].tls_identity", 42, "needs tls.client_ca_file"},
		{"tls_identity not as Go prints it", editFull(t, "tls_identity: spiffe://corp/batch", "tls_identity: SPIFFE://corp/batch"), "callers[2].tls_identity", 42, `must be written "spiffe://corp/batch"`},

		// Audit.
		{"audit not a mapping", editFull(t, "audit:\n  file: audit.jsonl\n  fail_closed: true\n  queue: 100\n", "audit: audit.jsonl\n"), "audit", 56, "must be a mapping, got a string"},
		{"audit without file", editFull(t, "  file: audit.jsonl\n", ""), "audit.file", 56, `required: a file, or "-" for standard output`},
		{"audit file empty", editFull(t, "file: audit.jsonl", `file: ""`), "audit.file", 57, "required"},
		{"audit file a directory", editFull(t, "file: audit.jsonl", "file: ."), "audit.file", 57, "is not a regular file"},
		{"audit file in a missing directory", editFull(t, "file: audit.jsonl", "file: logs/audit.jsonl"), "audit.file", 57, `logs" does not exist`},
		{"audit file under a file", editFull(t, "file: audit.jsonl", "file: k.pem/audit.jsonl"), "audit.file", 57, "not a directory"},
		{"fail_closed not a bool", editFull(t, "fail_closed: true", "fail_closed: 1"), "audit.fail_closed", 58, "must be true or false, got a number"},
		{"queue zero", editFull(t, "queue: 100", "queue: 0"), "audit.queue", 59, "must be from 1 to 1000000, got 0"},
		{"queue negative", editFull(t, "queue: 100", "queue: -1"), "audit.queue", 59, "must be from 1 to 1000000, got -1"},
		{"queue too long", editFull(t, "queue: 100", "queue: 1_000_001"), "audit.queue", 59, "must be from 1 to 1000000, got 1000001"},
		{"queue fractional", editFull(t, "queue: 100", "queue: 1.5"), "audit.queue", 59, "must be an integer, got a number"},
		{"queue quoted", editFull(t, "queue: 100", `queue: "100"`), "audit.queue", 59, "must be an integer, got a string"},
		{"queue beyond int64", editFull(t, "queue: 100", "queue: 18446744073709551615"), "audit.queue", 59, "must be an integer"},

		// Rate limits, the default and a caller's.
		{"rate_limit not a mapping", editFull(t, "rate_limit: {rate: 50, burst: 100}", "rate_limit: 50"), "rate_limit", 60, "must be a mapping, got a number"},
		{"rate zero", editFull(t, "{rate: 50, burst: 100}", "{rate: 0, burst: 100}"), "rate_limit.rate", 60, "must be more than 0 and at most 1000000 (calls a second), got 0"},
		{"rate negative", editFull(t, "{rate: 50, burst: 100}", "{rate: -0.5, burst: 100}"), "rate_limit.rate", 60, "got -0.5"},
		{"rate too high", editFull(t, "{rate: 50, burst: 100}", "{rate: 1000000.5, burst: 100}"), "rate_limit.rate", 60, "at most 1000000 (calls a second), got 1000000.5"},
		{"rate NaN", editFull(t, "{rate: 50, burst: 100}", "{rate: .nan, burst: 100}"), "rate_limit.rate", 60, "got NaN"},
		{"rate infinite", editFull(t, "{rate: 50, burst: 100}", "{rate: .inf, burst: 100}"), "rate_limit.rate", 60, "got +Inf"},
		{"rate quoted", editFull(t, "{rate: 50, burst: 100}", `{rate: "50", burst: 100}`), "rate_limit.rate", 60, "must be a number, got a string"},
		{"no rate", editFull(t, "{rate: 50, burst: 100}", "{burst: 100}"), "rate_limit.rate", 60, "required"},
		{"no burst", editFull(t, "{rate: 50, burst: 100}", "{rate: 50}"), "rate_limit.burst", 60, "required"},
		{"burst zero", editFull(t, "{rate: 50, burst: 100}", "{rate: 50, burst: 0}"), "rate_limit.burst", 60, "must be from 1 to 1000000, got 0"},
		{"burst too big", editFull(t, "{rate: 50, burst: 100}", "{rate: 50, burst: 1000001}"), "rate_limit.burst", 60, "must be from 1 to 1000000, got 1000001"},
		{"burst fractional", editFull(t, "{rate: 50, burst: 100}", "{rate: 50, burst: 1.5}"), "rate_limit.burst", 60, "must be an integer, got a number"},
		{"rate_limit unknown field", editFull(t, "{rate: 50, burst: 100}", "{rate: 50, burst: 100, per: 1m}"), "rate_limit.per", 60, "unknown field"},
		{"caller rate zero", editFull(t, "{rate: 200, burst: 400}", "{rate: 0, burst: 400}"), "callers[2].rate_limit.rate", 44, "must be more than 0"},
		{"caller burst zero", editFull(t, "{rate: 200, burst: 400}", "{rate: 200, burst: 0}"), "callers[2].rate_limit.burst", 44, "must be from 1 to 1000000"},
		{"caller no burst", editFull(t, "{rate: 200, burst: 400}", "{rate: 200}"), "callers[2].rate_limit.burst", 44, "required"},

		// Caller modes.
		{"mode unknown", editFull(t, "mode: audit", "mode: dry-run"), "callers[2].mode", 43, `unknown mode "dry-run", want enforce or audit`},
		{"mode empty", editFull(t, "mode: audit", `mode: ""`), "callers[2].mode", 43, `unknown mode ""`},
		{"mode upper case", editFull(t, "mode: audit", "mode: AUDIT"), "callers[2].mode", 43, `unknown mode "AUDIT"`},

		// Grants: uid_pattern, custom_claims, max_min_ttl.
		{"uid_pattern without account_tokens", editFull(t, "account_tokens: true\n        uid_pattern", "uid_pattern"), "callers[2].allow[0].uid_pattern", 48, "needs account_tokens: true"},
		{"uid_pattern with account_tokens false", editFull(t, "account_tokens: true\n        uid_pattern", "account_tokens: false\n        uid_pattern"), "callers[2].allow[0].uid_pattern", 49, "needs account_tokens: true"},
		{"uid_pattern empty", editFull(t, `uid_pattern: "[0-9]{1,12}"`, `uid_pattern: ""`), "callers[2].allow[0].uid_pattern", 49, "must not be empty; leave the field out to allow any account id"},
		{"uid_pattern too long", editFull(t, `uid_pattern: "[0-9]{1,12}"`, "uid_pattern: "+long(1025)), "callers[2].allow[0].uid_pattern", 49, "must be at most 1024 bytes, got 1025"},
		{"uid_pattern invalid", editFull(t, `uid_pattern: "[0-9]{1,12}"`, `uid_pattern: "[0-9"`), "callers[2].allow[0].uid_pattern", 49, `invalid regular expression: missing closing ] in "[0-9"`},
		{"uid_pattern escaping its anchors", editFull(t, `uid_pattern: "[0-9]{1,12}"`, `uid_pattern: "1)|(.*"`), "callers[2].allow[0].uid_pattern", 49, "invalid regular expression: unexpected )"},
		{"uid_pattern repeat count", editFull(t, `uid_pattern: "[0-9]{1,12}"`, `uid_pattern: "[0-9]{1,1001}"`), "callers[2].allow[0].uid_pattern", 49, "invalid repeat count"},
		{"uid_pattern Perl syntax Go lacks", editFull(t, `uid_pattern: "[0-9]{1,12}"`, `uid_pattern: "(?=1)[0-9]+"`), "callers[2].allow[0].uid_pattern", 49, "invalid or unsupported Perl syntax"},
		{"uid_pattern not a string", editFull(t, `uid_pattern: "[0-9]{1,12}"`, "uid_pattern: [a]"), "callers[2].allow[0].uid_pattern", 49, "must be a string, got a list"},
		{"custom claim key chars", editFull(t, "custom_claims: [channel, user]", "custom_claims: [channel, user-id]"), "callers[2].allow[0].custom_claims[1]", 50, `must be 1-64 of A-Z a-z 0-9 _, got "user-id"`},
		{"custom claim key empty", editFull(t, "custom_claims: [channel, user]", `custom_claims: ["", user]`), "callers[2].allow[0].custom_claims[0]", 50, `must be 1-64 of A-Z a-z 0-9 _, got ""`},
		{"custom claim key too long", editFull(t, "custom_claims: [channel, user]", "custom_claims: [channel, "+long(65)+"]"), "callers[2].allow[0].custom_claims[1]", 50, "must be 1-64"},
		{"custom_claims not a list", editFull(t, "custom_claims: [channel, user]", "custom_claims: channel"), "callers[2].allow[0].custom_claims", 50, "must be a list, got a string"},
		{"max_min_ttl zero", editFull(t, "max_min_ttl: 30m", "max_min_ttl: 0s"), "callers[2].allow[0].max_min_ttl", 51, `must be more than 0s and at most 55m, got "0s"`},
		{"max_min_ttl too long", editFull(t, "max_min_ttl: 30m", "max_min_ttl: 55m1s"), "callers[2].allow[0].max_min_ttl", 51, "at most 55m"},
		{"max_min_ttl not a duration", editFull(t, "max_min_ttl: 30m", "max_min_ttl: 30 minutes"), "callers[2].allow[0].max_min_ttl", 51, `invalid duration "30 minutes"`},

		// Key files.
		{"key file missing", edit(t, "key_file: k.pem\n", "key_file: nope.pem\n"), "tenants[0].key_file", 16, "nope.pem\" does not exist"},
		{"key file a directory", edit(t, "key_file: k.pem\n", "key_file: .\n"), "tenants[0].key_file", 16, "is not a regular file"},
		{"key file under a file", edit(t, "key_file: k.pem\n", "key_file: k.pem/x\n"), "tenants[0].key_file", 16, "cannot read"},

		// Key options: key_id, alg, the passphrase's source, the mode override.
		{"key_id empty", keyOpt(t, `key_id: ""`), "tenants[0].key_id", 17, `must be 1-256 printable ASCII characters, got ""`},
		{"key_id too long", keyOpt(t, "key_id: "+long(257)), "tenants[0].key_id", 17, "must be 1-256 printable ASCII characters"},
		{"key_id not printable", keyOpt(t, `key_id: "kid\t1"`), "tenants[0].key_id", 17, `got "kid\t1"`},
		{"key_id not ASCII", keyOpt(t, "key_id: clé"), "tenants[0].key_id", 17, "printable ASCII"},
		{"key_id not a string", keyOpt(t, "key_id: [a]"), "tenants[0].key_id", 17, "must be a string, got a list"},
		{"alg unknown", keyOpt(t, "alg: HS256"), "tenants[0].alg", 17, `unknown alg "HS256", want RS256, PS256 or ES256`},
		{"alg lower case", keyOpt(t, "alg: rs256"), "tenants[0].alg", 17, `unknown alg "rs256"`},
		{"alg empty", keyOpt(t, `alg: ""`), "tenants[0].alg", 17, `unknown alg ""`},
		{"alg not a string", keyOpt(t, "alg: [RS256]"), "tenants[0].alg", 17, "must be a string, got a list"},
		{"alg PS256 for pismo_oidc", keyOpt(t, "alg: PS256"), "tenants[0].alg", 17, "must be RS256 for a pismo_oidc upstream (Pismo verifies RS256 assertions only), got PS256"},
		{"alg ES256 for pismo_oidc", edit(t, "key_file: ./k.pem\n", "key_file: ./k.pem\n    alg: ES256\n"), "tenants[1].alg", 27, "must be RS256 for a pismo_oidc upstream"},
		{"key_passphrase_file empty", keyOpt(t, `key_passphrase_file: ""`), "tenants[0].key_passphrase_file", 17, "must name a file; leave the field out for a key file that is not encrypted"},
		{"key_passphrase_file missing", keyOpt(t, "key_passphrase_file: nope.pass"), "tenants[0].key_passphrase_file", 17, "the file does not exist"},
		{"key_passphrase_file a directory", keyOpt(t, "key_passphrase_file: ."), "tenants[0].key_passphrase_file", 17, "the file is not a regular file"},
		{"key_passphrase_file under a file", keyOpt(t, "key_passphrase_file: k.pem/x"), "tenants[0].key_passphrase_file", 17, "cannot read the file"},
		{"key_passphrase_file not a string", keyOpt(t, "key_passphrase_file: [a]"), "tenants[0].key_passphrase_file", 17, "must be a string, got a list"},
		{"key_passphrase_env empty", keyOpt(t, `key_passphrase_env: ""`), "tenants[0].key_passphrase_env", 17, "must be the name of an environment variable, [A-Z_][A-Z0-9_]*"},
		{"key_passphrase_env lower case", keyOpt(t, "key_passphrase_env: tn_pass"), "tenants[0].key_passphrase_env", 17, "must be the name of an environment variable"},
		{"key_passphrase_env leading digit", keyOpt(t, "key_passphrase_env: 1_PASS"), "tenants[0].key_passphrase_env", 17, "must be the name of an environment variable"},
		{"key_passphrase_env with a dash", keyOpt(t, "key_passphrase_env: TN-PASS"), "tenants[0].key_passphrase_env", 17, "must be the name of an environment variable"},
		{"key_passphrase_env not a string", keyOpt(t, "key_passphrase_env: {a: b}"), "tenants[0].key_passphrase_env", 17, "must be a string, got a mapping"},
		{"key passphrase from both", keyOpt(t, "key_passphrase_file: k.pem\n    key_passphrase_env: TN_PASS"), "tenants[0].key_passphrase_env", 18, "cannot be set with key_passphrase_file"},
		{"allow_group_readable_key yes", keyOpt(t, "allow_group_readable_key: yes"), "tenants[0].allow_group_readable_key", 17, "must be true or false, got a string"},
		{"allow_group_readable_key 0440", keyOpt(t, "allow_group_readable_key: 0440"), "tenants[0].allow_group_readable_key", 17, "must be true or false, got a number"},
		{"key option misspelt", keyOpt(t, "key_passphrase: x"), "tenants[0].key_passphrase", 17, "unknown field"},

		// Key lists (line 16 is keys:, its first item line 17).
		{"keys with key_file", keyOpt(t, "keys: [{file: k.pem, state: active}]"), "tenants[0].keys", 17, "cannot be set with key_file"},
		{"keys with key_id", keyList(t, "    - {file: k.pem, state: active}\n    key_id: x\n"), "tenants[0].keys", 16, "cannot be set with key_file (or key_id"},
		{"keys empty", keyList(t, "      []\n"), "tenants[0].keys", 16, "at least one key is required"},
		{"keys not a list", keyList(t, "      k.pem\n"), "tenants[0].keys", 17, "must be a list, got a string"},
		{"keys too many", keyList(t, strings.Repeat("    - {file: k.pem, state: next}\n", 16)+"    - {file: k.pem, state: active}\n"), "tenants[0].keys", 16, "at most 16 keys, got 17"},
		{"no active key", keyList(t, "    - {file: k.pem, state: next}\n"), "tenants[0].keys", 16, "exactly one key must be active, found 0"},
		{"two active keys", keyList(t, "    - {file: k.pem, state: active}\n    - {file: k.pem, state: active}\n"), "tenants[0].keys", 16, "exactly one key must be active, found 2"},
		{"key state missing", keyList(t, "    - {file: k.pem}\n"), "tenants[0].keys[0].state", 17, "required: next, active or retired"},
		{"key state unknown", keyList(t, "    - {file: k.pem, state: current}\n"), "tenants[0].keys[0].state", 17, `unknown state "current"`},
		{"key item not a mapping", keyList(t, "    - k.pem\n"), "tenants[0].keys[0]", 17, "must be a mapping, got a string"},
		{"key neither file nor pkcs11", keyList(t, "    - {state: active}\n"), "tenants[0].keys[0]", 17, "needs file or pkcs11"},
		{"key file and pkcs11", keyList(t, "    - {state: active, file: k.pem, pkcs11: {uri: \"pkcs11:object=k\", module: k.pem, pin_file: k.pem}}\n"), "tenants[0].keys[0].pkcs11", 17, "cannot be set with file"},
		{"key file missing", keyList(t, "    - {file: nope.pem, state: active}\n"), "tenants[0].keys[0].file", 17, "nope.pem\" does not exist"},
		{"next key file missing", keyList(t, "    - {file: k.pem, state: active}\n    - {file: nope.pem, state: next}\n"), "tenants[0].keys[1].file", 18, "does not exist"},
		{"key key_id empty", keyList(t, "    - {file: k.pem, state: active, key_id: \"\"}\n"), "tenants[0].keys[0].key_id", 17, "must be 1-256 printable ASCII"},
		{"key passphrase_env bad", keyList(t, "    - {file: k.pem, state: active, passphrase_env: x}\n"), "tenants[0].keys[0].passphrase_env", 17, "must be the name of an environment variable"},
		{"key passphrase from both", keyList(t, "    - {file: k.pem, state: active, passphrase_file: k.pem, passphrase_env: X}\n"), "tenants[0].keys[0].passphrase_env", 17, "cannot be set with passphrase_file"},
		{"key option of the shorthand", keyList(t, "    - {file: k.pem, state: active, key_file: k.pem}\n"), "tenants[0].keys[0].key_file", 17, "unknown field"},
		{"pkcs11 uri missing", keyList(t, "    - {state: active, pkcs11: {module: k.pem, pin_file: k.pem}}\n"), "tenants[0].keys[0].pkcs11.uri", 17, "required: an RFC 7512 URI"},
		{"pkcs11 uri not pkcs11", keyList(t, "    - {state: active, pkcs11: {uri: \"file:k\", module: k.pem, pin_file: k.pem}}\n"), "tenants[0].keys[0].pkcs11.uri", 17, "must be an RFC 7512 URI beginning with pkcs11:"},
		{"pkcs11 uri too long", keyList(t, "    - {state: active, pkcs11: {uri: \"pkcs11:object="+long(4090)+"\", module: k.pem, pin_file: k.pem}}\n"), "tenants[0].keys[0].pkcs11.uri", 17, "at most 4096 bytes"},
		{"pkcs11 module missing", keyList(t, "    - {state: active, pkcs11: {uri: \"pkcs11:object=k\", pin_file: k.pem}}\n"), "tenants[0].keys[0].pkcs11.module", 17, "required"},
		{"pkcs11 pin_file absent", keyList(t, "    - {state: active, pkcs11: {uri: \"pkcs11:object=k\", module: k.pem, pin_file: pin}}\n"), "tenants[0].keys[0].pkcs11.pin_file", 17, "does not exist"},
		{"pkcs11 pin inline", keyList(t, "    - {state: active, pkcs11: {uri: \"pkcs11:object=k\", module: k.pem, pin_file: k.pem, pin: \"1234\"}}\n"), "tenants[0].keys[0].pkcs11.pin", 17, "unknown field"},
		{"pkcs11 with a passphrase", keyList(t, "    - {state: active, passphrase_env: X, pkcs11: {uri: \"pkcs11:object=k\", module: k.pem, pin_file: k.pem}}\n"), "tenants[0].keys[0].pkcs11", 17, "a PKCS#11 key has no passphrase"},
		{"pkcs11 group readable", keyList(t, "    - {state: active, allow_group_readable: true, pkcs11: {uri: \"pkcs11:object=k\", module: k.pem, pin_file: k.pem}}\n"), "tenants[0].keys[0].allow_group_readable", 17, "applies to key files only"},

		// The shared cache ([sharedBlock]: shared on line 7, redis on 8).
		{"shared not a mapping", sharedLine(t, "redis:6379"), "cache.shared", 7, "must be a mapping, got a string"},
		{"shared unknown field", withShared(t, "    encryption_key_file:", "    encryption_key: x\n    encryption_key_file:"), "cache.shared.encryption_key", 19, "unknown field"},
		{"shared without redis", sharedLine(t, "{encryption_key_file: k}"), "cache.shared.redis", 7, "required"},
		{"shared with redis null", sharedLine(t, "{redis: ~, encryption_key_file: k}"), "cache.shared.redis", 7, "required"},
		{"redis not a mapping", sharedLine(t, `{redis: "redis:6379", encryption_key_file: k}`), "cache.shared.redis", 7, "must be a mapping, got a string"},
		{"redis unknown field", withShared(t, "      db: 3\n", "      db: 3\n      password: x\n"), "cache.shared.redis.password", 13, "unknown field"},
		{"redis without addr", withShared(t, "      addr: redis:6379\n", ""), "cache.shared.redis.addr", 8, "required: addr (host:port) or sentinel"},
		{"redis with addr null", withShared(t, "addr: redis:6379", "addr: ~"), "cache.shared.redis.addr", 9, "required: addr (host:port) or sentinel"},
		{"redis addr empty", withShared(t, "addr: redis:6379", `addr: ""`), "cache.shared.redis.addr", 9, "required"},
		{"redis addr not a string", withShared(t, "addr: redis:6379", "addr: [redis, 6379]"), "cache.shared.redis.addr", 9, "must be a string, got a list"},
		{"redis addr without port", withShared(t, "addr: redis:6379", "addr: redis"), "cache.shared.redis.addr", 9, `must be host:port, such as redis:6379, got "redis"`},
		{"redis addr without host", withShared(t, "addr: redis:6379", `addr: ":6379"`), "cache.shared.redis.addr", 9, `must name a host, such as redis:6379, got ":6379"`},
		{"redis addr port 0", withShared(t, "addr: redis:6379", "addr: redis:0"), "cache.shared.redis.addr", 9, `port must be a number from 1 to 65535, got "0"`},
		{"redis addr port too big", withShared(t, "addr: redis:6379", "addr: redis:65536"), "cache.shared.redis.addr", 9, `port must be a number from 1 to 65535, got "65536"`},
		{"redis addr named port", withShared(t, "addr: redis:6379", "addr: redis:redis"), "cache.shared.redis.addr", 9, "port must be a number from 1 to 65535"},
		{"redis addr empty port", withShared(t, "addr: redis:6379", "addr: 'redis:'"), "cache.shared.redis.addr", 9, `port must be a number from 1 to 65535, got ""`},
		{"redis addr a URL", withShared(t, "addr: redis:6379", "addr: redis://redis:6379/0"), "cache.shared.redis.addr", 9, "must be host:port, such as redis:6379, not a URL"},
		{"redis addr with a user", withShared(t, "addr: redis:6379", "addr: tokenbroker@redis:6379"), "cache.shared.redis.addr", 9, "the user goes in username and the password in password_file"},
		{"redis username empty", withShared(t, "username: tokenbroker", `username: ""`), "cache.shared.redis.username", 10, "must not be empty; leave the field out for Redis's default user"},
		{"redis password_file empty", withShared(t, "password_file: /run/secrets/redis-password", `password_file: ""`), "cache.shared.redis.password_file", 11, "must name a file; leave the field out for a Redis without a password"},
		{"redis password_file not a string", withShared(t, "password_file: /run/secrets/redis-password", "password_file: {a: b}"), "cache.shared.redis.password_file", 11, "must be a string, got a mapping"},
		{"redis db negative", withShared(t, "db: 3", "db: -1"), "cache.shared.redis.db", 12, "must be from 0 to 65535, got -1"},
		{"redis db too big", withShared(t, "db: 3", "db: 65536"), "cache.shared.redis.db", 12, "must be from 0 to 65535, got 65536"},
		{"redis db quoted", withShared(t, "db: 3", `db: "3"`), "cache.shared.redis.db", 12, "must be an integer, got a string"},
		{"redis timeout zero", withShared(t, "timeout: 75ms", "timeout: 0s"), "cache.shared.redis.timeout", 13, `must be from 1ms to 5s, got "0s"`},
		{"redis timeout under 1ms", withShared(t, "timeout: 75ms", "timeout: 999us"), "cache.shared.redis.timeout", 13, `must be from 1ms to 5s, got "999us"`},
		{"redis timeout negative", withShared(t, "timeout: 75ms", "timeout: -50ms"), "cache.shared.redis.timeout", 13, "must be from 1ms to 5s"},
		{"redis timeout too long", withShared(t, "timeout: 75ms", "timeout: 5001ms"), "cache.shared.redis.timeout", 13, `must be from 1ms to 5s, got "5001ms"`},
		{"redis timeout not a duration", withShared(t, "timeout: 75ms", "timeout: 50"), "cache.shared.redis.timeout", 13, `invalid duration "50": missing unit`},
		{"redis tls not a mapping", withShared(t, "      tls:\n        ca_file: redis-ca.crt\n        cert_file: tls/client.crt\n        key_file: tls/client.key\n        server_name: redis.internal\n", "      tls: true\n"), "cache.shared.redis.tls", 14, "must be a mapping, got a boolean"},
		{"redis tls unknown field", withShared(t, "        server_name: redis.internal\n", "        server_name: redis.internal\n        insecure_skip_verify: true\n"), "cache.shared.redis.tls.insecure_skip_verify", 19, "unknown field"},
		{"redis tls ca_file empty", withShared(t, "ca_file: redis-ca.crt", `ca_file: ""`), "cache.shared.redis.tls.ca_file", 15, "must name a file; leave the field out to trust the system's roots"},
		{"redis tls cert_file without key_file", withShared(t, "        key_file: tls/client.key\n", ""), "cache.shared.redis.tls.cert_file", 16, "needs key_file: a client certificate is presented with its private key"},
		{"redis tls key_file without cert_file", withShared(t, "        cert_file: tls/client.crt\n", ""), "cache.shared.redis.tls.key_file", 16, "needs cert_file"},
		{"redis tls cert_file empty", withShared(t, "cert_file: tls/client.crt", `cert_file: ""`), "cache.shared.redis.tls.cert_file", 16, "must name a file; leave cert_file and key_file out to present no client certificate"},
		{"redis tls key_file empty", withShared(t, "key_file: tls/client.key", `key_file: ""`), "cache.shared.redis.tls.key_file", 17, "must name a file; leave cert_file and key_file out"},
		{"redis tls server_name empty", withShared(t, "server_name: redis.internal", `server_name: ""`), "cache.shared.redis.tls.server_name", 18, "must not be empty; leave the field out to check the host of addr"},
		// Sentinel ([withSentinel]: sentinel on line 9, master 10, addrs 11,
		// username 12, password_file 13).
		{"addr and sentinel", withShared(t, "      addr: redis:6379\n", "      addr: redis:6379\n"+sentinelLines), "cache.shared.redis.sentinel", 10, "cannot be set with addr"},
		{"empty addr and sentinel", withShared(t, "      addr: redis:6379\n", "      addr: \"\"\n"+sentinelLines), "cache.shared.redis.sentinel", 10, "cannot be set with addr"},
		{"sentinel null", sharedLine(t, "{redis: {sentinel: ~}, encryption_key_file: k}"), "cache.shared.redis.addr", 7, "required: addr (host:port) or sentinel"},
		{"sentinel not a mapping", sharedLine(t, `{redis: {sentinel: ["s:26379"]}, encryption_key_file: k}`), "cache.shared.redis.sentinel", 7, "must be a mapping, got a list"},
		{"sentinel unknown field", withSentinel(t, "        master: mymaster\n", "        master: mymaster\n        quorum: 2\n"), "cache.shared.redis.sentinel.quorum", 11, "unknown field"},
		{"sentinel without master", withSentinel(t, "        master: mymaster\n", ""), "cache.shared.redis.sentinel.master", 9, "required: the name the sentinels monitor the master under"},
		{"sentinel master empty", withSentinel(t, "master: mymaster", `master: ""`), "cache.shared.redis.sentinel.master", 10, "required"},
		{"sentinel master not a string", withSentinel(t, "master: mymaster", "master: {a: b}"), "cache.shared.redis.sentinel.master", 10, "must be a string, got a mapping"},
		{"sentinel without addrs", withSentinel(t, "        addrs: [\"sentinel-0.sentinel:26379\", \"sentinel-1.sentinel:26379\"]\n", ""), "cache.shared.redis.sentinel.addrs", 9, "required: 1-16 sentinel addresses (host:port)"},
		{"sentinel addrs empty", withSentinel(t, `addrs: ["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"]`, "addrs: []"), "cache.shared.redis.sentinel.addrs", 11, "required: 1-16 sentinel addresses"},
		{"sentinel addrs not a list", withSentinel(t, `addrs: ["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"]`, "addrs: sentinel-0:26379"), "cache.shared.redis.sentinel.addrs", 11, "must be a list, got a string"},
		{"sentinel addrs too many", withSentinel(t, `addrs: ["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"]`, "addrs: ["+sentinelAddrs(17)+"]"), "cache.shared.redis.sentinel.addrs", 11, "at most 16 sentinels, got 17"},
		{"sentinel addr empty", withSentinel(t, `"sentinel-1.sentinel:26379"`, `""`), "cache.shared.redis.sentinel.addrs[1]", 11, "required: host:port, such as sentinel-0:26379"},
		{"sentinel addr without port", withSentinel(t, `"sentinel-1.sentinel:26379"`, "sentinel-1"), "cache.shared.redis.sentinel.addrs[1]", 11, `must be host:port, such as sentinel-0:26379, got "sentinel-1"`},
		{"sentinel addr without host", withSentinel(t, `"sentinel-1.sentinel:26379"`, `":26379"`), "cache.shared.redis.sentinel.addrs[1]", 11, `must name a host, such as sentinel-0:26379, got ":26379"`},
		{"sentinel addr port 0", withSentinel(t, `"sentinel-1.sentinel:26379"`, "sentinel-1:0"), "cache.shared.redis.sentinel.addrs[1]", 11, `port must be a number from 1 to 65535, got "0"`},
		{"sentinel addr a URL", withSentinel(t, `"sentinel-1.sentinel:26379"`, `"redis://sentinel-1:26379"`), "cache.shared.redis.sentinel.addrs[1]", 11, "must be host:port, such as sentinel-0:26379, not a URL"},
		{"sentinel addr not a string", withSentinel(t, `"sentinel-1.sentinel:26379"`, "[a, b]"), "cache.shared.redis.sentinel.addrs[1]", 11, "must be a string, got a list"},
		{"sentinel addrs repeated", withSentinel(t, `"sentinel-1.sentinel:26379"`, `"Sentinel-0.sentinel:26379"`), "cache.shared.redis.sentinel.addrs[1]", 11,
			"same address as cache.shared.redis.sentinel.addrs[0]: list each sentinel once"},
		{"sentinel username empty", withSentinel(t, "username: sentinel-user", `username: ""`), "cache.shared.redis.sentinel.username", 12, "must not be empty; leave the field out for the sentinels' default user"},
		{"sentinel password_file empty", withSentinel(t, "password_file: /run/secrets/sentinel-password", `password_file: ""`), "cache.shared.redis.sentinel.password_file", 13, "must name a file; leave the field out for sentinels without a password"},
		{"sentinel password_file not a string", withSentinel(t, "password_file: /run/secrets/sentinel-password", "password_file: [a]"), "cache.shared.redis.sentinel.password_file", 13, "must be a string, got a list"},
		{"sentinel password inline", withSentinel(t, "        password_file: /run/secrets/sentinel-password\n", "        password: x\n"), "cache.shared.redis.sentinel.password", 13, "unknown field"},
		{"redis field under sentinel", withSentinel(t, "        username: sentinel-user\n", "        db: 1\n"), "cache.shared.redis.sentinel.db", 12, "unknown field"},

		{"shared without encryption_key_file", withShared(t, "    encryption_key_file: /run/secrets/cache-seal.key\n", ""), "cache.shared.encryption_key_file", 7, "required: a file holding 32 random bytes in base64 (openssl rand -base64 32)"},
		{"encryption_key_file empty", withShared(t, "encryption_key_file: /run/secrets/cache-seal.key", `encryption_key_file: ""`), "cache.shared.encryption_key_file", 19, "required"},
		{"encryption_key_file not a string", withShared(t, "encryption_key_file: /run/secrets/cache-seal.key", "encryption_key_file: [a, b]"), "cache.shared.encryption_key_file", 19, "must be a string, got a list"},
		{"previous keys too many", withShared(t, "[/run/secrets/cache-seal-old.key, ./old/../older.key]", "[a, b, c, d, e]"), "cache.shared.previous_encryption_key_files", 20, "at most 4 files, got 5"},
		{"previous key empty", withShared(t, "./old/../older.key]", `""]`), "cache.shared.previous_encryption_key_files[1]", 20, "must name a file"},
		{"previous key null", withShared(t, "./old/../older.key]", "~]"), "cache.shared.previous_encryption_key_files[1]", 20, "must name a file"},
		{"previous key is the current one", withShared(t, "./old/../older.key]", "/run/secrets/cache-seal.key]"), "cache.shared.previous_encryption_key_files[1]", 20,
			"same file as cache.shared.encryption_key_file: list here only the keys being rotated out"},
		{"previous key is the current one, resolved", sharedLine(t, "{redis: {addr: \"redis:6379\"}, encryption_key_file: seal.key, previous_encryption_key_files: [old/../seal.key]}"),
			"cache.shared.previous_encryption_key_files[0]", 7, "same file as cache.shared.encryption_key_file"},
		{"previous keys repeated", withShared(t, "./old/../older.key]", "/run/secrets/../secrets/cache-seal-old.key]"), "cache.shared.previous_encryption_key_files[1]", 20,
			"same file as cache.shared.previous_encryption_key_files[0]: list each key once"},
		{"previous keys not a list", withShared(t, "[/run/secrets/cache-seal-old.key, ./old/../older.key]", "/run/secrets/cache-seal-old.key"), "cache.shared.previous_encryption_key_files", 20, "must be a list, got a string"},
	}
	tests = append(tests, kindProblems(t)...)
	dir := keyDir(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := problems(t, tc.doc, dir)
			if len(got) != 1 {
				t.Fatalf("%d problems:\n%s\nwant 1", len(got), (&config.Error{Problems: got}).Error())
			}
			p := got[0]
			if p.Path != tc.path {
				t.Errorf("Path = %q, want %q (%s)", p.Path, tc.path, p)
			}
			if tc.line >= 0 && p.Line != tc.line {
				t.Errorf("Line = %d, want %d (%s)", p.Line, tc.line, p)
			}
			if tc.line < 0 && p.Line <= 0 {
				t.Errorf("Line = %d, want one (%s)", p.Line, p)
			}
			if !strings.Contains(p.Msg, tc.msg) {
				t.Errorf("Msg = %q, want it to contain %q", p.Msg, tc.msg)
			}
			if strings.Contains(p.String(), "\n") {
				t.Errorf("String() = %q, want one line", p.String())
			}
		})
	}
}

// Values at the edges of their ranges are accepted.
func TestParseAcceptsLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name string
		doc  string
	}{
		{"skew zero", edit(t, "skew: 10s", "skew: 0s")},
		{"skew 5m", edit(t, "skew: 10s", "skew: 5m")},
		{"grace 5m", edit(t, "shutdown_grace: 15s", "shutdown_grace: 5m")},
		{"grace compound", edit(t, "shutdown_grace: 15s", "shutdown_grace: 1m30s")},
		{"timeout 2m", edit(t, "timeout: 10s", "timeout: 2m")},
		{"lifetime 1h", edit(t, "assertion_lifetime: 5m", "assertion_lifetime: 1h")},
		{"lifetime 0.5h", edit(t, "assertion_lifetime: 5m", "assertion_lifetime: 0.5h")},
		{"tenant id 128", edit(t, "id: tn-a", "id: "+long(128), "tenant: tn-a", "tenant: "+long(128))},
		{"tenant id chars", edit(t, "id: tn-a", "id: A.z_0-9", "tenant: tn-a", "tenant: A.z_0-9")},
		{"numeric tenant id", edit(t, "id: tn-a", "id: 123", "tenant: tn-a", "tenant: 123")},
		{"caller name 64", edit(t, "name: reports", "name: "+long(64))},
		{"issuer 1024", edit(t, "issuer: iss\n", "issuer: "+long(1024)+"\n")},
		{"uid_mode tenant", edit(t, "uid_mode: omit", "uid_mode: tenant")},
		{"grpc port 0, same as http", edit(t, "grpc: 127.0.0.1:7443", "grpc: 127.0.0.1:0", "http: 127.0.0.1:7080", "http: 127.0.0.1:0")},
		{"http on all interfaces", edit(t, "http: 127.0.0.1:7080", "http: :7080")},
		{"http on a name", edit(t, "http: 127.0.0.1:7080", "http: broker.internal:7080")},
		{"flow style", edit(t, "listen:\n  grpc: 127.0.0.1:7443\n  http: 127.0.0.1:7080\n", "listen: {grpc: \"[::1]:7443\", http: \"[::1]:7080\"}\n")},
		{"group of 256", edit(t, "groups: [a]", "groups: ["+long(256)+"]")},
		{"same tenant granted twice", edit(t, "      - tenant: tn-b\n        groups: [\"*\"]", "      - tenant: tn-a\n        groups: [\"*\"]")},
		{"every optional part", full},
		{"queue 1", editFull(t, "queue: 100", "queue: 1")},
		{"queue 1_000_000", editFull(t, "queue: 100", "queue: 1_000_000")},
		{"rate 1000000", editFull(t, "{rate: 50, burst: 100}", "{rate: 1e6, burst: 100}")},
		{"rate fractional", editFull(t, "{rate: 50, burst: 100}", "{rate: 0.001, burst: 100}")},
		{"burst 1", editFull(t, "{rate: 50, burst: 100}", "{rate: 50, burst: 1}")},
		{"burst 1000000", editFull(t, "{rate: 50, burst: 100}", "{rate: 50, burst: 1000000}")},
		{"mode enforce", editFull(t, "mode: audit", "mode: enforce")},
		{"max_min_ttl 55m", editFull(t, "max_min_ttl: 30m", "max_min_ttl: 55m")},
		{"max_min_ttl 1s", editFull(t, "max_min_ttl: 30m", "max_min_ttl: 1s")},
		{"uid_pattern of 1024", editFull(t, `uid_pattern: "[0-9]{1,12}"`, "uid_pattern: "+long(1024))},
		{"uid_pattern with its own anchors", editFull(t, `uid_pattern: "[0-9]{1,12}"`, `uid_pattern: "^[0-9]+$"`)},
		{"uid_pattern alternation", editFull(t, `uid_pattern: "[0-9]{1,12}"`, `uid_pattern: "a|b"`)},
		{"custom claim key of 64", editFull(t, "custom_claims: [channel, user]", "custom_claims: [A_z_09, "+long(64)+"]")},
		{"no custom claims", editFull(t, "custom_claims: [channel, user]", "custom_claims: []")},
		{"key and tls_identity", editFull(t, "    tls_identity: spiffe://corp/batch\n", "    tls_identity: spiffe://corp/batch\n    api_key_sha256: 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\n")},
		{"tls without client_ca_file, key callers only", base + "tls: {cert_file: server.crt, key_file: server.key}\n"},
		{"grpc on all interfaces with tls", editFull(t, "grpc: 127.0.0.1:7443", "grpc: :7443")},
		{"audit to stdout", editFull(t, "file: audit.jsonl", `file: "-"`)},
		{"audit file that exists", editFull(t, "file: audit.jsonl", "file: k.pem")},
		{"audit with a file only", editFull(t, "  fail_closed: true\n  queue: 100\n", "")},
		{"key_id of 256", keyOpt(t, "key_id: "+long(256))},
		{"key_id with spaces and symbols", keyOpt(t, `key_id: "my kid/2024-01 #1"`)},
		{"alg RS256 for pismo_oidc", keyOpt(t, "alg: RS256")},
		{"key_passphrase_file", keyOpt(t, "key_passphrase_file: k.pem")},
		{"key_passphrase_env", keyOpt(t, "key_passphrase_env: TN_KEY_PASSPHRASE")},
		{"key_passphrase_env of one underscore", keyOpt(t, "key_passphrase_env: _")},
		{"key_passphrase_env with digits", keyOpt(t, "key_passphrase_env: _2PASS9")},
		{"allow_group_readable_key true", keyOpt(t, "allow_group_readable_key: true")},
		{"allow_group_readable_key false", keyOpt(t, "allow_group_readable_key: false")},
		{"key options null", keyOpt(t, "key_id: ~\n    alg: ~\n    key_passphrase_file: ~\n    key_passphrase_env: ~\n    allow_group_readable_key: ~")},
		{"shared cache, every field", withShared(t)},
		{"redis timeout 1ms", withShared(t, "timeout: 75ms", "timeout: 1ms")},
		{"redis timeout 5s", withShared(t, "timeout: 75ms", "timeout: 5s")},
		{"redis db 0", withShared(t, "db: 3", "db: 0")},
		{"redis db 65535", withShared(t, "db: 3", "db: 65535")},
		{"redis port 1", withShared(t, "addr: redis:6379", "addr: redis:1")},
		{"redis port 65535", withShared(t, "addr: redis:6379", "addr: redis:65535")},
		{"redis on IPv6", withShared(t, "addr: redis:6379", `addr: "[fd00::6]:6379"`)},
		{"redis tls without a client certificate", withShared(t, "        cert_file: tls/client.crt\n        key_file: tls/client.key\n", "")},
		{"redis tls empty", withShared(t, "      tls:\n        ca_file: redis-ca.crt\n        cert_file: tls/client.crt\n        key_file: tls/client.key\n        server_name: redis.internal\n", "      tls: {}\n")},
		{"sentinel, every field", withSentinel(t)},
		{"one sentinel", withSentinel(t, `["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"]`, `["sentinel-0.sentinel:26379"]`)},
		{"16 sentinels", withSentinel(t, `["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"]`, "["+sentinelAddrs(16)+"]")},
		{"sentinels on IPv6 and ports 1 and 65535", withSentinel(t, `["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"]`, `["[fd00::7]:1", "10.0.0.7:65535"]`)},
		{"sentinel options null", withSentinel(t, "username: sentinel-user", "username: ~", "password_file: /run/secrets/sentinel-password", "password_file: ~")},
		{"four previous keys", withShared(t, "[/run/secrets/cache-seal-old.key, ./old/../older.key]", "[a, b, c, d]")},
		{"no previous keys", withShared(t, "[/run/secrets/cache-seal-old.key, ./old/../older.key]", "[]")},
	}
	dir := keyDir(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := config.Parse([]byte(tc.doc), dir); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

// Every problem in a config is reported at once, one per line.
func TestParseManyProblems(t *testing.T) {
	doc := edit(t,
		"  skew: 10s\n", "  skew: 10 seconds\n  refresh_ahead: 0.2\n", // 2 problems
		"timeout: 10s\n", "timeout: 10s\n      tokn_url: x\n",
		"uid_mode: omit", "uid_mode: sometimes",
		"key_file: ./k.pem", "key_file: missing.pem",
		"name: reports", "name: payments-api",
		"      - tenant: tn-b\n        groups: [a]", "      - tenant: tn-zz\n        groups: [a, \"a b\", \"x,y\", a:*:b]", // 4 problems
	)
	doc += "metrics: {path: x}\n"
	got := problems(t, doc, keyDir(t))
	want := []string{
		"cache.skew",
		"cache.refresh_ahead",
		"tenants[0].upstream.tokn_url",
		"tenants[0].uid_mode",
		"tenants[1].key_file",
		"callers[1].name",
		"callers[1].allow[0].tenant",
		"callers[1].allow[0].groups[1]",
		"callers[1].allow[0].groups[2]",
		"callers[1].allow[0].groups[3]",
		"metrics",
	}
	var paths []string
	for _, p := range got {
		paths = append(paths, p.Path)
	}
	// Problems come in document order.
	if !slices.Equal(paths, want) {
		t.Errorf("paths = %q\nwant %q", paths, want)
	}
	msg := (&config.Error{Problems: got}).Error()
	lines := strings.Split(msg, "\n")
	if got, want := len(lines), len(want); got != want {
		t.Errorf("Error() has %d lines, want %d:\n%s", got, want, msg)
	}
	for i, l := range lines {
		if i < len(want) && !strings.HasPrefix(l, want[i]+": ") {
			t.Errorf("line %d = %q, want it to start with %q", i, l, want[i]+": ")
		}
	}
}

// An empty config lacks tenants and callers, and nothing else.
func TestParseEmpty(t *testing.T) {
	for _, doc := range []string{"", "\n", "# nothing yet\n", "---\n", "~\n", "{}\n", "tenants: []\ncallers: []\n", "tenants:\ncallers:\n"} {
		t.Run(fmt.Sprintf("%q", doc), func(t *testing.T) {
			got := problems(t, doc, t.TempDir())
			want := []config.Problem{
				{Path: "tenants", Msg: "at least one tenant is required"},
				{Path: "callers", Msg: "at least one caller is required"},
			}
			if strings.HasPrefix(doc, "tenants") { // the fields are present
				want[0].Line, want[1].Line = 1, 2
			}
			if !slices.Equal(got, want) {
				t.Errorf("problems = %+v\nwant %+v", got, want)
			}
		})
	}
}

// Without tls, gRPC is plaintext on loopback only; with it, any address.
func TestListenGRPC(t *testing.T) {
	const refused = "must be a loopback address (127.0.0.1, [::1] or localhost)"
	tests := []struct {
		addr string
		want string // a part of the message without tls; "" when accepted
	}{
		{"127.0.0.1:7443", ""},
		{"127.0.0.2:7443", ""},
		{"[::1]:7443", ""},
		{"localhost:7443", ""},
		{"LOCALHOST:7443", ""},
		{"0.0.0.0:7443", refused},
		{":7443", refused},
		{"[::]:7443", refused},
		{"10.1.2.3:7443", refused},
		{"broker.internal:7443", refused},
		{"localhost.example:7443", refused},
		{"::1:7443", "must be host:port"},
	}
	dir := keyDir(t)
	for _, tc := range tests {
		for _, withTLS := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tls=%v", tc.addr, withTLS), func(t *testing.T) {
				doc, want := edit(t, "grpc: 127.0.0.1:7443", fmt.Sprintf("grpc: %q", tc.addr)), tc.want
				if withTLS {
					doc = editFull(t, "grpc: 127.0.0.1:7443", fmt.Sprintf("grpc: %q", tc.addr))
					if want == refused {
						want = ""
					}
				}
				if want == "" {
					cfg, err := config.Parse([]byte(doc), dir)
					if err != nil {
						t.Fatalf("Parse: %v", err)
					}
					if got, want := cfg.Listen.GRPC, tc.addr; got != want {
						t.Errorf("Listen.GRPC = %q, want %q", got, want)
					}
					return
				}
				got := problems(t, doc, dir)
				if len(got) != 1 || got[0].Path != "listen.grpc" || !strings.Contains(got[0].Msg, want) {
					t.Fatalf("problems = %+v, want one at listen.grpc containing %q", got, want)
				}
				if want == refused && !strings.Contains(got[0].Msg, "without a tls block") {
					t.Errorf("Msg = %q, want it to say why: there is no tls block", got[0].Msg)
				}
			})
		}
	}
}

func TestTLSIdentity(t *testing.T) {
	const refusedCN = "must be a URI such as spiffe://trust-domain/path, or a certificate CN of 1-256 printable ASCII characters"
	tests := []struct {
		identity string
		want     string // a part of the message; "" when accepted
	}{
		{"spiffe://corp/batch", ""},
		{"spiffe://corp/ns/prod/sa/batch", ""},
		{"https://batch.corp.example/", ""},
		{"spiffe://corp/" + strings.Repeat("x", 2048-len("spiffe://corp/")), ""},
		{"batch-job", ""}, // a CN
		{"Batch Job, Inc.", ""},
		{"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", ""}, // no "://": taken as written
		{strings.Repeat("c", 256), ""},
		{"", refusedCN},
		{strings.Repeat("c", 257), refusedCN},
		{"café", refusedCN},
		{"batch\tjob", refusedCN},
		{" batch", "must not begin or end with a space"},
		{"batch ", "must not begin or end with a space"},
		{"SPIFFE://corp/batch", `must be written "spiffe://corp/batch": certificates are matched by the URI as Go prints it`},
		{"spiffe://corp/a b", `must be written "spiffe://corp/a%20b"`},
		{"spiffe:///batch", "must be an absolute URI with a host, such as spiffe://trust-domain/path"},
		{"://batch", `invalid URI "://batch": missing protocol scheme`},
		{"spiffe://[::1/x", `invalid URI "spiffe://[::1/x"`},
		{"spiffe://corp/" + strings.Repeat("x", 2048), "must be at most 2048 bytes"},
	}
	dir := keyDir(t)
	for _, tc := range tests {
		t.Run(tc.identity, func(t *testing.T) {
			doc := editFull(t, "tls_identity: spiffe://corp/batch", fmt.Sprintf("tls_identity: %q", tc.identity))
			if tc.want == "" {
				cfg, err := config.Parse([]byte(doc), dir)
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if got, want := cfg.Callers[2].TLSIdentity, tc.identity; got != want {
					t.Errorf("TLSIdentity = %q, want %q", got, want)
				}
				return
			}
			got := problems(t, doc, dir)
			if len(got) != 1 || got[0].Path != "callers[2].tls_identity" || !strings.Contains(got[0].Msg, tc.want) {
				t.Errorf("problems = %+v, want one at callers[2].tls_identity containing %q", got, tc.want)
			}
		})
	}
}

func TestTokenURL(t *testing.T) {
	tests := []struct {
		url  string
		want string // a part of the message; "" when accepted
	}{
		{"https://sandbox.example/passport/v1/oauth2/token", ""},
		{"https://sandbox.example:8443/token?tenant=x", ""},
		{"HTTPS://sandbox.example/token", ""},
		{"http://127.0.0.1:9/x", ""},
		{"http://[::1]:9/x", ""},
		{"http://localhost:9/x", ""},
		{"http://example.com", "http is allowed only on loopback"},
		{"http://127.0.0.1.example/x", "http is allowed only on loopback"},
		{"/passport/v1/oauth2/token", "must be an absolute URL"},
		{"sandbox.example/token", "must be an absolute URL"},
		{"https:///token", "must be an absolute URL"},
		{"https:sandbox.example", "must be an absolute URL"},
		{"ftp://sandbox.example/token", `got scheme "ftp"`},
		{"https://user:hunter2@sandbox.example/token", "must not contain a user name or password"},
		{"https://sandbox.example/token#frag", "must not have a fragment"},
		{"https://sandbox.example/token#", "must not have a fragment"},
		{"https://sandbox example/token", "invalid URL"},
		{"https://sandbox.example:x/token", "invalid URL"},
	}
	dir := keyDir(t)
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			doc := edit(t, "token_url: https://sandbox.example/token", fmt.Sprintf("token_url: %q", tc.url))
			cfg, err := config.Parse([]byte(doc), dir)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if got, want := cfg.Tenants[0].Upstream.TokenURL.String(), strings.Replace(tc.url, "HTTPS", "https", 1); got != want {
					t.Errorf("TokenURL = %q, want %q", got, want)
				}
				return
			}
			got := problems(t, doc, dir)
			if len(got) != 1 || got[0].Path != "tenants[0].upstream.token_url" || !strings.Contains(got[0].Msg, tc.want) {
				t.Errorf("problems = %+v, want one at tenants[0].upstream.token_url containing %q", got, tc.want)
			}
		})
	}
}

func TestGroups(t *testing.T) {
	tests := []struct {
		group string
		want  string // a part of the message; "" when accepted
	}{
		{"a:*", ""},
		{"*", ""},
		{"pismo-v1:accounts:*", ""},
		{"pismo-v1:cards:r", ""},
		{"https://www.googleapis.com/auth/cloud-platform", ""},
		{"a*", `"*" only as the whole last`},
		{"a:*:b", `"*" only as the whole last`},
		{"*:a", `"*" only as the whole last`},
		{"a:**", `"*" only as the whole last`},
		{"a:b*", `"*" only as the whole last`},
		{"a b", "must not contain spaces"},
		{"a,b", "must not contain commas"},
		{"a\tb", "printable ASCII"},
		{"é", "printable ASCII"},
		{"", "must be 1-256 characters"},
		{strings.Repeat("g", 257), "must be 1-256 characters"},
	}
	dir := keyDir(t)
	for _, tc := range tests {
		t.Run(tc.group, func(t *testing.T) {
			doc := edit(t, "groups: [a]", fmt.Sprintf("groups: [%q]", tc.group))
			cfg, err := config.Parse([]byte(doc), dir)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if got, want := cfg.Callers[1].Allow[0].Groups, []string{tc.group}; !slices.Equal(got, want) {
					t.Errorf("Groups = %q, want %q", got, want)
				}
				return
			}
			got := problems(t, doc, dir)
			if len(got) != 1 || got[0].Path != "callers[1].allow[0].groups[0]" || !strings.Contains(got[0].Msg, tc.want) {
				t.Errorf("problems = %+v, want one at callers[1].allow[0].groups[0] containing %q", got, tc.want)
			}
		})
	}
}

// A redis block wrong in many ways at once, addr and sentinel both set among
// them, gets one problem for each.
func TestParseSentinelProblems(t *testing.T) {
	doc := withShared(t, "      addr: redis:6379\n", "      addr: redis\n      sentinel: {addrs: [\"s:1\", \"s:1\", \"s\"], username: \"\", password_file: \"\"}\n")
	got := problems(t, doc, keyDir(t))
	want := []string{
		"cache.shared.redis.addr: must be host:port, such as redis:6379, got \"redis\" (line 9)",
		"cache.shared.redis.sentinel.master: required: the name the sentinels monitor the master under (sentinel monitor NAME ...) (line 10)",
		"cache.shared.redis.sentinel.addrs[1]: same address as cache.shared.redis.sentinel.addrs[0]: list each sentinel once (line 10)",
		"cache.shared.redis.sentinel.addrs[2]: must be host:port, such as sentinel-0:26379, got \"s\" (line 10)",
		"cache.shared.redis.sentinel.username: must not be empty; leave the field out for the sentinels' default user (line 10)",
		"cache.shared.redis.sentinel.password_file: must name a file; leave the field out for sentinels without a password (line 10)",
		"cache.shared.redis.sentinel: cannot be set with addr: give the master's address in addr, or the sentinels that know it in sentinel, not both (line 10)",
	}
	var lines []string
	for _, p := range got {
		lines = append(lines, p.String())
	}
	if !slices.Equal(lines, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// No secret a config might hold by mistake reaches a message.
func TestNoSecretsInMessages(t *testing.T) {
	const key = "tb_live_0123456789abcdefSECRET"
	const password = "hunter2hunter2"
	for _, tc := range []struct{ name, doc string }{
		{"key instead of its hash", edit(t, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", key)},
		{"key of hash length", edit(t, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", key+strings.Repeat("z", 64-len(key)))},
		{"key in a list", edit(t, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "["+key+"]")},
		{"password in token_url", edit(t, "token_url: https://sandbox.example/token", "token_url: https://u:"+password+"@sandbox.example/token")},
		{"password in a broken token_url", edit(t, "token_url: https://sandbox.example/token", "token_url: https://u:"+password+"@sandbox example/token")},
		{"password in a plain http token_url", edit(t, "token_url: https://sandbox.example/token", "token_url: http://u:"+password+"@sandbox.example/token")},
		{"passphrase instead of its variable", keyOpt(t, "key_passphrase_env: "+password)},
		{"passphrase instead of its file", keyOpt(t, "key_passphrase_file: "+password)},
		{"passphrase instead of its file, under a file", keyOpt(t, "key_passphrase_file: k.pem/"+password)},
		{"password in the redis addr", sharedLine(t, "{redis: {addr: \"redis://:"+password+"@redis:6379\"}, encryption_key_file: k}")},
		{"password in a redis addr without a scheme", sharedLine(t, "{redis: {addr: \"tokenbroker:"+password+"@redis:6379\"}, encryption_key_file: k}")},
		{"password in a sentinel addr", sharedLine(t, "{redis: {sentinel: {master: m, addrs: [\"redis://:"+password+"@s:26379\"]}}, encryption_key_file: k}")},
		{"password in a sentinel addr without a scheme", sharedLine(t, "{redis: {sentinel: {master: m, addrs: [\"u:"+password+"@s:26379\"]}}, encryption_key_file: k}")},
		{"sealing key instead of its file, repeated", sharedLine(t, "{redis: {addr: \"redis:6379\"}, encryption_key_file: "+password+", previous_encryption_key_files: ["+password+"]}")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.doc), keyDir(t))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if msg := err.Error(); strings.Contains(msg, key[:12]) || strings.Contains(msg, password) {
				t.Errorf("error %q holds the secret", msg)
			}
		})
	}
}

func TestKeyFileUnreadable(t *testing.T) {
	// A path through a regular file fails to open for every user, root
	// included, so this case runs in CI too.
	t.Run("path through a file", func(t *testing.T) {
		got := problems(t, edit(t, "    key_file: k.pem\n", "    key_file: k.pem/sub\n"), keyDir(t))
		if len(got) != 1 || got[0].Path != "tenants[0].key_file" || !strings.Contains(got[0].Msg, "not a directory") {
			t.Errorf("problems = %+v, want tenants[0].key_file: cannot read ...: not a directory", got)
		}
	})
	t.Run("permission denied", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any file; the case above covers the same branch")
		}
		dir := keyDir(t)
		if err := os.Chmod(filepath.Join(dir, "k.pem"), 0); err != nil {
			t.Fatal(err)
		}
		got := problems(t, base, dir)
		if len(got) != 2 || got[0].Path != "tenants[0].key_file" || !strings.Contains(got[0].Msg, "permission denied") {
			t.Errorf("problems = %+v, want tenants[0] and [1].key_file: ... permission denied", got)
		}
	})
}

// Aliases let a small document name a huge tree: Parse gives up with a
// problem instead of walking it.
func TestParseAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	b.WriteString("tenants: *a11\n")
	got := problems(t, b.String(), t.TempDir())
	// a0..a11 are unknown, tenants[0..9] are lists, callers are missing.
	if n := len(got); n != 12+10+1 {
		t.Errorf("%d problems, want 23:\n%s", n, &config.Error{Problems: got})
	}

	// Groups may alias one list many times; the walk stops at the budget.
	b.Reset()
	b.WriteString("g: &g [" + strings.Repeat("a, ", 399) + "a]\nc: &c {tenant: t, groups: *g}\nx: &x [" + strings.Repeat("*c, ", 399) + "*c]\ncallers:\n")
	for range 200 {
		b.WriteString("  - {name: c, allow: *x}\n")
	}
	got = problems(t, b.String(), t.TempDir())
	if !slices.ContainsFunc(got, func(p config.Problem) bool { return strings.Contains(p.Msg, "too many nodes or aliases") }) {
		t.Errorf("problems = %d, want one saying the document has too many nodes", len(got))
	}
	if n := len(got); n > 10 {
		t.Errorf("%d problems, want a few:\n%s", n, &config.Error{Problems: got})
	}
}

func TestProblemString(t *testing.T) {
	for _, tc := range []struct {
		p    config.Problem
		want string
	}{
		{config.Problem{Path: "tenants[0].upstream.token_url", Line: 12, Msg: "must be an absolute URL"}, "tenants[0].upstream.token_url: must be an absolute URL (line 12)"},
		{config.Problem{Path: "tenants", Msg: "at least one tenant is required"}, "tenants: at least one tenant is required"},
		{config.Problem{Line: 3, Msg: "invalid YAML: x"}, "invalid YAML: x (line 3)"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	e := &config.Error{Problems: []config.Problem{{Path: "a", Msg: "x"}, {Path: "b", Line: 2, Msg: "y"}}}
	if got, want := e.Error(), "a: x\nb: y (line 2)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = e
	if ce := (*config.Error)(nil); !errors.As(fmt.Errorf("wrapped: %w", err), &ce) || ce != e {
		t.Errorf("errors.As through a wrap failed")
	}
}

// kindProblems are the rows of [TestParseProblems] for the upstream kinds:
// what each kind takes, and what it must not be given. They edit
// [kindsDoc], whose tenants[i] is on line i+2.
func kindProblems(t *testing.T) []struct {
	name, doc, path string
	line            int
	msg             string
} {
	const (
		pk = `{kind: private_key_jwt, issuer: "https://idp.example/realms/x", client_id: kc, assertion_audience: issuer}`
		cp = `{kind: client_secret_post, token_url: "https://idp.example/token", client_id: cc, client_secret_env: CP_SECRET}`
		pa = `{kind: pismo_oauth2, token_url: "https://p.example/passport/v2/oauth/token", client_id: pc, client_secret_file: ca.crt}`
	)
	return []struct {
		name, doc, path string
		line            int
		msg             string
	}{
		{"token_url and issuer", editKinds(t, `issuer: "https://idp.example/realms/x"`, `issuer: "https://idp.example/realms/x", token_url: "https://idp.example/t"`), "tenants[2].upstream.issuer", 4, "cannot be set with token_url"},
		{"neither token_url nor issuer", editKinds(t, pk, `{kind: private_key_jwt, client_id: kc}`), "tenants[2].upstream.token_url", 4, "required, or issuer to discover it from"},
		{"pismo without token_url", editKinds(t, pa, `{kind: pismo_oauth2, client_id: pc, client_secret_file: ca.crt}`), "tenants[1].upstream.token_url", 3, "required"},
		{"pismo with issuer", editKinds(t, pa, `{kind: pismo_oauth2, issuer: "https://p.example", client_id: pc, client_secret_file: ca.crt}`), "tenants[1].upstream.issuer", 3, "does not apply to a pismo_oauth2 upstream: give its token_url"},
		{"issuer with a query", editKinds(t, `realms/x"`, `realms/x?a=b"`), "tenants[2].upstream.issuer", 4, "must not have a query"},
		{"issuer http off loopback", editKinds(t, `"https://idp.example/realms/x"`, `"http://idp.example/realms/x"`), "tenants[2].upstream.issuer", 4, "http is allowed only on loopback"},
		{"client_id missing", editKinds(t, "client_id: cc, ", ""), "tenants[3].upstream.client_id", 5, "required"},
		{"client_id not printable", editKinds(t, "client_id: cc,", `client_id: "c\tc",`), "tenants[3].upstream.client_id", 5, "must be 1-1024 printable ASCII"},
		{"client_id for pismo_oidc", editKinds(t, `oauth2/token"}`, `oauth2/token", client_id: x}`), "tenants[0].upstream.client_id", 2, "does not apply to a pismo_oidc upstream"},
		{"assertion_audience unknown", editKinds(t, "assertion_audience: issuer", "assertion_audience: everyone"), "tenants[2].upstream.assertion_audience", 4, `unknown assertion_audience "everyone", want token_endpoint or issuer`},
		{"assertion_audience issuer without issuer", editKinds(t, `issuer: "https://idp.example/realms/x", client_id: kc`, `token_url: "https://idp.example/t", client_id: kc`), "tenants[2].upstream.assertion_audience", 4, "issuer needs upstream.issuer"},
		{"assertion_audience for a secret", editKinds(t, "client_secret_env: CP_SECRET}", "client_secret_env: CP_SECRET, assertion_audience: issuer}"), "tenants[3].upstream.assertion_audience", 5, "does not apply to a client_secret_post upstream"},
		{"client secret missing", editKinds(t, cp, `{kind: client_secret_post, token_url: "https://idp.example/token", client_id: cc}`), "tenants[3].upstream.client_secret_file", 5, "required, or client_secret_env"},
		{"client secret from both", editKinds(t, "client_secret_env: CP_SECRET}", "client_secret_env: CP_SECRET, client_secret_file: ca.crt}"), "tenants[3].upstream.client_secret_env", 5, "cannot be set with client_secret_file"},
		{"client secret env bad", editKinds(t, "client_secret_env: CP_SECRET}", "client_secret_env: hunter2}"), "tenants[3].upstream.client_secret_env", 5, "the value is not shown: it may be the client secret itself"},
		{"client secret file missing", editKinds(t, "client_id: pc, client_secret_file: ca.crt}", "client_id: pc, client_secret_file: nope}"), "tenants[1].upstream.client_secret_file", 3, "the file does not exist"},
		{"client secret for a signer", editKinds(t, "assertion_audience: issuer}", "assertion_audience: issuer, client_secret_env: X}"), "tenants[2].upstream.client_secret_env", 4, "it signs with the tenant's key"},
		{"key for a secret kind", editKinds(t, "client_secret_env: CP_SECRET}}", "client_secret_env: CP_SECRET}, key_file: k.pem}"), "tenants[3].key_file", 5, "a client_secret_post upstream signs nothing"},
		{"keys for a secret kind", editKinds(t, "client_secret_env: CP_SECRET}}", "client_secret_env: CP_SECRET}, keys: [{file: k.pem, state: active}]}"), "tenants[3].keys", 5, "signs nothing"},
		{"alg for a secret kind", editKinds(t, "client_secret_env: CP_SECRET}}", "client_secret_env: CP_SECRET}, alg: RS256}"), "tenants[3].alg", 5, "does not apply to a client_secret_post upstream"},
		{"lifetime for a secret kind", editKinds(t, "client_secret_env: CP_SECRET}}", "client_secret_env: CP_SECRET}, assertion_lifetime: 1m}"), "tenants[3].assertion_lifetime", 5, "does not apply"},
		{"client assertion too long-lived", editKinds(t, "assertion_lifetime: 2m", "assertion_lifetime: 6m"), "tenants[2].assertion_lifetime", 4, "at most 5m"},
		{"pismo claims for private_key_jwt", editKinds(t, "key_file: k.pem, alg: PS256", "key_file: k.pem, audience: x, alg: PS256"), "tenants[2].audience", 4, "does not apply to a private_key_jwt upstream"},
		{"issuer claim for jwt_bearer", editKinds(t, "subject: admin@corp.example", "subject: admin@corp.example, issuer: x"), "tenants[5].issuer", 7, "does not apply to a jwt_bearer upstream"},
		{"uid_mode for jwt_bearer", editKinds(t, "subject: admin@corp.example", "subject: admin@corp.example, uid_mode: tenant"), "tenants[5].uid_mode", 7, "does not apply"},
		{"pismo_oidc without its claims", editKinds(t, "issuer: i, ", ""), "tenants[0].issuer", 2, "required"},
		{"account tokens for client credentials", editKinds(t, "{tenant: pk, groups: [\"*\"]}", "{tenant: pk, groups: [\"*\"], account_tokens: true}"), "callers[0].allow[2].account_tokens", 14, "issues client tokens only"},
		{"custom claims off pismo_oidc", editKinds(t, "{tenant: pa, groups: [\"*\"], account_tokens: true}", "{tenant: pa, groups: [\"*\"], account_tokens: true, custom_claims: [x]}"), "callers[0].allow[1].custom_claims", 13, "takes no custom claims; only pismo_oidc does"},
	}
}

// sentinelAddrs returns n distinct sentinel addresses, as a YAML flow list's
// items.
func sentinelAddrs(n int) string {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("sentinel-%d:26379", i)
	}
	return strings.Join(addrs, ", ")
}
