//go:build !cgo

package pkcs11

import (
	"io"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// Open would open the private key ref names, but this build has no cgo,
// which PKCS#11 needs: it returns [ErrNoCGO].
func Open(ref Ref, opts keystore.Options) (*keystore.Key, io.Closer, error) {
	return nil, nil, ErrNoCGO
}
