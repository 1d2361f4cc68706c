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

// Directory publishes several named key sets (the broker names them by
// tenant) and their union. It is immutable and safe for concurrent use.
type Directory struct {
	all  *Set
	sets map[string]*Set
}

// NewDirectory returns the directory of the given named sets of keys; the
// union holds each key once (by key id).
func NewDirectory(keys map[string][]*Key) *Directory {
	d := &Directory{sets: make(map[string]*Set, len(keys))}
	var all []*Key
	for name, ks := range keys {
		d.sets[name] = NewSet(ks...)
		all = append(all, ks...)
	}
	d.all = NewSet(all...)
	return d
}

// JWKS returns the JWK Set of the keys named name, or of every key when name
// is ""; ok is false when no set has that name. A nil Directory holds no
// sets: its union is the empty set.
func (d *Directory) JWKS(name string) (jwks []byte, ok bool, err error) {
	if d == nil {
		if name != "" {
			return nil, false, nil
		}
		b, err := (*Set)(nil).JWKS()
		return b, true, err
	}
	s := d.all
	if name != "" {
		if s, ok = d.sets[name]; !ok {
			return nil, false, nil
		}
	}
	b, err := s.JWKS()
	return b, true, err
}
