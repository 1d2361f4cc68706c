package pkcs11_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/keystore/pkcs11"
)

// pinValue is the PIN the refused URIs carry in pin-value; no message may
// repeat it.
const pinValue = "s3cr3t-PIN-value"

func TestParseRefAccepts(t *testing.T) {
	const module, pinFile = "/usr/lib/softhsm/libsofthsm2.so", "/run/secrets/pin"
	for _, tc := range []struct {
		name                string
		ref                 pkcs11.Ref
		wantModule, wantPIN string
	}{
		{"token and object", pkcs11.Ref{URI: "pkcs11:token=broker;object=tenant-a", Module: module, PINFile: pinFile}, module, pinFile},
		{"id only", pkcs11.Ref{URI: "pkcs11:id=%01%02%ff", Module: module, PINFile: pinFile}, module, pinFile},
		{"type private", pkcs11.Ref{URI: "pkcs11:object=k;type=private", Module: module, PINFile: pinFile}, module, pinFile},
		{"every token attribute", pkcs11.Ref{URI: "pkcs11:library-manufacturer=SoftHSM;library-description=Implementation%20of%20PKCS11;library-version=2.6;" +
			"slot-manufacturer=SoftHSM%20project;slot-description=SoftHSM%20slot%20ID%200x0;slot-id=1633303974;" +
			"manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=403da991615a3da6;token=broker;object=k;id=%01",
			Module: module, PINFile: pinFile}, module, pinFile},
		{"library-version major only", pkcs11.Ref{URI: "pkcs11:library-version=3;object=k", Module: module, PINFile: pinFile}, module, pinFile},
		{"slot-id 0", pkcs11.Ref{URI: "pkcs11:slot-id=0;object=k", Module: module, PINFile: pinFile}, module, pinFile},
		{"encoded ; and & in the path", pkcs11.Ref{URI: "pkcs11:token=A&B;object=a%3Bb", Module: module, PINFile: pinFile}, module, pinFile},
		{"vendor attributes", pkcs11.Ref{URI: "pkcs11:object=k;x-vendor=anything?x-other=/a?b|c", Module: module, PINFile: pinFile}, module, pinFile},
		{"empty query", pkcs11.Ref{URI: "pkcs11:object=k?", Module: module, PINFile: pinFile}, module, pinFile},
		{"module and PIN from the URI", pkcs11.Ref{URI: "pkcs11:object=k?module-path=" + module + "&pin-source=" + pinFile}, module, pinFile},
		{"pin-source file:/", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=file:/run/secrets/pin", Module: module}, module, pinFile},
		{"pin-source file:///", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=file:///run/secrets/pin", Module: module}, module, pinFile},
		{"pin-source encoded", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=/run/my%20pin", Module: module}, module, "/run/my pin"},
		{"the same paths twice", pkcs11.Ref{URI: "pkcs11:object=k?module-path=/usr/lib//softhsm/libsofthsm2.so&pin-source=file:/run/secrets/./pin",
			Module: module, PINFile: pinFile}, module, pinFile},
		{"relative paths in the fields", pkcs11.Ref{URI: "pkcs11:object=k", Module: "lib.so", PINFile: "pin"}, "lib.so", "pin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pkcs11.ParseRef(tc.ref)
			if err != nil {
				t.Fatalf("ParseRef(%+v): %v", tc.ref, err)
			}
			if got.URI != tc.ref.URI || got.Module != tc.wantModule || got.PINFile != tc.wantPIN {
				t.Errorf("ParseRef = %+v, want module %q and PIN file %q", got, tc.wantModule, tc.wantPIN)
			}
		})
	}
}

func TestParseRefRefuses(t *testing.T) {
	const module, pinFile = "/usr/lib/softhsm/libsofthsm2.so", "/run/secrets/pin"
	ref := func(uri string) pkcs11.Ref { return pkcs11.Ref{URI: uri, Module: module, PINFile: pinFile} }
	for _, tc := range []struct {
		name string
		ref  pkcs11.Ref
		want string
	}{
		{"no URI", ref(""), "no URI"},
		{"too long", ref("pkcs11:object=" + strings.Repeat("k", pkcs11.MaxURIBytes)), "at most 4096 are accepted"},
		{"other scheme", ref("file:/etc/key.pem"), "must begin with pkcs11:"},
		{"upper-case scheme", ref("PKCS11:object=k"), "must begin with pkcs11:"},
		{"no key", ref("pkcs11:token=broker"), "names no key: add object="},
		{"only a query", ref("pkcs11:?module-path=/m.so"), "names no key"},
		{"public key", ref("pkcs11:object=k;type=public"), `type="public", but the broker signs with a private key`},
		{"unknown type", ref("pkcs11:object=k;type=secret-key"), "write type=private or leave type out"},
		{"pin-value", ref("pkcs11:object=k?pin-value=" + pinValue), "pin-value is not accepted"},
		{"pin-value in the path", ref("pkcs11:object=k;pin-value=" + pinValue), "put the PIN in a file"},
		{"pin-value malformed", ref("pkcs11:object=k?pin-value=" + pinValue + "%zz"), "pin-value is not accepted"},
		{"pin-value with pin-source", ref("pkcs11:object=k?pin-source=/run/pin&pin-value=" + pinValue), "pin-value is not accepted"},
		{"pin-value without =", ref("pkcs11:object=k?pin-value"), "pin-value is not accepted"},
		{"PIN as an attribute name", ref("pkcs11:object=k;" + pinValue), "malformed attribute in the path"},
		{"PIN as a malformed attribute", ref("pkcs11:object=k?pin value=" + pinValue), "malformed attribute in the query"},
		{"unknown path attribute", ref("pkcs11:object=k;label=k"), `unknown attribute "label"`},
		{"unknown query attribute", ref("pkcs11:object=k?pin=" + pinValue), `unknown query attribute "pin"`},
		{"long unknown name", ref("pkcs11:object=k;" + strings.Repeat("n", 100) + "=v"), "(100 bytes long)"},
		{"query attribute in the path", ref("pkcs11:object=k;module-path=/m.so"), "module-path is a query attribute"},
		{"path attribute in the query", ref("pkcs11:token=t?object=k"), "object is a path attribute"},
		{"duplicate", ref("pkcs11:object=k;object=j"), "object appears twice"},
		{"duplicate in the query", ref("pkcs11:object=k?pin-source=/a&pin-source=/a"), "pin-source appears twice"},
		{"empty attribute", ref("pkcs11:object=k;;token=t"), "empty attribute in the path"},
		{"trailing ;", ref("pkcs11:object=k;"), "empty attribute in the path"},
		{"trailing &", ref("pkcs11:object=k?pin-source=/p&"), "empty attribute in the query"},
		{"no =", ref("pkcs11:object"), "malformed attribute in the path"},
		{"empty value", ref("pkcs11:object="), "object is empty"},
		{"empty token", ref("pkcs11:token=;object=k"), "token is empty"},
		{"space", ref("pkcs11:object=my key"), "must be percent-encoded"},
		{"| in the path", ref("pkcs11:object=k;token=a|b"), "must be percent-encoded"},
		{"bad escape", ref("pkcs11:object=k%2"), "a % not followed by two hex digits"},
		{"bad escape in a vendor attribute", ref("pkcs11:object=k;x-v=%g0"), "x-v has a % not followed"},
		{"slot-id letters", ref("pkcs11:slot-id=abc;object=k"), "slot-id must be a decimal number"},
		{"slot-id negative", ref("pkcs11:slot-id=-1;object=k"), "slot-id must be a decimal number"},
		{"slot-id too large", ref("pkcs11:slot-id=18446744073709551616;object=k"), "slot-id is out of range"},
		{"library-version", ref("pkcs11:library-version=2.x;object=k"), "library-version must be a version"},
		{"library-version too large", ref("pkcs11:library-version=256;object=k"), "library-version must be a version"},
		{"module-name", ref("pkcs11:object=k?module-name=softhsm2"), "module-name is not supported"},
		{"relative module-path", pkcs11.Ref{URI: "pkcs11:object=k?module-path=lib.so", PINFile: pinFile}, `module-path must be an absolute path, got "lib.so"`},
		{"relative pin-source", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=pin", Module: module}, "pin-source must be the absolute path"},
		{"relative file: pin-source", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=file:pin", Module: module}, "pin-source must be an absolute path"},
		{"pin-source with a host", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=file://host/pin", Module: module}, "with a host is not supported"},
		{"pin-source command", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=|cat%20/pin", Module: module}, "pin-source must be the absolute path"},
		{"pin-source env", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=env:PIN", Module: module}, "pin-source must be the absolute path"},
		{"modules differ", pkcs11.Ref{URI: "pkcs11:object=k?module-path=/other.so", Module: module, PINFile: pinFile},
			`the module "` + module + `" and the URI's module-path "/other.so" differ`},
		{"PIN files differ", pkcs11.Ref{URI: "pkcs11:object=k?pin-source=/other", Module: module, PINFile: pinFile},
			`the PIN file "` + pinFile + `" and the URI's pin-source "/other" differ`},
		{"no module", pkcs11.Ref{URI: "pkcs11:object=k", PINFile: pinFile}, "no module: give the path of the PKCS#11 module"},
		{"no PIN file", pkcs11.Ref{URI: "pkcs11:object=k", Module: module}, "no PIN file: give the path of the file holding the token's user PIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pkcs11.ParseRef(tc.ref)
			if err == nil {
				t.Fatalf("ParseRef(%+v) = %+v, want an error", tc.ref, got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "pkcs11: ") {
				t.Errorf("err = %v, want the pkcs11: prefix", err)
			}
			if strings.Contains(fmt.Sprintf("%v %#v", err, err), pinValue) {
				t.Errorf("err repeats the PIN: %v", err)
			}
			if got != (pkcs11.Ref{}) {
				t.Errorf("ParseRef returned %+v with its error", got)
			}
		})
	}
}
