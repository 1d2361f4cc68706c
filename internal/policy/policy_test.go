package policy_test

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/policy"
)

func newPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.New([]policy.Caller{
		{
			Name:         "payments-api",
			APIKeySHA256: sha256.Sum256([]byte("key-payments")),
			Allow: []policy.Grant{
				{Tenant: "tn-a", Groups: []string{"pismo-v1:accounts:*", "pismo-v1:cards:r"}, AccountTokens: true},
				{Tenant: "tn-a", Groups: []string{"pismo-v1:reports:r"}},
				{Tenant: "tn-b", Groups: []string{"*"}},
			},
		},
		{Name: "reader", APIKeySHA256: sha256.Sum256([]byte("key-reader")), Allow: []policy.Grant{{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthenticate(t *testing.T) {
	p := newPolicy(t)
	for key, want := range map[string]string{"key-payments": "payments-api", "key-reader": "reader", "key-other": "", "": ""} {
		id, ok := p.Authenticate(key)
		if ok != (want != "") || (ok && id.Name() != want) {
			t.Errorf("Authenticate(%q) = %v, want %q", key, ok, want)
		}
	}
}

func TestAllow(t *testing.T) {
	p := newPolicy(t)
	payments, _ := p.Authenticate("key-payments")
	reader, _ := p.Authenticate("key-reader")
	tests := []struct {
		name     string
		id       policy.Identity
		req      policy.Request
		wantWhat string // "" when allowed
	}{
		{"exact group", payments, policy.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r"}}, ""},
		{"wildcard group", payments, policy.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:accounts:rw"}}, ""},
		{"wildcard needs a suffix", payments, policy.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:accounts:"}}, `group "pismo-v1:accounts:"`},
		{"wildcard is a prefix of segments, not of text", payments, policy.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:accountsX"}}, `group "pismo-v1:accountsX"`},
		{"account token granted", payments, policy.Request{Tenant: "tn-a", Account: true, Groups: []string{"pismo-v1:accounts:r"}}, ""},
		{"group outside the allowlist", payments, policy.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r", "pismo-v1:cards:rw"}}, `group "pismo-v1:cards:rw"`},
		{"grants do not mix", payments, policy.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:cards:r", "pismo-v1:reports:r"}}, "no single grant"},
		{"account with a group only a non-account grant has", payments, policy.Request{Tenant: "tn-a", Account: true, Groups: []string{"pismo-v1:reports:r"}}, "no single grant"},
		{"star matches all", payments, policy.Request{Tenant: "tn-b", Groups: []string{"anything:at:all"}}, ""},
		{"account tokens not granted", payments, policy.Request{Tenant: "tn-b", Account: true, Groups: []string{"x"}}, `account tokens of tenant "tn-b"`},
		{"tenant not granted", reader, policy.Request{Tenant: "tn-b", Groups: []string{"x"}}, `tenant "tn-b"`},
		{"unknown tenant looks the same", reader, policy.Request{Tenant: "tn-nowhere", Groups: []string{"x"}}, `tenant "tn-nowhere"`},
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
			if !strings.Contains(de.What, tt.wantWhat) {
				t.Errorf("denied %q, want it to name %q", de.What, tt.wantWhat)
			}
		})
	}
}

func TestNewRefusesBadTables(t *testing.T) {
	h := sha256.Sum256([]byte("k"))
	for name, callers := range map[string][]policy.Caller{
		"no name":        {{APIKeySHA256: h}},
		"duplicate name": {{Name: "a", APIKeySHA256: h}, {Name: "a", APIKeySHA256: sha256.Sum256([]byte("j"))}},
		"duplicate hash": {{Name: "a", APIKeySHA256: h}, {Name: "b", APIKeySHA256: h}},
		"inner star":     {{Name: "a", APIKeySHA256: h, Allow: []policy.Grant{{Tenant: "t", Groups: []string{"a:*:b"}}}}},
		"partial star":   {{Name: "a", APIKeySHA256: h, Allow: []policy.Grant{{Tenant: "t", Groups: []string{"acc*"}}}}},
	} {
		if _, err := policy.New(callers); err == nil {
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}
