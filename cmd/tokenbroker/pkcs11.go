package main

import (
	"errors"
	"io"

	"github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// openPKCS11 opens a key in a PKCS#11 token. Until the PKCS#11 signer
// lands (the next commit), such a key is refused at load.
func openPKCS11(k config.Key, _ jose.SignatureAlgorithm) (*keystore.Key, io.Closer, error) {
	return nil, nil, errors.New(k.Field + "pkcs11: PKCS#11 keys are not supported by this build yet")
}
