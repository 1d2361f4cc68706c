package sharedtoken

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

func TestEncodeDecode(t *testing.T) {
	for _, tok := range []broker.SharedToken{
		{Token: broker.Token{AccessToken: "a", TokenType: "Bearer", Expiry: time.UnixMilli(1_700_000_123_456)}, Obtained: time.UnixMilli(1_700_000_000_001)},
		{Token: broker.Token{AccessToken: "x\x00\xff y", Expiry: time.UnixMilli(-5)}}, // no type, odd bytes, before 1970, zero Obtained
		{Token: broker.Token{AccessToken: string(bytes.Repeat([]byte("t"), 5000)), TokenType: string(bytes.Repeat([]byte("T"), 300))}},
	} {
		p := encode(tok)
		got, err := decode(p)
		if err != nil {
			t.Fatalf("decode(encode(%v)): %v", tok, err)
		}
		if !sameToken(got, tok) {
			t.Fatalf("decode(encode(%v)) = %v obtained %s", tok, got, got.Obtained)
		}
		if again := encode(got); !bytes.Equal(again, p) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, p)
		}
	}
	// The layout, byte for byte.
	tok := broker.SharedToken{Token: broker.Token{AccessToken: "tok", TokenType: "Bearer", Expiry: time.UnixMilli(0x0102030405060708)}, Obtained: time.UnixMilli(0x1112131415161718)}
	want := []byte("\x01\x01\x02\x03\x04\x05\x06\x07\x08\x11\x12\x13\x14\x15\x16\x17\x18\x06Bearertok")
	if got := encode(tok); !bytes.Equal(got, want) {
		t.Fatalf("encode = %x, want %x", got, want)
	}
}

func TestDecodeStrict(t *testing.T) {
	fixed := func(format byte) []byte {
		b := []byte{format}
		b = binary.BigEndian.AppendUint64(b, 1)
		return binary.BigEndian.AppendUint64(b, 2)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"empty", nil},
		{"format 0", cat(fixed(0), []byte("\x06Bearertok"))},
		{"format 2", cat(fixed(2), []byte("\x06Bearertok"))},
		{"short fixed part", fixed(1)[:fixedSize-1]},
		{"no type length", fixed(1)},
		{"truncated type length", cat(fixed(1), []byte{0x80})},
		{"non-minimal type length", cat(fixed(1), []byte("\x86\x00Bearertok"))},
		{"overflowing type length", cat(fixed(1), bytes.Repeat([]byte{0xff}, 10), []byte{1})},
		{"type past the end", cat(fixed(1), []byte("\x07Bearer"))},
		{"empty access token", cat(fixed(1), []byte("\x06Bearer"))},
		{"nothing after the length", cat(fixed(1), []byte{0})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tok, err := decode(tc.p); err != errMalformed {
				t.Fatalf("decode(%x) = %v, %v; want errMalformed", tc.p, tok, err)
			}
		})
	}
	if _, err := decode(cat(fixed(1), []byte("\x00tok"))); err != nil {
		t.Fatalf("decode of an empty token type: %v, want it accepted", err)
	}
}

// FuzzDecode feeds arbitrary plaintexts to decode: it must never panic, and
// whatever it accepts must have an access token and re-encode to the same
// bytes (one encoding per token, so nothing is smuggled in padding).
func FuzzDecode(f *testing.F) {
	f.Add(encode(broker.SharedToken{Token: broker.Token{AccessToken: "tok", TokenType: "Bearer", Expiry: time.UnixMilli(1)}}))
	f.Add([]byte{})
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x86\x00Bearertok"))
	f.Fuzz(func(t *testing.T, p []byte) {
		tok, err := decode(p)
		if err != nil {
			return
		}
		if tok.AccessToken == "" {
			t.Fatal("decode accepted an empty access token")
		}
		if again := encode(tok); !bytes.Equal(again, p) {
			t.Fatalf("decode(%x) re-encodes to %x", p, again)
		}
	})
}
