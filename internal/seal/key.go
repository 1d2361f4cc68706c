package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// KeySize is the size in bytes of a sealing key.
const KeySize = 32

// idSize is the size in bytes of a key id as it appears in a sealed value.
const idSize = 8

// Labels that separate what is derived from a key. Each derivation has its
// own, so that no two uses ever share key material.
const (
	idLabel      = "tokenbroker/seal/v1 key id\x00" // SHA-256(idLabel || key)[:8]
	sealInfo     = "tokenbroker/seal/v1 aes-256-gcm"
	nameInfo     = "tokenbroker/seal/v1 redis key name hmac-sha256"
	nameKeySize  = 32
	keyFileUsage = "make one with: umask 077; openssl rand -base64 32 > FILE"
)

// A Key is a sealing key: 32 random bytes, of which it keeps only what is
// derived from them: a public id and two subkeys (HKDF-SHA256 under distinct
// labels), one for AES-256-GCM and one for naming Redis keys with
// HMAC-SHA256. Make one with [LoadKeyFile] or [NewKey]; the zero Key is not
// usable.
//
// A Key never prints, formats or logs key material: String, GoString,
// Format and LogValue show only its id. Copies share the same derived state;
// a Key is safe for concurrent use.
type Key struct {
	k *key
}

type key struct {
	id      [idSize]byte
	aead    cipher.AEAD // AES-256-GCM under the derived sealing subkey
	nameKey []byte      // the derived naming subkey, for HMAC-SHA256
}

// LoadKeyFile reads a sealing key from path: 32 bytes in standard base64
// with padding, as `openssl rand -base64 32` prints them, followed by at
// most one newline ("\n" or "\r\n"). The file must be a regular file that
// group and others cannot access, as [keystore.ReadPrivateFile] checks.
//
// Its errors name the file and say what is wrong, and never contain key
// material. The bytes read are cleared once the key is derived (best
// effort: the Go runtime may have copied them).
func LoadKeyFile(path string) (Key, error) {
	text, err := keystore.ReadSecretLine(path)
	if err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	defer clear(text)
	// The decoder skips '\r' and '\n' wherever they are; a key is one line.
	if bytes.ContainsAny(text, "\r\n") {
		return Key{}, fmt.Errorf("seal: key file %s has more than one line; it must hold one base64 line; %s", path, keyFileUsage)
	}
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	defer clear(raw)
	n, err := base64.StdEncoding.Strict().Decode(raw, text)
	if err != nil {
		// A CorruptInputError gives only the offset of the bad byte.
		return Key{}, fmt.Errorf("seal: key file %s is not standard base64 with padding: %w; %s", path, err, keyFileUsage)
	}
	if n != KeySize {
		return Key{}, fmt.Errorf("seal: key file %s holds %d bytes, want %d; %s", path, n, KeySize, keyFileUsage)
	}
	k, err := NewKey(raw[:n])
	if err != nil {
		return Key{}, fmt.Errorf("seal: key file %s: %w", path, err)
	}
	return k, nil
}

// NewKey makes a Key from 32 random bytes, such as a key from a secret
// store or a test. It keeps nothing of raw but what it derives; the caller
// may clear raw afterwards.
func NewKey(raw []byte) (Key, error) {
	if len(raw) != KeySize {
		return Key{}, fmt.Errorf("seal: a key is %d bytes, not %d", KeySize, len(raw))
	}
	k := &key{}

	h := sha256.New()
	h.Write([]byte(idLabel))
	h.Write(raw)
	copy(k.id[:], h.Sum(nil))

	sealKey, err := hkdf.Key(sha256.New, raw, nil, sealInfo, KeySize)
	if err != nil {
		return Key{}, fmt.Errorf("seal: derive sealing key: %w", err)
	}
	defer clear(sealKey) // the cipher keeps its own expanded copy
	block, err := aes.NewCipher(sealKey)
	if err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}

	if k.nameKey, err = hkdf.Key(sha256.New, raw, nil, nameInfo, nameKeySize); err != nil {
		return Key{}, fmt.Errorf("seal: derive naming key: %w", err)
	}
	return Key{k: k}, nil
}

// ID returns the key's id: 16 lowercase hex digits, the first 8 bytes of
// SHA-256 over a fixed label and the key. It is stable, public, and says
// nothing about the key beyond telling keys apart; it is written into every
// value sealed under the key. The zero Key's id is "".
func (k Key) ID() string {
	if k.k == nil {
		return ""
	}
	return hex.EncodeToString(k.k.id[:])
}

// String returns the key's id, or "<nil>" for the zero Key.
func (k Key) String() string {
	if k.k == nil {
		return "<nil>"
	}
	return k.ID()
}

// GoString is [Key.String], so that %#v cannot print key material.
func (k Key) GoString() string { return k.String() }

// LogValue is [Key.String], so that slog cannot print key material.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Format implements [fmt.Formatter] so that no verb (%v, %+v, %#v, %d and
// %x included, which would otherwise print the fields of the key) shows
// key material: every verb formats [Key.String].
func (k Key) Format(f fmt.State, verb rune) { keystore.FormatString(f, verb, k.String()) }
