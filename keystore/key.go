package keystore

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
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
	"strings"

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
	errNoPEM          = errors.New("no PEM block found")
	errEncrypted      = errors.New("encrypted private key in the legacy PEM format")
	errNoPassphrase   = errors.New("the private key is encrypted and no passphrase was given")
	errBadPassphrase  = errors.New("wrong passphrase for the encrypted private key")
	errPublicOnly     = errors.New("this is a public key; the broker needs the private key")
	errUnsupported    = errors.New("unsupported key type")
	errWeakKey        = errors.New("RSA key too small")
	errLargeKey       = errors.New("RSA key too large")
	errAlgorithm      = errors.New("unsupported algorithm")
	errAlgorithmFit   = errors.New("the algorithm does not fit the key")
	errFormat         = errors.New("unrecognised key format")
	errKeyID          = errors.New("cannot choose the key")
	errServiceAccount = errors.New("invalid Google service account key")
)

// supportedKeys is what the error for an unsupported key type suggests.
const supportedKeys = "use an RSA key (2048 to 4096 bits) or an EC P-256 key"

// Key is a private signing key: a [crypto.Signer] (an RSA key of 2048 to
// 4096 bits or an EC P-256 key) with its key id and its algorithm (RS256,
// PS256 or ES256). The key id is the RFC 7638 SHA-256 thumbprint of its
// public key, base64url without padding, unless the key came with an id of
// its own (the "kid" of a JWK, the private_key_id of a Google service
// account). It signs only through [Key.Signer].
//
// A Key is immutable and safe for concurrent use. It never prints its key
// material: every fmt verb, String, GoString and LogValue show only its type,
// size and id.
type Key struct {
	signer crypto.Signer
	pub    crypto.PublicKey // *rsa.PublicKey or a P-256 *ecdsa.PublicKey
	id     string
	alg    jose.SignatureAlgorithm
	email  string      // client_email of a Google service account, else ""
	desc   string      // "RSA-2048 kid=…" or "EC-P256 kid=…", computed once
	jws    jose.Signer // built once; its Sign only reads it, so it is safe for concurrent use
}

// Parse reads a private key in any supported format; it is
// [ParseWithOptions] with no options. It tells the format from the content:
//
//   - PEM: a "PRIVATE KEY" block (PKCS#8, as openssl genpkey writes) holding
//     an RSA or EC P-256 key, an "RSA PRIVATE KEY" block (PKCS#1), an "EC
//     PRIVATE KEY" block (SEC 1, as openssl ecparam -genkey writes) or an
//     "ENCRYPTED PRIVATE KEY" block (encrypted PKCS#8, which needs
//     [Options.Passphrase]). Text before the PEM block is ignored; the first
//     private-key block is used, so a certificate followed by its key works.
//   - JSON: a private JWK, a JWK Set (such as the itsme generator's
//     jwks_private.json) or a Google service account key.
//
// Parse refuses, with a message that says what to do: anything else,
// legacy encrypted PEM (Proc-Type: 4,ENCRYPTED), public keys and
// certificates, keys other than RSA and EC P-256, and RSA keys smaller than
// 2048 or larger than 4096 bits. Its errors never contain key bytes.
func Parse(data []byte) (*Key, error) {
	return ParseWithOptions(data, Options{})
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

// FromSigner makes a Key of a signer whose private half may be out of reach,
// such as a key inside a hardware security module: the Key signs only
// through signer.Sign. The public key must be RSA of 2048 to 4096 bits or EC
// P-256. opts.KeyID, when set, is the key id (else the RFC 7638 thumbprint)
// and opts.Algorithm the algorithm (else the key's default); the other
// options concern files and are ignored. [Key.PrivatePEM] of such a Key is
// nil unless signer is a private key type the standard library can export.
func FromSigner(signer crypto.Signer, opts Options) (*Key, error) {
	if signer == nil {
		return nil, errors.New("keystore: no signer")
	}
	k, err := buildKey(signer, keyParams{id: opts.KeyID, alg: opts.Algorithm})
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	return k, nil
}

// newKey wraps a signer with the default algorithm and the thumbprint as its
// key id.
func newKey(signer crypto.Signer) (*Key, error) {
	return buildKey(signer, keyParams{})
}

// keyParams are what a key format or the caller says about a key beyond the
// key itself.
type keyParams struct {
	id    string                  // "": the RFC 7638 thumbprint
	alg   jose.SignatureAlgorithm // "": the key's default
	email string                  // client_email of a service account
}

// buildKey wraps a signer whose public key is RSA of minRSABits to
// maxRSABits or EC P-256. It takes a crypto.Signer, not a private key type,
// so that a hardware key can stand in for a file key later.
func buildKey(signer crypto.Signer, p keyParams) (*Key, error) {
	var typ string // "RSA-2048", "EC-P256"
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
		bits := pub.N.BitLen()
		if bits < minRSABits {
			return nil, weakKeyError(bits)
		}
		if bits > maxRSABits {
			return nil, fmt.Errorf("%w: it has %d bits, at most %d are supported (verifiers refuse larger keys)", errLargeKey, bits, maxRSABits)
		}
		typ = fmt.Sprintf("RSA-%d", bits)
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w %s: only the P-256 curve is supported for EC keys (ES256); generate one with: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256",
				errUnsupported, keyTypeName(pub))
		}
		typ = "EC-P256"
	default:
		return nil, fmt.Errorf("%w %s; %s", errUnsupported, keyTypeName(pub), supportedKeys)
	}
	alg, err := chooseAlgorithm(typ, p.alg)
	if err != nil {
		return nil, err
	}
	id := p.id
	if id == "" {
		if id, err = thumbprint(signer.Public()); err != nil {
			return nil, err
		}
	}
	// The signer goes through cryptosigner.Opaque, so go-jose only ever calls
	// crypto.Signer.Sign (and turns ECDSA's ASN.1 signatures into JOSE's
	// r||s); wrapping it in a JSONWebKey sets the "kid" header.
	jws, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: cryptosigner.Opaque(signer), KeyID: id}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("build %s signer: %w", alg, err)
	}
	return &Key{
		signer: signer,
		pub:    signer.Public(),
		id:     id,
		alg:    alg,
		email:  p.email,
		desc:   fmt.Sprintf("%s kid=%s", typ, id),
		jws:    jws,
	}, nil
}

// chooseAlgorithm returns want, or the default for a key of type typ
// ("RSA-2048", "EC-P256") when want is empty, or says why want does not fit.
func chooseAlgorithm(typ string, want jose.SignatureAlgorithm) (jose.SignatureAlgorithm, error) {
	rsaKey := strings.HasPrefix(typ, "RSA-")
	switch want {
	case "":
		if rsaKey {
			return jose.RS256, nil
		}
		return jose.ES256, nil
	case jose.RS256, jose.PS256:
		if rsaKey {
			return want, nil
		}
		return "", fmt.Errorf("%w: %s needs an RSA key, but this is an %s key; use ES256 with this key, or an RSA key", errAlgorithmFit, want, typ)
	case jose.ES256:
		if !rsaKey {
			return want, nil
		}
		return "", fmt.Errorf("%w: ES256 needs an EC P-256 key, but this is an %s key; use RS256 or PS256 with this key, or an EC P-256 key", errAlgorithmFit, typ)
	default:
		return "", fmt.Errorf("%w %.32q; use RS256, PS256 or ES256", errAlgorithm, want)
	}
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

// ID returns the key id: the "kid" of a JWK that had one, the
// private_key_id of a Google service account, and otherwise the RFC 7638
// SHA-256 thumbprint of the public key, base64url without padding. It is
// public: the JWKS and every signed header carry it.
func (k *Key) ID() string { return k.id }

// Algorithm returns the JWS algorithm the key signs with: [jose.RS256],
// [jose.PS256] or [jose.ES256]. Unless [Options.Algorithm] (or the "alg" of
// a JWK) chose another, it is RS256 for an RSA key and ES256 for an EC key.
func (k *Key) Algorithm() jose.SignatureAlgorithm { return k.alg }

// ClientEmail returns the client_email of a Google service account key, and
// "" for a key in any other format.
func (k *Key) ClientEmail() string { return k.email }

// Public returns the public key: an *rsa.PublicKey or an *ecdsa.PublicKey on
// P-256.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// PublicJWK returns the public key as a JWK with "kid" set to [Key.ID], "alg"
// set to [Key.Algorithm] and "use" sig. It holds no private material.
func (k *Key) PublicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.pub, KeyID: k.id, Algorithm: string(k.alg), Use: "sig"}
}

// Signer returns the key's JWS signer: [Key.Algorithm] (ECDSA signatures in
// the JOSE r||s form), with the protected header "kid" set to [Key.ID] and
// "typ" set to JWT. It is built once and is safe for concurrent use.
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
		// Unreachable: buildKey accepts only valid RSA and P-256 public keys.
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// String describes the key as "RSA-2048 kid=<id>" or "EC-P256 kid=<id>",
// without key material.
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
func (k *Key) Format(f fmt.State, verb rune) { FormatString(f, verb, k.String()) }

// FormatString is the Format method of a type that holds secret material
// and describes itself safely as s (its String): whatever the verb, only s
// is written; %s, %x and %X as fmt would format the string s, %q quoted,
// anything else as s.
func FormatString(f fmt.State, verb rune, s string) {
	switch verb {
	case 's', 'x', 'X':
		fmt.Fprintf(f, fmt.FormatString(f, verb), s)
	case 'q':
		_, _ = io.WriteString(f, strconv.Quote(s))
	default:
		_, _ = io.WriteString(f, s)
	}
}

// keyTypeName names the type of a key the broker does not take, for error
// messages.
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
