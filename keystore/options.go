package keystore

import (
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// Options are what a caller may say about a key beyond its bytes. The zero
// value asks for no passphrase, no particular key id, the key's default
// algorithm and the strict file mode check.
type Options struct {
	// Passphrase decrypts an encrypted PKCS#8 key ("ENCRYPTED PRIVATE KEY").
	// Nil or empty: encrypted keys are refused, saying a passphrase is
	// needed. It is ignored for keys that are not encrypted. The caller
	// should read it from a file or an environment variable, never from the
	// configuration itself, and may clear it after the call.
	Passphrase []byte

	// KeyID is the "kid" of the key to take from a JWK Set; it is required
	// when the set holds more than one private signing key. For a single JWK
	// or a service account key, a KeyID that differs from the key's id is an
	// error; for PEM keys it is ignored.
	KeyID string

	// Algorithm is the JWS algorithm the key signs with: RS256 or PS256 for
	// an RSA key, ES256 for an EC P-256 key. Empty means the "alg" of a JWK
	// that has one, else the key's default: RS256 for RSA, ES256 for P-256.
	// An algorithm that does not fit the key is an error naming both.
	Algorithm jose.SignatureAlgorithm

	// AllowGroupReadable is the explicit override of the file mode check of
	// [LoadFileWithOptions]: it accepts a key file that group or others may
	// read (such as a Kubernetes secret volume mounted 0440). A file that
	// group or others may write is refused all the same.
	AllowGroupReadable bool
}

// ParseWithOptions reads a private key in any format [Parse] accepts, with
// opts. Parse(data) is ParseWithOptions(data, Options{}). Its errors never
// contain key bytes or the passphrase.
func ParseWithOptions(data []byte, opts Options) (*Key, error) {
	k, err := parse(data, opts)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	return k, nil
}
