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
	// Cache tunes the token cache.
	Cache Cache
	// Tenants are the upstream identities the broker holds keys for; at
	// least one, with unique ids.
	Tenants []Tenant
	// Callers are the client services and what they may ask for; at least
	// one, with unique names and key hashes.
	Callers []Caller
}

// Listen holds validated host:port addresses.
type Listen struct {
	// GRPC is the plaintext gRPC address; its host is a loopback IP literal
	// or "localhost".
	GRPC string
	// HTTP serves the JWKS, metrics and health endpoints.
	HTTP string
}

// Cache tunes the token cache.
type Cache struct {
	// Skew is how long before its expiry a cached token counts as expired.
	Skew time.Duration
}

// Tenant is one upstream identity: where to exchange, what to claim and
// which key signs the assertion.
type Tenant struct {
	// ID is the tenant id: 1-128 of [A-Za-z0-9._-], unique.
	ID string
	// Upstream says how to exchange an assertion for an access token.
	Upstream Upstream
	// Issuer, Subject and Audience are the assertion's iss, sub and aud, as
	// the upstream gave them to this tenant.
	Issuer, Subject, Audience string
	// KeyFile is the path of the private key: absolute, or resolved against
	// the base directory given to [Parse] ([Load] makes it absolute). It
	// existed and was a regular file when the config was parsed.
	KeyFile string
	// AssertionLifetime is exp − iat of the signed assertion, at most an hour.
	AssertionLifetime time.Duration
	// UIDMode says what the assertion's uid claim holds for a tenant-level
	// token.
	UIDMode UIDMode
}

// Upstream is a tenant's token endpoint and how to talk to it.
type Upstream struct {
	// Kind is the exchanger: "pismo_oidc", the only kind supported yet.
	Kind string
	// TokenURL is the absolute token endpoint: https, or http on loopback.
	TokenURL *url.URL
	// Timeout bounds one HTTP exchange, from dial to the end of the body.
	Timeout time.Duration
}

// UIDMode says what the Pismo assertion's uid claim holds when no account is
// asked for (the two Pismo pages disagree, so each tenant says).
type UIDMode string

// The uid modes.
const (
	UIDOmit   UIDMode = "omit"   // no uid claim; the default
	UIDTenant UIDMode = "tenant" // uid = the tenant id
)

// Caller is a client service, known by the SHA-256 of its bearer key.
type Caller struct {
	// Name identifies the caller in logs and metrics: 1-64 of
	// [A-Za-z0-9._-], unique.
	Name string
	// APIKeySHA256 is the SHA-256 of the caller's bearer key, unique.
	APIKeySHA256 [32]byte
	// Allow lists what the caller may ask for; at least one grant.
	Allow []Grant
}

// Grant lets a caller have tokens of one tenant.
type Grant struct {
	// Tenant is the id of a configured tenant.
	Tenant string
	// Groups are exact group names, or patterns whose last ":"-separated
	// segment is "*" (or "*" alone); at least one.
	Groups []string
	// AccountTokens lets the caller ask for a token for an account.
	AccountTokens bool
}

// maxFileSize caps what Load reads.
const maxFileSize = 1 << 20

// Load reads the config file at path (at most 1 MiB) and parses it with
// [Parse], resolving relative key files against the file's directory made
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

// Parse parses and validates a YAML config. Relative key_file paths are
// resolved against baseDir (the current directory when it is empty), and
// every key file must exist and be a regular file.
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
