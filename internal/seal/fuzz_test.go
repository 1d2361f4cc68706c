package seal

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzOpen from fuzzSeeds")

// fuzzSealer is the Sealer FuzzOpen opens with: a current and an older key.
func fuzzSealer(tb testing.TB) *Sealer { return testSealer(tb, "fuzz-current", "fuzz-older") }

// A fuzzSeed is an input of FuzzOpen: a sealed value and the aad to open
// it with, and, if it opens, its plaintext.
type fuzzSeed struct {
	name      string
	aad       []byte
	sealed    []byte
	plaintext []byte // nil if it must not open
}

// fuzzSeeds returns the committed seeds of FuzzOpen. They are sealed with
// fixed test keys and nonces, so that they are reproducible:
// TestFuzzOpenSeeds checks that the files match.
func fuzzSeeds(tb testing.TB) []fuzzSeed {
	cur, old, unknown := testKey(tb, "fuzz-current").k, testKey(tb, "fuzz-older").k, testKey(tb, "fuzz-unknown").k
	nonce := func(b byte) []byte { return bytes.Repeat([]byte{b}, nonceSize) }
	ck := []byte("tenant\x00account\x00group")
	valid := cur.seal(nonce(1), ck, []byte("ya29.a-token"))
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	return []fuzzSeed{
		{"valid-current", ck, valid, []byte("ya29.a-token")},
		{"valid-older", ck, old.seal(nonce(2), ck, []byte("an older token")), []byte("an older token")},
		{"valid-empty", nil, cur.seal(nonce(3), nil, nil), []byte{}},
		{"unknown-key", ck, unknown.seal(nonce(4), ck, []byte("ya29.a-token")), nil},
		{"wrong-aad", []byte("tenant\x00account\x00other"), valid, nil},
		{"bad-version", ck, mod(func(b []byte) []byte { b[0] = 2; return b }), nil},
		{"flipped-tag", ck, mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), nil},
		{"truncated", ck, valid[:len(valid)-1], nil},
		{"header-only", ck, valid[:prefixSize], nil},
		{"empty", nil, nil, nil},
	}
}

// corpusFile is seed as a file of the fuzzing engine.
func (seed fuzzSeed) corpusFile() []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n[]byte(%q)\n", seed.aad, seed.sealed)
}

// TestFuzzOpenSeeds checks that testdata/fuzz/FuzzOpen holds fuzzSeeds, so
// that the committed seeds stay valid seals; -update-seeds rewrites them.
func TestFuzzOpenSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	s := fuzzSealer(t)
	for _, seed := range fuzzSeeds(t) {
		pt, err := s.Open(seed.aad, seed.sealed)
		if seed.plaintext != nil && (err != nil || !bytes.Equal(pt, seed.plaintext)) {
			t.Errorf("seed %s: Open = %q, %v; want %q", seed.name, pt, err, seed.plaintext)
		}
		if seed.plaintext == nil && err == nil {
			t.Errorf("seed %s opens", seed.name)
		}
		path := filepath.Join(dir, seed.name)
		if *updateSeeds {
			if err := os.WriteFile(path, seed.corpusFile(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, seed.corpusFile()) {
			t.Errorf("%s is missing or stale (%v); run: go test -run TestFuzzOpenSeeds ./internal/seal/ -update-seeds", path, err)
		}
	}
}

// FuzzOpen checks that Open never panics, fails only with ErrInvalid (or
// ErrUnknownKey, which wraps it) and a nil plaintext, and opens only what
// was sealed: the valid seeds, with their aad. Since nobody without the key
// can make a value that opens, any other input that opens is a bug.
func FuzzOpen(f *testing.F) {
	s := fuzzSealer(f)
	type input struct{ aad, sealed string }
	valid := map[input][]byte{}
	for _, seed := range fuzzSeeds(f) {
		if seed.plaintext != nil {
			valid[input{string(seed.aad), string(seed.sealed)}] = seed.plaintext
		}
		f.Add(seed.aad, seed.sealed) // also in testdata, but kept here if the files go
	}
	// No value sealed here with a random nonce: each fuzzing worker runs
	// this setup again, and would not know the coordinator's.
	f.Fuzz(func(t *testing.T, aad, sealed []byte) {
		pt, err := s.Open(aad, sealed)
		want, isValid := valid[input{string(aad), string(sealed)}]
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open error %v is not ErrInvalid", err)
			}
			if pt != nil {
				t.Fatalf("Open returned %q with error %v", pt, err)
			}
			if isValid {
				t.Fatalf("a valid seal did not open: %v", err)
			}
			return
		}
		if !isValid {
			t.Fatalf("Open opened a value that was never sealed: %q (aad %q) -> %q", sealed, aad, pt)
		}
		if !bytes.Equal(pt, want) {
			t.Fatalf("Open = %q, want %q", pt, want)
		}
	})
}
