package config_test

import (
	"crypto/sha256"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
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

// full is base with every optional part of the config added after its
// last line, so that base's lines keep their numbers: a third caller,
// matched by certificate, with every caller and grant field (lines 41-51),
// then tls, audit and rate_limit (lines 52-60). It needs the files of
// [keyDir].
const full = base + `  - name: batch
    tls_identity: spiffe://corp/batch
    mode: audit
    rate_limit: {rate: 200, burst: 400}
    allow:
      - tenant: tn-a
        groups: ["pismo-v1:statements:*"]
        account_tokens: true
        uid_pattern: "[0-9]{1,12}"
        custom_claims: [channel, user]
        max_min_ttl: 30m
tls:
  cert_file: server.crt
  key_file: server.key
  client_ca_file: ca.crt
audit:
  file: audit.jsonl
  fail_closed: true
  queue: 100
rate_limit: {rate: 50, burst: 100}
`

// edit returns base with each old string replaced by the new one after it;
// each old string must occur exactly once.
func edit(t testing.TB, oldNew ...string) string {
	t.Helper()
	return replace(t, base, oldNew...)
}

// keyOpt returns base with the YAML line opt added to tenants[0] after its
// key_file, as line 17.
func keyOpt(t testing.TB, opt string) string {
	t.Helper()
	return edit(t, "key_file: k.pem\n", "key_file: k.pem\n    "+opt+"\n")
}

// keyList returns base with tenants[0]'s key_file replaced by a key list:
// "keys:" on line 16, then items, the first on line 17.
func keyList(t testing.TB, items string) string {
	t.Helper()
	return edit(t, "    key_file: k.pem\n", "    keys:\n"+items)
}

// editFull is [edit] for [full].
func editFull(t testing.TB, oldNew ...string) string {
	t.Helper()
	return replace(t, full, oldNew...)
}

func replace(t testing.TB, doc string, oldNew ...string) string {
	t.Helper()
	for i := 0; i+1 < len(oldNew); i += 2 {
		if n := strings.Count(doc, oldNew[i]); n != 1 {
			t.Fatalf("edit: %q occurs %d times, want 1", oldNew[i], n)
		}
		doc = strings.Replace(doc, oldNew[i], oldNew[i+1], 1)
	}
	return doc
}

// keyDir returns a temporary directory holding the key file k.pem and the
// TLS files server.crt, server.key and ca.crt.
func keyDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"k.pem", "server.crt", "server.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not parsed here"), 0o600); err != nil {
			t.Fatal(err)
		}
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
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(testdata, "keys", "tn-example.pem")
	if got, want := cfg.Listen, (config.Listen{GRPC: "0.0.0.0:7443", HTTP: "127.0.0.1:7080"}); got != want {
		t.Errorf("Listen = %+v, want %+v", got, want)
	}
	if got, want := cfg.ShutdownGrace, 20*time.Second; got != want {
		t.Errorf("ShutdownGrace = %v, want %v", got, want)
	}
	wantTLS := config.TLS{
		CertFile:     filepath.Join(testdata, "tls", "server.crt"),
		KeyFile:      filepath.Join(testdata, "tls", "server.key"),
		ClientCAFile: filepath.Join(testdata, "tls", "callers-ca.crt"),
	}
	if got, want := cfg.TLS, wantTLS; got == nil || *got != want {
		t.Errorf("TLS = %+v, want %+v", got, want)
	}
	if got, want := cfg.Audit, (config.Audit{File: filepath.Join(testdata, "audit.jsonl"), FailClosed: true, Queue: 1000}); got == nil || *got != want {
		t.Errorf("Audit = %+v, want %+v", got, want)
	}
	if got, want := cfg.RateLimit, (config.RateLimit{Rate: 50, Burst: 100}); got == nil || *got != want {
		t.Errorf("RateLimit = %+v, want %+v", got, want)
	}
	if got, want := cfg.Cache.Skew, 30*time.Second; got != want {
		t.Errorf("Cache.Skew = %v, want %v", got, want)
	}

	type tenant struct {
		id, kind, url             string
		timeout                   time.Duration
		issuer, subject, audience string
		keys                      []config.Key
		lifetime                  time.Duration
		uidMode                   config.UIDMode
		alg                       string
	}
	wantTenants := []tenant{
		{"tn-example", "pismo_oidc", "https://sandbox.example/passport/v1/oauth2/token", 5 * time.Second,
			"verifier-issuer", "verifier-subject", "verifier-audience",
			[]config.Key{{State: config.KeyActive, File: keyFile, KeyID: "tn-example-2024",
				PassphraseFile: filepath.Join(testdata, "keys", "tn-example.pass"), AllowGroupReadable: true, Field: "tenants[0].key_"}},
			time.Hour, config.UIDTenant, "RS256"},
		// Every optional field left out: the defaults.
		{"tn-defaults", "pismo_oidc", "http://127.0.0.1:9/token", 10 * time.Second,
			"iss-2", "sub-2", "aud-2", []config.Key{{State: config.KeyActive, File: keyFile, Field: "tenants[1].key_"}}, 5 * time.Minute, config.UIDOmit, ""},
		{"tn-env-passphrase", "pismo_oidc", "https://sandbox.example/passport/v1/oauth2/token", 10 * time.Second,
			"iss-3", "sub-3", "aud-3", []config.Key{{State: config.KeyActive, File: keyFile, PassphraseEnv: "TN_KEY_PASSPHRASE", Field: "tenants[2].key_"}},
			5 * time.Minute, config.UIDOmit, ""},
	}
	if got, want := len(cfg.Tenants), len(wantTenants); got != want {
		t.Fatalf("%d tenants, want %d", got, want)
	}
	for i, w := range wantTenants {
		tn := cfg.Tenants[i]
		if tn.Upstream.TokenURL == nil {
			t.Fatalf("tenants[%d].Upstream.TokenURL is nil", i)
		}
		got := tenant{tn.ID, tn.Upstream.Kind, tn.Upstream.TokenURL.String(), tn.Upstream.Timeout,
			tn.Issuer, tn.Subject, tn.Audience, tn.Keys, tn.AssertionLifetime, tn.UIDMode, tn.Alg}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("tenants[%d] = %+v\nwant %+v", i, got, w)
		}
	}
	if got, want := cfg.Tenants[0].Upstream.TokenURL.Host, "sandbox.example"; got != want {
		t.Errorf("TokenURL.Host = %q, want %q", got, want)
	}

	wantCallers := []config.Caller{
		{
			Name: "payments-api",
			// The file spells this hash in upper case.
			APIKeySHA256: sha256.Sum256([]byte("test")), HasAPIKey: true,
			TLSIdentity: "spiffe://corp/payments-api",
			Mode:        config.ModeAudit,
			RateLimit:   &config.RateLimit{Rate: 200.5, Burst: 400},
			Allow: []config.Grant{
				{
					Tenant: "tn-example", Groups: []string{"pismo-v1:accounts:*", "pismo-v1:cards:r"}, AccountTokens: true,
					UIDPattern: "[0-9]{1,12}", CustomClaims: []string{"channel", "user"}, MaxMinTTL: 30 * time.Minute,
				},
				{Tenant: "tn-defaults", Groups: []string{"*"}},
			},
		},
		// Every optional field left out: the defaults.
		{
			Name: "reports.batch_1", APIKeySHA256: sha256.Sum256([]byte("test2")), HasAPIKey: true, Mode: config.ModeEnforce,
			Allow: []config.Grant{{Tenant: "tn-example", Groups: []string{"pismo-v1:statements:r"}}},
		},
		{
			Name: "settlement", TLSIdentity: "settlement-job", Mode: config.ModeEnforce,
			Allow: []config.Grant{{Tenant: "tn-example", Groups: []string{"pismo-v1:settlements:r"}}},
		},
	}
	if got, want := len(cfg.Callers), len(wantCallers); got != want {
		t.Fatalf("%d callers, want %d", got, want)
	}
	for i, want := range wantCallers {
		if got := cfg.Callers[i]; !callerEqual(got, want) {
			t.Errorf("callers[%d] = %+v\nwant %+v", i, got, want)
		}
	}
}

func callerEqual(a, b config.Caller) bool {
	return a.Name == b.Name && a.APIKeySHA256 == b.APIKeySHA256 && a.HasAPIKey == b.HasAPIKey &&
		a.TLSIdentity == b.TLSIdentity && a.Mode == b.Mode &&
		(a.RateLimit == nil) == (b.RateLimit == nil) && (a.RateLimit == nil || *a.RateLimit == *b.RateLimit) &&
		slices.EqualFunc(a.Allow, b.Allow, grantEqual)
}

func grantEqual(a, b config.Grant) bool {
	return a.Tenant == b.Tenant && slices.Equal(a.Groups, b.Groups) && a.AccountTokens == b.AccountTokens &&
		a.UIDPattern == b.UIDPattern && slices.Equal(a.CustomClaims, b.CustomClaims) && a.MaxMinTTL == b.MaxMinTTL
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
	caller, grant := cfg.Callers[0], cfg.Callers[0].Allow[0]
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"TLS", cfg.TLS, (*config.TLS)(nil)},
		{"Audit", cfg.Audit, (*config.Audit)(nil)},
		{"RateLimit", cfg.RateLimit, (*config.RateLimit)(nil)},
		{"Caller.HasAPIKey", caller.HasAPIKey, true},
		{"Caller.TLSIdentity", caller.TLSIdentity, ""},
		{"Caller.Mode", caller.Mode, config.ModeEnforce},
		{"Caller.RateLimit", caller.RateLimit, (*config.RateLimit)(nil)},
		{"UIDPattern", grant.UIDPattern, ""},
		{"CustomClaims", grant.CustomClaims, []string(nil)},
		{"MaxMinTTL", grant.MaxMinTTL, time.Duration(0)},
		{"Listen.GRPC", cfg.Listen.GRPC, "127.0.0.1:7443"},
		{"Listen.HTTP", cfg.Listen.HTTP, "127.0.0.1:7080"},
		{"ShutdownGrace", cfg.ShutdownGrace, 15 * time.Second},
		{"Cache", cfg.Cache, config.Cache{Skew: 10 * time.Second, RefreshFraction: 0.2, MaxEntries: 100_000, NegativeTTL: 5 * time.Second}},
		{"Upstream.Timeout", tn.Upstream.Timeout, 10 * time.Second},
		{"AssertionLifetime", tn.AssertionLifetime, 5 * time.Minute},
		{"UIDMode", tn.UIDMode, config.UIDOmit},
		{"Keys", tn.Keys, []config.Key{{State: config.KeyActive, File: filepath.Join(dir, "k.pem"), Field: "tenants[0].key_"}}},
		{"AccountTokens", grant.AccountTokens, false},
		{"Alg", tn.Alg, ""},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// Every optional part of the config, parsed into typed values.
func TestParseFull(t *testing.T) {
	dir := keyDir(t)
	cfg, err := config.Parse([]byte(full), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	wantTLS := config.TLS{
		CertFile:     filepath.Join(dir, "server.crt"),
		KeyFile:      filepath.Join(dir, "server.key"),
		ClientCAFile: filepath.Join(dir, "ca.crt"),
	}
	if got, want := cfg.TLS, wantTLS; got == nil || *got != want {
		t.Errorf("TLS = %+v, want %+v", got, want)
	}
	if got, want := cfg.Audit, (config.Audit{File: filepath.Join(dir, "audit.jsonl"), FailClosed: true, Queue: 100}); got == nil || *got != want {
		t.Errorf("Audit = %+v, want %+v", got, want)
	}
	if got, want := cfg.RateLimit, (config.RateLimit{Rate: 50, Burst: 100}); got == nil || *got != want {
		t.Errorf("RateLimit = %+v, want %+v", got, want)
	}
	want := config.Caller{
		Name: "batch", TLSIdentity: "spiffe://corp/batch", Mode: config.ModeAudit,
		RateLimit: &config.RateLimit{Rate: 200, Burst: 400},
		Allow: []config.Grant{{
			Tenant: "tn-a", Groups: []string{"pismo-v1:statements:*"}, AccountTokens: true,
			UIDPattern: "[0-9]{1,12}", CustomClaims: []string{"channel", "user"}, MaxMinTTL: 30 * time.Minute,
		}},
	}
	if got := cfg.Callers[2]; !callerEqual(got, want) {
		t.Errorf("callers[2] = %+v\nwant %+v", got, want)
	}
	// The callers of base keep their keys, and the default mode.
	for i, c := range cfg.Callers[:2] {
		if !c.HasAPIKey || c.TLSIdentity != "" || c.Mode != config.ModeEnforce || c.RateLimit != nil {
			t.Errorf("callers[%d] = %+v, want a key, no identity, mode enforce and no rate limit of its own", i, c)
		}
	}
}

// Audit defaults, and where its file goes.
func TestParseAudit(t *testing.T) {
	dir := keyDir(t)
	abs := filepath.Join(t.TempDir(), "trail.jsonl")
	tests := []struct {
		name, block string
		want        config.Audit
	}{
		{"defaults", "audit:\n  file: audit.jsonl\n", config.Audit{File: filepath.Join(dir, "audit.jsonl"), Queue: 4096}},
		{"stdout", "audit: {file: \"-\"}\n", config.Audit{File: "-", Queue: 4096}},
		{"relative, cleaned", "audit: {file: sub/../audit.jsonl}\n", config.Audit{File: filepath.Join(dir, "audit.jsonl"), Queue: 4096}},
		{"absolute", "audit: {file: " + abs + "}\n", config.Audit{File: abs, Queue: 4096}},
		{"fail closed", "audit: {file: a.jsonl, fail_closed: true, queue: 1}\n", config.Audit{File: filepath.Join(dir, "a.jsonl"), FailClosed: true, Queue: 1}},
		{"fail open", "audit: {file: a.jsonl, fail_closed: false}\n", config.Audit{File: filepath.Join(dir, "a.jsonl"), Queue: 4096}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(base+tc.block), dir)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got, want := cfg.Audit, tc.want; got == nil || *got != want {
				t.Errorf("Audit = %+v, want %+v", got, want)
			}
		})
	}
}

// A null value, such as an empty section, is the same as an absent one.
func TestParseNullIsAbsent(t *testing.T) {
	doc := editFull(t,
		"tls:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n", "tls:\n",
		"audit:\n  file: audit.jsonl\n  fail_closed: true\n  queue: 100\n", "audit: ~\n",
		"rate_limit: {rate: 50, burst: 100}", "rate_limit: null",
		"    tls_identity: spiffe://corp/batch\n    mode: audit\n    rate_limit: {rate: 200, burst: 400}\n",
		"    api_key_sha256: 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\n    tls_identity: ~\n    mode:\n    rate_limit:\n",
		"uid_pattern: \"[0-9]{1,12}\"", "uid_pattern: ~",
		"custom_claims: [channel, user]", "custom_claims: ~",
		"max_min_ttl: 30m", "max_min_ttl: ~",
	)
	cfg, err := config.Parse([]byte(doc), keyDir(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.TLS != nil || cfg.Audit != nil || cfg.RateLimit != nil {
		t.Errorf("TLS, Audit, RateLimit = %+v, %+v, %+v, want nil", cfg.TLS, cfg.Audit, cfg.RateLimit)
	}
	c, g := cfg.Callers[2], cfg.Callers[2].Allow[0]
	if c.TLSIdentity != "" || c.Mode != config.ModeEnforce || c.RateLimit != nil || g.UIDPattern != "" || g.CustomClaims != nil || g.MaxMinTTL != 0 {
		t.Errorf("callers[2] = %+v, want the defaults", c)
	}
}

// A null section is the same as an absent one.
func TestParseNullSection(t *testing.T) {
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
			if got, want := cfg.Tenants[0].Keys[0].File, tc.want; got != want {
				t.Errorf("Keys[0].File = %q, want %q", got, want)
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
	if got, want := cfg.Tenants[0].Keys[0].File, filepath.Join(dir, "k.pem"); got != want {
		t.Errorf("Keys[0].File = %q, want %q", got, want)
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

// A key list: next, active (in a PKCS#11 token) and retired (its file gone),
// each with its options.
func TestParseKeyList(t *testing.T) {
	dir := keyDir(t)
	doc := keyList(t, `    - file: k.pem
      state: next
      key_id: kid-2027
      passphrase_env: NEXT_PASS
      allow_group_readable: true
    - state: active
      key_id: hsm-2026
      pkcs11:
        uri: "pkcs11:token=broker;object=tn-a"
        module: server.key
        pin_file: ca.crt
    - file: gone.pem
      state: retired
`)
	cfg, err := config.Parse([]byte(doc), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []config.Key{
		{State: config.KeyNext, File: filepath.Join(dir, "k.pem"), KeyID: "kid-2027", PassphraseEnv: "NEXT_PASS", AllowGroupReadable: true, Field: "tenants[0].keys[0]."},
		{State: config.KeyActive, KeyID: "hsm-2026", PKCS11: &config.PKCS11{
			URI: "pkcs11:token=broker;object=tn-a", Module: filepath.Join(dir, "server.key"), PINFile: filepath.Join(dir, "ca.crt")}, Field: "tenants[0].keys[1]."},
		{State: config.KeyRetired, File: filepath.Join(dir, "gone.pem"), Field: "tenants[0].keys[2]."},
	}
	if got := cfg.Tenants[0].Keys; !reflect.DeepEqual(got, want) {
		t.Errorf("Keys = %+v\nwant %+v", got, want)
	}
}

// kindsDoc has a tenant of every upstream kind (tenants[0]..[5] on lines
// 2-7, one flow mapping each) and a caller allowed each. It needs the files
// of [keyDir]; ca.crt stands in for a client secret file.
const kindsDoc = `tenants:
  - {id: po, upstream: {kind: pismo_oidc, token_url: "https://p.example/passport/v1/oauth2/token"}, issuer: i, subject: s, audience: a, key_file: k.pem}
  - {id: pa, upstream: {kind: pismo_oauth2, token_url: "https://p.example/passport/v2/oauth/token", client_id: pc, client_secret_file: ca.crt}}
  - {id: pk, upstream: {kind: private_key_jwt, issuer: "https://idp.example/realms/x", client_id: kc, assertion_audience: issuer}, key_file: k.pem, alg: PS256, assertion_lifetime: 2m}
  - {id: cp, upstream: {kind: client_secret_post, token_url: "https://idp.example/token", client_id: cc, client_secret_env: CP_SECRET}}
  - {id: cb, upstream: {kind: client_secret_basic, issuer: "http://127.0.0.1:9/", client_id: "bc:1", client_secret_file: ca.crt}}
  - {id: jb, upstream: {kind: jwt_bearer, token_url: "https://oauth2.example/token"}, subject: admin@corp.example, key_file: k.pem}
callers:
  - name: c
    api_key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    allow:
      - {tenant: po, groups: ["*"], account_tokens: true, custom_claims: [channel]}
      - {tenant: pa, groups: ["*"], account_tokens: true}
      - {tenant: pk, groups: ["*"]}
      - {tenant: cp, groups: ["*"]}
      - {tenant: cb, groups: ["*"]}
      - {tenant: jb, groups: ["*"], account_tokens: true}
`

// editKinds is [edit] for [kindsDoc].
func editKinds(t testing.TB, oldNew ...string) string {
	t.Helper()
	return replace(t, kindsDoc, oldNew...)
}

// Every upstream kind, with what it takes and the defaults of what it does
// not.
func TestParseUpstreamKinds(t *testing.T) {
	dir := keyDir(t)
	cfg, err := config.Parse([]byte(kindsDoc), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	key := []config.Key{{State: config.KeyActive, File: filepath.Join(dir, "k.pem")}}
	secret := filepath.Join(dir, "ca.crt")
	type tenant struct {
		up                        config.Upstream
		issuer, subject, audience string
		keys                      int
		alg                       string
		lifetime                  time.Duration
	}
	want := []tenant{
		{config.Upstream{Kind: "pismo_oidc", TokenURL: mustURL("https://p.example/passport/v1/oauth2/token")}, "i", "s", "a", 1, "", 5 * time.Minute},
		{config.Upstream{Kind: "pismo_oauth2", TokenURL: mustURL("https://p.example/passport/v2/oauth/token"), ClientID: "pc", ClientSecretFile: secret}, "", "", "", 0, "", 0},
		{config.Upstream{Kind: "private_key_jwt", Issuer: mustURL("https://idp.example/realms/x"), ClientID: "kc", AssertionAudience: "issuer"}, "", "", "", 1, "PS256", 2 * time.Minute},
		{config.Upstream{Kind: "client_secret_post", TokenURL: mustURL("https://idp.example/token"), ClientID: "cc", ClientSecretEnv: "CP_SECRET"}, "", "", "", 0, "", 0},
		{config.Upstream{Kind: "client_secret_basic", Issuer: mustURL("http://127.0.0.1:9/"), ClientID: "bc:1", ClientSecretFile: secret}, "", "", "", 0, "", 0},
		{config.Upstream{Kind: "jwt_bearer", TokenURL: mustURL("https://oauth2.example/token")}, "", "admin@corp.example", "", 1, "", 5 * time.Minute},
	}
	for i, w := range want {
		tn := cfg.Tenants[i]
		w.up.Timeout = 10 * time.Second
		got := tenant{tn.Upstream, tn.Issuer, tn.Subject, tn.Audience, len(tn.Keys), tn.Alg, tn.AssertionLifetime}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("tenants[%d] = %+v\nwant %+v", i, got, w)
		}
		if tn.UIDMode != config.UIDOmit {
			t.Errorf("tenants[%d].UIDMode = %q, want omit", i, tn.UIDMode)
		}
		if len(tn.Keys) == 1 && !reflect.DeepEqual(tn.Keys[0].File, key[0].File) {
			t.Errorf("tenants[%d].Keys = %+v", i, tn.Keys)
		}
		if signs := tn.Upstream.SignsAssertions(); signs != (len(tn.Keys) == 1) {
			t.Errorf("tenants[%d].SignsAssertions() = %v with %d keys", i, signs, len(tn.Keys))
		}
	}
}

// The cache's tuning, including the values that turn refresh-ahead and the
// negative cache off.
func TestParseCache(t *testing.T) {
	doc := edit(t, "  skew: 10s\n", "  skew: 0s\n  refresh_fraction: 0\n  max_entries: 500\n  negative_ttl: 0s\n")
	cfg, err := config.Parse([]byte(doc), keyDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := (config.Cache{MaxEntries: 500}); cfg.Cache != want {
		t.Errorf("Cache = %+v, want %+v", cfg.Cache, want)
	}
}

// sharedBlock is a cache.shared section with every field set. [withShared]
// adds it to base under cache: "shared:" on line 7, "redis:" on line 8, its
// fields on lines 9-18, encryption_key_file on line 19 and
// previous_encryption_key_files on line 20. None of its files exist: Parse
// only resolves them.
const sharedBlock = `  shared:
    redis:
      addr: redis:6379
      username: tokenbroker
      password_file: /run/secrets/redis-password
      db: 3
      timeout: 75ms
      tls:
        ca_file: redis-ca.crt
        cert_file: tls/client.crt
        key_file: tls/client.key
        server_name: redis.internal
    encryption_key_file: /run/secrets/cache-seal.key
    previous_encryption_key_files: [/run/secrets/cache-seal-old.key, ./old/../older.key]
`

// withShared returns base with [sharedBlock], edited like [edit], under
// cache.
func withShared(t testing.TB, oldNew ...string) string {
	t.Helper()
	return edit(t, "  skew: 10s\n", "  skew: 10s\n"+replace(t, sharedBlock, oldNew...))
}

// sentinelLines are a redis.sentinel block with every field set.
// [withSentinel] puts them in [sharedBlock] in place of addr: "sentinel:"
// on line 9, master on 10, addrs on 11, username on 12 and password_file on
// 13; the other redis fields follow on lines 14-23.
const sentinelLines = `      sentinel:
        master: mymaster
        addrs: ["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"]
        username: sentinel-user
        password_file: /run/secrets/sentinel-password
`

// withSentinel returns base with [sharedBlock], its addr replaced by
// [sentinelLines], edited like [edit], under cache.
func withSentinel(t testing.TB, oldNew ...string) string {
	t.Helper()
	block := replace(t, sharedBlock, "      addr: redis:6379\n", sentinelLines)
	return edit(t, "  skew: 10s\n", "  skew: 10s\n"+replace(t, block, oldNew...))
}

// sharedLine returns base with a one-line cache.shared section, on line 7.
func sharedLine(t testing.TB, shared string) string {
	t.Helper()
	return edit(t, "  skew: 10s\n", "  skew: 10s\n  shared: "+shared+"\n")
}

// The shared cache: its fields, its defaults, and its absence. Its files
// are resolved against the base directory but need not exist.
func TestParseSharedCache(t *testing.T) {
	dir := keyDir(t)
	tests := []struct {
		name string
		doc  string
		want *config.SharedCache
	}{
		{"every field", withShared(t), &config.SharedCache{
			Redis: config.Redis{
				Addr: "redis:6379", Username: "tokenbroker", PasswordFile: "/run/secrets/redis-password", DB: 3, Timeout: 75 * time.Millisecond,
				TLS: &config.RedisTLS{
					CAFile:     filepath.Join(dir, "redis-ca.crt"),
					CertFile:   filepath.Join(dir, "tls", "client.crt"),
					KeyFile:    filepath.Join(dir, "tls", "client.key"),
					ServerName: "redis.internal",
				},
			},
			EncryptionKeyFile:          "/run/secrets/cache-seal.key",
			PreviousEncryptionKeyFiles: []string{"/run/secrets/cache-seal-old.key", filepath.Join(dir, "older.key")},
		}},
		{"minimal", sharedLine(t, `{redis: {addr: "127.0.0.1:6379"}, encryption_key_file: k}`), &config.SharedCache{
			Redis:             config.Redis{Addr: "127.0.0.1:6379", Timeout: config.DefaultRedisTimeout},
			EncryptionKeyFile: filepath.Join(dir, "k"),
		}},
		{"every optional field null", sharedLine(t, `{redis: {addr: "[::1]:6379", username: ~, password_file: ~, db: ~, timeout: ~, tls: ~}, encryption_key_file: k, previous_encryption_key_files: ~}`), &config.SharedCache{
			Redis:             config.Redis{Addr: "[::1]:6379", Timeout: 50 * time.Millisecond},
			EncryptionKeyFile: filepath.Join(dir, "k"),
		}},
		{"tls with defaults only", sharedLine(t, `{redis: {addr: "redis:6379", tls: {}}, encryption_key_file: k, previous_encryption_key_files: []}`), &config.SharedCache{
			Redis:             config.Redis{Addr: "redis:6379", Timeout: config.DefaultRedisTimeout, TLS: &config.RedisTLS{}},
			EncryptionKeyFile: filepath.Join(dir, "k"),
		}},
		{"tls with a CA only", sharedLine(t, `{redis: {addr: "redis:6379", tls: {ca_file: ca.crt}}, encryption_key_file: k}`), &config.SharedCache{
			Redis:             config.Redis{Addr: "redis:6379", Timeout: config.DefaultRedisTimeout, TLS: &config.RedisTLS{CAFile: filepath.Join(dir, "ca.crt")}},
			EncryptionKeyFile: filepath.Join(dir, "k"),
		}},
		{"sentinel, every field", withSentinel(t), &config.SharedCache{
			Redis: config.Redis{
				Sentinel: &config.RedisSentinel{
					Master:       "mymaster",
					Addrs:        []string{"sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"},
					Username:     "sentinel-user",
					PasswordFile: "/run/secrets/sentinel-password",
				},
				Username: "tokenbroker", PasswordFile: "/run/secrets/redis-password", DB: 3, Timeout: 75 * time.Millisecond,
				TLS: &config.RedisTLS{
					CAFile:     filepath.Join(dir, "redis-ca.crt"),
					CertFile:   filepath.Join(dir, "tls", "client.crt"),
					KeyFile:    filepath.Join(dir, "tls", "client.key"),
					ServerName: "redis.internal",
				},
			},
			EncryptionKeyFile:          "/run/secrets/cache-seal.key",
			PreviousEncryptionKeyFiles: []string{"/run/secrets/cache-seal-old.key", filepath.Join(dir, "older.key")},
		}},
		{"sentinel, minimal", sharedLine(t, `{redis: {sentinel: {master: m, addrs: ["127.0.0.1:26379"]}}, encryption_key_file: k}`), &config.SharedCache{
			Redis:             config.Redis{Sentinel: &config.RedisSentinel{Master: "m", Addrs: []string{"127.0.0.1:26379"}}, Timeout: config.DefaultRedisTimeout},
			EncryptionKeyFile: filepath.Join(dir, "k"),
		}},
		{"sentinel, optional fields null", sharedLine(t, `{redis: {addr: ~, sentinel: {master: m, addrs: ["[::1]:26379"], username: ~, password_file: ~}}, encryption_key_file: k}`), &config.SharedCache{
			Redis:             config.Redis{Sentinel: &config.RedisSentinel{Master: "m", Addrs: []string{"[::1]:26379"}}, Timeout: config.DefaultRedisTimeout},
			EncryptionKeyFile: filepath.Join(dir, "k"),
		}},
		{"sentinel null, addr set", sharedLine(t, `{redis: {addr: "redis:6379", sentinel: ~}, encryption_key_file: k}`), &config.SharedCache{
			Redis:             config.Redis{Addr: "redis:6379", Timeout: config.DefaultRedisTimeout},
			EncryptionKeyFile: filepath.Join(dir, "k"),
		}},
		{"absent", base, nil},
		{"null", sharedLine(t, "~"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.doc), dir)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := cfg.Cache.Shared; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Cache.Shared = %+v\nwant %+v", got, tc.want)
			}
			// The rest of the cache keeps its own values.
			if got, want := cfg.Cache.Skew, 10*time.Second; got != want {
				t.Errorf("Cache.Skew = %v, want %v", got, want)
			}
		})
	}
}

// Load resolves the shared cache's files against the config file's
// directory, made absolute, like the key files.
func TestLoadResolvesSharedFiles(t *testing.T) {
	dir := keyDir(t)
	doc := sharedLine(t, `{redis: {sentinel: {master: m, addrs: ["s:26379"], password_file: secrets/sentinel.pass}, password_file: secrets/redis.pass, tls: {ca_file: redis-ca.crt}}, encryption_key_file: seal.key, previous_encryption_key_files: [old/seal.key]}`)
	if err := os.WriteFile(filepath.Join(dir, "broker.yaml"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	cfg, err := config.Load("broker.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	s := cfg.Cache.Shared
	if s == nil {
		t.Fatal("Cache.Shared is nil")
	}
	for _, c := range []struct{ name, got, want string }{
		{"PasswordFile", s.Redis.PasswordFile, filepath.Join(dir, "secrets", "redis.pass")},
		{"Sentinel.PasswordFile", s.Redis.Sentinel.PasswordFile, filepath.Join(dir, "secrets", "sentinel.pass")},
		{"TLS.CAFile", s.Redis.TLS.CAFile, filepath.Join(dir, "redis-ca.crt")},
		{"EncryptionKeyFile", s.EncryptionKeyFile, filepath.Join(dir, "seal.key")},
		{"PreviousEncryptionKeyFiles[0]", s.PreviousEncryptionKeyFiles[0], filepath.Join(dir, "old", "seal.key")},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}
