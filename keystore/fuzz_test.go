package keystore

import (
	"crypto"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// FuzzParse checks that Parse never panics, refuses with a "keystore: "
// error, and that whatever it accepts round-trips through PrivatePEM.
//
// Besides the seeds added here, testdata/fuzz/FuzzParse holds hand-made
// seeds: a PKCS#1 key after leading text (a throwaway 2048-bit test key), a
// legacy encrypted PEM and a 512-bit PKCS#8 key (openssl genpkey), and
// throwaway P-256 keys as SEC 1 and PKCS#8 PEM, a private JWK, a JWK Set
// and an RSA Google service account key.
func FuzzParse(f *testing.F) {
	f.Add(pkcs8PEM(testRSA()))
	f.Add(pkcs1PEM(testRSA()))
	f.Add(pkcs8PEM(testEC()))
	f.Add(jwkJSON(testEC(), "k", "ES256"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("garbage"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := Parse(data)
		checkFuzzResult(t, k, err)
	})
}

// FuzzParseWithOptions fuzzes the options too: the passphrase of encrypted
// PKCS#8 (seeded with keys encrypted with cheap PBKDF2 and scrypt
// parameters), the kid taken from a JWK Set and the algorithm.
func FuzzParseWithOptions(f *testing.F) {
	f.Add(encryptedPEM(testEC(), "pw"), []byte("pw"), "", "")
	f.Add(encryptedPEM(testEC(), "pw"), []byte("wrong"), "", "ES256")
	f.Add(jwkSetJSON(jwkJSON(testEC(), "a", ""), jwkJSON(must(sharedEC2()), "b", "")), []byte(nil), "b", "")
	f.Add(pkcs8PEM(testRSA()), []byte(nil), "", "PS256")
	f.Fuzz(func(t *testing.T, data, passphrase []byte, keyID, alg string) {
		k, err := ParseWithOptions(data, Options{Passphrase: passphrase, KeyID: keyID, Algorithm: jose.SignatureAlgorithm(alg)})
		checkFuzzResult(t, k, err)
		if err == nil && alg != "" && string(k.Algorithm()) != alg {
			t.Errorf("Algorithm() = %q, want %q", k.Algorithm(), alg)
		}
	})
}

// checkFuzzResult checks what Parse returned: a "keystore: " error and no
// key, or a key that round-trips through PrivatePEM and whose public halves
// Parse refuses.
func checkFuzzResult(t *testing.T, k *Key, err error) {
	t.Helper()
	if err != nil {
		if k != nil {
			t.Errorf("Parse returned a key and the error %q", err)
		}
		if !strings.HasPrefix(err.Error(), "keystore: ") {
			t.Errorf("error %q does not start with %q", err, "keystore: ")
		}
		return
	}
	if k.ID() == "" {
		t.Fatal("accepted a key with an empty ID")
	}
	again, err := Parse(k.PrivatePEM())
	if err != nil {
		t.Fatalf("Parse(PrivatePEM()) of an accepted key: %v", err)
	}
	// The ID may be a kid or private_key_id, which PEM does not carry.
	if pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(again.Public()) {
		t.Errorf("Parse(PrivatePEM()) is another key")
	}
	if again, err := Parse(k.PublicPEM()); err == nil {
		t.Errorf("Parse(PublicPEM()) = %v, want an error", again)
	}
	jwk := must(json.Marshal(k.PublicJWK()))
	if again, err := Parse(jwk); err == nil {
		t.Errorf("Parse(PublicJWK()) = %v, want an error", again)
	}
}

// TestFuzzSeeds checks that the hand-made seeds still mean what their names
// say, so the fuzzer starts from the paths they were written for.
func TestFuzzSeeds(t *testing.T) {
	tests := []struct {
		file    string
		wantErr error // nil: accepted
	}{
		{"pkcs1_after_text", nil},
		{"encrypted_proc_type", errEncrypted},
		{"rsa512_pkcs8", errWeakKey},
		{"ec_sec1", nil},
		{"ec_pkcs8", nil},
		{"jwk_ec", nil},
		{"jwks_two_keys", errKeyID},
		{"service_account", nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzParse", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			header, value, ok := strings.Cut(strings.TrimSpace(string(raw)), "\n")
			if !ok || header != "go test fuzz v1" || !strings.HasPrefix(value, "[]byte(") || !strings.HasSuffix(value, ")") {
				t.Fatalf("%s is not a go test fuzz v1 file with one []byte", tt.file)
			}
			data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(value, "[]byte("), ")"))
			if err != nil {
				t.Fatalf("unquote: %v", err)
			}
			_, err = Parse([]byte(data))
			if tt.wantErr == nil && err != nil {
				t.Errorf("Parse: %v, want a key", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Parse error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
