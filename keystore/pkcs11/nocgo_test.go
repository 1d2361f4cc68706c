//go:build !cgo

package pkcs11_test

import (
	"errors"
	"testing"

	"github.com/tokenbroker/tokenbroker/keystore"
	"github.com/tokenbroker/tokenbroker/keystore/pkcs11"
)

func TestOpenWithoutCGO(t *testing.T) {
	k, closer, err := pkcs11.Open(pkcs11.Ref{URI: "pkcs11:object=k", Module: "/m.so", PINFile: "/p"}, keystore.Options{})
	if !errors.Is(err, pkcs11.ErrNoCGO) || k != nil || closer != nil {
		t.Fatalf("Open = %v, %v, %v; want ErrNoCGO", k, closer, err)
	}
	if want := "pkcs11: this tokenbroker was built without cgo; PKCS#11 keys need CGO_ENABLED=1"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}
