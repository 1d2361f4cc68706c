package config

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is a validated configuration. Every field holds a checked value
// with its default applied.
type Config struct {
	// Listen holds the addresses the broker listens on.
	Listen Listen
	// ShutdownGrace is how long in-flight calls may finish after SIGTERM.
	ShutdownGrace time.Duration
	// TLS serves gRPC over TLS, and with a client CA names callers by their
	// certificates; nil serves plaintext, on loopback only.
	TLS *TLS
	// Audit is where each decision is written; nil writes no audit trail.
	Audit *Audit
	// RateLimit is the default rate limit of every caller that sets none of
	// its own; nil leaves those callers unlimited.
	RateLimit *RateLimit
	// Cache tunes the token cache.
	Cache Cache
	// Tenants are the upstream identities the broker holds keys for; at
	// least one, with unique ids.
	Tenants []Tenant
	// Callers are the client services and what they may ask for; at least
	// one, with unique names, key hashes and TLS identities.
	Callers []Caller
}

// Listen holds validated host:port addresses.
type Listen struct {
	// GRPC is the gRPC address. Without [Config.TLS] it is plaintext and
	// its host is a loopback IP literal or "localhost".
	GRPC string
	// HTTP serves the JWKS, metrics and health endpoints.
	HTTP string
}

// TLS holds the files of the gRPC listener's TLS. Each path is absolute, or
// resolved against the base directory given to [Parse] like
// [Key.File], and each file existed and was a regular file when the
// config was parsed; reading them is the caller's work.
type TLS struct {
	// CertFile holds the server's PEM certificate chain.
	CertFile string
	// KeyFile holds the server certificate's private key.
	KeyFile string
	// ClientCAFile holds the PEM certificates of the CAs that issue caller
	// certificates; set, callers present certificates (mTLS) and a caller
	// may be matched by [Caller.TLSIdentity]. "" when absent.
	ClientCAFile string
}

// Audit says where the audit trail goes and what happens when it cannot be
// written.
type Audit struct {
	// File is the trail's path, resolved like [Key.File], or "-" for
	// standard output. A file need not exist yet; its directory did.
	File string
	// FailClosed refuses calls while the trail cannot be written; by
	// default they are served, and the failure is logged and counted.
	FailClosed bool
	// Queue is how many records may wait for the writer: 1-1000000,
	// 4096 by default.
	Queue int
}

// RateLimit is a token bucket: Rate tokens a second, up to Burst at once.
type RateLimit struct {
	// Rate is the sustained rate, in calls a second: more than 0, at most
	// 1000000.
	Rate float64
	// Burst is the bucket's size: 1-1000000.
	Burst int
}

// Cache tunes the token cache.
type Cache struct {
	// Skew is how long before its expiry a cached token counts as expired.
	Skew time.Duration
	// RefreshFraction is the share of a token's usable life left when a
	// hit starts its background refresh: 0 (no refresh-ahead) to 0.9, 0.2
	// by default.
	RefreshFraction float64
	// MaxEntries bounds the cache: 1-10000000, 100000 by default.
	MaxEntries int
	// NegativeTTL is how long an upstream's refusal is remembered for its
	// key: 0 (not at all) to 1m, 5s by default.
	NegativeTTL time.Duration
	// Shared is the cache tier the broker's replicas share through Redis;
	// nil when absent: each replica caches on its own.
	Shared *SharedCache
}

// SharedCache lets replicas share cached tokens through Redis, sealed with
// an encryption key so that Redis holds no token in the clear. Its file
// paths are resolved like [Key.File] but, unlike the key and TLS files,
// not checked: reading them, and checking their permissions, is the
// caller's work.
type SharedCache struct {
	// Redis is where the shared tokens are kept.
	Redis Redis
	// EncryptionKeyFile is the path of the file holding the key that seals
	// the tokens: 32 bytes in base64 (openssl rand -base64 32).
	EncryptionKeyFile string
	// PreviousEncryptionKeyFiles are the paths of keys being rotated out:
	// values sealed under them still open, but nothing new is sealed with
	// them. At most 4, each different from EncryptionKeyFile and from the
	// others; nil when absent or empty.
	PreviousEncryptionKeyFiles []string
}

// DefaultRedisTimeout is [Redis.Timeout] when the config sets none.
const DefaultRedisTimeout = 50 * time.Millisecond

// Redis says how to reach the Redis server of the shared cache: at Addr, or
// through the sentinels of Sentinel. Exactly one of the two is set. The
// other fields apply to the Redis server (the master, with Sentinel).
type Redis struct {
	// Addr is the server's host:port, with a host and a port from 1 to
	// 65535; "" when Sentinel is set.
	Addr string
	// Sentinel finds the Redis master through Redis Sentinel, following
	// its failovers; nil when Addr is set.
	Sentinel *RedisSentinel
	// Username is the ACL user; "" when absent, for Redis's default user.
	Username string
	// PasswordFile is the path of the file holding the password, resolved
	// like [Key.File]; "" when absent: no password. The password itself is
	// never in the config.
	PasswordFile string
	// DB is the logical database: 0-65535, 0 by default.
	DB int
	// Timeout bounds each round trip to Redis: 1ms-5s,
	// [DefaultRedisTimeout] by default. With Sentinel, it bounds each
	// question to a sentinel too.
	Timeout time.Duration
	// TLS talks to Redis over TLS; nil talks plain TCP. With Sentinel, it
	// applies to the sentinels too: the client has one TLS configuration
	// for both.
	TLS *RedisTLS
}

// RedisSentinel names the Redis master that the sentinels monitor and
// where the sentinels are. Its credentials are the sentinels' own: the
// master's are those of [Redis].
type RedisSentinel struct {
	// Master is the name the sentinels monitor the master under (sentinel
	// monitor NAME ...); required.
	Master string
	// Addrs are the sentinels' host:port addresses, each with a host and a
	// port from 1 to 65535: 1-16, no two the same.
	Addrs []string
	// Username is the sentinels' ACL user; "" when absent, for their
	// default user.
	Username string
	// PasswordFile is the path of the file holding the sentinels'
	// password, resolved like [Key.File]; "" when absent: no password.
	PasswordFile string
}

// RedisTLS is the client side of TLS to Redis. Each path is resolved like
// [Key.File]; "" means the field was absent.
type RedisTLS struct {
	// CAFile holds the PEM certificates of the CAs that issue the Redis
	// server's certificate; "" for the system roots.
	CAFile string
	// CertFile holds the PEM client certificate chain the broker presents;
	// set together with KeyFile, or neither is.
	CertFile string
	// KeyFile holds the client certificate's private key.
	KeyFile string
	// ServerName is the name the server's certificate must carry; "" for
	// the host of [Redis.Addr]. With [Redis.Sentinel], it is checked on the
	// master and on every sentinel alike; "" for the host each connection
	// dials: each sentinel's, and the master's address as the sentinels
	// report it.
	ServerName string
}

// Tenant is one upstream identity: where to exchange, what to claim and
// which key signs the assertion.
type Tenant struct {
	// ID is the tenant id: 1-128 of [A-Za-z0-9._-], unique.
	ID string
	// Upstream says how to exchange an assertion for an access token.
	Upstream Upstream
	// Issuer, Subject and Audience are the Pismo assertion's iss, sub and
	// aud, as the upstream gave them to a pismo_oidc tenant; a jwt_bearer
	// tenant may set Subject, the assertion's default sub. "" otherwise.
	Issuer, Subject, Audience string
	// Keys are the tenant's keys, in config order: exactly one is
	// [KeyActive]; none for a kind that signs nothing (see
	// [Upstream.SignsAssertions]). A tenant written with the single-key shorthand (key_file,
	// key_id, key_passphrase_file, key_passphrase_env,
	// allow_group_readable_key) has one active key here.
	Keys []Key
	// AssertionLifetime is exp − iat of the signed assertion: at most an
	// hour, at most 5 minutes for private_key_jwt; 5 minutes by default.
	AssertionLifetime time.Duration
	// UIDMode says what the Pismo assertion's uid claim holds for a
	// tenant-level token; "omit" for the other kinds.
	UIDMode UIDMode
	// Alg is the JWS algorithm the tenant's keys sign with: "RS256", "PS256"
	// or "ES256"; "" when absent, for each key's own default (RS256 for RSA,
	// ES256 for EC P-256). A pismo_oidc tenant's is "" or "RS256", the only
	// algorithm Pismo verifies. Whether it fits each key is checked when the
	// keys are loaded.
	Alg string
}

// KeyState is where a key stands in its rotation.
type KeyState string

// The states of a tenant's key.
const (
	// KeyNext is published in the JWKS but does not sign yet: the state a
	// new key waits in while upstreams learn it.
	KeyNext KeyState = "next"
	// KeyActive signs the tenant's assertions and is published; a tenant
	// has exactly one.
	KeyActive KeyState = "active"
	// KeyRetired is neither loaded nor published; its file need not exist.
	KeyRetired KeyState = "retired"
)

// Key is one of a tenant's keys: a key file or a key in a PKCS#11 token.
type Key struct {
	// State says whether the key signs, is only published, or is gone.
	State KeyState
	// File is the path of the private key file: absolute, or resolved
	// against the base directory given to [Parse] ([Load] makes it
	// absolute). Unless the key is retired, it existed and was a regular
	// file when the config was parsed. "" for a PKCS#11 key.
	File string
	// PKCS11 names a key held in a PKCS#11 token instead of a file; nil for
	// a key file.
	PKCS11 *PKCS11
	// KeyID is the kid of the key to take from a JWK Set key file: 1-256
	// printable ASCII characters; for a PKCS#11 key, the kid to publish and
	// sign with instead of the key's thumbprint. "" when absent.
	KeyID string
	// PassphraseFile is the path of the file holding the passphrase of an
	// encrypted key file, resolved like File; it existed and was a regular
	// file when the config was parsed. Reading it, and trimming its
	// trailing newline, is the caller's work. "" when absent.
	PassphraseFile string
	// PassphraseEnv is the name of the environment variable holding the
	// passphrase instead: [A-Z_][A-Z0-9_]*; "" when absent. At most one of
	// PassphraseFile and PassphraseEnv is set; the passphrase itself is
	// never in the config.
	PassphraseEnv string
	// AllowGroupReadable accepts a key file that group or others may read
	// (such as a Kubernetes secret volume mounted 0440 or 0640); one that
	// they may write is refused all the same. False by default.
	AllowGroupReadable bool
	// Field is where the key is in the config, for messages: the prefix to
	// which "file", "passphrase_file" or "passphrase_env" is appended to
	// name the field, "tenants[0].key_" for the single-key shorthand and
	// "tenants[0].keys[1]." in a list.
	Field string
}

// PKCS11 is a key inside a PKCS#11 token (an HSM): it signs there, and the
// broker never holds its bytes.
type PKCS11 struct {
	// URI is the RFC 7512 "pkcs11:" URI naming the token and the key, at
	// most 4096 bytes. Its attributes are checked when the key is opened.
	URI string
	// Module is the path of the PKCS#11 module (a shared library), resolved
	// like [Key.File]; it existed and was a regular file when the config
	// was parsed.
	Module string
	// PINFile is the path of the file holding the token's user PIN,
	// resolved and checked like Module.
	PINFile string
}

// Upstream is a tenant's token endpoint and how to talk to it.
type Upstream struct {
	// Kind is the exchanger: one of the Kind constants.
	Kind string
	// TokenURL is the absolute token endpoint: https, or http on loopback.
	// Nil when the endpoint is discovered from Issuer.
	TokenURL *url.URL
	// Issuer is the OpenID provider whose discovery document
	// (/.well-known/openid-configuration) names the token endpoint, for the
	// standard kinds; nil when TokenURL is given. Exactly one of the two is
	// set. Same URL rules as TokenURL, without a query.
	Issuer *url.URL
	// ClientID is the OAuth client id: 1-1024 printable ASCII characters.
	// Required by every kind but pismo_oidc (which has none) and jwt_bearer
	// (whose default is the client_email of a service-account key).
	ClientID string
	// AssertionAudience is the aud of a private_key_jwt client assertion:
	// [AudienceTokenEndpoint] (the default) or [AudienceIssuer].
	AssertionAudience string
	// ClientSecretFile is the path of the file holding the client secret of
	// the client_secret_post, client_secret_basic and pismo_oauth2 kinds,
	// resolved like [Key.File]; it existed and was a regular file when the
	// config was parsed. "" when the secret comes from ClientSecretEnv.
	ClientSecretFile string
	// ClientSecretEnv is the name of the environment variable holding the
	// client secret instead: [A-Z_][A-Z0-9_]*. Exactly one of the two is set
	// for the kinds that take a secret; the secret is never in the config.
	ClientSecretEnv string
	// Timeout bounds one HTTP exchange, from dial to the end of the body.
	Timeout time.Duration
}

// The upstream kinds.
const (
	// KindPismoOIDC is Pismo's OpenID endpoint: a signed assertion posted as
	// {"token": ...}.
	KindPismoOIDC = "pismo_oidc"
	// KindPismoOAuth2 is Pismo's client-credentials endpoint, with a secret.
	KindPismoOAuth2 = "pismo_oauth2"
	// KindPrivateKeyJWT is the client-credentials grant with RFC 7523 client
	// authentication (OIDC Core §9 private_key_jwt).
	KindPrivateKeyJWT = "private_key_jwt"
	// KindClientSecretPost is the client-credentials grant with the secret
	// in the form.
	KindClientSecretPost = "client_secret_post"
	// KindClientSecretBasic is the client-credentials grant with the secret
	// in HTTP Basic authentication.
	KindClientSecretBasic = "client_secret_basic"
	// KindJWTBearer is the RFC 7523 §2.1 JWT-bearer grant, as Google service
	// accounts use it.
	KindJWTBearer = "jwt_bearer"
)

// The values of [Upstream.AssertionAudience].
const (
	AudienceTokenEndpoint = "token_endpoint"
	AudienceIssuer        = "issuer"
)

// SignsAssertions reports whether the kind signs with the tenant's keys;
// the other kinds authenticate with a client secret and take no keys.
func (u Upstream) SignsAssertions() bool {
	switch u.Kind {
	case KindPismoOIDC, KindPrivateKeyJWT, KindJWTBearer:
		return true
	}
	return false
}

// UIDMode says what the Pismo assertion's uid claim holds when no account is
// asked for (the two Pismo pages disagree, so each tenant says).
type UIDMode string

// The uid modes.
const (
	UIDOmit   UIDMode = "omit"   // no uid claim; the default
	UIDTenant UIDMode = "tenant" // uid = the tenant id
)

// Caller is a client service, known by the SHA-256 of its bearer key, by
// the identity its certificate names, or by both; at least one of them.
type Caller struct {
	// Name identifies the caller in logs and metrics: 1-64 of
	// [A-Za-z0-9._-], unique.
	Name string
	// APIKeySHA256 is the SHA-256 of the caller's bearer key, unique; the
	// zero value when HasAPIKey is false.
	APIKeySHA256 [32]byte
	// HasAPIKey says the caller has a bearer key: api_key_sha256 was set.
	HasAPIKey bool
	// TLSIdentity is the identity the caller's client certificate names:
	// its URI SAN (a SPIFFE ID such as "spiffe://corp/payments-api") or
	// else its CN; unique, and "" when the caller is not matched by
	// certificate. It is set only when [TLS.ClientCAFile] is.
	TLSIdentity string
	// Mode says whether the caller's allowlist is enforced or only audited.
	Mode CallerMode
	// RateLimit overrides [Config.RateLimit] for this caller; nil when the
	// caller sets none.
	RateLimit *RateLimit
	// Allow lists what the caller may ask for; at least one grant.
	Allow []Grant
}

// CallerMode says what happens to a call the caller's allowlist refuses.
type CallerMode string

// The caller modes.
const (
	ModeEnforce CallerMode = "enforce" // refused; the default
	ModeAudit   CallerMode = "audit"   // served, and audited as would_deny
)

// Grant lets a caller have tokens of one tenant.
type Grant struct {
	// Tenant is the id of a configured tenant.
	Tenant string
	// Groups are exact group names, or patterns whose last ":"-separated
	// segment is "*" (or "*" alone); at least one.
	Groups []string
	// AccountTokens lets the caller ask for a token for an account.
	AccountTokens bool
	// UIDPattern is a Go regular expression, as written, that the account
	// id asked for (uid or external_account_id) must match as a whole: it
	// is meant to be compiled as "^(?:" + UIDPattern + ")$", which Parse
	// checked. "" when absent: any account id. Set only with AccountTokens.
	UIDPattern string
	// CustomClaims are the custom_claims keys the caller may set, each
	// 1-64 of [A-Za-z0-9_]; none when empty.
	CustomClaims []string
	// MaxMinTTL is the largest min_ttl the caller may ask for, at most
	// 55m; 0 when absent: no limit of the grant's own.
	MaxMinTTL time.Duration
}

// maxFileSize caps what Load reads.
const maxFileSize = 1 << 20

// Load reads the config file at path (at most 1 MiB) and parses it with
// [Parse], resolving relative file paths against the file's directory made
// absolute. Problems in the content come back as an [*Error]; a file that
// cannot be read gives a plain error.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err) // names the file
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("config: %s is larger than 1 MiB", path)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, dir)
}

// Parse parses and validates a YAML config. Relative file paths (key_file,
// the tls files, audit.file, the files of cache.shared) are resolved
// against baseDir (the current directory when it is empty); every key file
// and every file of the tls block must exist and be a regular file, and the
// audit file's directory must exist. The files of cache.shared are only
// resolved.
//
// On failure the error is an [*Error] listing every problem found.
func Parse(data []byte, baseDir string) (*Config, error) {
	p := newParser(len(data), baseDir)
	raw, ok := p.decodeDocument(data)
	var cfg *Config
	if ok {
		cfg = p.validate(raw)
	}
	if len(p.problems) > 0 {
		return nil, p.err()
	}
	return cfg, nil
}

// Error lists every problem found in a config, in document order.
type Error struct {
	Problems []Problem
}

// Error returns one problem per line.
func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return "config: invalid"
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Problem is one thing wrong with a config.
type Problem struct {
	// Path names the field as in the YAML, such as
	// "callers[0].allow[2].groups[1]"; empty for the document as a whole.
	Path string
	// Line is the 1-based YAML line, or 0 when unknown.
	Line int
	// Msg says what is wrong; it never holds a secret value.
	Msg string
}

// String formats the problem on one line: "path: msg (line N)", leaving out
// what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", p.Line)
	}
	return b.String()
}
