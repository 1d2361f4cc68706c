package sharedtoken

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// formatV1 is the first byte of every value's plaintext in this format.
const formatV1 byte = 1

// fixedSize is the size of the fixed part of a plaintext: the format byte
// and the two times.
const fixedSize = 1 + 8 + 8

// errMalformed is the error of decode. It says nothing of the value.
var errMalformed = errors.New("sharedtoken: malformed value")

// encode returns tok's plaintext:
//
//	format (1) | expiry, unix ms (int64 BE) | obtained, unix ms (int64 BE) |
//	uvarint length of the token type | token type | access token (the rest)
func encode(tok broker.SharedToken) []byte {
	b := make([]byte, 0, fixedSize+binary.MaxVarintLen64+len(tok.TokenType)+len(tok.AccessToken))
	b = append(b, formatV1)
	b = binary.BigEndian.AppendUint64(b, uint64(tok.Expiry.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(tok.Obtained.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(len(tok.TokenType)))
	b = append(b, tok.TokenType...)
	return append(b, tok.AccessToken...)
}

// decode parses a plaintext made by encode, strictly: another format byte,
// a short fixed part, a token type length that is not minimally encoded or
// runs past the end, or an empty access token is [errMalformed]. Whatever
// decodes re-encodes to the same bytes. The token's strings are copies, so
// the caller may clear p.
func decode(p []byte) (broker.SharedToken, error) {
	if len(p) < fixedSize || p[0] != formatV1 {
		return broker.SharedToken{}, errMalformed
	}
	expiry := int64(binary.BigEndian.Uint64(p[1:9]))
	obtained := int64(binary.BigEndian.Uint64(p[9:17]))
	rest := p[fixedSize:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || w != uvarintLen(n) {
		return broker.SharedToken{}, errMalformed
	}
	rest = rest[w:]
	// The access token is what follows the type, and is never empty.
	if n >= uint64(len(rest)) {
		return broker.SharedToken{}, errMalformed
	}
	return broker.SharedToken{
		Token: broker.Token{
			TokenType:   string(rest[:n]),
			AccessToken: string(rest[n:]),
			Expiry:      time.UnixMilli(expiry),
		},
		Obtained: time.UnixMilli(obtained),
	}, nil
}

// uvarintLen is the length of n's minimal uvarint encoding.
func uvarintLen(n uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return len(binary.AppendUvarint(buf[:0], n))
}
