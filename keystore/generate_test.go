package keystore

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// certNotBefore and certNotAfter are a fixed validity for the certificate
// tests: no test reads the clock.
var (
	certNotBefore = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	certNotAfter  = certNotBefore.AddDate(1, 0, 0)
)

func TestGenerateEC(t *testing.T) {
	k, err := GenerateEC()
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := k.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("Public() is %T, want a P-256 *ecdsa.PublicKey", k.Public())
	}
	if got, want := k.Algorithm(), jose.ES256; got != want {
		t.Errorf("Algorithm() = %s, want %s", got, want)
	}
	if want, _ := thumbprint(pub); k.ID() != want {
		t.Errorf("ID() = %q, want the RFC 7638 thumbprint %q", k.ID(), want)
	}
	if got, want := k.String(), "EC-P256 kid="+k.ID(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	tok, err := jwt.Signed(k.Signer()).Claims(jwt.Claims{Subject: "s"}).Serialize()
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got := parsed.Headers[0].KeyID; got != k.ID() {
		t.Errorf("JWT kid = %q, want %q", got, k.ID())
	}
	var c jwt.Claims
	if err := parsed.Claims(k.PublicJWK(), &c); err != nil || c.Subject != "s" {
		t.Errorf("verify with PublicJWK: %v (sub %q)", err, c.Subject)
	}

	// What keygen writes loads back as the same key.
	again, err := Parse(k.PrivatePEM())
	if err != nil {
		t.Fatalf("Parse(PrivatePEM()): %v", err)
	}
	if again.ID() != k.ID() || again.Algorithm() != jose.ES256 {
		t.Errorf("Parse(PrivatePEM()) = %v %s, want %v ES256", again, again.Algorithm(), k)
	}

	other, err := GenerateEC()
	if err != nil {
		t.Fatal(err)
	}
	if other.ID() == k.ID() {
		t.Error("two GenerateEC calls made the same key")
	}
}

// parseCertPEM decodes the one CERTIFICATE block of data and parses it.
func parseCertPEM(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("no CERTIFICATE PEM block in %q", data)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("%d bytes after the certificate", len(rest))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return cert
}

func TestSelfSignedCertificate(t *testing.T) {
	ecKey := must(GenerateEC())
	for _, tc := range []struct {
		name   string
		key    *Key
		sigAlg x509.SignatureAlgorithm
		ossl   string // how openssl x509 -text names the signature algorithm
	}{
		{"RSA RS256", testKey(), x509.SHA256WithRSA, "sha256WithRSAEncryption"},
		{"RSA PS256", must(ParseWithOptions(pkcs8PEM(testRSA()), Options{Algorithm: jose.PS256})), x509.SHA256WithRSAPSS, "rsassaPss"},
		{"EC ES256", ecKey, x509.ECDSAWithSHA256, "ecdsa-with-SHA256"},
		{"opaque RSA RS256", must(FromSigner(opaqueSigner{testRSA()}, Options{})), x509.SHA256WithRSA, "sha256WithRSAEncryption"},
		{"opaque RSA PS256", must(FromSigner(opaqueSigner{testRSA2()}, Options{Algorithm: jose.PS256})), x509.SHA256WithRSAPSS, "rsassaPss"},
		{"opaque EC ES256", must(FromSigner(opaqueSigner{ecKey.signer}, Options{KeyID: "hsm-1"})), x509.ECDSAWithSHA256, "ecdsa-with-SHA256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := tc.key.SelfSignedCertificate("tokenbroker tn-1", certNotBefore, certNotAfter)
			if err != nil {
				t.Fatalf("SelfSignedCertificate: %v", err)
			}
			cert := parseCertPEM(t, data)

			if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(tc.key.Public()) {
				t.Errorf("the certificate's public key (%T) is not the key's", cert.PublicKey)
			}
			if got := cert.SignatureAlgorithm; got != tc.sigAlg {
				t.Errorf("SignatureAlgorithm = %v, want %v", got, tc.sigAlg)
			}
			if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
				t.Errorf("the certificate's signature does not verify with its own public key: %v", err)
			}
			// An end-entity certificate cannot be its own parent: that is
			// what refuses it here, not the signature.
			var cv x509.ConstraintViolationError
			if err := cert.CheckSignatureFrom(cert); !errors.As(err, &cv) {
				t.Errorf("CheckSignatureFrom(itself) = %v, want a ConstraintViolationError (not a CA)", err)
			}
			if got, want := cert.Subject.String(), "CN=tokenbroker tn-1"; got != want {
				t.Errorf("Subject = %q, want %q", got, want)
			}
			if !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
				t.Errorf("Issuer %q is not the subject %q", cert.Issuer, cert.Subject)
			}
			if !cert.NotBefore.Equal(certNotBefore) || !cert.NotAfter.Equal(certNotAfter) {
				t.Errorf("validity %s to %s, want %s to %s", cert.NotBefore, cert.NotAfter, certNotBefore, certNotAfter)
			}
			if s := cert.SerialNumber; s.Sign() <= 0 || s.BitLen() > 128 {
				t.Errorf("serial number %v: want positive and at most 128 bits", s)
			}
			if cert.Version != 3 {
				t.Errorf("Version = %d, want 3", cert.Version)
			}
			if cert.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %#x, want digitalSignature (%#x) alone", cert.KeyUsage, x509.KeyUsageDigitalSignature)
			}
			if !cert.BasicConstraintsValid || cert.IsCA {
				t.Errorf("basic constraints valid=%v CA=%v, want present and CA:FALSE", cert.BasicConstraintsValid, cert.IsCA)
			}
			if len(cert.ExtKeyUsage) != 0 || len(cert.DNSNames) != 0 {
				t.Errorf("unexpected extended key usage %v or DNS names %v", cert.ExtKeyUsage, cert.DNSNames)
			}

			again := parseCertPEM(t, must(tc.key.SelfSignedCertificate("tokenbroker tn-1", certNotBefore, certNotAfter)))
			if again.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				t.Errorf("two certificates got the same serial number %v", cert.SerialNumber)
			}

			t.Run("openssl", func(t *testing.T) {
				openssl, err := exec.LookPath("openssl")
				if err != nil {
					testkit.Missing(t, requireOpenSSL, fmt.Sprintf("openssl not found in PATH: skipping the openssl reading of the certificate (the Go checks above ran): %v", err))
				}
				path := filepath.Join(t.TempDir(), "cert.pem")
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command(openssl, "x509", "-in", path, "-noout", "-text").CombinedOutput()
				if err != nil {
					t.Fatalf("openssl x509 -noout -text: %v\n%s", err, out)
				}
				for _, want := range []string{"CN=tokenbroker tn-1", "CA:FALSE", "Digital Signature", tc.ossl} {
					if !strings.Contains(strings.ReplaceAll(string(out), "CN = ", "CN="), want) {
						t.Errorf("openssl x509 -text does not show %q:\n%s", want, out)
					}
				}
			})
		})
	}
}

func TestSelfSignedCertificateTruncatesToSeconds(t *testing.T) {
	// X.509 keeps seconds; a validity given in finer units is truncated, in
	// UTC whatever the location.
	loc := time.FixedZone("UTC-3", -3*60*60)
	nb := certNotBefore.Add(400 * time.Millisecond).In(loc)
	na := certNotAfter.Add(900 * time.Millisecond).In(loc)
	cert := parseCertPEM(t, must(testKey().SelfSignedCertificate("tokenbroker", nb, na)))
	if !cert.NotBefore.Equal(certNotBefore) || !cert.NotAfter.Equal(certNotAfter) {
		t.Errorf("validity %s to %s, want %s to %s", cert.NotBefore, cert.NotAfter, certNotBefore, certNotAfter)
	}
}

func TestSelfSignedCertificateSubjects(t *testing.T) {
	k := must(GenerateEC())
	for _, subject := range []string{"t", "tokenbroker", "Zürich tenant #1 (prod)", strings.Repeat("a", maxSubjectRunes), strings.Repeat("é", maxSubjectRunes)} {
		cert := parseCertPEM(t, must(k.SelfSignedCertificate(subject, certNotBefore, certNotAfter)))
		if cert.Subject.CommonName != subject {
			t.Errorf("CommonName = %q, want %q", cert.Subject.CommonName, subject)
		}
	}
}

func TestSelfSignedCertificateRefuses(t *testing.T) {
	k := must(GenerateEC())
	for _, tc := range []struct {
		name                string
		subject             string
		notBefore, notAfter time.Time
		want                error
		wantText            string
	}{
		{"empty subject", "", certNotBefore, certNotAfter, errSubject, "empty"},
		{"long subject", strings.Repeat("a", maxSubjectRunes+1), certNotBefore, certNotAfter, errSubject, "at most 64"},
		{"newline in subject", "tokenbroker\nCN=evil", certNotBefore, certNotAfter, errSubject, "unprintable"},
		{"NUL in subject", "token\x00broker", certNotBefore, certNotAfter, errSubject, "unprintable"},
		{"bidi override in subject", "token\u202ebroker", certNotBefore, certNotAfter, errSubject, "unprintable"},
		{"invalid UTF-8 subject", "token\xffbroker", certNotBefore, certNotAfter, errSubject, "UTF-8"},
		{"equal times", "tokenbroker", certNotBefore, certNotBefore, errValidity, "not after"},
		{"reversed times", "tokenbroker", certNotAfter, certNotBefore, errValidity, "not after"},
		{"same second", "tokenbroker", certNotBefore.Add(100 * time.Millisecond), certNotBefore.Add(900 * time.Millisecond), errValidity, "not after"},
		{"zero notBefore", "tokenbroker", time.Time{}, certNotAfter, errValidity, "must both be set"},
		{"zero notAfter", "tokenbroker", certNotBefore, time.Time{}, errValidity, "must both be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := k.SelfSignedCertificate(tc.subject, tc.notBefore, tc.notAfter)
			if err == nil {
				t.Fatalf("SelfSignedCertificate = %d bytes, want an error", len(data))
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "keystore: ") || !strings.Contains(msg, tc.wantText) {
				t.Errorf("error %q: want the keystore: prefix and %q", msg, tc.wantText)
			}
		})
	}

	var nilKey *Key
	if _, err := nilKey.SelfSignedCertificate("tokenbroker", certNotBefore, certNotAfter); err == nil {
		t.Error("SelfSignedCertificate on a nil key succeeded")
	}
}

// failingSigner is a hardware key that has stopped answering.
type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("token not present")
}

func TestSelfSignedCertificateSignerFails(t *testing.T) {
	k := must(FromSigner(failingSigner{testRSA()}, Options{}))
	_, err := k.SelfSignedCertificate("tokenbroker", certNotBefore, certNotAfter)
	if err == nil || !strings.Contains(err.Error(), "token not present") || !strings.HasPrefix(err.Error(), "keystore: certificate") {
		t.Fatalf("error %v: want the signer's failure, wrapped by keystore", err)
	}
	// The error names the key by id only: no key material.
	for _, n := range []*big.Int{testRSA().N, testRSA().D} {
		if msg := err.Error(); strings.Contains(msg, n.String()[:32]) || strings.Contains(msg, n.Text(16)[:32]) {
			t.Errorf("error %q holds key material", msg)
		}
	}
}
