package keystore

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// The RSA modulus sizes the broker accepts. Verifiers refuse larger keys
// (go-jose's MaxRSAModulusBits is 4096), so a larger key could not be used.
const (
	minRSABits = 2048
	maxRSABits = 4096
)

// The sentinels behind Parse's refusals. The text of each is written for the
// operator who has to fix the key file.
var (
	errNoPEM       = errors.New("no PEM block found")
	errEncrypted   = errors.New("encrypted private keys are not supported yet")
	errPublicOnly  = errors.New("this is a public key; the broker needs the private key")
	errUnsupported = errors.New("unsupported key type")
	errWeakKey     = errors.New("RSA key too small")
	errLargeKey    = errors.New("RSA key too large")
)

// Key is a private signing key: a [crypto.Signer] (today an RSA key from a
// file) with its key id (the RFC 7638 SHA-256 thumbprint of its public key,
// base64url without padding) and its algorithm. It signs only through
// [Key.Signer].
//
// A Key is immutable and safe for concurrent use. It never prints its key
// material: every fmt verb, String, GoString and LogValue show only its type,
// size and id.
type Key struct {
	signer crypto.Signer
	pub    *rsa.PublicKey
	id     string
	desc   string      // "RSA-2048 kid=…", computed once
	jws    jose.Signer // built once; its Sign only reads it, so it is safe for concurrent use
}

// Parse reads a PEM-encoded RSA private key: a "PRIVATE KEY" block (PKCS#8,
// as openssl genpkey writes) or an "RSA PRIVATE KEY" block (PKCS#1, as older
// tools write). Text before the PEM block is ignored; the first private-key
// block is used, so a certificate followed by its key works.
//
// Parse refuses, with a message that says what to do: input without a PEM
// block, encrypted keys, public keys and certificates, keys other than RSA,
// and RSA keys smaller than 2048 or larger than 4096 bits. Its errors never
// contain key bytes.
func Parse(data []byte) (*Key, error) {
	k, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	return k, nil
}

// Generate makes a new RSA key of the given size, which must be 2048, 3072 or
// 4096 bits.
func Generate(bits int) (*Key, error) {
	switch bits {
	case 2048, 3072, 4096:
	default:
		return nil, fmt.Errorf("keystore: generate: RSA key size %d is not supported; use 2048, 3072 or 4096", bits)
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("keystore: generate RSA-%d key: %w", bits, err)
	}
	k, err := newKey(priv)
	if err != nil {
		return nil, fmt.Errorf("keystore: generate: %w", err)
	}
	return k, nil
}

// newKey wraps a signer whose public key is RSA of minRSABits to maxRSABits. It
// takes a crypto.Signer, not an *rsa.PrivateKey, so that a hardware key can
// stand in for a file key later.
func newKey(signer crypto.Signer) (*Key, error) {
	pub, ok := signer.Public().(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w %s; only RSA keys are supported for now", errUnsupported, keyTypeName(signer.Public()))
	}
	bits := pub.N.BitLen()
	if bits < minRSABits {
		return nil, weakKeyError(bits)
	}
	if bits > maxRSABits {
		return nil, fmt.Errorf("%w: it has %d bits, at most %d are supported (verifiers refuse larger keys)", errLargeKey, bits, maxRSABits)
	}
	id, err := thumbprint(pub)
	if err != nil {
		return nil, err
	}
	// The signer goes through cryptosigner.Opaque, so go-jose only ever calls
	// crypto.Signer.Sign; wrapping it in a JSONWebKey sets the "kid" header.
	jws, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: cryptosigner.Opaque(signer), KeyID: id}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("build RS256 signer: %w", err)
	}
	return &Key{
		signer: signer,
		pub:    pub,
		id:     id,
		desc:   fmt.Sprintf("RSA-%d kid=%s", bits, id),
		jws:    jws,
	}, nil
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of a public key, base64url
// without padding.
func thumbprint(pub crypto.PublicKey) (string, error) {
	sum, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("compute key id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

func weakKeyError(bits int) error {
	return fmt.Errorf("%w: it has %d bits, at least %d are required; generate a new key (e.g. openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)",
		errWeakKey, bits, minRSABits)
}

// ID returns the key id: the RFC 7638 SHA-256 thumbprint of the public key,
// base64url without padding. It is public: the JWKS and every signed header
// carry it.
func (k *Key) ID() string { return k.id }

// Algorithm returns the JWS algorithm the key signs with: [jose.RS256].
func (k *Key) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }

// Public returns the public key, an *rsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// PublicJWK returns the public key as a JWK with "kid" set to [Key.ID], "alg"
// RS256 and "use" sig. It holds no private material.
func (k *Key) PublicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.pub, KeyID: k.id, Algorithm: string(jose.RS256), Use: "sig"}
}

// Signer returns the key's JWS signer: RS256, with the protected header
// "kid" set to [Key.ID] and "typ" set to JWT. It is built once and is safe
// for concurrent use.
func (k *Key) Signer() jose.Signer { return k.jws }

// PrivatePEM returns the private key as a PKCS#8 "PRIVATE KEY" PEM block, for
// key generation and the development mode. It returns nil for a key whose
// private half cannot be exported (such as a hardware key).
func (k *Key) PrivatePEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k.signer)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// PublicPEM returns the public key as a PKIX "PUBLIC KEY" PEM block: what an
// operator uploads to the upstream (such as Pismo's Control Center).
func (k *Key) PublicPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		// Unreachable: newKey accepts only valid RSA public keys.
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// String describes the key as "RSA-2048 kid=<id>", without key material.
func (k *Key) String() string {
	if k == nil {
		return "<nil>"
	}
	return k.desc
}

// GoString is [Key.String], so that %#v cannot print key material.
func (k *Key) GoString() string { return k.String() }

// LogValue is [Key.String], so that slog cannot print key material.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Format implements [fmt.Formatter] so that no verb (%d and %x included,
// which would otherwise print the fields of the key) shows key material: it
// formats [Key.String].
func (k *Key) Format(f fmt.State, verb rune) {
	s := k.String()
	switch verb {
	case 's', 'x', 'X':
		fmt.Fprintf(f, fmt.FormatString(f, verb), s)
	case 'q':
		_, _ = io.WriteString(f, strconv.Quote(s))
	default:
		_, _ = io.WriteString(f, s)
	}
}

// keyTypeName names the type of a key that is not RSA, for error messages.
func keyTypeName(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + p.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *ecdh.PublicKey:
		return fmt.Sprintf("ECDH %v", p.Curve()) // X25519 and friends
	default:
		return fmt.Sprintf("%T", pub)
	}
}
