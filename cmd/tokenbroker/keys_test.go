package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/youmark/pkcs8"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// keyTestPassphrase encrypts the keys these tests write.
const keyTestPassphrase = "correct horse battery staple 4711"

// writeKeyConfig writes the config of [writeConfig] for keyFile, with the
// YAML lines of extra (each "field: value") added to its tenant.
func writeKeyConfig(t *testing.T, dir, keyFile string, extra ...string) string {
	t.Helper()
	path := writeConfig(t, dir, "https://upstream.example/token", keyFile, "k")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line := "    key_file: " + keyFile + "\n"
	if strings.Count(string(data), line) != 1 {
		t.Fatalf("config %q has no line %q", data, line)
	}
	var add strings.Builder
	for _, e := range extra {
		add.WriteString("    " + e + "\n")
	}
	cfg := strings.Replace(string(data), line, line+add.String(), 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeEncryptedKey writes a new RSA key as an encrypted PKCS#8 PEM file
// (PBES2: PBKDF2 with HMAC-SHA256, AES-256-CBC) at mode 0600.
func writeEncryptedKey(t *testing.T, dir, passphrase string) string {
	t.Helper()
	key, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(key.PrivatePEM())
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pkcs8.MarshalPrivateKey(priv, []byte(passphrase), &pkcs8.Opts{
		Cipher:  pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{SaltSize: 16, IterationCount: 2048, HMACHash: crypto.SHA256},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "encrypted.pem")
	if err := keystore.WriteFileExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeSecret writes a passphrase file at mode 0600.
func writeSecret(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := keystore.WriteFileExclusive(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkConfigOK runs check-config on cfgPath, which must pass.
func checkConfigOK(t *testing.T, cfgPath string) {
	t.Helper()
	if code, stdout, stderr := runCmd(t, "", "check-config", "--config", cfgPath); code != 0 || !strings.Contains(stdout, "OK") {
		t.Errorf("check-config: exit %d, want 0 and OK\n%s%s", code, stdout, stderr)
	}
}

// checkConfigFails runs check-config on cfgPath, which must exit 1 with a
// line starting with field and containing each of wants; it returns stderr.
func checkConfigFails(t *testing.T, cfgPath, field string, wants ...string) string {
	t.Helper()
	code, stdout, stderr := runCmd(t, "", "check-config", "--config", cfgPath)
	if code != 1 {
		t.Errorf("check-config: exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.HasPrefix(line, field+": ") {
			continue
		}
		for _, want := range wants {
			if !strings.Contains(line, want) {
				t.Errorf("check-config line %q, want it to contain %q", line, want)
			}
		}
		return stderr
	}
	t.Errorf("check-config output has no line starting with %q:\n%s", field+": ", stderr)
	return stderr
}

// An encrypted PKCS#8 key, its passphrase from a file or from the
// environment; a wrong or missing passphrase is refused, naming the field
// and never showing the passphrase.
func TestCheckConfigEncryptedKey(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeEncryptedKey(t, dir, keyTestPassphrase)
	const env = "TOKENBROKER_TEST_KEY_PASSPHRASE"

	t.Run("passphrase file", func(t *testing.T) {
		pass := writeSecret(t, t.TempDir(), "pass", keyTestPassphrase+"\n")
		checkConfigOK(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_file: "+pass))
	})
	t.Run("passphrase file with CRLF", func(t *testing.T) {
		pass := writeSecret(t, t.TempDir(), "pass", keyTestPassphrase+"\r\n")
		checkConfigOK(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_file: "+pass))
	})
	t.Run("passphrase file, relative to the config", func(t *testing.T) {
		cfgDir := t.TempDir()
		writeSecret(t, cfgDir, "pass", keyTestPassphrase)
		checkConfigOK(t, writeKeyConfig(t, cfgDir, keyFile, "key_passphrase_file: pass"))
	})
	t.Run("passphrase env", func(t *testing.T) {
		t.Setenv(env, keyTestPassphrase)
		checkConfigOK(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_env: "+env))
	})
	t.Run("no passphrase", func(t *testing.T) {
		checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile), "tenants[0].key_file", "no passphrase was given")
	})
	t.Run("wrong passphrase in a file", func(t *testing.T) {
		const wrong = "Tr0ub4dor&3-wrong"
		pass := writeSecret(t, t.TempDir(), "pass", wrong+"\n")
		stderr := checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_file: "+pass),
			"tenants[0].key_file", "wrong passphrase")
		if strings.Contains(stderr, wrong) || strings.Contains(stderr, keyTestPassphrase) {
			t.Errorf("check-config output shows a passphrase:\n%s", stderr)
		}
	})
	t.Run("wrong passphrase in the environment", func(t *testing.T) {
		const wrong = "Tr0ub4dor&3-env"
		t.Setenv(env, wrong)
		stderr := checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_env: "+env),
			"tenants[0].key_file", "wrong passphrase")
		if strings.Contains(stderr, wrong) {
			t.Errorf("check-config output shows the passphrase:\n%s", stderr)
		}
	})
	t.Run("env unset", func(t *testing.T) {
		const unset = "TOKENBROKER_TEST_NEVER_SET_1F3A"
		if _, ok := os.LookupEnv(unset); ok {
			t.Skipf("%s is set in this environment", unset)
		}
		checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_env: "+unset),
			"tenants[0].key_passphrase_env", unset+" is not set")
	})
	t.Run("env empty", func(t *testing.T) {
		t.Setenv(env, "")
		checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_env: "+env),
			"tenants[0].key_passphrase_env", env+" is not set")
	})
	t.Run("passphrase file readable by others", func(t *testing.T) {
		pass := writeSecret(t, t.TempDir(), "pass", keyTestPassphrase+"\n")
		if err := os.Chmod(pass, 0o640); err != nil {
			t.Fatal(err)
		}
		// The group-readable override is for key files, not passphrase files.
		stderr := checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_file: "+pass, "allow_group_readable_key: true"),
			"tenants[0].key_passphrase_file", "chmod 600")
		if strings.Contains(stderr, keyTestPassphrase) {
			t.Errorf("check-config output shows the passphrase:\n%s", stderr)
		}
	})
	t.Run("passphrase file empty", func(t *testing.T) {
		pass := writeSecret(t, t.TempDir(), "pass", "\n")
		checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "key_passphrase_file: "+pass),
			"tenants[0].key_passphrase_file", "is empty")
	})
}

// A key file mounted 0640, as a Kubernetes secret volume may be, needs the
// explicit override; a group-writable one is refused even with it.
func TestCheckConfigGroupReadableKey(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tn.pem")
	if code, _, stderr := runCmd(t, "", "keygen", "--out", keyFile); code != 0 {
		t.Fatal(stderr)
	}
	if err := os.Chmod(keyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile), "tenants[0].key_file", "readable by group or others", "chmod 600")
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "allow_group_readable_key: false"), "tenants[0].key_file", "chmod 600")
	checkConfigOK(t, writeKeyConfig(t, t.TempDir(), keyFile, "allow_group_readable_key: true"))

	if err := os.Chmod(keyFile, 0o660); err != nil {
		t.Fatal(err)
	}
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "allow_group_readable_key: true"), "tenants[0].key_file", "writable by group or others")
}

// Pismo verifies RS256 only: another alg is a config problem, and a key
// whose own algorithm is another is refused at key loading.
func TestCheckConfigPismoAlg(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tn.pem")
	if code, _, stderr := runCmd(t, "", "keygen", "--out", keyFile); code != 0 {
		t.Fatal(stderr)
	}
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), keyFile, "alg: PS256"), "tenants[0].alg", "must be RS256 for a pismo_oidc upstream")
	checkConfigOK(t, writeKeyConfig(t, t.TempDir(), keyFile, "alg: RS256"))

	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecFile := filepath.Join(dir, "ec.pem")
	if err := keystore.WriteFileExclusive(ecFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), ecFile), "tenants[0].key_file", "signs ES256", "verifies RS256 only")
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), ecFile, "alg: RS256"), "tenants[0].key_file", "does not fit the key")
}

// key_id picks the key of a JWK Set; without it a set of two is refused.
func TestCheckConfigKeyID(t *testing.T) {
	dir := t.TempDir()
	var keys []string
	for range 2 {
		k, err := keystore.Generate(2048)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(k.PrivatePEM())
		priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		jwk, err := json.Marshal(jose.JSONWebKey{Key: priv, KeyID: []string{"kid-a", "kid-b"}[len(keys)], Use: "sig"})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, string(jwk))
	}
	setFile := filepath.Join(dir, "set.json")
	if err := keystore.WriteFileExclusive(setFile, []byte(`{"keys":[`+strings.Join(keys, ",")+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), setFile), "tenants[0].key_file", "2 private signing keys", "set the key id")
	checkConfigOK(t, writeKeyConfig(t, t.TempDir(), setFile, "key_id: kid-b"))
	checkConfigFails(t, writeKeyConfig(t, t.TempDir(), setFile, "key_id: kid-z"), "tenants[0].key_file", "kid-z")

	cfg, keysByTenant, err := loadAll(writeKeyConfig(t, t.TempDir(), setFile, "key_id: kid-b"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keysByTenant.tenants[cfg.Tenants[0].ID].active.ID(), "kid-b"; got != want {
		t.Errorf("loaded key %q, want %q", got, want)
	}
}
