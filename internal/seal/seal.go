package seal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// Version is the format version, the first byte of every sealed value.
const Version byte = 1

// The layout of a sealed value:
//
//	version (1) | key id (8) | nonce (12) | ciphertext (len(plaintext)) | tag (16)
const (
	nonceSize  = 12
	tagSize    = 16
	headerSize = 1 + idSize             // version and key id, also the start of the AAD
	prefixSize = headerSize + nonceSize // everything before the ciphertext
	overhead   = prefixSize + tagSize   // what sealing adds to a plaintext
)

// MaxSize is the size in bytes of the largest sealed value: [Sealer.Open]
// refuses anything larger before any work, and [Sealer.Seal] refuses a
// plaintext that would seal to more ([MaxPlaintextSize]).
const MaxSize = 64 << 10

// MaxPlaintextSize is the size of the largest plaintext [Sealer.Seal] takes.
const MaxPlaintextSize = MaxSize - overhead

var (
	// ErrInvalid is the error of [Sealer.Open] for a value that is not one
	// this package sealed with a configured key and the same aad: tampered
	// with, truncated, of another version, too large, or stored under
	// another cache key. Callers should treat it as a cache miss.
	ErrInvalid = errors.New("seal: invalid sealed value")

	// ErrUnknownKey is the error of [Sealer.Open] for a value whose key id
	// is none of the Sealer's keys: sealed under a key not configured here
	// (a replica ahead or behind in a rotation, or a key dropped too soon),
	// or with its id tampered with; nothing can tell which, since there is
	// no key to check it with. It wraps [ErrInvalid], so that errors.Is(err,
	// ErrInvalid) holds for every value that does not open; test for
	// ErrUnknownKey first to tell it apart, e.g. in metrics.
	ErrUnknownKey = fmt.Errorf("%w: sealed under an unknown key", ErrInvalid)

	// ErrTooLarge is the error of [Sealer.Seal] for a plaintext larger than
	// [MaxPlaintextSize].
	ErrTooLarge = fmt.Errorf("seal: plaintext larger than %d bytes", MaxPlaintextSize)
)

// A Sealer seals values under its current key and opens values sealed
// under any of its keys, and names the Redis keys to store them under. Make
// one with [NewSealer]; the zero Sealer is not usable. It is immutable and
// safe for concurrent use. It prints only its key ids.
type Sealer struct {
	keys []*key // the current key first, then the older ones
}

// NewSealer returns a Sealer that seals with current and opens values
// sealed under current or any of older.
//
// To rotate keys: configure the new key as current and the old one in
// older, on every replica; values sealed under the old key still open.
// Once the longest TTL of those values has passed, drop the old key. Note
// that names change with the current key (see [Sealer.Names]). While the
// replicas are being changed, those still on the old key alone miss on
// values sealed under the new one ([ErrUnknownKey]); to avoid even that,
// first configure the new key as older everywhere, then make it current.
//
// NewSealer refuses the zero Key and two keys with the same id (the same
// key configured twice).
func NewSealer(current Key, older ...Key) (*Sealer, error) {
	s := &Sealer{keys: make([]*key, 0, 1+len(older))}
	for i, k := range append([]Key{current}, older...) {
		if k.k == nil {
			if i == 0 {
				return nil, errors.New("seal: the current key is the zero Key")
			}
			return nil, fmt.Errorf("seal: older key %d is the zero Key", i)
		}
		for _, have := range s.keys {
			if have.id == k.k.id {
				return nil, fmt.Errorf("seal: key %s is configured twice", k)
			}
		}
		s.keys = append(s.keys, k.k)
	}
	return s, nil
}

// Seal encrypts and authenticates plaintext under the current key, bound to
// aad (the cache key), and returns
//
//	version | key id | nonce | ciphertext | tag
//
// with a fresh random nonce (so sealing the same plaintext twice gives
// different values) and AAD = version | key id | aad, so that the value
// opens only with the same aad: a value moved to another Redis key does not
// open. Its only error is [ErrTooLarge].
//
// Nonces are random 96-bit values, so one key should seal no more than
// 2^32 values (NIST SP 800-38D); rotate long before.
func (s *Sealer) Seal(aad, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintextSize {
		return nil, ErrTooLarge
	}
	var nonce [nonceSize]byte
	_, _ = rand.Read(nonce[:]) // never fails: it crashes the program instead
	return s.keys[0].seal(nonce[:], aad, plaintext), nil
}

// seal is Seal with a given nonce.
func (k *key) seal(nonce, aad, plaintext []byte) []byte {
	out := make([]byte, prefixSize, len(plaintext)+overhead)
	out[0] = Version
	copy(out[1:headerSize], k.id[:])
	copy(out[headerSize:prefixSize], nonce)
	return k.aead.Seal(out, nonce, plaintext, additionalData(out[:headerSize], aad))
}

// Open checks and decrypts a value sealed by [Sealer.Seal] with the same
// aad under any of the Sealer's keys and returns the plaintext (never nil
// on success). It returns [ErrUnknownKey] for a value sealed under a key it
// does not have, and [ErrInvalid] for anything else that does not open:
// tampering, truncation, another aad, another version, more than [MaxSize]
// bytes. It never panics, whatever sealed holds.
func (s *Sealer) Open(aad, sealed []byte) ([]byte, error) {
	if len(sealed) < overhead || len(sealed) > MaxSize || sealed[0] != Version {
		return nil, ErrInvalid
	}
	var k *key
	for _, c := range s.keys {
		if string(c.id[:]) == string(sealed[1:headerSize]) {
			k = c
			break
		}
	}
	if k == nil {
		return nil, fmt.Errorf("%w (key id %s)", ErrUnknownKey, hex.EncodeToString(sealed[1:headerSize]))
	}
	nonce, ciphertext := sealed[headerSize:prefixSize], sealed[prefixSize:]
	plaintext, err := k.aead.Open(make([]byte, 0, len(ciphertext)-tagSize), nonce, ciphertext, additionalData(sealed[:headerSize], aad))
	if err != nil {
		return nil, ErrInvalid
	}
	return plaintext, nil
}

// additionalData returns header | aad.
func additionalData(header, aad []byte) []byte {
	ad := make([]byte, 0, len(header)+len(aad))
	return append(append(ad, header...), aad...)
}

// Name returns the name to store the value for cacheKey under: the
// unpadded base64url HMAC-SHA256 of cacheKey under a subkey derived from the
// current key, 43 characters with no prefix (the store namespaces its Redis
// keys itself). It is deterministic for a given key, and shows nothing of
// cacheKey (tenants, account ids, groups) but whether two names are for the
// same cache key.
//
// Names depend on the current key, so they all change when it rotates:
// write under Name, and read with [Sealer.Names].
func (s *Sealer) Name(cacheKey []byte) string {
	return s.keys[0].name(cacheKey)
}

// Names returns the names of cacheKey under each of the Sealer's keys, the
// current key's (that is, [Sealer.Name]) first, then the older keys' in the
// order given to [NewSealer]. During a rotation, replicas that already seal
// with the new key write under its names, and those that do not yet, under
// the old key's; a reader that tries each name in turn finds the value
// either wrote, and [Sealer.Open] opens it with the matching key. After the
// old key is dropped, Names is [Sealer.Name] alone.
func (s *Sealer) Names(cacheKey []byte) []string {
	names := make([]string, len(s.keys))
	for i, k := range s.keys {
		names[i] = k.name(cacheKey)
	}
	return names
}

// name is Name under k.
func (k *key) name(cacheKey []byte) string {
	m := hmac.New(sha256.New, k.nameKey)
	m.Write(cacheKey)
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(m.Sum(sum[:0]))
}

// String shows the Sealer's key ids, and nothing else:
// "seal.Sealer{current: ID, older: [ID ...]}".
func (s *Sealer) String() string {
	if s == nil || len(s.keys) == 0 {
		return "<nil>"
	}
	var b strings.Builder
	b.WriteString("seal.Sealer{current: ")
	b.WriteString(hex.EncodeToString(s.keys[0].id[:]))
	b.WriteString(", older: [")
	for i, k := range s.keys[1:] {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(hex.EncodeToString(k.id[:]))
	}
	b.WriteString("]}")
	return b.String()
}

// GoString is [Sealer.String], so that %#v cannot print key material.
func (s *Sealer) GoString() string { return s.String() }

// LogValue is [Sealer.String], so that slog cannot print key material.
func (s *Sealer) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Format implements [fmt.Formatter] so that no verb shows key material:
// every verb formats [Sealer.String].
func (s *Sealer) Format(f fmt.State, verb rune) { keystore.FormatString(f, verb, s.String()) }
