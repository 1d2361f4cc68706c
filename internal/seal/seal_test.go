package seal

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	s := testSealer(t, "a", "b")
	for _, tc := range []struct {
		name           string
		aad, plaintext []byte
	}{
		{"token", []byte("tenant\x00account\x00group"), []byte("ya29.a-token")},
		{"empty plaintext", []byte("ck"), nil},
		{"empty aad", nil, []byte("token")},
		{"both empty", nil, nil},
		{"binary", []byte{0, 1, 2, 0xff}, bytes.Repeat([]byte{0, 0xff}, 1000)},
		{"largest", []byte("ck"), bytes.Repeat([]byte("t"), MaxPlaintextSize)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed, err := s.Seal(tc.aad, tc.plaintext)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(sealed), len(tc.plaintext)+overhead; got != want {
				t.Errorf("sealed %d bytes, want %d", got, want)
			}
			if sealed[0] != Version {
				t.Errorf("version byte %d, want %d", sealed[0], Version)
			}
			if got, want := hex.EncodeToString(sealed[1:headerSize]), testKey(t, "a").ID(); got != want {
				t.Errorf("key id %s, want the current key's %s", got, want)
			}
			if len(tc.plaintext) >= 8 && bytes.Contains(sealed, tc.plaintext[:8]) {
				t.Error("the sealed value contains the plaintext")
			}
			pt, err := s.Open(tc.aad, sealed)
			if err != nil {
				t.Fatal(err)
			}
			if pt == nil || !bytes.Equal(pt, tc.plaintext) {
				t.Errorf("Open = %q, want %q (not nil)", pt, tc.plaintext)
			}
		})
	}
}

func TestSealTooLarge(t *testing.T) {
	s := testSealer(t, "a")
	sealed, err := s.Seal([]byte("ck"), make([]byte, MaxPlaintextSize+1))
	if !errors.Is(err, ErrTooLarge) || sealed != nil {
		t.Fatalf("Seal = %d bytes, %v; want ErrTooLarge", len(sealed), err)
	}
	// Open refuses anything larger than MaxSize, before any work.
	big := append([]byte{Version}, make([]byte, MaxSize)...)
	if _, err := s.Open([]byte("ck"), big); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnknownKey) {
		t.Errorf("Open(%d bytes) = %v, want ErrInvalid", len(big), err)
	}
}

func TestOpenWrongAAD(t *testing.T) {
	s := testSealer(t, "a")
	aad := []byte("tenant-a/account-1")
	sealed, _ := s.Seal(aad, []byte("token"))
	for _, other := range [][]byte{
		nil,
		[]byte("tenant-a/account-2"),
		[]byte("tenant-a/account-1 "),
		[]byte("tenant-a/account-"),
		[]byte("Tenant-a/account-1"),
		append(append([]byte{}, sealed[:headerSize]...), aad...), // the AAD as built, passed as aad
	} {
		pt, err := s.Open(other, sealed)
		if err != ErrInvalid || pt != nil {
			t.Errorf("Open with aad %q = %q, %v; want ErrInvalid", other, pt, err)
		}
	}
}

// TestOpenTamper changes every byte of a sealed value in turn, in several
// ways: every change makes it fail with ErrInvalid (and, for a byte of the
// key id, ErrUnknownKey, which wraps it).
func TestOpenTamper(t *testing.T) {
	s := testSealer(t, "a", "b")
	aad := []byte("ck")
	sealed, _ := s.Seal(aad, []byte("a token of some length"))
	for i := range sealed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			tampered := bytes.Clone(sealed)
			tampered[i] ^= mask
			pt, err := s.Open(aad, tampered)
			if !errors.Is(err, ErrInvalid) || pt != nil {
				t.Fatalf("byte %d ^ %#x: Open = %q, %v; want ErrInvalid", i, mask, pt, err)
			}
			inID := i >= 1 && i < headerSize
			if errors.Is(err, ErrUnknownKey) != inID {
				t.Errorf("byte %d ^ %#x: Open = %v; ErrUnknownKey only for the key id", i, mask, err)
			}
			if !inID && err != ErrInvalid {
				t.Errorf("byte %d ^ %#x: Open = %v, want exactly ErrInvalid", i, mask, err)
			}
		}
	}
	// The unchanged value still opens.
	if _, err := s.Open(aad, sealed); err != nil {
		t.Fatal(err)
	}
}

// TestOpenTamperKeyIDToOtherKey moves a value to the other configured key's
// id: authentication fails, since that key did not seal it.
func TestOpenTamperKeyIDToOtherKey(t *testing.T) {
	s := testSealer(t, "a", "b")
	sealed, _ := s.Seal([]byte("ck"), []byte("token"))
	b := testKey(t, "b")
	copy(sealed[1:headerSize], b.k.id[:])
	if _, err := s.Open([]byte("ck"), sealed); err != ErrInvalid {
		t.Errorf("Open = %v, want ErrInvalid", err)
	}
}

func TestOpenTruncated(t *testing.T) {
	s := testSealer(t, "a")
	aad := []byte("ck")
	sealed, _ := s.Seal(aad, []byte("token"))
	for n := range len(sealed) {
		for _, v := range [][]byte{sealed[:n], sealed[len(sealed)-n:]} {
			if pt, err := s.Open(aad, v); !errors.Is(err, ErrInvalid) || pt != nil {
				t.Fatalf("Open(%d of %d bytes) = %q, %v; want ErrInvalid", n, len(sealed), pt, err)
			}
		}
		if pt, err := s.Open(aad, sealed[:n]); err != ErrInvalid || pt != nil {
			t.Fatalf("Open(first %d of %d bytes) = %q, %v; want ErrInvalid", n, len(sealed), pt, err)
		}
	}
	for _, extra := range [][]byte{{0}, []byte("more")} {
		if _, err := s.Open(aad, append(bytes.Clone(sealed), extra...)); err != ErrInvalid {
			t.Errorf("Open(with %q appended) = %v, want ErrInvalid", extra, err)
		}
	}
}

func TestOpenUnknownKey(t *testing.T) {
	sealed, _ := testSealer(t, "a").Seal([]byte("ck"), []byte("token"))
	pt, err := testSealer(t, "b", "c").Open([]byte("ck"), sealed)
	if !errors.Is(err, ErrUnknownKey) || !errors.Is(err, ErrInvalid) || pt != nil {
		t.Fatalf("Open = %q, %v; want ErrUnknownKey", pt, err)
	}
	if id := testKey(t, "a").ID(); !strings.Contains(err.Error(), id) {
		t.Errorf("error %q does not name key id %s", err, id)
	}
	// A value of another version is invalid, not of an unknown key.
	sealed[0] = Version + 1
	if _, err := testSealer(t, "a").Open([]byte("ck"), sealed); err != ErrInvalid {
		t.Errorf("Open(version %d) = %v, want ErrInvalid", sealed[0], err)
	}
}

func TestRotation(t *testing.T) {
	oldOnly := testSealer(t, "old")
	rotating := testSealer(t, "new", "old")
	newOnly := testSealer(t, "new")
	aad, token := []byte("ck"), []byte("token")

	// Sealed with the old key: opens with new-current+old.
	sealedOld, _ := oldOnly.Seal(aad, token)
	if pt, err := rotating.Open(aad, sealedOld); err != nil || !bytes.Equal(pt, token) {
		t.Errorf("new+old opens old value: %q, %v", pt, err)
	}
	// Sealed with the new key: opens with new, not with the old key alone.
	sealedNew, _ := rotating.Seal(aad, token)
	if got, want := hex.EncodeToString(sealedNew[1:headerSize]), testKey(t, "new").ID(); got != want {
		t.Errorf("rotating sealer sealed under %s, want the new key %s", got, want)
	}
	if pt, err := newOnly.Open(aad, sealedNew); err != nil || !bytes.Equal(pt, token) {
		t.Errorf("new opens new value: %q, %v", pt, err)
	}
	if _, err := oldOnly.Open(aad, sealedNew); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old-only opens new value: %v, want ErrUnknownKey", err)
	}
	// After the old key is dropped, old values are of an unknown key.
	if _, err := newOnly.Open(aad, sealedOld); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("new-only opens old value: %v, want ErrUnknownKey", err)
	}

	// Names: a reader during the rotation finds what either side wrote.
	names := rotating.Names(aad)
	if len(names) != 2 || names[0] != rotating.Name(aad) || names[0] != newOnly.Name(aad) || names[1] != oldOnly.Name(aad) {
		t.Errorf("Names = %q, want [new's name, old's name] = [%s %s]", names, newOnly.Name(aad), oldOnly.Name(aad))
	}
	if got := oldOnly.Names(aad); len(got) != 1 || got[0] != oldOnly.Name(aad) {
		t.Errorf("Names with one key = %q, want [Name]", got)
	}
}

func TestNewSealer(t *testing.T) {
	a, b := testKey(t, "a"), testKey(t, "b")
	a2 := testKey(t, "a") // the same key loaded twice
	for _, tc := range []struct {
		name    string
		current Key
		older   []Key
		want    string
	}{
		{"zero current", Key{}, nil, "current key is the zero Key"},
		{"zero older", a, []Key{b, {}}, "older key 2 is the zero Key"},
		{"current also older", a, []Key{a2}, "key " + a.ID() + " is configured twice"},
		{"older twice", a, []Key{b, b}, "key " + b.ID() + " is configured twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSealer(tc.current, tc.older...)
			if err == nil || s != nil {
				t.Fatalf("NewSealer = %v, %v; want an error", s, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestNoncesDiffer seals the same value 1000 times: every nonce, and so
// every sealed value, is different.
func TestNoncesDiffer(t *testing.T) {
	s := testSealer(t, "a")
	nonces := make(map[string]bool)
	values := make(map[string]bool)
	for range 1000 {
		sealed, _ := s.Seal([]byte("ck"), []byte("token"))
		nonce := string(sealed[headerSize:prefixSize])
		if nonces[nonce] {
			t.Fatalf("nonce %x used twice", nonce)
		}
		nonces[nonce] = true
		values[string(sealed)] = true
	}
	if len(values) != 1000 {
		t.Errorf("%d distinct sealed values of 1000", len(values))
	}
}

func TestName(t *testing.T) {
	a, a2, b := testSealer(t, "a"), testSealer(t, "a"), testSealer(t, "b")
	ck := []byte("tenant=acme-corp\x00account=svc-reporting@acme-prod\x00groups=finance-admins")
	name := a.Name(ck)

	if len(name) != 43 {
		t.Errorf("Name = %q, %d characters; want 43 (an unpadded base64url SHA-256 HMAC, no prefix)", name, len(name))
	}
	mac, err := base64.RawURLEncoding.Strict().DecodeString(name)
	if err != nil || len(mac) != 32 {
		t.Errorf("Name = %q: not an unpadded base64url SHA-256 HMAC (%d bytes, %v)", name, len(mac), err)
	}
	if a.Name(ck) != name || a2.Name(ck) != name {
		t.Error("Name is not deterministic")
	}
	if b.Name(ck) == name {
		t.Error("Name is the same under two keys")
	}
	seen := map[string][]byte{}
	for _, other := range [][]byte{ck, nil, {}, []byte("x"), append(bytes.Clone(ck), 0), ck[:len(ck)-1], []byte(strings.ToUpper(string(ck)))} {
		n := a.Name(other)
		if prev, ok := seen[n]; ok && !bytes.Equal(prev, other) {
			t.Errorf("cache keys %q and %q have the same name %s", prev, other, n)
		}
		seen[n] = other
	}
	if len(seen) != 6 { // nil and {} are the same cache key
		t.Errorf("%d distinct names for 6 cache keys", len(seen))
	}

	// Nothing of the cache key shows, in any encoding: no piece of 6 or
	// more characters of its text, hex or base64 forms.
	for _, s := range []*Sealer{a, b} {
		name := s.Name(ck)
		lower := strings.ToLower(name)
		for _, enc := range encodings(ck) {
			for _, part := range strings.Split(enc, "\x00") {
				for i := 0; i+6 <= len(part); i++ {
					if strings.Contains(lower, strings.ToLower(part[i:i+6])) {
						t.Errorf("Name %q contains %q, part of the cache key %q", name, part[i:i+6], enc)
					}
				}
			}
		}
		for _, word := range []string{"acme", "tenant", "account", "svc", "finance", "admins", "prod"} {
			if strings.Contains(lower, word) {
				t.Errorf("Name %q contains %q", name, word)
			}
		}
	}
}

// TestConcurrent uses one Sealer from many goroutines, for the race
// detector.
func TestConcurrent(t *testing.T) {
	s := testSealer(t, "a", "b")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			ck := []byte{byte(i)}
			for range 200 {
				sealed, err := s.Seal(ck, ck)
				if err != nil {
					t.Error(err)
					return
				}
				if pt, err := s.Open(ck, sealed); err != nil || !bytes.Equal(pt, ck) {
					t.Errorf("Open = %q, %v", pt, err)
					return
				}
				_ = s.Names(ck)
			}
		})
	}
	wg.Wait()
}

func BenchmarkSeal(b *testing.B) {
	s := testSealer(b, "a")
	ck, token := []byte("tenant\x00account\x00group"), bytes.Repeat([]byte("t"), 1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(ck, token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	s := testSealer(b, "a")
	ck, token := []byte("tenant\x00account\x00group"), bytes.Repeat([]byte("t"), 1024)
	sealed, _ := s.Seal(ck, token)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(ck, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkName(b *testing.B) {
	s := testSealer(b, "a")
	ck := []byte("tenant\x00account\x00group")
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Name(ck)
	}
}
