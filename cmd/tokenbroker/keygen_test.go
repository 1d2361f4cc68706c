package main

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// keygenSuffixes are what keygen appends to --out for the files beside the
// private key.
var keygenSuffixes = []string{"", ".pub", ".crt", ".jwks.json"}

// samePublicKey reports whether got is the public key want.
func samePublicKey(got, want crypto.PublicKey) bool {
	k, ok := got.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(want)
}

// readPEM reads the one PEM block of type typ in path.
func readPEM(t *testing.T, path, typ string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != typ {
		t.Fatalf("%s: no %s PEM block", path, typ)
	}
	return block.Bytes
}

// dirNames lists the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestKeygenWritesKeyCertificateAndJWKS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		alg     jose.SignatureAlgorithm
		subject string
		days    int
	}{
		{"rsa default", nil, jose.RS256, "tokenbroker", 365},
		{"ec", []string{"--type", "ec", "--subject", "tn-1 prod", "--days", "30"}, jose.ES256, "tn-1 prod", 30},
		{"rsa 3072", []string{"--type", "rsa", "--bits", "3072", "--days", "3650"}, jose.RS256, "tokenbroker", 3650},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "tn.pem")
			code, stdout, stderr := runCmd(t, "", append([]string{"keygen", "--out", out}, tc.args...)...)
			if code != 0 {
				t.Fatalf("keygen: exit %d: %s", code, stderr)
			}
			if got, want := dirNames(t, dir), []string{"tn.pem", "tn.pem.crt", "tn.pem.jwks.json", "tn.pem.pub"}; !slices.Equal(got, want) {
				t.Errorf("keygen wrote %v, want %v", got, want)
			}
			for _, suffix := range keygenSuffixes {
				want := os.FileMode(0o644)
				if suffix == "" {
					want = 0o600
				}
				if fi, err := os.Stat(out + suffix); err != nil || fi.Mode().Perm() != want {
					t.Errorf("%s: %v, mode %v, want %v", out+suffix, err, fi.Mode().Perm(), want)
				}
			}

			key, err := keystore.LoadFile(out)
			if err != nil {
				t.Fatalf("the private key does not load: %v", err)
			}
			if key.Algorithm() != tc.alg {
				t.Errorf("alg %s, want %s", key.Algorithm(), tc.alg)
			}
			m := regexp.MustCompile(`(?m)^kid: (\S+)\nalg: (\S+)$`).FindStringSubmatch(stdout)
			if m == nil || m[1] != key.ID() || m[2] != string(tc.alg) {
				t.Errorf("keygen printed %q; want kid %s and alg %s", stdout, key.ID(), tc.alg)
			}
			for _, want := range []string{out + " ", out + ".pub ", out + ".crt ", out + ".jwks.json ", "keep it secret",
				"Pismo's Control Center", "/.well-known/jwks.json", "CN=" + tc.subject} {
				if !strings.Contains(stdout, want) {
					t.Errorf("keygen output does not say %q:\n%s", want, stdout)
				}
			}

			// The public key PEM.
			pub, err := x509.ParsePKIXPublicKey(readPEM(t, out+".pub", "PUBLIC KEY"))
			if err != nil || !samePublicKey(pub, key.Public()) {
				t.Errorf("%s.pub does not hold the key's public key (%v)", out, err)
			}

			// The certificate.
			cert, err := x509.ParseCertificate(readPEM(t, out+".crt", "CERTIFICATE"))
			if err != nil {
				t.Fatalf("parse %s.crt: %v", out, err)
			}
			if !samePublicKey(cert.PublicKey, key.Public()) {
				t.Error("the certificate's public key is not the key's")
			}
			if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
				t.Errorf("the certificate is not signed by its key: %v", err)
			}
			if cert.Subject.CommonName != tc.subject || cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("certificate CN %q CA %v key usage %#x; want CN %q, not a CA, digitalSignature",
					cert.Subject.CommonName, cert.IsCA, cert.KeyUsage, tc.subject)
			}
			if got, want := cert.NotAfter.Sub(cert.NotBefore), time.Duration(tc.days)*24*time.Hour; got != want {
				t.Errorf("certificate valid for %v, want %v (--days %d)", got, want, tc.days)
			}

			// The JWK Set.
			data, err := os.ReadFile(out + ".jwks.json")
			if err != nil {
				t.Fatal(err)
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(data, &set); err != nil {
				t.Fatalf("%s.jwks.json: %v", out, err)
			}
			if len(set.Keys) != 1 {
				t.Fatalf("%s.jwks.json holds %d keys, want 1", out, len(set.Keys))
			}
			jwk := set.Keys[0]
			if jwk.KeyID != key.ID() || jwk.Algorithm != string(tc.alg) || jwk.Use != "sig" {
				t.Errorf("JWK kid %q alg %q use %q; want %q, %s, sig", jwk.KeyID, jwk.Algorithm, jwk.Use, key.ID(), tc.alg)
			}
			if !jwk.IsPublic() || !samePublicKey(jwk.Key, key.Public()) {
				t.Error("the JWK Set does not hold exactly the key's public key")
			}
			if strings.Contains(string(data), `"d"`) {
				t.Error("the JWK Set holds private material")
			}
		})
	}
}

func TestKeygenRefusesToOverwrite(t *testing.T) {
	for _, suffix := range keygenSuffixes {
		t.Run("OUT"+suffix, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "tn.pem")
			existing := out + suffix
			if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runCmd(t, "", "keygen", "--out", out, "--type", "ec")
			if code != 1 || !strings.Contains(stderr, "refusing to overwrite "+existing+": file already exists") {
				t.Errorf("exit %d, stderr %q; want 1 and a refusal naming %s", code, stderr, existing)
			}
			if stdout != "" {
				t.Errorf("a refused keygen printed %q", stdout)
			}
			if got, want := dirNames(t, dir), []string{filepath.Base(existing)}; !slices.Equal(got, want) {
				t.Errorf("after the refusal the directory holds %v, want only %v", got, want)
			}
			if data, _ := os.ReadFile(existing); string(data) != "keep me" {
				t.Errorf("%s was changed to %q", existing, data)
			}
		})
	}
}

func TestKeygenBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no --out", nil, 1, "--out is required"},
		{"type dsa", []string{"--type", "dsa"}, 1, `--type "dsa": want rsa or ec`},
		{"bits 1024", []string{"--bits", "1024"}, 1, "--bits 1024: want 2048, 3072 or 4096"},
		{"bits 8192", []string{"--bits", "8192"}, 1, "want 2048, 3072 or 4096"},
		{"bits with ec", []string{"--type", "ec", "--bits", "2048"}, 1, "--bits is for RSA keys only"},
		{"days 0", []string{"--days", "0"}, 1, "--days 0: want 1 to 3650"},
		{"days 3651", []string{"--days", "3651"}, 1, "--days 3651: want 1 to 3650"},
		{"days -1", []string{"--days", "-1"}, 1, "want 1 to 3650"},
		{"empty subject", []string{"--type", "ec", "--subject", ""}, 1, "subject is empty"},
		{"unprintable subject", []string{"--type", "ec", "--subject", "a\nb"}, 1, "unprintable"},
		{"bits not a number", []string{"--bits", "many"}, 2, `invalid value "many" for flag -bits`},
		{"unknown flag", []string{"--curve", "P-384"}, 2, "flag provided but not defined: -curve"},
		{"extra argument", []string{"extra"}, 2, `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"keygen"}
			if tc.name != "no --out" {
				args = append(args, "--out", filepath.Join(dir, "tn.pem"))
			}
			code, _, stderr := runCmd(t, "", append(args, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tc.code, tc.want)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("a refused keygen wrote %v", names)
			}
		})
	}
}

func TestKeygenWriteAllRemovesWhatItWrote(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) keygenFile {
		return keygenFile{path: filepath.Join(dir, name), data: []byte(name), mode: 0o644}
	}

	// The third write fails (its directory does not exist): the first two go.
	err := writeAll([]keygenFile{file("a"), file("b"), file("missing/c"), file("d")})
	if err == nil {
		t.Fatal("writeAll into a missing directory succeeded")
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("a failed writeAll left %v behind", names)
	}

	// The third file appeared since the check: it is refused and kept, and
	// only what this run wrote is removed.
	if err := os.WriteFile(filepath.Join(dir, "c"), []byte("theirs"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = writeAll([]keygenFile{file("a"), file("b"), file("c"), file("d")})
	if !errors.Is(err, os.ErrExist) {
		t.Errorf("writeAll over an existing file: %v, want an error wrapping os.ErrExist", err)
	}
	if got, want := dirNames(t, dir), []string{"c"}; !slices.Equal(got, want) {
		t.Errorf("after the failed writeAll the directory holds %v, want %v", got, want)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "c")); string(data) != "theirs" {
		t.Errorf("the existing file was changed to %q", data)
	}
}
