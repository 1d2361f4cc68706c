package emulator_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
)

func pemBlock(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// selfSigned is a self-signed certificate for key, PEM-encoded.
func selfSigned(t *testing.T, pub any, priv any) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tn-test"},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

func TestParsePublicKeys(t *testing.T) {
	tk, ok := tenantKey(), otherKey()
	pkix, err := x509.MarshalPKIXPublicKey(&tk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	otherPKIX, err := x509.MarshalPKIXPublicKey(&ok.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t, &tk.PublicKey, tk)

	tests := []struct {
		name     string
		data     string
		wantKeys []*rsa.PublicKey
		wantKIDs []string
	}{
		{"PKIX PEM", pemBlock("PUBLIC KEY", pkix), []*rsa.PublicKey{&tk.PublicKey}, []string{""}},
		{"PKCS #1 PEM", pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&tk.PublicKey)), []*rsa.PublicKey{&tk.PublicKey}, []string{""}},
		{"certificate", cert, []*rsa.PublicKey{&tk.PublicKey}, []string{""}},
		{
			"several blocks with text around them",
			"Bag Attributes\n" + pemBlock("PUBLIC KEY", otherPKIX) + "subject=CN = tn-test\n" + cert + "\n",
			[]*rsa.PublicKey{&ok.PublicKey, &tk.PublicKey}, []string{"", ""},
		},
		{
			"JWK Set",
			mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{publicJWK(tk, "k1"), publicJWK(ok, "k2")}}),
			[]*rsa.PublicKey{&tk.PublicKey, &ok.PublicKey}, []string{"k1", "k2"},
		},
		{"single JWK", "\n  " + mustJSON(t, publicJWK(tk, "k1")), []*rsa.PublicKey{&tk.PublicKey}, []string{"k1"}},
		{"private JWK", mustJSON(t, jose.JSONWebKey{Key: tk, KeyID: "k1", Use: "sig"}), []*rsa.PublicKey{&tk.PublicKey}, []string{"k1"}},
		{
			"private JWK in a set",
			mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: tk, KeyID: "k1"}}}),
			[]*rsa.PublicKey{&tk.PublicKey}, []string{"k1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := emulator.ParsePublicKeys([]byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(keys), len(tt.wantKeys); got != want {
				t.Fatalf("got %d keys, want %d", got, want)
			}
			for i, k := range keys {
				pub, isRSA := k.Key.(*rsa.PublicKey)
				if !isRSA {
					t.Errorf("key %d is a %T, want *rsa.PublicKey (public part only)", i, k.Key)
					continue
				}
				if !pub.Equal(tt.wantKeys[i]) {
					t.Errorf("key %d is not the key encoded", i)
				}
				if got, want := k.KeyID, tt.wantKIDs[i]; got != want {
					t.Errorf("key %d kid = %q, want %q", i, got, want)
				}
			}
			if strings.Contains(mustJSON(t, keys), `"d"`) {
				t.Error("the parsed keys hold private key material")
			}
		})
	}
}

func TestParsePublicKeysRefuses(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPKIX, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	small := mustRSAKey(1024)
	smallPKIX, err := x509.MarshalPKIXPublicKey(&small.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(tenantKey())
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pemBlock("PRIVATE KEY", privDER)
	goodPKIX, err := x509.MarshalPKIXPublicKey(&tenantKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, data, wantIn string
	}{
		{"empty", "  \n", "empty"},
		{"garbage", "this is not a key", "no public key found"},
		{"garbage JSON", `{"kty": `, "JWK"},
		{"EC PEM", pemBlock("PUBLIC KEY", ecPKIX), "only RSA"},
		{"EC certificate", selfSigned(t, &ecKey.PublicKey, ecKey), "only RSA"},
		{"EC JWK", mustJSON(t, jose.JSONWebKey{Key: &ecKey.PublicKey}), "only RSA"},
		{"EC key in a JWK Set", mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{publicJWK(tenantKey(), "k1"), {Key: &ecKey.PublicKey, KeyID: "k2"}}}), "key 1"},
		{"symmetric JWK", `{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}`, "only RSA"},
		{"empty JWK Set", `{"keys": []}`, "no key"},
		{"1024-bit RSA key", pemBlock("PUBLIC KEY", smallPKIX), "2048"},
		{"private key PEM", privPEM, "private key"},
		{"private key after a good one", pemBlock("PUBLIC KEY", goodPKIX) + privPEM, "block 2"},
		{"corrupt PEM", pemBlock("PUBLIC KEY", []byte("not DER")), "PKIX"},
		{"unknown PEM block", pemBlock("X509 CRL", []byte("x")), "unsupported"},
		{"encryption JWK", mustJSON(t, jose.JSONWebKey{Key: &tenantKey().PublicKey, Use: "enc"}), "use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := emulator.ParsePublicKeys([]byte(tt.data))
			if err == nil {
				t.Fatalf("got %d keys, want an error", len(keys))
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "emulator: ") || !strings.Contains(msg, tt.wantIn) {
				t.Errorf("error = %q, want emulator: ... %s ...", msg, tt.wantIn)
			}
			if strings.Contains(msg, "MII") {
				t.Errorf("error %q holds key material", msg)
			}
		})
	}
}
