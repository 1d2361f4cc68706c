package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, refuses with a "keystore: "
// error, and that whatever it accepts round-trips through PrivatePEM.
//
// Besides the seeds added here, testdata/fuzz/FuzzParse holds hand-made
// seeds: a PKCS#1 key after leading text (a throwaway 2048-bit test key), a
// legacy encrypted PEM and a 512-bit PKCS#8 key (openssl genpkey).
func FuzzParse(f *testing.F) {
	f.Add(pkcs8PEM(testRSA()))
	f.Add(pkcs1PEM(testRSA()))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("garbage"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := Parse(data)
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
		if got, want := again.ID(), k.ID(); got != want {
			t.Errorf("Parse(PrivatePEM()).ID() = %q, want %q", got, want)
		}
		if again, err := Parse(k.PublicPEM()); err == nil {
			t.Errorf("Parse(PublicPEM()) = %v, want an error", again)
		}
	})
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
