package config_test

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/config"
)

// base is a valid config; tests edit it with [edit]. The line numbers matter:
// rows of the problem tables name them.
const base = `listen:
  grpc: 127.0.0.1:7443
  http: 127.0.0.1:7080
shutdown_grace: 15s
cache:
  skew: 10s
tenants:
  - id: tn-a
    upstream:
      kind: pismo_oidc
      token_url: https://sandbox.example/token
      timeout: 10s
    issuer: iss
    subject: sub
    audience: aud
    key_file: k.pem
    assertion_lifetime: 5m
    uid_mode: omit
  - id: tn-b
    upstream:
      kind: pismo_oidc
      token_url: https://sandbox.example/b/token
    issuer: iss-b
    subject: sub-b
    audience: aud-b
    key_file: ./k.pem
callers:
  - name: payments-api
    api_key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    allow:
      - tenant: tn-a
        groups: ["pismo-v1:accounts:*", "pismo-v1:cards:r"]
        account_tokens: true
      - tenant: tn-b
        groups: ["*"]
  - name: reports
    api_key_sha256: 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
    allow:
      - tenant: tn-b
        groups: [a]
`

// edit returns base with each old string replaced by the new one after it;
// each old string must occur exactly once.
func edit(t testing.TB, oldNew ...string) string {
	t.Helper()
	doc := base
	for i := 0; i+1 < len(oldNew); i += 2 {
		if n := strings.Count(doc, oldNew[i]); n != 1 {
			t.Fatalf("edit: %q occurs %d times, want 1", oldNew[i], n)
		}
		doc = strings.Replace(doc, oldNew[i], oldNew[i+1], 1)
	}
	return doc
}

// keyDir returns a temporary directory holding the key file k.pem.
func keyDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.pem"), []byte("not parsed here"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// problems parses doc, which must fail, and returns its problems.
func problems(t *testing.T, doc, dir string) []config.Problem {
	t.Helper()
	cfg, err := config.Parse([]byte(doc), dir)
	if err == nil {
		t.Fatalf("Parse succeeded with %+v, want an error", cfg)
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("Parse error %T %q, want *config.Error", err, err)
	}
	if cfg != nil {
		t.Errorf("Parse returned a config with an error")
	}
	return ce.Problems
}

func TestLoadValid(t *testing.T) {
	cfg, err := config.Load("testdata/valid.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	keyFile, err := filepath.Abs("testdata/keys/tn-example.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Listen, (config.Listen{GRPC: "127.0.0.1:7443", HTTP: "127.0.0.1:7080"}); got != want {
		t.Errorf("Listen = %+v, want %+v", got, want)
	}
	if got, want := cfg.ShutdownGrace, 20*time.Second; got != want {
		t.Errorf("ShutdownGrace = %v, want %v", got, want)
	}
	if got, want := cfg.Cache.Skew, 30*time.Second; got != want {
		t.Errorf("Cache.Skew = %v, want %v", got, want)
	}
	if got, want := len(cfg.Tenants), 2; got != want {
		t.Fatalf("%d tenants, want %d", got, want)
	}

	type tenant struct {
		id, kind, url             string
		timeout                   time.Duration
		issuer, subject, audience string
		keyFile                   string
		lifetime                  time.Duration
		uidMode                   config.UIDMode
	}
	wantTenants := []tenant{
		{"tn-example", "pismo_oidc", "https://sandbox.example/passport/v1/oauth2/token", 5 * time.Second,
			"verifier-issuer", "verifier-subject", "verifier-audience", keyFile, time.Hour, config.UIDTenant},
		// Every optional field left out: the defaults.
		{"tn-defaults", "pismo_oidc", "http://127.0.0.1:9/token", 10 * time.Second,
			"iss-2", "sub-2", "aud-2", keyFile, 5 * time.Minute, config.UIDOmit},
	}
	for i, w := range wantTenants {
		tn := cfg.Tenants[i]
		if tn.Upstream.TokenURL == nil {
			t.Fatalf("tenants[%d].Upstream.TokenURL is nil", i)
		}
		got := tenant{tn.ID, tn.Upstream.Kind, tn.Upstream.TokenURL.String(), tn.Upstream.Timeout,
			tn.Issuer, tn.Subject, tn.Audience, tn.KeyFile, tn.AssertionLifetime, tn.UIDMode}
		if got != w {
			t.Errorf("tenants[%d] = %+v\nwant %+v", i, got, w)
		}
	}
	if got, want := cfg.Tenants[0].Upstream.TokenURL.Host, "sandbox.example"; got != want {
		t.Errorf("TokenURL.Host = %q, want %q", got, want)
	}

	if got, want := len(cfg.Callers), 2; got != want {
		t.Fatalf("%d callers, want %d", got, want)
	}
	c := cfg.Callers[0]
	// The file spells this hash in upper case.
	if got, want := c.APIKeySHA256, sha256.Sum256([]byte("test")); got != want {
		t.Errorf("callers[0].APIKeySHA256 = %x, want %x", got, want)
	}
	if got, want := cfg.Callers[1].APIKeySHA256, sha256.Sum256([]byte("test2")); got != want {
		t.Errorf("callers[1].APIKeySHA256 = %x, want %x", got, want)
	}
	if got, want := c.Name, "payments-api"; got != want {
		t.Errorf("callers[0].Name = %q, want %q", got, want)
	}
	wantAllow := []config.Grant{
		{Tenant: "tn-example", Groups: []string{"pismo-v1:accounts:*", "pismo-v1:cards:r"}, AccountTokens: true},
		{Tenant: "tn-defaults", Groups: []string{"*"}},
	}
	if got, want := c.Allow, wantAllow; !slices.EqualFunc(got, want, grantEqual) {
		t.Errorf("callers[0].Allow = %+v, want %+v", got, want)
	}
	if got, want := cfg.Callers[1].Allow, []config.Grant{{Tenant: "tn-example", Groups: []string{"pismo-v1:statements:r"}}}; !slices.EqualFunc(got, want, grantEqual) {
		t.Errorf("callers[1].Allow = %+v, want %+v", got, want)
	}
}

func grantEqual(a, b config.Grant) bool {
	return a.Tenant == b.Tenant && slices.Equal(a.Groups, b.Groups) && a.AccountTokens == b.AccountTokens
}

func TestParseDefaults(t *testing.T) {
	dir := keyDir(t)
	doc := `
tenants:
  - id: t
    upstream: {kind: pismo_oidc, token_url: "https://idp.example/token"}
    issuer: i
    subject: s
    audience: a
    key_file: k.pem
callers:
  - name: c
    api_key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    allow: [{tenant: t, groups: [g]}]
`
	cfg, err := config.Parse([]byte(doc), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tn := cfg.Tenants[0]
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"Listen.GRPC", cfg.Listen.GRPC, "127.0.0.1:7443"},
		{"Listen.HTTP", cfg.Listen.HTTP, "127.0.0.1:7080"},
		{"ShutdownGrace", cfg.ShutdownGrace, 15 * time.Second},
		{"Cache.Skew", cfg.Cache.Skew, 10 * time.Second},
		{"Upstream.Timeout", tn.Upstream.Timeout, 10 * time.Second},
		{"AssertionLifetime", tn.AssertionLifetime, 5 * time.Minute},
		{"UIDMode", tn.UIDMode, config.UIDOmit},
		{"KeyFile", tn.KeyFile, filepath.Join(dir, "k.pem")},
		{"AccountTokens", cfg.Callers[0].Allow[0].AccountTokens, false},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// A null value, such as an empty section, is the same as an absent one.
func TestParseNullIsAbsent(t *testing.T) {
	doc := edit(t, "shutdown_grace: 15s\ncache:\n  skew: 10s\n", "shutdown_grace: ~\ncache:\n")
	cfg, err := config.Parse([]byte(doc), keyDir(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := cfg.ShutdownGrace, 15*time.Second; got != want {
		t.Errorf("ShutdownGrace = %v, want %v", got, want)
	}
	if got, want := cfg.Cache.Skew, 10*time.Second; got != want {
		t.Errorf("Cache.Skew = %v, want %v", got, want)
	}
}

func TestParseKeyFilePaths(t *testing.T) {
	dir := keyDir(t)
	abs := filepath.Join(t.TempDir(), "abs.pem")
	if err := os.WriteFile(abs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, keyFile, want string
	}{
		{"relative", "k.pem", filepath.Join(dir, "k.pem")},
		{"relative, cleaned", "sub/../k.pem", filepath.Join(dir, "k.pem")},
		{"absolute", abs, abs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := edit(t, "key_file: k.pem\n", "key_file: "+tc.keyFile+"\n")
			cfg, err := config.Parse([]byte(doc), dir)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got, want := cfg.Tenants[0].KeyFile, tc.want; got != want {
				t.Errorf("KeyFile = %q, want %q", got, want)
			}
		})
	}
}

// Load resolves key files against the config file's directory, made
// absolute, whatever the current directory.
func TestLoadResolvesAgainstConfigDir(t *testing.T) {
	dir := keyDir(t)
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	cfg, err := config.Load("broker.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := cfg.Tenants[0].KeyFile, filepath.Join(dir, "k.pem"); got != want {
		t.Errorf("KeyFile = %q, want %q", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", 1<<20)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"directory", dir, "is a directory"},
		{"too large", big, "larger than 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(tc.path)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if got := err.Error(); !strings.Contains(got, tc.want) || !strings.HasPrefix(got, "config: ") {
				t.Errorf("Load error %q, want it to start with \"config: \" and contain %q", got, tc.want)
			}
			if ce := (*config.Error)(nil); errors.As(err, &ce) {
				t.Errorf("Load error is a *config.Error, want a plain error for an unreadable file")
			}
		})
	}
}

// YAML anchors, aliases and merge keys work as in any YAML decoder; fields
// merged in are checked like the others.
func TestParseAnchorsAndMerge(t *testing.T) {
	dir := keyDir(t)
	doc := `
tenants:
  - &t
    id: t1
    upstream: &up {kind: pismo_oidc, token_url: "https://idp.example/token", timeout: 3s}
    issuer: i
    subject: s
    audience: a
    key_file: k.pem
  - <<: *t
    id: t2
    upstream:
      <<: *up
      timeout: 4s
callers:
  - name: c
    api_key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    allow: [{tenant: t2, groups: &g [a, b]}, {tenant: t1, groups: *g}]
`
	cfg, err := config.Parse([]byte(doc), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	t2 := cfg.Tenants[1]
	if got, want := t2.ID, "t2"; got != want {
		t.Errorf("tenants[1].ID = %q, want %q (own fields override merged ones)", got, want)
	}
	if got, want := t2.Issuer, "i"; got != want {
		t.Errorf("tenants[1].Issuer = %q, want %q", got, want)
	}
	if got, want := t2.Upstream.Timeout, 4*time.Second; got != want {
		t.Errorf("tenants[1].Upstream.Timeout = %v, want %v", got, want)
	}
	if got, want := cfg.Tenants[0].Upstream.Timeout, 3*time.Second; got != want {
		t.Errorf("tenants[0].Upstream.Timeout = %v, want %v", got, want)
	}
	if got, want := cfg.Callers[0].Allow[1].Groups, []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("allow[1].Groups = %q, want %q", got, want)
	}

	// An unknown field in a merged mapping is reported where it is merged,
	// with the line where it is written.
	bad := strings.Replace(doc, "timeout: 3s}", "timeout: 3s, retries: 2}", 1)
	got := problems(t, bad, dir)
	want := []config.Problem{
		{Path: "tenants[0].upstream.retries", Line: 5, Msg: "unknown field"},
		{Path: "tenants[1].upstream.retries", Line: 5, Msg: "unknown field"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems = %+v\nwant %+v", got, want)
	}
}
