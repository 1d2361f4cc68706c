package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/youmark/pkcs8"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

var (
	sharedEC   = sync.OnceValues(func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) })
	sharedEC2  = sync.OnceValues(func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) })
	sharedP384 = sync.OnceValues(func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) })
)

// testEC is the package's main P-256 test key.
func testEC() *ecdsa.PrivateKey { return must(sharedEC()) }

// testPassphrase encrypts the test's encrypted keys.
const testPassphrase = "correct horse battery staple"

// encryptedPEM is key as an "ENCRYPTED PRIVATE KEY" block (PBES2, PBKDF2
// with HMAC-SHA256, AES-256-CBC), as openssl pkcs8 -topk8 -v2 aes-256-cbc
// writes it.
func encryptedPEM(key any, passphrase string) []byte {
	der := must(pkcs8.MarshalPrivateKey(key, []byte(passphrase), &pkcs8.Opts{
		Cipher:  pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{SaltSize: 16, IterationCount: 2048, HMACHash: crypto.SHA256},
	}))
	return pemOf("ENCRYPTED PRIVATE KEY", der)
}

// jwkJSON is key as a JWK with kid and alg (each left out when empty).
func jwkJSON(key any, kid, alg string) []byte {
	return must(json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}))
}

// jwkSetJSON is a JWK Set of the given JWKs.
func jwkSetJSON(keys ...[]byte) []byte {
	raw := make([]json.RawMessage, len(keys))
	for i, k := range keys {
		raw[i] = k
	}
	return must(json.Marshal(map[string]any{"keys": raw}))
}

// serviceAccountJSON is a Google service account key file for key.
func serviceAccountJSON(key any, id, email string) []byte {
	return must(json.Marshal(map[string]string{
		"type":                        "service_account",
		"project_id":                  "tb-test",
		"private_key_id":              id,
		"private_key":                 string(pkcs8PEM(key)),
		"client_email":                email,
		"client_id":                   "1234567890",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   "https://oauth2.googleapis.com/token",
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
	}))
}

// checkSigns signs a JWT with k and verifies it as a provider would: with
// k's public JWK after a trip through JSON, accepting only want.
func checkSigns(t *testing.T, k *Key, want jose.SignatureAlgorithm) {
	t.Helper()
	now := time.Now()
	tok, err := jwt.Signed(k.Signer()).Claims(jwt.Claims{
		Issuer: "iss", Subject: "sub", Audience: jwt.Audience{"aud"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
	}).Serialize()
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{want})
	if err != nil {
		t.Fatalf("jwt.ParseSigned(%s): %v", want, err)
	}
	h := parsed.Headers[0]
	if got, want := h.KeyID, k.ID(); got != want {
		t.Errorf("header kid = %q, want %q", got, want)
	}
	if got, want := h.ExtraHeaders[jose.HeaderType], "JWT"; got != want {
		t.Errorf("header typ = %v, want %q", got, want)
	}
	var published jose.JSONWebKey
	if err := published.UnmarshalJSON(must(json.Marshal(k.PublicJWK()))); err != nil {
		t.Fatalf("PublicJWK() does not round-trip through JSON: %v", err)
	}
	if got, want := published.Algorithm, string(want); got != want {
		t.Errorf("PublicJWK().Algorithm = %q, want %q", got, want)
	}
	if !published.IsPublic() {
		t.Errorf("PublicJWK() holds private material")
	}
	var c jwt.Claims
	if err := parsed.Claims(published, &c); err != nil {
		t.Fatalf("verify with PublicJWK(): %v", err)
	}
	if got, want := c.Subject, "sub"; got != want {
		t.Errorf("sub = %q, want %q", got, want)
	}
}

func TestLoadFormats(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the files are written 0600, which Windows ignores")
	}
	rsaKey, ecKey := testRSA(), testEC()
	rsaID, ecID := testKey().ID(), must(newKey(ecKey)).ID()
	dir := t.TempDir()
	openssl, lookErr := exec.LookPath("openssl")

	// ossl runs openssl, which writes out; it skips the row when openssl is
	// missing or cannot do it.
	ossl := func(t *testing.T, out string, args ...string) []byte {
		t.Helper()
		if lookErr != nil {
			testkit.Missing(t, requireOpenSSL, fmt.Sprintf("openssl not found in PATH: skipping this openssl-made key (the Go-made rows cover the format): %v", lookErr))
		}
		path := filepath.Join(dir, out)
		if _, err := os.Stat(path); err != nil {
			if b, err := exec.Command(openssl, append(args, "-out", path)...).CombinedOutput(); err != nil {
				testkit.Missing(t, requireOpenSSL, fmt.Sprintf("openssl %s: %v: %s (this openssl cannot write that key)", strings.Join(args, " "), err, b))
			}
		}
		return must(os.ReadFile(path))
	}
	osslRSA := func(t *testing.T) string {
		ossl(t, "o-rsa.pem", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
		return filepath.Join(dir, "o-rsa.pem")
	}
	osslEC := func(t *testing.T) string {
		ossl(t, "o-ec.pem", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
		return filepath.Join(dir, "o-ec.pem")
	}
	pass := "pass:" + testPassphrase

	tests := []struct {
		name      string
		data      func(t *testing.T) []byte
		opts      Options
		wantID    string // "": the thumbprint of the key loaded
		wantAlg   jose.SignatureAlgorithm
		wantEmail string
	}{
		{name: "PKCS#8 RSA", data: func(*testing.T) []byte { return pkcs8PEM(rsaKey) }, wantID: rsaID, wantAlg: jose.RS256},
		{name: "PKCS#1 RSA", data: func(*testing.T) []byte { return pkcs1PEM(rsaKey) }, wantID: rsaID, wantAlg: jose.RS256},
		{name: "PKCS#8 RSA with PS256", data: func(*testing.T) []byte { return pkcs8PEM(rsaKey) }, opts: Options{Algorithm: jose.PS256}, wantID: rsaID, wantAlg: jose.PS256},
		{name: "SEC 1 EC", data: func(*testing.T) []byte { return pemOf("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ecKey))) }, wantID: ecID, wantAlg: jose.ES256},
		{name: "PKCS#8 EC", data: func(*testing.T) []byte { return pkcs8PEM(ecKey) }, wantID: ecID, wantAlg: jose.ES256},
		{name: "encrypted PKCS#8 RSA", data: func(*testing.T) []byte { return encryptedPEM(rsaKey, testPassphrase) },
			opts: Options{Passphrase: []byte(testPassphrase)}, wantID: rsaID, wantAlg: jose.RS256},
		{name: "encrypted PKCS#8 EC", data: func(*testing.T) []byte { return encryptedPEM(ecKey, testPassphrase) },
			opts: Options{Passphrase: []byte(testPassphrase)}, wantID: ecID, wantAlg: jose.ES256},
		{name: "private JWK RSA with kid", data: func(*testing.T) []byte { return jwkJSON(rsaKey, "itsme-sig-1", "") }, wantID: "itsme-sig-1", wantAlg: jose.RS256},
		{name: "private JWK RSA with alg PS256", data: func(*testing.T) []byte { return jwkJSON(rsaKey, "k1", "PS256") }, wantID: "k1", wantAlg: jose.PS256},
		{name: "private JWK EC without kid", data: func(*testing.T) []byte { return jwkJSON(ecKey, "", "") }, wantID: ecID, wantAlg: jose.ES256},
		{name: "JWK Set by kid", data: func(*testing.T) []byte {
			return jwkSetJSON(jwkJSON(rsaKey, "rsa-1", "RS256"), jwkJSON(ecKey, "ec-1", "ES256"), jwkJSON(must(sharedEC2()), "ec-2", ""))
		}, opts: Options{KeyID: "ec-1"}, wantID: "ec-1", wantAlg: jose.ES256},
		{name: "JWK Set with one private signing key", data: func(*testing.T) []byte {
			enc := must(json.Marshal(jose.JSONWebKey{Key: must(sharedEC2()), KeyID: "enc-1", Use: "enc"}))
			return jwkSetJSON(must(json.Marshal(testKey2().PublicJWK())), enc, jwkJSON(rsaKey, "sig-1", ""))
		}, wantID: "sig-1", wantAlg: jose.RS256},
		{name: "Google service account", data: func(*testing.T) []byte {
			return serviceAccountJSON(rsaKey, "0123456789abcdef0123456789abcdef01234567", "broker@tb-test.iam.gserviceaccount.com")
		}, wantID: "0123456789abcdef0123456789abcdef01234567", wantAlg: jose.RS256, wantEmail: "broker@tb-test.iam.gserviceaccount.com"},

		{name: "openssl PKCS#8 RSA", data: func(t *testing.T) []byte { osslRSA(t); return ossl(t, "o-rsa.pem") }, wantAlg: jose.RS256},
		{name: "openssl PKCS#1 RSA", data: func(t *testing.T) []byte {
			return ossl(t, "o-rsa1.pem", "rsa", "-in", osslRSA(t), "-traditional")
		}, wantAlg: jose.RS256},
		{name: "openssl SEC 1 EC (ecparam -genkey)", data: func(t *testing.T) []byte {
			return ossl(t, "o-sec1.pem", "ecparam", "-name", "prime256v1", "-genkey")
		}, wantAlg: jose.ES256},
		{name: "openssl PKCS#8 EC", data: func(t *testing.T) []byte { osslEC(t); return ossl(t, "o-ec.pem") }, wantAlg: jose.ES256},
		{name: "openssl encrypted PKCS#8 RSA (genpkey -aes-256-cbc)", data: func(t *testing.T) []byte {
			return ossl(t, "o-rsa-enc.pem", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-aes-256-cbc", "-pass", pass)
		}, opts: Options{Passphrase: []byte(testPassphrase)}, wantAlg: jose.RS256},
		{name: "openssl encrypted PKCS#8 EC (pkcs8 -topk8 -v2 aes-256-cbc)", data: func(t *testing.T) []byte {
			return ossl(t, "o-ec-enc.pem", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", osslEC(t), "-passout", pass)
		}, opts: Options{Passphrase: []byte(testPassphrase)}, wantAlg: jose.ES256},
		{name: "openssl encrypted PKCS#8 EC (pkcs8 -topk8 -scrypt)", data: func(t *testing.T) []byte {
			return ossl(t, "o-ec-scrypt.pem", "pkcs8", "-topk8", "-scrypt", "-in", osslEC(t), "-passout", pass)
		}, opts: Options{Passphrase: []byte(testPassphrase)}, wantAlg: jose.ES256},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "key"+strings.Repeat("x", i))
			if err := os.WriteFile(path, tt.data(t), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := LoadFileWithOptions(path, tt.opts)
			if err != nil {
				t.Fatalf("LoadFileWithOptions: %v", err)
			}
			wantID := tt.wantID
			if wantID == "" {
				wantID = must(thumbprint(k.Public()))
			}
			if got := k.ID(); got != wantID {
				t.Errorf("ID() = %q, want %q", got, wantID)
			}
			if got := k.Algorithm(); got != tt.wantAlg {
				t.Errorf("Algorithm() = %q, want %q", got, tt.wantAlg)
			}
			if got := k.ClientEmail(); got != tt.wantEmail {
				t.Errorf("ClientEmail() = %q, want %q", got, tt.wantEmail)
			}
			checkSigns(t, k, tt.wantAlg)
			if tt.opts.Algorithm == "" && tt.opts.Passphrase == nil && tt.opts.KeyID == "" {
				// Without options LoadFile is the same.
				k2, err := LoadFile(path)
				if err != nil {
					t.Fatalf("LoadFile: %v", err)
				}
				if got, want := k2.ID(), k.ID(); got != want {
					t.Errorf("LoadFile().ID() = %q, want %q", got, want)
				}
			}
		})
	}
}

func TestAlgorithmFit(t *testing.T) {
	rsaPEM, ecPEM := pkcs8PEM(testRSA()), pkcs8PEM(testEC())
	tests := []struct {
		name string
		data []byte
		alg  jose.SignatureAlgorithm
		want string // "": accepted; else in the error
	}{
		{"RSA with RS256", rsaPEM, jose.RS256, ""},
		{"RSA with PS256", rsaPEM, jose.PS256, ""},
		{"RSA with ES256", rsaPEM, jose.ES256, "ES256 needs an EC P-256 key, but this is an RSA-2048 key"},
		{"EC with RS256", ecPEM, jose.RS256, "RS256 needs an RSA key, but this is an EC-P256 key"},
		{"EC with PS256", ecPEM, jose.PS256, "PS256 needs an RSA key"},
		{"EC with ES256", ecPEM, jose.ES256, ""},
		{"RSA with HS256", rsaPEM, jose.HS256, "use RS256, PS256 or ES256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseWithOptions(tt.data, Options{Algorithm: tt.alg})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ParseWithOptions: %v", err)
				}
				if got, want := k.Algorithm(), tt.alg; got != want {
					t.Errorf("Algorithm() = %q, want %q", got, want)
				}
				checkSigns(t, k, tt.alg)
				return
			}
			if err == nil {
				t.Fatalf("ParseWithOptions = %v, want an error", k)
			}
			t.Log(err)
			if !errors.Is(err, errAlgorithmFit) && !errors.Is(err, errAlgorithm) {
				t.Errorf("error %q is neither %q nor %q", err, errAlgorithmFit, errAlgorithm)
			}
			if got := err.Error(); !strings.Contains(got, tt.want) {
				t.Errorf("error %q does not contain %q", got, tt.want)
			}
		})
	}
}

func TestParseWithOptionsRefuses(t *testing.T) {
	rsaKey, ecKey := testRSA(), testEC()
	pub := must(json.Marshal(testKey().PublicJWK()))
	p384 := must(sharedP384())
	two := jwkSetJSON(jwkJSON(rsaKey, "a", ""), jwkJSON(ecKey, "b", ""))
	// The "d" of one key with the "x" and "y" of another.
	var mixed map[string]any
	if err := json.Unmarshal(jwkJSON(ecKey, "", ""), &mixed); err != nil {
		t.Fatal(err)
	}
	var other map[string]any
	if err := json.Unmarshal(jwkJSON(must(sharedEC2()), "", ""), &other); err != nil {
		t.Fatal(err)
	}
	mixed["x"], mixed["y"] = other["x"], other["y"]
	badEC := must(json.Marshal(mixed))
	sa := func(typ string) []byte {
		return []byte(strings.Replace(string(serviceAccountJSON(rsaKey, "id", "e@x")), `"service_account"`, `"`+typ+`"`, 1))
	}

	tests := []struct {
		name    string
		data    []byte
		opts    Options
		wantErr error
		want    string
	}{
		{"wrong passphrase", encryptedPEM(ecKey, testPassphrase), Options{Passphrase: []byte("wrong")}, errBadPassphrase, "check the passphrase"},
		{"no passphrase", encryptedPEM(ecKey, testPassphrase), Options{}, errNoPassphrase, "give the broker the key's passphrase"},
		{"empty passphrase", encryptedPEM(ecKey, testPassphrase), Options{Passphrase: []byte{}}, errNoPassphrase, "openssl pkey"},
		{"set of two keys without KeyID", two, Options{}, errKeyID, `2 private signing keys (kid "a", "b"); set the key id`},
		{"set with an unknown KeyID", two, Options{KeyID: "c"}, errKeyID, `no key with kid "c"; its private signing keys have kid "a", "b"`},
		{"public JWK", pub, Options{}, errPublicOnly, "use the private JWK"},
		{"set of public keys", jwkSetJSON(pub), Options{}, errPublicOnly, "jwks_private.json"},
		{"public key by KeyID", jwkSetJSON(pub), Options{KeyID: testKey().ID()}, errPublicOnly, "use the private JWK"},
		{"P-384 PKCS#8", pkcs8PEM(p384), Options{}, errUnsupported, "only the P-256 curve"},
		{"P-384 JWK", jwkJSON(p384, "p384", ""), Options{}, errUnsupported, "ec_paramgen_curve:P-256"},
		{"symmetric JWK", []byte(`{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0"}`), Options{}, errUnsupported, "symmetric"},
		{"EC JWK whose d does not fit", badEC, Options{}, errFormat, `"d" does not fit`},
		{"JWK alg against Options.Algorithm", jwkJSON(rsaKey, "k", "PS256"), Options{Algorithm: jose.RS256}, errAlgorithmFit, "make them agree"},
		{"JWK kid against Options.KeyID", jwkJSON(rsaKey, "k", ""), Options{KeyID: "other"}, errKeyID, `has kid "k", not "other"`},
		{"Google user credential", sa("authorized_user"), Options{}, errServiceAccount, "create one in the Google Cloud console"},
		{"service account without key id", serviceAccountJSON(rsaKey, "", "e@x"), Options{}, errServiceAccount, "private_key_id"},
		{"broken JSON", []byte(`{"kty": "RSA", `), Options{}, errFormat, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseWithOptions(tt.data, tt.opts)
			if err == nil {
				t.Fatalf("ParseWithOptions = %v, want an error", k)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.HasPrefix(msg, "keystore: ") {
				t.Errorf("error %q does not start with %q", msg, "keystore: ")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %q", msg, tt.wantErr)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if strings.Contains(msg, testPassphrase) {
				t.Errorf("error %q contains the passphrase", msg)
			}
			assertNoKeyMaterial(t, "error", msg, tt.data)
			assertNoSecrets(t, "error", msg, keyMaterialPrivate(rsaKey))
		})
	}
}

func TestAllowGroupReadable(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no group and other mode bits")
	}
	dir := t.TempDir()
	data := pkcs8PEM(testEC())
	tests := []struct {
		mode     os.FileMode
		plain    string // "": LoadFile accepts; else in its error
		override string // "": accepted with AllowGroupReadable; else in the error
	}{
		{0o600, "", ""},
		{0o640, "readable by group or others (mode 0640)", ""},
		{0o440, "readable by group or others (mode 0440)", ""},
		{0o644, "readable by group or others", ""},
		{0o620, "accessible by group or others", "writable by group or others (mode 0620)"},
		{0o602, "accessible by group or others", "writable by group or others (mode 0602)"},
		{0o660, "readable by group or others", "run: chmod go-w"},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			path := filepath.Join(dir, "key-"+tt.mode.String())
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				opts Options
				want string
			}{{Options{}, tt.plain}, {Options{AllowGroupReadable: true}, tt.override}} {
				_, err := LoadFileWithOptions(path, c.opts)
				switch {
				case c.want == "" && err != nil:
					t.Errorf("AllowGroupReadable=%v: %v", c.opts.AllowGroupReadable, err)
				case c.want != "" && err == nil:
					t.Errorf("AllowGroupReadable=%v accepted mode %04o, want an error", c.opts.AllowGroupReadable, tt.mode)
				case c.want != "" && !strings.Contains(err.Error(), c.want):
					t.Errorf("AllowGroupReadable=%v: error %q does not contain %q", c.opts.AllowGroupReadable, err, c.want)
				}
			}
		})
	}
}

func TestSetPublishesAlgorithms(t *testing.T) {
	ps := must(ParseWithOptions(pkcs8PEM(testRSA()), Options{Algorithm: jose.PS256}))
	es := must(ParseWithOptions(pkcs8PEM(testEC()), Options{}))
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(must(NewSet(ps, es).JWKS()), &set); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range set.Keys {
		got[k.KeyID] = k.Algorithm
	}
	if got[ps.ID()] != "PS256" || got[es.ID()] != "ES256" || len(got) != 2 {
		t.Errorf("JWKS algorithms by kid = %v, want %s: PS256 and %s: ES256", got, ps.ID(), es.ID())
	}
}
