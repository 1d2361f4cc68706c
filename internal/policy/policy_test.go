package policy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/policy"
)

const (
	keyPayments = "key-payments"
	keyReader   = "key-reader"
	keyBoth     = "key-both"

	idBatch = "spiffe://corp/batch"
	idBoth  = "spiffe://corp/both"
	idCN    = "batch-job" // a certificate CN
)

func hash(key string) [32]byte { return sha256.Sum256([]byte(key)) }

func hashHex(key string) string { h := hash(key); return hex.EncodeToString(h[:]) }

// anchored compiles a uid pattern as the config does.
func anchored(p string) *regexp.Regexp { return regexp.MustCompile(`^(?:` + p + `)$`) }

func testCallers() []policy.Caller {
	return []policy.Caller{
		{
			Name:         "payments-api",
			APIKeySHA256: hash(keyPayments),
			HasAPIKey:    true,
			Allow: []policy.Grant{
				{
					Tenant: "tn-a", Groups: []string{"pismo-v1:accounts:*", "pismo-v1:cards:r"},
					AccountTokens: true, UIDPattern: anchored("[0-9]{1,12}"),
					CustomClaims: []string{"channel", "user"}, MaxMinTTL: 30 * time.Minute,
				},
				{Tenant: "tn-a", Groups: []string{"pismo-v1:reports:r"}},
				{Tenant: "tn-b", Groups: []string{"*"}},
				{Tenant: "tn-c", Groups: []string{"x"}, AccountTokens: true, MaxMinTTL: 10 * time.Minute},
				{Tenant: "tn-c", Groups: []string{"x"}, MaxMinTTL: 20 * time.Minute},
				// Not anchored by whoever built it: New anchors it.
				{Tenant: "tn-d", Groups: []string{"x"}, AccountTokens: true, UIDPattern: regexp.MustCompile("[0-9]+")},
			},
		},
		{Name: "reader", APIKeySHA256: hash(keyReader), HasAPIKey: true, Allow: []policy.Grant{{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}}},
		{
			Name: "batch", TLSIdentity: idBatch, Mode: policy.Audit, RateLimit: &policy.RateLimit{Rate: 1.5, Burst: 2},
			Allow: []policy.Grant{{Tenant: "tn-a", Groups: []string{"pismo-v1:reports:r"}}},
		},
		{Name: "both", APIKeySHA256: hash(keyBoth), HasAPIKey: true, TLSIdentity: idBoth, Allow: []policy.Grant{{Tenant: "tn-a", Groups: []string{"g"}}}},
		{Name: "cn", TLSIdentity: idCN, Allow: []policy.Grant{{Tenant: "tn-a", Groups: []string{"g"}}}},
	}
}

func newPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(testCallers())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func authenticate(t testing.TB, p *policy.Policy, c policy.Credentials) policy.Identity {
	t.Helper()
	id, err := p.Authenticate(c)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return id
}

func TestAuthenticate(t *testing.T) {
	p := newPolicy(t)
	tests := []struct {
		name    string
		creds   policy.Credentials
		want    string // the caller's name, when authenticated
		wantErr error
	}{
		{"nothing presented", policy.Credentials{}, "", policy.ErrNoCredentials},

		// Bearer keys.
		{"key", policy.Credentials{BearerKey: keyPayments}, "payments-api", nil},
		{"another key", policy.Credentials{BearerKey: keyReader}, "reader", nil},
		{"unknown key", policy.Credentials{BearerKey: "key-other"}, "", policy.ErrUnknownKey},
		{"the hash instead of the key", policy.Credentials{BearerKey: hashHex(keyPayments)}, "", policy.ErrUnknownKey},
		{"a wrong key is never ignored", policy.Credentials{BearerKey: "key-other", TLSIdentity: idBatch}, "", policy.ErrUnknownKey},

		// A key-only caller: a certificate no caller has does not restrict
		// it; another caller's certificate makes the call ambiguous.
		{"key-only caller, unknown certificate", policy.Credentials{BearerKey: keyPayments, TLSIdentity: "spiffe://corp/stranger"}, "payments-api", nil},
		{"key-only caller, a certificate-only caller's certificate", policy.Credentials{BearerKey: keyPayments, TLSIdentity: idBatch}, "", policy.ErrCredentialMismatch},
		{"key-only caller, a key-and-certificate caller's certificate", policy.Credentials{BearerKey: keyPayments, TLSIdentity: idBoth}, "", policy.ErrCredentialMismatch},

		// Certificates.
		{"URI identity", policy.Credentials{TLSIdentity: idBatch}, "batch", nil},
		{"CN identity", policy.Credentials{TLSIdentity: idCN}, "cn", nil},
		{"unknown identity", policy.Credentials{TLSIdentity: "spiffe://corp/stranger"}, "", policy.ErrUnknownIdentity},
		{"identities are exact", policy.Credentials{TLSIdentity: "SPIFFE://corp/batch"}, "", policy.ErrUnknownIdentity},

		// A caller with both must present both, naming it.
		{"key and its certificate", policy.Credentials{BearerKey: keyBoth, TLSIdentity: idBoth}, "both", nil},
		{"key without its certificate", policy.Credentials{BearerKey: keyBoth}, "", policy.ErrCredentialMismatch},
		{"certificate without its key", policy.Credentials{TLSIdentity: idBoth}, "", policy.ErrCredentialMismatch},
		{"key with another caller's certificate", policy.Credentials{BearerKey: keyBoth, TLSIdentity: idBatch}, "", policy.ErrCredentialMismatch},
		{"key with an unknown certificate", policy.Credentials{BearerKey: keyBoth, TLSIdentity: "spiffe://corp/stranger"}, "", policy.ErrCredentialMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := p.Authenticate(tt.creds)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if id != (policy.Identity{}) {
					t.Errorf("an error came with the identity %q", id.Name())
				}
				if tt.creds.BearerKey != "" && strings.Contains(err.Error(), tt.creds.BearerKey) {
					t.Errorf("err %q holds the key", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want caller %q", err, tt.want)
			}
			if got, want := id.Name(), tt.want; got != want || id == (policy.Identity{}) {
				t.Errorf("caller = %q (zero %v), want %q", got, id == (policy.Identity{}), want)
			}
		})
	}
	// Each reason is its own sentinel.
	sentinels := []error{policy.ErrNoCredentials, policy.ErrUnknownKey, policy.ErrUnknownIdentity, policy.ErrCredentialMismatch}
	for i, a := range sentinels {
		for _, b := range sentinels[i+1:] {
			if errors.Is(a, b) || errors.Is(b, a) || a.Error() == b.Error() {
				t.Errorf("%v and %v are not distinct", a, b)
			}
		}
	}
}

func TestAllow(t *testing.T) {
	p := newPolicy(t)
	payments := authenticate(t, p, policy.Credentials{BearerKey: keyPayments})
	reader := authenticate(t, p, policy.Credentials{BearerKey: keyReader})
	batch := authenticate(t, p, policy.Credentials{TLSIdentity: idBatch})
	type req = policy.Request
	tests := []struct {
		name     string
		id       policy.Identity
		req      policy.Request
		wantWhat string // "" when allowed
	}{
		// Tenants.
		{"granted tenant", reader, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}, ""},
		{"tenant not granted", reader, req{Tenant: "tn-b", Groups: []string{"x"}}, `tenant "tn-b"`},
		{"unknown tenant looks the same", reader, req{Tenant: "tn-nowhere", Groups: []string{"x"}}, `tenant "tn-nowhere"`},
		{"no identity", policy.Identity{}, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}, `tenant "tn-a"`},

		// Account tokens.
		{"uid granted", payments, req{Tenant: "tn-a", UID: "42", Groups: []string{"pismo-v1:accounts:r"}}, ""},
		{"external account id granted", payments, req{Tenant: "tn-a", ExternalAccountID: "42", Groups: []string{"pismo-v1:accounts:r"}}, ""},
		{"uid not granted", payments, req{Tenant: "tn-b", UID: "42", Groups: []string{"x"}}, `account tokens of tenant "tn-b"`},
		{"external account id not granted", payments, req{Tenant: "tn-b", ExternalAccountID: "42", Groups: []string{"x"}}, `account tokens of tenant "tn-b"`},

		// Account ids against uid_pattern, matched whole.
		{"uid matches the pattern", payments, req{Tenant: "tn-a", UID: "123456789012", Groups: []string{"pismo-v1:cards:r"}}, ""},
		{"uid does not match", payments, req{Tenant: "tn-a", UID: "12a", Groups: []string{"pismo-v1:cards:r"}}, `uid "12a" of tenant "tn-a"`},
		{"uid too long for the pattern", payments, req{Tenant: "tn-a", UID: "1234567890123", Groups: []string{"pismo-v1:cards:r"}}, `uid "1234567890123" of tenant "tn-a"`},
		{"pattern matches a prefix only", payments, req{Tenant: "tn-a", UID: "123x", Groups: []string{"pismo-v1:cards:r"}}, `uid "123x" of tenant "tn-a"`},
		{"external account id does not match", payments, req{Tenant: "tn-a", ExternalAccountID: "acct-9", Groups: []string{"pismo-v1:cards:r"}}, `external_account_id "acct-9" of tenant "tn-a"`},
		{"no pattern: any account id", payments, req{Tenant: "tn-c", ExternalAccountID: "acct-9", Groups: []string{"x"}}, ""},
		{"New anchors an unanchored pattern: allowed", payments, req{Tenant: "tn-d", UID: "123", Groups: []string{"x"}}, ""},
		{"New anchors an unanchored pattern: refused", payments, req{Tenant: "tn-d", UID: "a1b", Groups: []string{"x"}}, `uid "a1b" of tenant "tn-d"`},
		{"uid and external id both checked", payments, req{Tenant: "tn-a", UID: "1", ExternalAccountID: "x", Groups: []string{"pismo-v1:cards:r"}}, `external_account_id "x" of tenant "tn-a"`},

		// Groups.
		{"exact group", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}, ""},
		{"wildcard group", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:accounts:rw"}}, ""},
		{"wildcard needs a suffix", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:accounts:"}}, `group "pismo-v1:accounts:" of tenant "tn-a"`},
		{"wildcard is a prefix of segments, not of text", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:accountsX"}}, `group "pismo-v1:accountsX" of tenant "tn-a"`},
		{"group outside the allowlist", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r", "pismo-v1:cards:rw"}}, `group "pismo-v1:cards:rw" of tenant "tn-a"`},
		{"star matches all", payments, req{Tenant: "tn-b", Groups: []string{"anything:at:all"}}, ""},

		// Custom claim keys.
		{"custom claim allowed", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}, CustomClaimKeys: []string{"channel", "user"}}, ""},
		{"custom claim not allowed", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}, CustomClaimKeys: []string{"channel", "tier", "zone"}}, `custom claim "tier" of tenant "tn-a"`},
		{"no custom claims allowed", payments, req{Tenant: "tn-b", Groups: []string{"x"}, CustomClaimKeys: []string{"channel"}}, `custom claim "channel" of tenant "tn-b"`},

		// min_ttl.
		{"min_ttl at the limit", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}, MinTTL: 30 * time.Minute}, ""},
		{"min_ttl over the limit", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}, MinTTL: 31 * time.Minute}, "no single grant"},
		{"min_ttl over every limit", payments, req{Tenant: "tn-c", Groups: []string{"x"}, MinTTL: 21 * time.Minute}, `min_ttl 21m0s (at most 20m0s) of tenant "tn-c"`},
		{"min_ttl within a larger limit", payments, req{Tenant: "tn-c", Groups: []string{"x"}, MinTTL: 15 * time.Minute}, ""},
		{"no limit of its own", payments, req{Tenant: "tn-b", Groups: []string{"x"}, MinTTL: 55 * time.Minute}, ""},

		// The first refused item is named, in order.
		{"account tokens before the group", reader, req{Tenant: "tn-a", UID: "1", Groups: []string{"nope"}}, `account tokens of tenant "tn-a"`},
		{"account id before the group", payments, req{Tenant: "tn-a", UID: "abc", Groups: []string{"nope"}}, `uid "abc" of tenant "tn-a"`},
		{"groups in order", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r", "b", "a"}}, `group "b" of tenant "tn-a"`},
		{"group before custom claims", payments, req{Tenant: "tn-a", Groups: []string{"nope"}, CustomClaimKeys: []string{"tier"}}, `group "nope" of tenant "tn-a"`},
		{"custom claims before min_ttl", payments, req{Tenant: "tn-c", Groups: []string{"x"}, CustomClaimKeys: []string{"tier"}, MinTTL: time.Hour}, `custom claim "tier" of tenant "tn-c"`},

		// A request must fit one grant entirely.
		{"grants do not mix groups", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r", "pismo-v1:reports:r"}}, "no single grant"},
		{"account with a group only a non-account grant has", payments, req{Tenant: "tn-a", UID: "1", Groups: []string{"pismo-v1:reports:r"}}, "no single grant"},
		{"custom claim with a group only another grant has", payments, req{Tenant: "tn-a", Groups: []string{"pismo-v1:reports:r"}, CustomClaimKeys: []string{"channel"}}, "no single grant"},
		{"account with a min_ttl only a non-account grant allows", payments, req{Tenant: "tn-c", UID: "1", Groups: []string{"x"}, MinTTL: 15 * time.Minute}, "no single grant"},

		// Audit mode changes nothing here: the server decides what to do
		// with a denial.
		{"audit-mode caller allowed", batch, req{Tenant: "tn-a", Groups: []string{"pismo-v1:reports:r"}}, ""},
		{"audit-mode caller denied", batch, req{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}, `group "pismo-v1:cards:r" of tenant "tn-a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.id.Allow(tt.req)
			if tt.wantWhat == "" {
				if err != nil {
					t.Fatalf("denied: %v", err)
				}
				return
			}
			var de *policy.DeniedError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a DeniedError", err)
			}
			if tt.wantWhat == "no single grant" {
				want := `this combination of account, groups, custom claims and min_ttl of tenant "` + tt.req.Tenant + `" (no single grant covers it)`
				if got := de.What; got != want {
					t.Errorf("denied %q, want %q", got, want)
				}
			} else if got, want := de.What, tt.wantWhat; got != want {
				t.Errorf("denied %q, want %q", got, want)
			}
			if got, want := de.Caller, tt.id.Name(); got != want {
				t.Errorf("Caller = %q, want %q", got, want)
			}
			if got, want := err.Error(), `caller "`+tt.id.Name()+`" may not have `+de.What; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	p := newPolicy(t)
	tests := []struct {
		name  string
		id    policy.Identity
		valid bool
		want  string
		mode  policy.Mode
		rl    *policy.RateLimit
	}{
		{"key caller", authenticate(t, p, policy.Credentials{BearerKey: keyPayments}), true, "payments-api", policy.Enforce, nil},
		{"audit-mode caller with a limit", authenticate(t, p, policy.Credentials{TLSIdentity: idBatch}), true, "batch", policy.Audit, &policy.RateLimit{Rate: 1.5, Burst: 2}},
		{"zero Identity", policy.Identity{}, false, "", policy.Enforce, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := tt.id != (policy.Identity{}), tt.valid; got != want {
				t.Errorf("authenticated = %v, want %v", got, want)
			}
			if got, want := tt.id.Name(), tt.want; got != want {
				t.Errorf("Name() = %q, want %q", got, want)
			}
			if got, want := tt.id.Mode(), tt.mode; got != want {
				t.Errorf("Mode() = %v, want %v", got, want)
			}
			got, want := tt.id.RateLimit(), tt.rl
			if (got == nil) != (want == nil) || got != nil && *got != *want {
				t.Errorf("RateLimit() = %+v, want %+v", got, want)
			}
		})
	}
}

// New keeps copies: the table does not change with the callers it came from.
func TestNewCopies(t *testing.T) {
	callers := testCallers()
	p, err := policy.New(callers)
	if err != nil {
		t.Fatal(err)
	}
	callers[2].RateLimit.Rate = 1000
	callers[1].Allow[0].Groups[0] = "changed"
	if got, want := authenticate(t, p, policy.Credentials{TLSIdentity: idBatch}).RateLimit().Rate, 1.5; got != want {
		t.Errorf("Rate = %v after the caller's changed, want %v", got, want)
	}
	reader := authenticate(t, p, policy.Credentials{BearerKey: keyReader})
	if err := reader.Allow(policy.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}); err != nil {
		t.Errorf("Allow after the grant's groups changed: %v", err)
	}
}

func TestNewRefusesBadTables(t *testing.T) {
	h, j := hash("k"), hash("j")
	g := []policy.Grant{{Tenant: "t", Groups: []string{"a"}}}
	tests := []struct {
		name    string
		callers []policy.Caller
		want    string // a part of the error
	}{
		{"no name", []policy.Caller{{APIKeySHA256: h, HasAPIKey: true}}, "has no name"},
		{"duplicate name", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true}, {Name: "a", APIKeySHA256: j, HasAPIKey: true}}, "listed twice"},
		{"duplicate hash", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true}, {Name: "b", APIKeySHA256: h, HasAPIKey: true}}, "same key hash"},
		{"duplicate identity", []policy.Caller{{Name: "a", TLSIdentity: "spiffe://x/a"}, {Name: "b", TLSIdentity: "spiffe://x/a"}}, "same TLS identity"},
		{"neither key nor identity", []policy.Caller{{Name: "a", Allow: g}}, "neither a key nor a TLS identity"},
		{"hash without HasAPIKey", []policy.Caller{{Name: "a", APIKeySHA256: h, TLSIdentity: "x"}}, "HasAPIKey is false"},
		{"unknown mode", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, Mode: 7}}, "unknown mode Mode(7)"},
		{"zero rate", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, RateLimit: &policy.RateLimit{Burst: 1}}}, "rate limit"},
		{"NaN rate", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, RateLimit: &policy.RateLimit{Rate: math.NaN(), Burst: 1}}}, "rate limit"},
		{"zero burst", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, RateLimit: &policy.RateLimit{Rate: 1}}}, "rate limit"},
		{"inner star", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, Allow: []policy.Grant{{Tenant: "t", Groups: []string{"a:*:b"}}}}}, `"*" may only be the whole last segment`},
		{"partial star", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, Allow: []policy.Grant{{Tenant: "t", Groups: []string{"acc*"}}}}}, `"*" may only be the whole last segment`},
		{"uid pattern without account tokens", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, Allow: []policy.Grant{{Tenant: "t", Groups: []string{"a"}, UIDPattern: anchored("[0-9]+")}}}}, "uid pattern without account tokens"},
		{"negative max min_ttl", []policy.Caller{{Name: "a", APIKeySHA256: h, HasAPIKey: true, Allow: []policy.Grant{{Tenant: "t", Groups: []string{"a"}, MaxMinTTL: -time.Second}}}}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.New(tt.callers)
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			if got := err.Error(); !strings.HasPrefix(got, "policy: ") || !strings.Contains(got, tt.want) {
				t.Errorf("err = %q, want it to start with \"policy: \" and contain %q", got, tt.want)
			}
		})
	}
}

// Callers without keys do not collide on the zero hash.
func TestNewCertificateOnlyCallers(t *testing.T) {
	p, err := policy.New([]policy.Caller{{Name: "a", TLSIdentity: "spiffe://x/a"}, {Name: "b", TLSIdentity: "b"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// Their zero hashes are not keys.
	if _, err := p.Authenticate(policy.Credentials{BearerKey: string(make([]byte, 32))}); !errors.Is(err, policy.ErrUnknownKey) {
		t.Errorf("err = %v, want ErrUnknownKey", err)
	}
}

func TestModeString(t *testing.T) {
	for _, tt := range []struct {
		m    policy.Mode
		want string
	}{{policy.Enforce, "enforce"}, {policy.Audit, "audit"}, {9, "Mode(9)"}} {
		if got := tt.m.String(); got != tt.want {
			t.Errorf("Mode(%d).String() = %q, want %q", uint8(tt.m), got, tt.want)
		}
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	p := newPolicy(b)
	creds := policy.Credentials{BearerKey: keyBoth, TLSIdentity: idBoth} // both checked
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Authenticate(creds); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	p := newPolicy(b)
	id := authenticate(b, p, policy.Credentials{BearerKey: keyPayments})
	req := policy.Request{
		Tenant: "tn-a", UID: "123456", Groups: []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"},
		CustomClaimKeys: []string{"channel"}, MinTTL: time.Minute,
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := id.Allow(req); err != nil {
			b.Fatal(err)
		}
	}
}
