package keystore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// emptyJWKS is the JWK Set with no keys.
const emptyJWKS = `{"keys":[]}`

// Set is the set of public keys the broker publishes: the JWKS endpoint
// serves it. It is immutable and safe for concurrent use.
type Set struct {
	jwks []byte
	err  error
}

// NewSet returns the set of the public halves of keys, each once (by key
// id), sorted by key id. Nil keys are ignored. The JSON is computed here,
// once.
func NewSet(keys ...*Key) *Set {
	jwks := make([]jose.JSONWebKey, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if k == nil || seen[k.id] {
			continue
		}
		seen[k.id] = true
		jwks = append(jwks, k.PublicJWK())
	}
	slices.SortFunc(jwks, func(a, b jose.JSONWebKey) int { return strings.Compare(a.KeyID, b.KeyID) })
	s := &Set{}
	s.jwks, s.err = json.Marshal(jose.JSONWebKeySet{Keys: jwks})
	if s.err != nil {
		s.err = fmt.Errorf("keystore: encode JWKS: %w", s.err)
	}
	return s
}

// JWKS returns the set as the JSON of a JWK Set (RFC 7517 §5),
// {"keys":[...]}, holding public keys only. A nil Set is the empty set.
func (s *Set) JWKS() ([]byte, error) {
	if s == nil {
		return []byte(emptyJWKS), nil
	}
	if s.err != nil {
		return nil, s.err
	}
	return bytes.Clone(s.jwks), nil
}
