//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// mu serialises what loads, initialises, finalises and unloads modules:
// Open, and the Close of what Open returns. crypto11 counts the users of
// each module under a lock of its own, but Open also looks at the module's
// slots before crypto11 does (see findSlot).
var mu sync.Mutex

// logins are the tokens the crypto11 contexts Open made and that are not
// closed yet are logged in to, under mu.
//
// PKCS#11 logs an application in to a token, not a session: while one
// context is logged in, the token answers another context's C_Login with
// CKR_USER_ALREADY_LOGGED_IN whatever the PIN, and crypto11 takes that as
// success. So Open remembers a keyed hash of the PIN each token was logged
// in with, and refuses a different PIN for a token already logged in,
// rather than accept a PIN nobody checked (which would fail only at the
// next start).
var logins = map[slotKey]*login{}

// slotKey names a token by its module (a canonical path) and slot.
type slotKey struct {
	module string
	slot   uint
}

// login is a token some keys are logged in to: with which PIN, and how many.
type login struct {
	pin   [sha256.Size]byte // pinMAC of the PIN
	users int
}

// pinKey keys pinMAC; it lives as long as the process.
var pinKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand)
	return k
})

// pinMAC is the HMAC-SHA256 of a PIN under pinKey: enough to tell whether
// two PINs are the same without keeping either.
func pinMAC(pin []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, pinKey())
	m.Write(pin)
	var sum [sha256.Size]byte
	m.Sum(sum[:0])
	return sum
}

// probeMessage is what Open signs to check the key before returning it.
const probeMessage = "tokenbroker: PKCS#11 key check"

// Open opens the private key ref names, which must be an RSA key of 2048 to
// 4096 bits or an EC P-256 key with its public key (or a certificate) in the
// same token, and wraps it as a [keystore.Key] with opts (see
// [keystore.FromSigner]: opts.KeyID and opts.Algorithm apply, the other
// options concern key files and are ignored). The key signs inside the
// token, with sessions from a pool, and is safe for concurrent use.
//
// Open checks ref as [ParseRef] does, reads the PIN file (refusing one that
// group or others may read), loads the module, picks the one initialised
// token the URI's token, slot and library attributes match, logs in, finds
// the one private key the URI's object and id match, and signs a test
// message that must verify with the key's public key. A token that another
// key Open returned is logged in to does not check the PIN again, so Open
// refuses a PIN other than the one that key logged in with.
//
// The closer releases the token's sessions, and the module when no other
// key uses it; the Key cannot sign afterwards. Closing twice is harmless.
// When Open fails the closer is nil. Errors name the URI's attributes and
// never contain the PIN.
func Open(ref Ref, opts keystore.Options) (*keystore.Key, io.Closer, error) {
	t, err := parseRef(ref)
	if err != nil {
		return nil, nil, err
	}
	module, err := modulePath(t.module)
	if err != nil {
		return nil, nil, err
	}
	pin, err := keystore.ReadSecretLine(t.pinFile)
	if err != nil {
		return nil, nil, fmt.Errorf("pkcs11: PIN file: %w", err)
	}
	defer clear(pin)

	mu.Lock()
	defer mu.Unlock()
	slot, token, err := findSlot(module, t)
	if err != nil {
		return nil, nil, err
	}
	where := fmt.Sprintf("token %q (serial %s) of %s", token.Label, token.SerialNumber, module)
	sk, mac := slotKey{module, slot}, pinMAC(pin)
	if l := logins[sk]; l != nil && !hmac.Equal(l.pin[:], mac[:]) {
		return nil, nil, fmt.Errorf("pkcs11: log in to %s: another key of this process is logged in to the token with a different PIN than the one in %s, and a token does not check a PIN while it is logged in; correct the PIN file or, if the token's PIN was changed, restart the broker",
			where, t.pinFile)
	}
	slotNumber := int(slot) // crypto11 turns it back into the uint it was
	cfg := &crypto11.Config{Path: module, SlotNumber: &slotNumber, Pin: string(pin)}
	ctx, err := crypto11.Configure(cfg)
	cfg.Pin = "" // crypto11 reads it only to log in, in Configure
	if err != nil {
		return nil, nil, loginError(err, where, t.pinFile)
	}
	l := logins[sk]
	if l == nil {
		l = &login{pin: mac}
		logins[sk] = l
	}
	l.users++
	h := &handle{ctx: ctx, slot: sk}
	k, err := findKey(ctx, t, where, opts, h)
	if err != nil {
		h.closeLocked()
		return nil, nil, err
	}
	return k, h, nil
}

// modulePath checks the module file and returns its absolute path with
// symbolic links resolved. crypto11 shares a module between its users by
// path, and calling C_Initialize a second time fails, so two spellings of
// one module (such as /usr/lib/softhsm/libsofthsm2.so and the file it links
// to) must become one.
func modulePath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("pkcs11: module %s: %w", path, err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("pkcs11: module: %w", err)
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return "", fmt.Errorf("pkcs11: module: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("pkcs11: module %s is not a regular file (mode %s); give the path of the PKCS#11 module, a .so file", path, fi.Mode())
	}
	return resolved, nil
}

// findSlot returns the one slot whose initialised token matches the URI's
// token, slot and library attributes, with the token's description.
//
// crypto11 picks a token by one of label, serial number or slot, and keeps
// what it reads of the token to itself, so findSlot reads the slots through
// a context of its own, under mu. If the module is not initialised yet,
// findSlot initialises it and finalises it again, so that crypto11 can
// initialise it; if it is (a key Open returned uses it), C_Initialize says
// so and findSlot leaves it as it is.
func findSlot(module string, t *target) (uint, pkcs11.TokenInfo, error) {
	p := pkcs11.New(module)
	if p == nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s: cannot load it as a PKCS#11 module (it failed to load, or has no C_GetFunctionList)", module)
	}
	defer p.Destroy()
	switch err := p.Initialize(); {
	case err == nil:
		defer func() { _ = p.Finalize() }()
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	default:
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s: initialise: %w", module, err)
	}

	info, err := p.GetInfo()
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s: C_GetInfo: %w", module, err)
	}
	if !t.matchLibrary(info) {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s is %q version %d.%d by %q, which %s does not match",
			module, info.LibraryDescription, info.LibraryVersion.Major, info.LibraryVersion.Minor, info.ManufacturerID, t.tokenDescription())
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s: C_GetSlotList: %w", module, err)
	}
	var (
		found   []uint
		token   pkcs11.TokenInfo
		present []string // the initialised tokens, for messages
	)
	for _, slot := range slots {
		ti, err := p.GetTokenInfo(slot)
		if err != nil {
			return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s: C_GetTokenInfo for slot %d: %w", module, slot, err)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		present = append(present, fmt.Sprintf("%q (serial %s, slot-id %d)", ti.Label, ti.SerialNumber, slot))
		si, err := p.GetSlotInfo(slot)
		if err != nil {
			return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s: C_GetSlotInfo for slot %d: %w", module, slot, err)
		}
		if t.matchSlot(slot, si, ti) {
			found = append(found, slot)
			token = ti
		}
	}
	switch {
	case len(present) == 0:
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: module %s has no initialised token", module)
	case len(found) == 0:
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: no token of module %s matches %s; its tokens are %s",
			module, t.tokenDescription(), list(present))
	case len(found) > 1:
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: %d tokens of module %s match %s (%s): add token=, serial= or slot-id= to the URI to name one",
			len(found), module, t.tokenDescription(), list(present))
	}
	return found[0], token, nil
}

// list joins at most 8 descriptions.
func list(items []string) string {
	const most = 8
	if len(items) > most {
		return strings.Join(items[:most], ", ") + fmt.Sprintf(" and %d more", len(items)-most)
	}
	return strings.Join(items, ", ")
}

// matchLibrary reports whether the module matches the URI's library
// attributes.
func (t *target) matchLibrary(info pkcs11.Info) bool {
	return t.matches(attrLibManuf, info.ManufacturerID) &&
		t.matches(attrLibDesc, info.LibraryDescription) &&
		(!t.has(attrLibVersion) || t.libVersion == [2]uint8{info.LibraryVersion.Major, info.LibraryVersion.Minor})
}

// matchSlot reports whether a slot and its token match the URI's slot and
// token attributes.
func (t *target) matchSlot(slot uint, si pkcs11.SlotInfo, ti pkcs11.TokenInfo) bool {
	return (!t.has(attrSlotID) || t.slotID == uint64(slot)) &&
		t.matches(attrSlotDesc, si.SlotDescription) &&
		t.matches(attrSlotManuf, si.ManufacturerID) &&
		t.matches(attrToken, ti.Label) &&
		t.matches(attrManufacturer, ti.ManufacturerID) &&
		t.matches(attrModel, ti.Model) &&
		t.matches(attrSerial, ti.SerialNumber)
}

// matches reports whether the URI lacks the attribute name or gives it the
// value got (which PKCS#11 pads with spaces, miekg/pkcs11 trims).
func (t *target) matches(name, got string) bool {
	want, ok := t.attrs[name]
	return !ok || want == got
}

// tokenDescription names the attributes that select the library, slot and
// token, or says that there are none.
func (t *target) tokenDescription() string {
	d := t.describe(attrLibManuf, attrLibDesc, attrLibVersion, attrSlotManuf, attrSlotDesc, attrSlotID,
		attrManufacturer, attrModel, attrSerial, attrToken)
	if d == "pkcs11:" {
		return "the URI (which names no token)"
	}
	return d
}

// keyDescription names the attributes that select the key.
func (t *target) keyDescription() string {
	return t.describe(attrObject, attrID, attrType)
}

// loginError explains a failure of crypto11.Configure, which mostly means
// that the token refused the PIN.
func loginError(err error, where, pinFile string) error {
	var rv pkcs11.Error
	if errors.As(err, &rv) {
		switch rv {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LEN_RANGE:
			return fmt.Errorf("pkcs11: log in to %s: the token refused the PIN in %s: %w", where, pinFile, err)
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("pkcs11: log in to %s: the user PIN is locked (too many wrong PINs); the token's security officer must unlock it: %w", where, err)
		case pkcs11.CKR_PIN_EXPIRED:
			return fmt.Errorf("pkcs11: log in to %s: the user PIN has expired; set a new one: %w", where, err)
		case pkcs11.CKR_USER_PIN_NOT_INITIALIZED:
			return fmt.Errorf("pkcs11: log in to %s: the token has no user PIN yet; its security officer must set one: %w", where, err)
		}
	}
	return fmt.Errorf("pkcs11: open %s: %w", where, err)
}

// findKey finds the one private key the URI names in ctx's token, wraps it
// as a keystore.Key and checks that it signs.
func findKey(ctx *crypto11.Context, t *target, where string, opts keystore.Options, h *handle) (*keystore.Key, error) {
	label, id := t.keyAttrs()
	attrs := crypto11.NewAttributeSet()
	if label != nil {
		if err := attrs.Set(crypto11.CkaLabel, label); err != nil {
			return nil, fmt.Errorf("pkcs11: %s: %w", t.keyDescription(), err)
		}
	}
	if id != nil {
		if err := attrs.Set(crypto11.CkaId, id); err != nil {
			return nil, fmt.Errorf("pkcs11: %s: %w", t.keyDescription(), err)
		}
	}
	pairs, err := ctx.FindKeyPairsWithAttributes(attrs)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: find %s in %s: %w", t.keyDescription(), where, err)
	}
	switch len(pairs) {
	case 0:
		// crypto11 leaves out private keys whose public key it cannot find.
		if alone, err := ctx.FindPrivateKeysWithAttributes(attrs); err == nil && len(alone) > 0 {
			return nil, fmt.Errorf("pkcs11: %s: %d private key(s) in %s match, but not their public key: put the public key (or a certificate) in the token with the same id and label",
				t.keyDescription(), len(alone), where)
		}
		return nil, fmt.Errorf("pkcs11: no private key in %s matches %s", where, t.keyDescription())
	case 1:
	default:
		return nil, fmt.Errorf("pkcs11: %d private keys in %s match %s: add object= or id= to the URI to name one",
			len(pairs), where, t.keyDescription())
	}
	s := &signer{key: pairs[0], h: h}
	k, err := keystore.FromSigner(s, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %s in %s: %w", t.keyDescription(), where, err)
	}
	jws, err := k.Signer().Sign([]byte(probeMessage))
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %s in %s: test signature (%s): %w", t.keyDescription(), where, k.Algorithm(), err)
	}
	got, err := jws.Verify(k.Public())
	if err != nil || !bytes.Equal(got, []byte(probeMessage)) {
		return nil, fmt.Errorf("pkcs11: %s in %s: the test signature (%s) does not verify with the public key found with it: is the public key with the same id and label that of another key?",
			t.keyDescription(), where, k.Algorithm())
	}
	return k, nil
}

// handle is the closer Open returns: it closes the crypto11 context once.
type handle struct {
	ctx    *crypto11.Context
	slot   slotKey
	closed atomic.Bool
	once   sync.Once
	err    error
}

// Close releases the key's sessions, and the module if no other key uses
// it. It waits for signatures under way to finish; the key cannot sign
// afterwards. Calls after the first do nothing and return its result.
func (h *handle) Close() error {
	h.once.Do(func() {
		mu.Lock()
		defer mu.Unlock()
		h.close()
	})
	return h.err
}

// closeLocked is Close for Open, which holds mu.
func (h *handle) closeLocked() {
	h.once.Do(h.close)
}

func (h *handle) close() {
	h.closed.Store(true)
	if err := h.ctx.Close(); err != nil {
		h.err = fmt.Errorf("pkcs11: close: %w", err)
	}
	if l := logins[h.slot]; l != nil {
		if l.users--; l.users == 0 {
			delete(logins, h.slot)
		}
	}
}

// errClosed is what a key's Sign returns after its closer was called.
var errClosed = errors.New("pkcs11: the key's token session is closed")

// signer is a crypto11 key as the crypto.Signer keystore.FromSigner takes.
// It hides the rest of crypto11's interface (Delete, Decrypt) and asks for
// the salt length JWA's PS256 specifies, which crypto11 needs spelt out.
type signer struct {
	key crypto11.Signer
	h   *handle
}

// Public returns the public key crypto11 read from the token.
func (s *signer) Public() crypto.PublicKey { return s.key.Public() }

// Sign signs digest in the token. For RSA-PSS it asks for a salt as long as
// the hash, as RFC 7518 requires for PS256 (go-jose asks for
// rsa.PSSSaltLengthAuto, which crypto11 refuses).
func (s *signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if s.h.closed.Load() {
		return nil, errClosed
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok && pss.SaltLength == rsa.PSSSaltLengthAuto {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: pss.Hash}
	}
	sig, err := s.key.Sign(rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: sign: %w", err)
	}
	return sig, nil
}
