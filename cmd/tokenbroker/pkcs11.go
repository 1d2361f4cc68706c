package main

import (
	"fmt"
	"io"

	"github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/keystore"
	"github.com/tokenbroker/tokenbroker/keystore/pkcs11"
)

// openPKCS11 opens a key in a PKCS#11 token; the closer releases its
// session. Errors name the field, never the PIN.
func openPKCS11(k config.Key, alg jose.SignatureAlgorithm) (*keystore.Key, io.Closer, error) {
	key, closer, err := pkcs11.Open(pkcs11.Ref{URI: k.PKCS11.URI, Module: k.PKCS11.Module, PINFile: k.PKCS11.PINFile},
		keystore.Options{KeyID: k.KeyID, Algorithm: alg})
	if err != nil {
		return nil, nil, fmt.Errorf("%spkcs11: %w", k.Field, err)
	}
	return key, closer, nil
}
