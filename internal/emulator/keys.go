package emulator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// ParsePublicKeys reads a tenant's RSA public keys, as an operator would
// upload them to Pismo's Control Center, from
//
//   - PEM: one or more blocks of type "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY"
//     (PKCS #1) or "CERTIFICATE" (its public key is taken); text around the
//     blocks is ignored;
//   - JSON: a JWK Set ({"keys": [...]}) or a single JWK. A private JWK is
//     accepted and only its public part kept.
//
// Every key must be an RSA key of at least 2048 bits that may sign RS256.
// Keys keep the kid they have; Register gives a key without one its
// thumbprint. Errors name the block or key at fault.
func ParsePublicKeys(data []byte) ([]jose.JSONWebKey, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("emulator: no public key: the input is empty")
	}
	if trimmed[0] == '{' {
		return parseJWKs(trimmed)
	}
	return parsePEM(trimmed)
}

// parseJWKs reads a JWK Set or a single JWK.
func parseJWKs(data []byte) ([]jose.JSONWebKey, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("emulator: not a JWK or JWK Set: %w", err)
	}
	if _, ok := probe["keys"]; ok {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(data, &set); err != nil {
			return nil, fmt.Errorf("emulator: JWK Set: %w", err)
		}
		if len(set.Keys) == 0 {
			return nil, errors.New("emulator: the JWK Set holds no key")
		}
		keys := make([]jose.JSONWebKey, 0, len(set.Keys))
		for i := range set.Keys {
			k, err := publicJWK(&set.Keys[i])
			if err != nil {
				return nil, fmt.Errorf("emulator: JWK Set key %d: %w", i, err)
			}
			keys = append(keys, k)
		}
		return keys, nil
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(data, &jwk); err != nil {
		return nil, fmt.Errorf("emulator: JWK: %w", err)
	}
	k, err := publicJWK(&jwk)
	if err != nil {
		return nil, fmt.Errorf("emulator: JWK: %w", err)
	}
	return []jose.JSONWebKey{k}, nil
}

// publicJWK returns the public part of an RSA JWK fit for RS256 signatures.
func publicJWK(k *jose.JSONWebKey) (jose.JSONWebKey, error) {
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
	case *rsa.PrivateKey:
		if key == nil || key.N == nil {
			return jose.JSONWebKey{}, errors.New("is an incomplete RSA private key")
		}
	default:
		return jose.JSONWebKey{}, fmt.Errorf("is %s; only RSA keys are supported", keyKind(k.Key))
	}
	pub := k.Public()
	if _, err := checkPublicJWK(&pub); err != nil {
		return jose.JSONWebKey{}, err
	}
	return pub, nil
}

// parsePEM reads PEM public keys and certificates.
func parsePEM(data []byte) ([]jose.JSONWebKey, error) {
	var keys []jose.JSONWebKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		pub, err := pemPublicKey(block)
		if err != nil {
			return nil, fmt.Errorf("emulator: PEM block %d (%s): %w", n, block.Type, err)
		}
		k := jose.JSONWebKey{Key: pub}
		if _, err := checkPublicJWK(&k); err != nil {
			return nil, fmt.Errorf("emulator: PEM block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("emulator: no public key found: want PEM (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE), a JWK or a JWK Set")
	}
	return keys, nil
}

// pemPublicKey returns the public key of a PEM block.
func pemPublicKey(block *pem.Block) (any, error) {
	switch block.Type {
	case "PUBLIC KEY":
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a PKIX public key: %w", err)
		}
		return pub, nil
	case "RSA PUBLIC KEY":
		pub, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a PKCS #1 public key: %w", err)
		}
		return pub, nil
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not an X.509 certificate: %w", err)
		}
		return cert.PublicKey, nil
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return nil, errors.New("is a private key; give its public key (openssl rsa -in key.pem -pubout)")
	default:
		return nil, errors.New("unsupported block type; want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE")
	}
}

// keyKind names the kind of a key for an error message.
func keyKind(key any) string {
	switch key.(type) {
	case nil:
		return "no key"
	case *ecdsa.PublicKey, *ecdsa.PrivateKey:
		return "an EC key"
	case ed25519.PublicKey, ed25519.PrivateKey:
		return "an Ed25519 key"
	case []byte:
		return "a symmetric key"
	default:
		return fmt.Sprintf("a %T", key)
	}
}
