package keystore

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"slices"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func TestSetJWKS(t *testing.T) {
	k1, k2 := testKey(), testKey2()
	again := must(Parse(pkcs1PEM(testRSA()))) // k1 loaded a second time

	tests := []struct {
		name string
		keys []*Key
		want []*Key // in the set
	}{
		{"empty", nil, nil},
		{"nil keys are ignored", []*Key{nil, nil}, nil},
		{"one", []*Key{k1}, []*Key{k1}},
		{"two", []*Key{k1, k2}, []*Key{k1, k2}},
		{"duplicates once", []*Key{k2, k1, again, k2, nil}, []*Key{k1, k2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := NewSet(tt.keys...).JWKS()
			if err != nil {
				t.Fatalf("JWKS: %v", err)
			}
			t.Logf("%s", raw)

			var set jose.JSONWebKeySet
			if err := json.Unmarshal(raw, &set); err != nil {
				t.Fatalf("JWKS does not parse as a JWK Set: %v\n%s", err, raw)
			}
			var gotIDs []string
			for _, jwk := range set.Keys {
				gotIDs = append(gotIDs, jwk.KeyID)
				if !jwk.IsPublic() {
					t.Errorf("key %q is not public", jwk.KeyID)
				}
				if jwk.Algorithm != "RS256" || jwk.Use != "sig" {
					t.Errorf("key %q has alg %q use %q, want RS256 sig", jwk.KeyID, jwk.Algorithm, jwk.Use)
				}
				thumb := must(jwk.Thumbprint(crypto.SHA256))
				if got := base64.RawURLEncoding.EncodeToString(thumb); got != jwk.KeyID {
					t.Errorf("key %q has thumbprint %q, want its kid", jwk.KeyID, got)
				}
			}
			var wantIDs []string
			for _, k := range tt.want {
				wantIDs = append(wantIDs, k.ID())
			}
			slices.Sort(wantIDs)
			if !slices.Equal(gotIDs, wantIDs) {
				t.Errorf("kids = %q, want %q (each once, sorted)", gotIDs, wantIDs)
			}

			// Only public members, and a "keys" array even when empty.
			var members struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(raw, &members); err != nil {
				t.Fatal(err)
			}
			if members.Keys == nil {
				t.Errorf(`JWKS = %s, want a "keys" array`, raw)
			}
			for _, m := range members.Keys {
				for _, priv := range privateMembers {
					if _, ok := m[priv]; ok {
						t.Errorf("key %v has private member %q", m["kid"], priv)
					}
				}
			}
			assertNoSecrets(t, "JWKS", string(raw), append(keyMaterialPrivate(testRSA()), keyMaterialPrivate(testRSA2())...))
		})
	}
}

func TestSetJWKSReturnsACopy(t *testing.T) {
	s := NewSet(testKey())
	a := must(s.JWKS())
	clear(a)
	if b := must(s.JWKS()); !json.Valid(b) {
		t.Errorf("JWKS after a caller scribbled on an earlier result = %q, want valid JSON", b)
	}
}

func TestNilSet(t *testing.T) {
	var s *Set
	raw, err := s.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(raw), `{"keys":[]}`; got != want {
		t.Errorf("(*Set)(nil).JWKS() = %s, want %s", got, want)
	}
}

func TestDirectory(t *testing.T) {
	k1, k2 := testKey(), testKey2()
	kids := func(raw []byte) []string {
		t.Helper()
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(raw, &set); err != nil {
			t.Fatalf("not a JWK Set: %v\n%s", err, raw)
		}
		var ids []string
		for _, k := range set.Keys {
			ids = append(ids, k.KeyID)
		}
		return ids
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }

	d := NewDirectory(map[string][]*Key{"a": {k1}, "b": {k1, k2}, "empty": nil})
	for _, tc := range []struct {
		name string
		ok   bool
		want []string
	}{
		{"", true, sorted(k1.ID(), k2.ID())}, // the union, each key once
		{"a", true, []string{k1.ID()}},
		{"b", true, sorted(k1.ID(), k2.ID())},
		{"empty", true, nil},
		{"unknown", false, nil},
	} {
		raw, ok, err := d.JWKS(tc.name)
		if err != nil || ok != tc.ok {
			t.Errorf("JWKS(%q) = ok %v, err %v; want ok %v", tc.name, ok, err, tc.ok)
			continue
		}
		if ok && !slices.Equal(kids(raw), tc.want) {
			t.Errorf("JWKS(%q) kids = %q, want %q", tc.name, kids(raw), tc.want)
		}
	}

	var nilDir *Directory
	if raw, ok, err := nilDir.JWKS(""); err != nil || !ok || string(raw) != `{"keys":[]}` {
		t.Errorf("nil Directory JWKS(\"\") = %s, %v, %v; want the empty set", raw, ok, err)
	}
	if _, ok, _ := nilDir.JWKS("a"); ok {
		t.Errorf("nil Directory JWKS(\"a\") ok, want not found")
	}
}
