package keystore

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// Test keys are generated once per test binary and shared: RSA generation is
// the slow part of this package's tests.
var (
	sharedRSA     = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	sharedRSA2    = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	sharedRSA1024 = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 1024) })
)

// must returns v, or panics on a test setup error (such as crypto/rand
// failing), which the test then reports.
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("test setup: %v", err))
	}
	return v
}

// testRSA is the package's main 2048-bit test key.
func testRSA() *rsa.PrivateKey { return must(sharedRSA()) }

// testRSA2 is a second, different 2048-bit key.
func testRSA2() *rsa.PrivateKey { return must(sharedRSA2()) }

// testKey is testRSA as a *Key.
func testKey() *Key { return must(newKey(testRSA())) }

// testKey2 is testRSA2 as a *Key.
func testKey2() *Key { return must(newKey(testRSA2())) }

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8PEM(key any) []byte {
	return pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(key)))
}

func pkcs1PEM(key *rsa.PrivateKey) []byte {
	return pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
}

// rfc7638N and rfc7638E are the RSA key of RFC 7638 §3.1, whose SHA-256
// thumbprint is rfc7638Thumbprint.
const (
	rfc7638N = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAt" +
		"VT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn6" +
		"4tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD" +
		"W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n9" +
		"1CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINH" +
		"aQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	rfc7638E          = "AQAB"
	rfc7638Thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
)

// manualThumbprint computes RFC 7638 by the recipe of its §3, without go-jose.
func manualThumbprint(pub *rsa.PublicKey) string {
	e := big.NewInt(int64(pub.E)).Bytes()
	canonical := fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`,
		base64.RawURLEncoding.EncodeToString(e), base64.RawURLEncoding.EncodeToString(pub.N.Bytes()))
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func TestThumbprintRFC7638(t *testing.T) {
	n, err := base64.RawURLEncoding.DecodeString(rfc7638N)
	if err != nil {
		t.Fatal(err)
	}
	e, err := base64.RawURLEncoding.DecodeString(rfc7638E)
	if err != nil {
		t.Fatal(err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}

	got, err := thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := rfc7638Thumbprint; got != want {
		t.Errorf("thumbprint(RFC 7638 §3.1 key) = %q, want %q", got, want)
	}
	if got, want := manualThumbprint(pub), rfc7638Thumbprint; got != want {
		t.Errorf("manualThumbprint(RFC 7638 §3.1 key) = %q, want %q (the test's own recipe is wrong)", got, want)
	}
}

func TestIDIsThumbprint(t *testing.T) {
	k := testKey()
	if got, want := k.ID(), manualThumbprint(&testRSA().PublicKey); got != want {
		t.Errorf("ID() = %q, want the RFC 7638 thumbprint %q", got, want)
	}
	if got, want := len(k.ID()), 43; got != want { // 32 bytes, base64url without padding
		t.Errorf("len(ID()) = %d, want %d", got, want)
	}
}

func TestParse(t *testing.T) {
	priv := testRSA()
	want := testKey().ID()
	p8 := pkcs8PEM(priv)
	p1 := pkcs1PEM(priv)
	ecPriv := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	cert := selfSignedCert(ecPriv)

	tests := []struct {
		name string
		data []byte
	}{
		{"PKCS#8", p8},
		{"PKCS#1", p1},
		{"leading text", append([]byte("Bag Attributes\n    localKeyID: 01 02\nsubject=/CN=x\n"), p8...)},
		{"CRLF line endings", bytes.ReplaceAll(p8, []byte("\n"), []byte("\r\n"))},
		{"byte order mark", append([]byte("\xef\xbb\xbf"), p1...)},
		{"certificate before the key", append(pemOf("CERTIFICATE", cert), p8...)},
		{"public key before the key", append(pemOf("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&priv.PublicKey))), p1...)},
		{"first of two keys", append(p8, pkcs8PEM(testRSA2())...)},
		{"PKCS#8 labelled RSA PRIVATE KEY", pemOf("RSA PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(priv)))},
		{"PKCS#1 labelled PRIVATE KEY", pemOf("PRIVATE KEY", x509.MarshalPKCS1PrivateKey(priv))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse(tt.data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := k.ID(); got != want {
				t.Errorf("ID() = %q, want %q", got, want)
			}
			if got, want := k.Algorithm(), jose.RS256; got != want {
				t.Errorf("Algorithm() = %q, want %q", got, want)
			}
		})
	}
}

// selfSignedCert returns the DER of a throwaway certificate for key.
func selfSignedCert(key crypto.Signer) []byte {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "keystore test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	return must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))
}

func TestParseRefuses(t *testing.T) {
	priv := testRSA()
	small := must(sharedRSA1024())
	ecPriv := testEC()
	p384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xPriv := must(ecdh.X25519().GenerateKey(rand.Reader))
	p8der := must(x509.MarshalPKCS8PrivateKey(priv))
	encrypted := &pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{
		"Proc-Type": "4,ENCRYPTED",
		"DEK-Info":  "AES-256-CBC,6C0A2B2B1B8E2E4B3C1D7F1B0A5B7C9D",
	}, Bytes: x509.MarshalPKCS1PrivateKey(priv)[:64]}

	tests := []struct {
		name    string
		data    []byte
		wantErr error  // sentinel
		want    string // in the message
	}{
		{"empty", nil, errNoPEM, "the input is empty"},
		{"blank", []byte(" \n\t\n"), errNoPEM, "the input is empty"},
		{"garbage", []byte("this is not a key"), errNoPEM, "BEGIN PRIVATE KEY"},
		{"JSON", []byte(`{"kty":"RSA","n":"...","e":"AQAB"}`), errFormat, "the JWK is invalid"},
		{"JSON of no known kind", []byte(`{"hello":"world"}`), errFormat, "Google service account key"},
		{"binary DER", p8der, errNoPEM, "openssl pkey -inform DER"},
		{"BEGIN without END", bytes.Split(pkcs8PEM(priv), []byte("-----END"))[0], errNoPEM, "truncated"},
		{"damaged DER", pemOf("PRIVATE KEY", p8der[:200]), nil, "parse PKCS#8 private key"},
		{"damaged PKCS#1 DER", pemOf("RSA PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x00}), nil, "parse PKCS#1 private key"},
		{"RSA 1024 PKCS#8", pkcs8PEM(small), errWeakKey, "1024 bits, at least 2048"},
		{"RSA 1024 PKCS#1", pkcs1PEM(small), errWeakKey, "1024 bits, at least 2048"},
		{"RSA 512 (crypto/x509 refuses it)", pemOf("RSA PRIVATE KEY", fakePKCS1(512)), errWeakKey, "512 bits, at least 2048"},
		{"EC P-384 PKCS#8", pkcs8PEM(p384), errUnsupported, "unsupported key type ECDSA P-384: only the P-256 curve"},
		{"EC P-384 SEC 1", pemOf("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(p384))), errUnsupported, "ec_paramgen_curve:P-256"},
		{"Ed25519", pkcs8PEM(edPriv), errUnsupported, "unsupported key type Ed25519"},
		{"X25519", pkcs8PEM(xPriv), errUnsupported, "unsupported key type ECDH X25519"},
		{"RSA-PSS PKCS#8", pemOf("PRIVATE KEY", rsaPSSPKCS8(t, p8der)), errUnsupported, "RSA-PSS"},
		{"DSA block", pemOf("DSA PRIVATE KEY", []byte{0x30, 0x00}), errUnsupported, `"DSA PRIVATE KEY" block`},
		{"OpenSSH", pemOf("OPENSSH PRIVATE KEY", []byte("openssh-key-v1\x00")), errUnsupported, "ssh-keygen -p -m PKCS8"},
		{"public key", pemOf("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&priv.PublicKey))), errPublicOnly, "the broker needs the private key"},
		{"PKCS#1 public key", pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&priv.PublicKey)), errPublicOnly, "this is a public key"},
		{"certificate", pemOf("CERTIFICATE", selfSignedCert(ecPriv)), errPublicOnly, "CERTIFICATE block: this is a public key"},
		{"encrypted PKCS#8", pemOf("ENCRYPTED PRIVATE KEY", p8der[:64]), errNoPassphrase, "give the broker the key's passphrase"},
		{"encrypted PKCS#1 (Proc-Type)", pem.EncodeToMemory(encrypted), errEncrypted, "convert it with: openssl pkcs8 -topk8 -v2 aes-256-cbc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse(tt.data)
			if err == nil {
				t.Fatalf("Parse = %v, want an error", k)
			}
			if k != nil {
				t.Errorf("Parse returned a key and an error")
			}
			msg := err.Error()
			t.Log(msg) // go test -v shows what an operator would read
			if !strings.HasPrefix(msg, "keystore: ") {
				t.Errorf("error %q does not start with %q", msg, "keystore: ")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %q", msg, tt.wantErr)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			assertNoKeyMaterial(t, "error", msg, tt.data)
		})
	}
}

// fakePKCS1 returns the DER of a PKCS#1 structure with a modulus of bits
// bits: not a valid key (crypto/x509 refuses it), but Go can no longer
// generate RSA keys below 1024 bits to make a real one.
func fakePKCS1(bits int) []byte {
	one := big.NewInt(1)
	n := new(big.Int).Add(new(big.Int).Lsh(one, uint(bits-1)), one)
	return must(asn1.Marshal(struct {
		Version              int
		N                    *big.Int
		E                    int
		D, P, Q, Dp, Dq, Qin *big.Int
	}{0, n, 65537, one, one, one, one, one, one}))
}

// rsaPSSPKCS8 relabels a PKCS#8 RSA key as an RSASSA-PSS key (as openssl
// genpkey -algorithm RSA-PSS writes), which crypto/x509 does not parse.
func rsaPSSPKCS8(t testing.TB, p8der []byte) []byte {
	t.Helper()
	var p8 struct {
		Version    int
		Algorithm  pkix.AlgorithmIdentifier
		PrivateKey []byte
	}
	if _, err := asn1.Unmarshal(p8der, &p8); err != nil {
		t.Fatal(err)
	}
	p8.Algorithm = pkix.AlgorithmIdentifier{Algorithm: []int{1, 2, 840, 113549, 1, 1, 10}}
	return must(asn1.Marshal(p8))
}

// assertNoKeyMaterial fails if s contains any of the base64 body of a PEM
// block in data (16 characters are enough to tell).
func assertNoKeyMaterial(t *testing.T, what, s string, data []byte) {
	t.Helper()
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return
		}
		body := base64.StdEncoding.EncodeToString(b.Bytes)
		for i := 0; i+16 <= len(body); i += 16 {
			if strings.Contains(s, body[i:i+16]) {
				t.Fatalf("%s %q contains PEM body bytes", what, s)
			}
		}
	}
}

// requireOpenSSL, set to 1 in CI, makes a missing or unable openssl a
// failure instead of a skip.
const requireOpenSSL = "TOKENBROKER_REQUIRE_OPENSSL"

// TestParseOpenSSL parses keys written by the openssl command, when it is
// installed; TestParse covers the same formats with keys Go marshals.
func TestParseOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		testkit.Missing(t, requireOpenSSL, "openssl not found in PATH: skipping keys written by openssl (TestParse covers the formats with Go-marshalled keys)")
	}
	dir := t.TempDir()
	// run runs openssl, skipping the test if this openssl cannot.
	run := func(t *testing.T, args ...string) []byte {
		t.Helper()
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			testkit.Missing(t, requireOpenSSL, fmt.Sprintf("openssl %s: %v: %s (this openssl cannot write that key)", strings.Join(args, " "), err, out))
		}
		return out
	}
	read := func(t *testing.T, name string) []byte {
		t.Helper()
		return must(os.ReadFile(filepath.Join(dir, name)))
	}
	file := func(name string) string { return filepath.Join(dir, name) }

	// One key, in both formats, gives one key id.
	run(t, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", file("pkcs8.pem"))
	k8, err := Parse(read(t, "pkcs8.pem"))
	if err != nil {
		t.Fatalf("Parse(openssl genpkey): %v", err)
	}
	t.Run("PKCS#1 has the same ID", func(t *testing.T) {
		run(t, "rsa", "-in", file("pkcs8.pem"), "-traditional", "-out", file("pkcs1.pem"))
		data := read(t, "pkcs1.pem")
		if !bytes.Contains(data, []byte("BEGIN RSA PRIVATE KEY")) {
			t.Fatalf("openssl rsa -traditional wrote no RSA PRIVATE KEY block:\n%.60s", data)
		}
		k1, err := Parse(data)
		if err != nil {
			t.Fatalf("Parse(openssl rsa -traditional): %v", err)
		}
		if got, want := k1.ID(), k8.ID(); got != want {
			t.Errorf("PKCS#1 ID() = %q, PKCS#8 ID() = %q, want them equal", got, want)
		}
	})
	t.Run("PublicPEM is openssl's public key", func(t *testing.T) {
		want := run(t, "pkey", "-in", file("pkcs8.pem"), "-pubout")
		if got := k8.PublicPEM(); !bytes.Equal(got, want) {
			t.Errorf("PublicPEM() =\n%s\nwant (openssl pkey -pubout)\n%s", got, want)
		}
	})
	t.Run("PrivatePEM is openssl's PKCS#8", func(t *testing.T) {
		if got, want := k8.PrivatePEM(), read(t, "pkcs8.pem"); !bytes.Equal(got, want) {
			t.Errorf("PrivatePEM() differs from the file openssl genpkey wrote")
		}
	})

	refusals := []struct {
		name    string
		args    []string // write file(name)
		wantErr error
	}{
		{"encrypted PKCS#8", []string{"pkey", "-in", file("pkcs8.pem"), "-aes256", "-passout", "pass:test"}, errNoPassphrase},
		{"encrypted PKCS#1", []string{"rsa", "-in", file("pkcs8.pem"), "-traditional", "-aes256", "-passout", "pass:test"}, errEncrypted},
		{"public key", []string{"pkey", "-in", file("pkcs8.pem"), "-pubout"}, errPublicOnly},
		{"RSA public key", []string{"rsa", "-in", file("pkcs8.pem"), "-RSAPublicKey_out"}, errPublicOnly},
		{"certificate", []string{"req", "-x509", "-key", file("pkcs8.pem"), "-subj", "/CN=test", "-days", "1"}, errPublicOnly},
		{"RSA 1024", []string{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"}, errWeakKey},
		{"RSA 512", []string{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"}, errWeakKey},
		{"RSA-PSS", []string{"genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"}, errUnsupported},
		{"EC P-384 PKCS#8", []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"}, errUnsupported},
		{"EC secp256k1 SEC 1 with parameters", []string{"ecparam", "-name", "secp256k1", "-genkey"}, errUnsupported},
		{"Ed25519", []string{"genpkey", "-algorithm", "ed25519"}, errUnsupported},
		{"Ed448", []string{"genpkey", "-algorithm", "ed448"}, errUnsupported},
	}
	for i, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("refused%d.pem", i)
			run(t, append(tt.args, "-out", file(name))...)
			data := read(t, name)
			k, err := Parse(data)
			if err == nil {
				t.Fatalf("Parse = %v, want an error", k)
			}
			t.Log(err)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %q", err, tt.wantErr)
			}
			assertNoKeyMaterial(t, "error", err.Error(), data)
		})
	}
}

func TestGenerate(t *testing.T) {
	k, err := Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := k.Public().(*rsa.PublicKey)
	if !ok {
		t.Fatalf("Public() is %T, want *rsa.PublicKey", k.Public())
	}
	if got, want := pub.N.BitLen(), 2048; got != want {
		t.Errorf("modulus has %d bits, want %d", got, want)
	}
	if got, want := k.ID(), manualThumbprint(pub); got != want {
		t.Errorf("ID() = %q, want %q", got, want)
	}
	// What keygen writes loads back as the same key.
	again, err := Parse(k.PrivatePEM())
	if err != nil {
		t.Fatalf("Parse(PrivatePEM()): %v", err)
	}
	if got, want := again.ID(), k.ID(); got != want {
		t.Errorf("Parse(PrivatePEM()).ID() = %q, want %q", got, want)
	}
}

func TestGenerateRefusesSizes(t *testing.T) {
	for _, bits := range []int{-1, 0, 512, 1024, 2047, 2049, 8192} {
		k, err := Generate(bits)
		if err == nil {
			t.Errorf("Generate(%d) = %v, want an error", bits, k)
			continue
		}
		if got, want := err.Error(), "use 2048, 3072 or 4096"; !strings.Contains(got, want) {
			t.Errorf("Generate(%d) error %q does not contain %q", bits, got, want)
		}
	}
}

func TestKeyTooLarge(t *testing.T) {
	// A public key is enough: newKey looks at the size before anything else.
	pub := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 8191), E: 65537}
	_, err := newKey(publicOnlySigner{pub})
	if !errors.Is(err, errLargeKey) {
		t.Fatalf("newKey(RSA-8192) error = %v, want %v", err, errLargeKey)
	}
	if got, want := err.Error(), "8192 bits, at most 4096"; !strings.Contains(got, want) {
		t.Errorf("error %q does not contain %q", got, want)
	}
}

// publicOnlySigner is a crypto.Signer that cannot sign, to reach newKey's
// checks without generating a key.
type publicOnlySigner struct{ pub crypto.PublicKey }

func (s publicOnlySigner) Public() crypto.PublicKey { return s.pub }
func (s publicOnlySigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("cannot sign")
}

func TestKeyPEMAndJWK(t *testing.T) {
	k := testKey()
	priv := testRSA()

	t.Run("PrivatePEM", func(t *testing.T) {
		b, rest := pem.Decode(k.PrivatePEM())
		if b == nil || len(rest) != 0 {
			t.Fatalf("PrivatePEM() is not one PEM block")
		}
		if got, want := b.Type, "PRIVATE KEY"; got != want {
			t.Errorf("PrivatePEM() block type = %q, want %q", got, want)
		}
		got := must(x509.ParsePKCS8PrivateKey(b.Bytes))
		if !priv.Equal(got) {
			t.Errorf("PrivatePEM() holds another key")
		}
	})
	t.Run("PublicPEM", func(t *testing.T) {
		b, rest := pem.Decode(k.PublicPEM())
		if b == nil || len(rest) != 0 {
			t.Fatalf("PublicPEM() is not one PEM block")
		}
		if got, want := b.Type, "PUBLIC KEY"; got != want {
			t.Errorf("PublicPEM() block type = %q, want %q", got, want)
		}
		got := must(x509.ParsePKIXPublicKey(b.Bytes))
		if !priv.PublicKey.Equal(got) {
			t.Errorf("PublicPEM() holds another key")
		}
	})
	t.Run("Public", func(t *testing.T) {
		if !priv.PublicKey.Equal(k.Public()) {
			t.Errorf("Public() is another key")
		}
	})
	t.Run("PublicJWK", func(t *testing.T) {
		jwk := k.PublicJWK()
		if !jwk.IsPublic() {
			t.Errorf("PublicJWK().IsPublic() = false, want true")
		}
		if got, want := jwk.KeyID, k.ID(); got != want {
			t.Errorf("PublicJWK().KeyID = %q, want %q", got, want)
		}
		if got, want := jwk.Algorithm, "RS256"; got != want {
			t.Errorf("PublicJWK().Algorithm = %q, want %q", got, want)
		}
		if got, want := jwk.Use, "sig"; got != want {
			t.Errorf("PublicJWK().Use = %q, want %q", got, want)
		}
		raw := must(json.Marshal(jwk))
		var members map[string]any
		if err := json.Unmarshal(raw, &members); err != nil {
			t.Fatal(err)
		}
		for _, m := range privateMembers {
			if _, ok := members[m]; ok {
				t.Errorf("PublicJWK() JSON has private member %q: %s", m, raw)
			}
		}
	})
}

// privateMembers are the JWK members of an RSA private key (RFC 7518 §6.3.2).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth"}

func TestSigner(t *testing.T) {
	k := testKey()
	now := time.Unix(1_700_000_000, 0)
	claims := jwt.Claims{
		Issuer:   "verifier-issuer",
		Subject:  "verifier-subject",
		Audience: jwt.Audience{"verifier-audience"},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(time.Hour)),
	}
	extra := map[string]any{"tenant_id": "tn-example", "pismo": map[string]any{"group": "g1,g2"}}
	tok, err := jwt.Signed(k.Signer()).Claims(claims).Claims(extra).Serialize()
	if err != nil {
		t.Fatalf("sign: %v", err)
	}

	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("jwt.ParseSigned: %v", err)
	}
	if got, want := len(parsed.Headers), 1; got != want {
		t.Fatalf("%d headers, want %d", got, want)
	}
	h := parsed.Headers[0]
	if got, want := h.KeyID, k.ID(); got != want {
		t.Errorf("header kid = %q, want %q", got, want)
	}
	if got, want := h.Algorithm, "RS256"; got != want {
		t.Errorf("header alg = %q, want %q", got, want)
	}
	if got, want := h.ExtraHeaders[jose.HeaderType], "JWT"; got != want {
		t.Errorf("header typ = %v, want %q", got, want)
	}
	if h.JSONWebKey != nil {
		t.Errorf("header embeds a jwk, want only a kid")
	}

	var gotClaims jwt.Claims
	var gotExtra map[string]any
	if err := parsed.Claims(k.Public(), &gotClaims, &gotExtra); err != nil {
		t.Fatalf("verify with Public(): %v", err)
	}
	if got, want := gotClaims.Subject, claims.Subject; got != want {
		t.Errorf("sub = %q, want %q", got, want)
	}
	if got, want := gotExtra["tenant_id"], "tn-example"; got != want {
		t.Errorf("tenant_id = %v, want %q", got, want)
	}
	if err := parsed.Claims(k.PublicJWK(), &gotClaims); err != nil {
		t.Errorf("verify with PublicJWK(): %v", err)
	}
	if err := parsed.Claims(testKey2().Public(), &gotClaims); err == nil {
		t.Errorf("verify with another key succeeded, want an error")
	}
}

func TestSignerConcurrent(t *testing.T) {
	k := testKey()
	const goroutines = 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for i := range goroutines {
		wg.Go(func() {
			sub := fmt.Sprintf("subject-%d", i)
			tok, err := jwt.Signed(k.Signer()).Claims(jwt.Claims{Subject: sub}).Serialize()
			if err != nil {
				errs <- fmt.Errorf("goroutine %d: sign: %w", i, err)
				return
			}
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
			if err != nil {
				errs <- fmt.Errorf("goroutine %d: parse: %w", i, err)
				return
			}
			var c jwt.Claims
			if err := parsed.Claims(k.Public(), &c); err != nil {
				errs <- fmt.Errorf("goroutine %d: verify: %w", i, err)
				return
			}
			if c.Subject != sub {
				errs <- fmt.Errorf("goroutine %d: sub = %q, want %q", i, c.Subject, sub)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// keyMaterial returns strings that would show that output holds key
// material: prefixes of the modulus, the private exponent and the primes in
// the encodings fmt, JSON and PEM use.
func keyMaterial(priv *rsa.PrivateKey) []string {
	return append(encodings(priv.N), keyMaterialPrivate(priv)...)
}

// keyMaterialPrivate is keyMaterial without the (public) modulus.
func keyMaterialPrivate(priv *rsa.PrivateKey) []string {
	var out []string
	for _, n := range []*big.Int{priv.D, priv.Primes[0], priv.Primes[1]} {
		out = append(out, encodings(n)...)
	}
	return out
}

// encodings returns a 16-character prefix of n in each encoding it could
// be printed in.
func encodings(n *big.Int) []string {
	b := n.Bytes()
	var out []string
	for _, s := range []string{
		base64.RawURLEncoding.EncodeToString(b),
		base64.StdEncoding.EncodeToString(b),
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		n.String(),
		fmt.Sprint(n.Bits()), // the words of a big.Int, as fmt shows its fields
	} {
		out = append(out, s[:16])
	}
	return out
}

func TestNoKeyMaterialInOutput(t *testing.T) {
	k := testKey()
	secrets := keyMaterial(testRSA())
	type holder struct {
		Name string
		Key  *Key
	}

	var logBuf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logBuf, nil))
	logger.Info("loaded", "key", k)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("loaded", "key", k)

	outputs := map[string]string{
		"String()":        k.String(),
		"GoString()":      k.GoString(),
		"LogValue()":      k.LogValue().String(),
		"slog handlers":   logBuf.String(),
		"%v":              fmt.Sprintf("%v", k),
		"%+v":             fmt.Sprintf("%+v", k),
		"%#v":             fmt.Sprintf("%#v", k),
		"%s":              fmt.Sprintf("%s", k),
		"%q":              fmt.Sprintf("%q", k),
		"%d":              fmt.Sprintf("%d", k),
		"%x":              fmt.Sprintf("%x", k),
		"%X":              fmt.Sprintf("%X", k),
		"%-60v":           fmt.Sprintf("%-60v", k),
		"Println":         fmt.Sprintln(k),
		"%+v of a struct": fmt.Sprintf("%+v", holder{"tn", k}),
		"%#v of a struct": fmt.Sprintf("%#v", holder{"tn", k}),
		"%v of a slice":   fmt.Sprintf("%v", []*Key{k}),
		"json.Marshal":    jsonOf(k),
	}
	for name, out := range outputs {
		if strings.Contains(strings.ToUpper(out), "PRIVATE") {
			t.Errorf("%s = %q contains PRIVATE", name, out)
		}
		assertNoSecrets(t, name, out, secrets)
	}

	// A Key value (not a *Key) has none of these methods: fmt prints its
	// fields, which must then show no more than pointers and the key id.
	var value any = *k // through any, so that vet lets %s and %d pass
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x"} {
		out := fmt.Sprintf(verb, value)
		if strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("Sprintf(%q, *k) = %q contains a PEM block", verb, out)
		}
		assertNoSecrets(t, "Sprintf("+verb+", *k)", out, secrets)
	}

	if got, want := k.String(), "RSA-2048 kid="+k.ID(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if got, want := fmt.Sprintf(verb, k), k.String(); got != want {
			t.Errorf("Sprintf(%q, k) = %q, want %q", verb, got, want)
		}
	}
	if got, want := fmt.Sprintf("%q", k), `"`+k.String()+`"`; got != want {
		t.Errorf(`Sprintf("%%q", k) = %q, want %q`, got, want)
	}
	var nilKey *Key
	if got, want := fmt.Sprint(nilKey), "<nil>"; got != want {
		t.Errorf("Sprint(nil *Key) = %q, want %q", got, want)
	}
}

// jsonOf is json.Marshal, to show that a Key (no exported fields) marshals
// to nothing.
func jsonOf(k *Key) string {
	//lint:ignore SA9005 the point is that a Key has nothing to marshal
	return string(must(json.Marshal(k)))
}

func assertNoSecrets(t *testing.T, what, out string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s = %q contains key material %q", what, out, s)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	k := testKey()
	claims := jwt.Claims{Issuer: "iss", Subject: "sub", Audience: jwt.Audience{"aud"}, IssuedAt: jwt.NewNumericDate(time.Now())}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jwt.Signed(k.Signer()).Claims(claims).Serialize(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	data := pkcs8PEM(testRSA())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// opaqueSigner hides its private key behind crypto.Signer, as a hardware key
// does: nothing but Public and Sign reaches it.
type opaqueSigner struct{ s crypto.Signer }

func (o opaqueSigner) Public() crypto.PublicKey { return o.s.Public() }
func (o opaqueSigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.s.Sign(r, d, opts)
}

func TestFromSigner(t *testing.T) {
	rsaKey, err := sharedRSA()
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		signer crypto.Signer
		opts   Options
		alg    jose.SignatureAlgorithm
		kid    string
	}{
		{"rsa default", opaqueSigner{rsaKey}, Options{}, jose.RS256, ""},
		{"rsa PS256 with kid", opaqueSigner{rsaKey}, Options{Algorithm: jose.PS256, KeyID: "hsm-2026"}, jose.PS256, "hsm-2026"},
		{"ec default", opaqueSigner{ecKey}, Options{}, jose.ES256, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := FromSigner(tc.signer, tc.opts)
			if err != nil {
				t.Fatalf("FromSigner: %v", err)
			}
			want := tc.kid
			if want == "" {
				want, _ = thumbprint(tc.signer.Public())
			}
			if k.ID() != want || k.Algorithm() != tc.alg {
				t.Errorf("kid, alg = %q, %s; want %q, %s", k.ID(), k.Algorithm(), want, tc.alg)
			}
			if pem := k.PrivatePEM(); pem != nil {
				t.Errorf("PrivatePEM of an opaque signer = %d bytes, want nil", len(pem))
			}
			tok, err := jwt.Signed(k.Signer()).Claims(jwt.Claims{Subject: "s"}).Serialize()
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{tc.alg})
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			var c jwt.Claims
			if err := parsed.Claims(k.PublicJWK(), &c); err != nil || c.Subject != "s" {
				t.Errorf("verify with PublicJWK: %v (sub %q)", err, c.Subject)
			}
		})
	}

	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name   string
		signer crypto.Signer
		opts   Options
		want   error
	}{
		{"nil", nil, Options{}, nil},
		{"ed25519", edKey, Options{}, errUnsupported},
		{"misfit alg", opaqueSigner{ecKey}, Options{Algorithm: jose.RS256}, errAlgorithmFit},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			k, err := FromSigner(tc.signer, tc.opts)
			if err == nil {
				t.Fatalf("FromSigner = %v, want an error", k)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}
