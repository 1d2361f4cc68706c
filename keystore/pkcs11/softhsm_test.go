//go:build cgo

package pkcs11_test

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"encoding/base64"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
	"github.com/tokenbroker/tokenbroker/keystore/pkcs11"
)

// The PINs of the test tokens. They are long and unusual so that a test can
// tell whether an error message contains one.
const (
	userPIN  = "user-PIN-4711-secret"
	wrongPIN = "wrong-PIN-0815-secret"
	soPIN    = "so-PIN-1234-secret"
)

// softHSMModules are where Debian and Ubuntu install SoftHSM2's module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

// softHSM is a SoftHSM2 set up for one test: its module, a token "broker"
// holding the test keys, a second token "other", and a PIN file.
type softHSM struct {
	module  string
	pinFile string
	dir     string
}

// missing skips the test, saying what is missing, or fails it when
// TOKENBROKER_REQUIRE_SOFTHSM=1 (as CI sets).
func missing(t *testing.T, what string) {
	t.Helper()
	testkit.Missing(t, "TOKENBROKER_REQUIRE_SOFTHSM", what+" (Debian: apt-get install softhsm2): skipping the PKCS#11 test")
}

// softHSMModule locates SoftHSM2's module: $TOKENBROKER_SOFTHSM_MODULE, else
// the usual places.
func softHSMModule(t *testing.T) string {
	t.Helper()
	if m := os.Getenv("TOKENBROKER_SOFTHSM_MODULE"); m != "" {
		if _, err := os.Stat(m); err != nil {
			missing(t, fmt.Sprintf("TOKENBROKER_SOFTHSM_MODULE: %v", err))
		}
		return m
	}
	for _, m := range softHSMModules {
		if _, err := os.Stat(m); err == nil {
			return m
		}
	}
	missing(t, "no SoftHSM2 module in "+strings.Join(softHSMModules, ", "))
	return ""
}

// newSoftHSM sets up SoftHSM2 in a temporary directory: two tokens, "broker"
// with the test keys and "other" with none, and a PIN file for "broker".
// The keys in "broker":
//
//	object=rsa id=%01     RSA 2048
//	object=ec  id=%02     EC P-256
//	object=dup id=%03,%04 two EC P-256 keys with one label
//	object=lonely id=%05  EC P-256 private key whose public key has another label and id
//	object=mixed id=%06   EC P-256 private key next to the public key of another key
func newSoftHSM(t *testing.T) *softHSM {
	t.Helper()
	module := softHSMModule(t)
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		missing(t, "softhsm2-util is not on PATH")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	writeFile(t, conf, fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens))
	t.Setenv("SOFTHSM2_CONF", conf)
	for _, label := range []string{"broker", "other"} {
		out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", userPIN, "--so-pin", soPIN).CombinedOutput()
		if err != nil {
			t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
		}
	}

	ctx, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: "broker", Pin: userPIN})
	if err != nil {
		t.Fatalf("crypto11: %v", err)
	}
	defer ctx.Close()
	if _, err := ctx.GenerateRSAKeyPairWithLabel([]byte{1}, []byte("rsa"), 2048); err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	for _, k := range []struct {
		id    byte
		label string
	}{{2, "ec"}, {3, "dup"}, {4, "dup"}} {
		if _, err := ctx.GenerateECDSAKeyPairWithLabel([]byte{k.id}, []byte(k.label), elliptic.P256()); err != nil {
			t.Fatalf("generate EC key: %v", err)
		}
	}
	// Key pairs whose halves do not share id and label. Private key 5's
	// public key has id 15 and another label, so crypto11 finds none for
	// it. The public key with private key 6's id and label is private key
	// 16's, so 6 comes with the wrong public key.
	for _, k := range []struct {
		privID byte
		priv   string
		pubID  byte
		pub    string
	}{{5, "lonely", 15, "lonely-public"}, {16, "mixed-partner", 6, "mixed"}, {6, "mixed", 26, "nobody"}} {
		pub, err := crypto11.NewAttributeSetWithIDAndLabel([]byte{k.pubID}, []byte(k.pub))
		if err != nil {
			t.Fatal(err)
		}
		priv, err := crypto11.NewAttributeSetWithIDAndLabel([]byte{k.privID}, []byte(k.priv))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256()); err != nil {
			t.Fatalf("generate EC key: %v", err)
		}
	}
	h := &softHSM{module: module, dir: dir, pinFile: filepath.Join(dir, "pin")}
	writeFile(t, h.pinFile, userPIN+"\n")
	t.Cleanup(func() {
		if n := pkcs11.OpenContexts(); n != 0 {
			t.Errorf("%d crypto11 contexts are still open at the end of the test", n)
		}
	})
	return h
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ref names a key of the "broker" token.
func (h *softHSM) ref(uri string) pkcs11.Ref {
	return pkcs11.Ref{URI: uri, Module: h.module, PINFile: h.pinFile}
}

// open opens a key of the "broker" token and closes it when the test ends.
func (h *softHSM) open(t *testing.T, uri string, opts keystore.Options) (*keystore.Key, io.Closer) {
	t.Helper()
	k, closer, err := pkcs11.Open(h.ref(uri), opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", uri, err)
	}
	t.Cleanup(func() {
		if err := closer.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return k, closer
}

// signAndVerify signs a JWT with k and verifies it with k's public JWK.
func signAndVerify(k *keystore.Key, subject string) error {
	s, err := jwt.Signed(k.Signer()).Claims(jwt.Claims{Subject: subject}).Serialize()
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	tok, err := jwt.ParseSigned(s, []jose.SignatureAlgorithm{k.Algorithm()})
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if kid := tok.Headers[0].KeyID; kid != k.ID() {
		return fmt.Errorf("kid = %q, want %q", kid, k.ID())
	}
	var got jwt.Claims
	if err := tok.Claims(k.PublicJWK(), &got); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if got.Subject != subject {
		return fmt.Errorf("sub = %q, want %q", got.Subject, subject)
	}
	return nil
}

// checkNoPIN fails the test if err mentions a PIN.
func checkNoPIN(t *testing.T, err error) {
	t.Helper()
	for _, pin := range []string{userPIN, wrongPIN, soPIN} {
		if strings.Contains(err.Error(), pin) || strings.Contains(fmt.Sprintf("%#v", err), pin) {
			t.Errorf("error contains a PIN: %v", err)
		}
	}
}

func TestSoftHSM(t *testing.T) {
	h := newSoftHSM(t)

	t.Run("RSA key signs Pismo assertions the emulator accepts", func(t *testing.T) {
		k, _ := h.open(t, "pkcs11:token=broker;object=rsa;type=private", keystore.Options{})
		if k.Algorithm() != jose.RS256 || !strings.HasPrefix(k.String(), "RSA-2048 ") {
			t.Fatalf("key = %v %s, want an RS256 RSA-2048 key", k, k.Algorithm())
		}
		if pem := k.PrivatePEM(); pem != nil {
			t.Error("PrivatePEM of a token key is not nil")
		}
		emu, err := emulator.New(emulator.Config{})
		if err != nil {
			t.Fatal(err)
		}
		const tenant = "tn-hsm"
		if err := emu.Register(emulator.Tenant{ID: tenant, Issuer: "iss", Subject: "sub", Audience: "aud",
			Keys: []jose.JSONWebKey{k.PublicJWK()}}); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(emu)
		defer srv.Close()
		u, err := url.Parse(srv.URL + emulator.TokenPath)
		if err != nil {
			t.Fatal(err)
		}
		x, err := upstream.NewPismo(upstream.PismoConfig{TenantID: tenant, TokenURL: u, Issuer: "iss", Subject: "sub",
			Audience: "aud", Signer: k.Signer(), Client: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := x.Exchange(context.Background(), broker.Request{Tenant: tenant, Groups: []string{"pismo-v1:accounts:rw"}})
		if err != nil {
			t.Fatalf("Exchange: %v", err)
		}
		if tok.AccessToken == "" {
			t.Error("no access token")
		}
		if got := emu.ExchangesFor(tenant); got != 1 {
			t.Errorf("ExchangesFor = %d, want 1", got)
		}
	})

	t.Run("EC key signs ES256", func(t *testing.T) {
		k, _ := h.open(t, "pkcs11:token=broker;object=ec", keystore.Options{})
		if k.Algorithm() != jose.ES256 || !strings.HasPrefix(k.String(), "EC-P256 ") {
			t.Fatalf("key = %v %s, want an ES256 EC-P256 key", k, k.Algorithm())
		}
		if err := signAndVerify(k, "ec"); err != nil {
			t.Error(err)
		}
	})

	t.Run("key id and algorithm options", func(t *testing.T) {
		k, _ := h.open(t, "pkcs11:object=rsa;token=broker", keystore.Options{KeyID: "hsm-1", Algorithm: jose.PS256})
		if k.ID() != "hsm-1" || k.Algorithm() != jose.PS256 {
			t.Fatalf("kid %q alg %s, want hsm-1 PS256", k.ID(), k.Algorithm())
		}
		if err := signAndVerify(k, "pss"); err != nil {
			t.Error(err)
		}
		// Without a KeyID, the kid is the thumbprint, as for a file key.
		k2, _ := h.open(t, "pkcs11:object=rsa;token=broker", keystore.Options{})
		want := k2.PublicJWK()
		want.KeyID = ""
		sum, err := want.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if tp := base64.RawURLEncoding.EncodeToString(sum); k2.ID() != tp {
			t.Errorf("kid = %q, want the thumbprint %q", k2.ID(), tp)
		}
	})

	t.Run("algorithm that does not fit", func(t *testing.T) {
		_, closer, err := pkcs11.Open(h.ref("pkcs11:token=broker;object=rsa"), keystore.Options{Algorithm: jose.ES256})
		if err == nil {
			closer.Close()
			t.Fatal("Open succeeded, want an error")
		}
		if !strings.Contains(err.Error(), "ES256 needs an EC P-256 key") || closer != nil {
			t.Errorf("err = %v, closer = %v", err, closer)
		}
	})

	t.Run("ways to name the token and the key", func(t *testing.T) {
		serial, slot := tokenSerialAndSlot(t, h)
		link := filepath.Join(h.dir, "module-link.so")
		if err := os.Symlink(h.module, link); err != nil {
			t.Fatal(err)
		}
		for _, ref := range []pkcs11.Ref{
			h.ref("pkcs11:token=broker;id=%01"),
			h.ref("pkcs11:serial=" + serial + ";object=rsa;id=%01"),
			h.ref(fmt.Sprintf("pkcs11:slot-id=%d;object=rsa", slot)),
			h.ref("pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;token=broker;object=rsa;x-vendor=ignored"),
			h.ref("pkcs11:library-manufacturer=SoftHSM;token=broker;object=rsa"),
			{URI: "pkcs11:token=broker;object=rsa?module-path=" + h.module + "&pin-source=" + h.pinFile},
			{URI: "pkcs11:token=broker;object=rsa?module-path=" + h.module + "&pin-source=file:" + h.pinFile},
			{URI: "pkcs11:token=broker;object=rsa?pin-source=file://" + h.pinFile, Module: link},
		} {
			k, closer, err := pkcs11.Open(ref, keystore.Options{})
			if err != nil {
				t.Errorf("Open(%+v): %v", ref, err)
				continue
			}
			if err := signAndVerify(k, "forms"); err != nil {
				t.Errorf("%s: %v", ref.URI, err)
			}
			if err := closer.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})

	t.Run("wrong PIN", func(t *testing.T) {
		if n := pkcs11.OpenContexts(); n != 0 {
			t.Fatalf("%d contexts open: the token would not check the PIN", n)
		}
		bad := filepath.Join(t.TempDir(), "wrong-pin")
		writeFile(t, bad, wrongPIN+"\r\n")
		_, closer, err := pkcs11.Open(pkcs11.Ref{URI: "pkcs11:token=broker;object=rsa", Module: h.module, PINFile: bad}, keystore.Options{})
		if err == nil {
			closer.Close()
			t.Fatal("Open succeeded with a wrong PIN")
		}
		if !strings.Contains(err.Error(), "the token refused the PIN in "+bad) || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
			t.Errorf("err = %v, want the token's refusal", err)
		}
		checkNoPIN(t, err)
		if n := pkcs11.OpenContexts(); n != 0 {
			t.Errorf("a failed Open left %d contexts open", n)
		}
	})

	t.Run("wrong PIN while the token is logged in", func(t *testing.T) {
		// The token no longer checks a PIN: Open must.
		h.open(t, "pkcs11:token=broker;object=ec", keystore.Options{})
		bad := filepath.Join(t.TempDir(), "wrong-pin")
		writeFile(t, bad, wrongPIN)
		_, closer, err := pkcs11.Open(pkcs11.Ref{URI: "pkcs11:token=broker;object=rsa", Module: h.module, PINFile: bad}, keystore.Options{})
		if err == nil {
			closer.Close()
			t.Fatal("Open succeeded with a wrong PIN")
		}
		if !strings.Contains(err.Error(), "logged in to the token with a different PIN than the one in "+bad) {
			t.Errorf("err = %v, want it to say the PIN differs", err)
		}
		checkNoPIN(t, err)
		// The same PIN, spelt with a newline or without, is the same PIN.
		same := filepath.Join(t.TempDir(), "same-pin")
		writeFile(t, same, userPIN+"\r\n")
		h.open(t, "pkcs11:token=broker;object=rsa", keystore.Options{})
		_, closer, err = pkcs11.Open(pkcs11.Ref{URI: "pkcs11:token=broker;object=rsa", Module: h.module, PINFile: same}, keystore.Options{})
		if err != nil {
			t.Fatalf("the same PIN: %v", err)
		}
		closer.Close()
		// Another token is not logged in: its PIN is checked by the token.
		_, closer, err = pkcs11.Open(pkcs11.Ref{URI: "pkcs11:token=other;object=rsa", Module: h.module, PINFile: bad}, keystore.Options{})
		if err == nil || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
			t.Errorf("wrong PIN for the other token: err = %v, want CKR_PIN_INCORRECT", err)
		}
		if closer != nil {
			closer.Close()
		}
	})

	t.Run("refusals", func(t *testing.T) {
		worldReadable := filepath.Join(t.TempDir(), "pin")
		writeFile(t, worldReadable, userPIN)
		if err := os.Chmod(worldReadable, 0o644); err != nil {
			t.Fatal(err)
		}
		empty := filepath.Join(t.TempDir(), "pin")
		writeFile(t, empty, "\n")
		notModule := filepath.Join(t.TempDir(), "libnot.so")
		writeFile(t, notModule, "not a shared library")
		for _, tc := range []struct {
			name string
			ref  pkcs11.Ref
			want string
		}{
			{"no such key", h.ref("pkcs11:token=broker;object=nope"), `no private key in token "broker"`},
			{"no such key names it", h.ref("pkcs11:token=broker;object=nope;id=%09"), "matches pkcs11:object=nope;id=%09"},
			{"key in another token", h.ref("pkcs11:token=other;object=rsa"), `no private key in token "other"`},
			{"two keys", h.ref("pkcs11:token=broker;object=dup"), "2 private keys in token"},
			{"no public key", h.ref("pkcs11:token=broker;object=lonely"), "but not their public key"},
			{"wrong public key", h.ref("pkcs11:token=broker;object=mixed"), "does not verify with the public key found with it"},
			{"no such token", h.ref("pkcs11:token=nope;object=rsa"), `matches pkcs11:token=nope; its tokens are "`},
			{"two tokens", h.ref("pkcs11:object=rsa"), "2 tokens of module"},
			{"token attributes disagree", h.ref("pkcs11:token=broker;model=HSM9000;object=rsa"), "matches pkcs11:model=HSM9000;token=broker"},
			{"other library", h.ref("pkcs11:library-description=Acme%20HSM;object=rsa"), "which pkcs11:library-description=Acme%20HSM does not match"},
			{"bad URI", h.ref("pkcs11:token=broker"), "names no key"},
			{"PIN file readable by others", pkcs11.Ref{URI: "pkcs11:object=rsa", Module: h.module, PINFile: worldReadable}, "PIN file: keystore: " + worldReadable + " is readable by group or others"},
			{"empty PIN file", pkcs11.Ref{URI: "pkcs11:object=rsa", Module: h.module, PINFile: empty}, "is empty"},
			{"no PIN file", pkcs11.Ref{URI: "pkcs11:object=rsa", Module: h.module, PINFile: empty + ".absent"}, "no such file"},
			{"no module", pkcs11.Ref{URI: "pkcs11:object=rsa", Module: notModule + ".absent", PINFile: h.pinFile}, "no such file"},
			{"not a module", pkcs11.Ref{URI: "pkcs11:object=rsa", Module: notModule, PINFile: h.pinFile}, "cannot load it as a PKCS#11 module"},
			{"module is a directory", pkcs11.Ref{URI: "pkcs11:object=rsa", Module: h.dir, PINFile: h.pinFile}, "not a regular file"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, closer, err := pkcs11.Open(tc.ref, keystore.Options{})
				if err == nil {
					closer.Close()
					t.Fatal("Open succeeded, want an error")
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
				}
				if closer != nil {
					t.Error("closer is not nil")
				}
				checkNoPIN(t, err)
				if n := pkcs11.OpenContexts(); n != 0 {
					t.Errorf("a failed Open left %d contexts open", n)
				}
			})
		}
	})

	t.Run("concurrent signing", func(t *testing.T) {
		rsaKey, _ := h.open(t, "pkcs11:token=broker;object=rsa", keystore.Options{})
		ecKey, _ := h.open(t, "pkcs11:token=broker;object=ec", keystore.Options{})
		const goroutines, each = 20, 5
		errs := make(chan error, goroutines*each)
		var wg sync.WaitGroup
		for g := range goroutines {
			k := rsaKey
			if g%2 == 1 {
				k = ecKey
			}
			wg.Go(func() {
				for i := range each {
					if err := signAndVerify(k, fmt.Sprintf("g%d-%d", g, i)); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("open twice, close, reopen", func(t *testing.T) {
		a, closeA, err := pkcs11.Open(h.ref("pkcs11:token=broker;object=rsa"), keystore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, closeB, err := pkcs11.Open(h.ref("pkcs11:token=broker;object=ec"), keystore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer closeB.Close()
		mustSign(t, "A", a)
		mustSign(t, "B", b)
		if err := closeA.Close(); err != nil {
			t.Fatalf("close A: %v", err)
		}
		if err := closeA.Close(); err != nil {
			t.Errorf("close A again: %v", err)
		}
		if _, err := a.Signer().Sign([]byte("x")); err == nil || !strings.Contains(err.Error(), "closed") {
			t.Errorf("signing with a closed key: err = %v, want it to say the session is closed", err)
		}
		mustSign(t, "B after closing A", b)
		a2, closeA2, err := pkcs11.Open(h.ref("pkcs11:token=broker;object=rsa"), keystore.Options{})
		if err != nil {
			t.Fatalf("reopen A: %v", err)
		}
		defer closeA2.Close()
		mustSign(t, "A reopened", a2)
		if a2.ID() != a.ID() {
			t.Errorf("reopened A has kid %q, was %q", a2.ID(), a.ID())
		}

		// A reload: the same key opened again, through another spelling of
		// the module's path, before the old one is closed.
		link := filepath.Join(t.TempDir(), "libsofthsm2.so")
		if err := os.Symlink(h.module, link); err != nil {
			t.Fatal(err)
		}
		a3, closeA3, err := pkcs11.Open(pkcs11.Ref{URI: "pkcs11:token=broker;object=rsa", Module: link, PINFile: h.pinFile}, keystore.Options{})
		if err != nil {
			t.Fatalf("open A a third time: %v", err)
		}
		mustSign(t, "A, third", a3)
		mustSign(t, "A reopened, with a third open", a2)
		if err := closeA2.Close(); err != nil {
			t.Fatal(err)
		}
		mustSign(t, "A, third, the second closed", a3)
		if err := closeA3.Close(); err != nil {
			t.Fatal(err)
		}
		mustSign(t, "B last", b)
	})

	t.Run("modules finalised and reopened", func(t *testing.T) {
		for i := range 3 {
			if n := pkcs11.OpenContexts(); n != 0 {
				t.Fatalf("%d contexts open", n)
			}
			k, closer, err := pkcs11.Open(h.ref("pkcs11:token=broker;object=ec"), keystore.Options{})
			if err != nil {
				t.Fatalf("open %d: %v", i, err)
			}
			mustSign(t, "EC", k)
			if err := closer.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func mustSign(t *testing.T, what string, k *keystore.Key) {
	t.Helper()
	if err := signAndVerify(k, what); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// tokenSerialAndSlot returns the serial number and slot of the "broker"
// token.
func tokenSerialAndSlot(t *testing.T, h *softHSM) (string, uint) {
	t.Helper()
	out, err := exec.Command("softhsm2-util", "--show-slots").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --show-slots: %v\n%s", err, out)
	}
	// Slot 123456
	//     ...
	//     Token info:
	//         ...
	//         Serial number:    e1b5...
	//         ...
	//         Label:            broker
	var (
		slot   uint
		serial string
	)
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if s, ok := strings.CutPrefix(line, "Slot "); ok && !strings.HasSuffix(s, ":") {
			if _, err := fmt.Sscan(s, &slot); err != nil {
				t.Fatalf("slot line %q: %v", line, err)
			}
		}
		if s, ok := strings.CutPrefix(line, "Serial number:"); ok {
			serial = strings.TrimSpace(s)
		}
		if label, ok := strings.CutPrefix(line, "Label:"); ok && strings.TrimSpace(label) == "broker" {
			return serial, slot
		}
	}
	t.Fatalf("no token broker in:\n%s", out)
	return "", 0
}
