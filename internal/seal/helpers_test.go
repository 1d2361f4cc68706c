package seal

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// rawKey returns 32 fixed bytes made from label, so that tests, seeds and
// examples are reproducible. They are test keys, never used elsewhere.
func rawKey(label string) []byte {
	sum := sha256.Sum256([]byte("seal test key " + label))
	return sum[:]
}

// testKey returns the Key for rawKey(label).
func testKey(tb testing.TB, label string) Key {
	tb.Helper()
	k, err := NewKey(rawKey(label))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// testSealer returns a Sealer over the test keys of current and older.
func testSealer(tb testing.TB, current string, older ...string) *Sealer {
	tb.Helper()
	ks := make([]Key, len(older))
	for i, l := range older {
		ks[i] = testKey(tb, l)
	}
	s, err := NewSealer(testKey(tb, current), ks...)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// secrets returns everything derived from raw that must never be shown:
// raw itself and the two subkeys.
func secrets(tb testing.TB, raw []byte) [][]byte {
	tb.Helper()
	sealKey, err := hkdf.Key(sha256.New, raw, nil, sealInfo, KeySize)
	if err != nil {
		tb.Fatal(err)
	}
	nameKey, err := hkdf.Key(sha256.New, raw, nil, nameInfo, nameKeySize)
	if err != nil {
		tb.Fatal(err)
	}
	return [][]byte{raw, sealKey, nameKey}
}

// encodings returns b as raw bytes, hex and base64 in each form.
func encodings(b []byte) []string {
	return []string{
		string(b),
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
	}
}

// checkNoSecret fails if s contains any of secrets in any encoding, or a
// 12-character piece of one's hex or base64 form.
func checkNoSecret(tb testing.TB, what, s string, secrets ...[]byte) {
	tb.Helper()
	lower := strings.ToLower(s)
	for _, sec := range secrets {
		for _, enc := range encodings(sec) {
			if strings.Contains(s, enc) {
				tb.Errorf("%s contains key material (%q)", what, s)
				return
			}
		}
		for _, enc := range encodings(sec)[1:] {
			for i := 0; i+12 <= len(enc); i++ {
				if strings.Contains(lower, strings.ToLower(enc[i:i+12])) {
					tb.Errorf("%s contains part of key material %q (%q)", what, enc[i:i+12], s)
					return
				}
			}
		}
	}
}
