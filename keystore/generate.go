package keystore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
)

// maxSubjectRunes is the longest certificate subject common name: the
// ub-common-name of X.520, which RFC 5280 Appendix A repeats.
const maxSubjectRunes = 64

// The sentinels behind SelfSignedCertificate's refusals.
var (
	errSubject  = errors.New("invalid certificate subject")
	errValidity = errors.New("invalid certificate validity")
)

// GenerateEC makes a new EC P-256 key, which signs with ES256. [Generate]
// makes RSA keys.
func GenerateEC() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keystore: generate EC P-256 key: %w", err)
	}
	k, err := newKey(priv)
	if err != nil {
		return nil, fmt.Errorf("keystore: generate: %w", err)
	}
	return k, nil
}

// SelfSignedCertificate returns a self-signed X.509 certificate for the key
// as a "CERTIFICATE" PEM block, for an upstream that wants the public key in
// that form (Pismo's Control Center shows it as one). It is signed through
// the key's [crypto.Signer], so a hardware key (see [FromSigner]) can make
// one too.
//
// The subject and issuer are CN=subject, which must be 1 to 64 printable
// characters. The certificate is valid from notBefore to notAfter (both
// truncated to the second, as X.509 keeps them), and notAfter must come
// after notBefore. Its serial number is a random positive 128-bit number; it
// is an end-entity certificate (basic constraints CA:FALSE) whose only key
// usage is digitalSignature, and its signature algorithm matches
// [Key.Algorithm]: SHA256-RSA for RS256, SHA256-RSAPSS for PS256 and
// ECDSA-SHA256 for ES256. Because it is not a CA certificate,
// [x509.Certificate.CheckSignatureFrom] refuses it as its own parent; check
// its signature with [x509.Certificate.CheckSignature].
//
// Its errors never contain key material.
func (k *Key) SelfSignedCertificate(subject string, notBefore, notAfter time.Time) ([]byte, error) {
	if k == nil || k.signer == nil {
		return nil, errors.New("keystore: certificate: no key")
	}
	if err := checkSubject(subject); err != nil {
		return nil, fmt.Errorf("keystore: certificate: %w", err)
	}
	if notBefore.IsZero() || notAfter.IsZero() {
		return nil, fmt.Errorf("keystore: certificate: %w: notBefore and notAfter must both be set", errValidity)
	}
	notBefore, notAfter = notBefore.UTC().Truncate(time.Second), notAfter.UTC().Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("keystore: certificate: %w: notAfter %s is not after notBefore %s",
			errValidity, notAfter.Format(time.RFC3339), notBefore.Format(time.RFC3339))
	}
	sigAlg, err := x509SignatureAlgorithm(k.alg)
	if err != nil {
		return nil, fmt.Errorf("keystore: certificate: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("keystore: certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: subject}, // also the issuer: the template is its own parent
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
		SignatureAlgorithm:    sigAlg,
	}
	// The signer signs: the private key never has to leave it.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.pub, k.signer)
	if err != nil {
		return nil, fmt.Errorf("keystore: certificate for %s: %w", k, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// checkSubject accepts 1 to maxSubjectRunes printable characters (spaces
// included, control and format characters not).
func checkSubject(subject string) error {
	switch n := utf8.RuneCountInString(subject); {
	case subject == "":
		return fmt.Errorf("%w: the subject is empty; give a name such as the service's", errSubject)
	case !utf8.ValidString(subject):
		return fmt.Errorf("%w: the subject is not valid UTF-8", errSubject)
	case n > maxSubjectRunes:
		return fmt.Errorf("%w: the subject has %d characters, at most %d are allowed", errSubject, n, maxSubjectRunes)
	}
	for _, r := range subject {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: the subject %+q holds the unprintable character %U", errSubject, subject, r)
		}
	}
	return nil
}

// x509SignatureAlgorithm is the certificate signature algorithm that fits
// the JWS algorithm alg.
func x509SignatureAlgorithm(alg jose.SignatureAlgorithm) (x509.SignatureAlgorithm, error) {
	switch alg {
	case jose.RS256:
		return x509.SHA256WithRSA, nil
	case jose.PS256:
		return x509.SHA256WithRSAPSS, nil
	case jose.ES256:
		return x509.ECDSAWithSHA256, nil
	}
	// Unreachable: buildKey accepts only the three above.
	return x509.UnknownSignatureAlgorithm, fmt.Errorf("%w %.32q", errAlgorithm, alg)
}

// randomSerial returns a random serial number in [1, 2^128-1]: positive, as
// RFC 5280 §4.1.2.2 requires, and at most 17 octets in DER.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	limit.Sub(limit, big.NewInt(1))
	n, err := rand.Int(rand.Reader, limit) // [0, 2^128-2]
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
