package keystore_test

import (
	"encoding/json"
	"fmt"
	"log"
	"maps"
	"slices"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// A key signs JWT assertions with RS256; the header names it by its key id.
func Example() {
	key, err := keystore.Generate(2048) // or keystore.LoadFile("keys/tn-example.pem")
	if err != nil {
		log.Fatal(err)
	}
	assertion, err := jwt.Signed(key.Signer()).Claims(jwt.Claims{
		Issuer:   "verifier-issuer",
		Subject:  "verifier-subject",
		Audience: jwt.Audience{"verifier-audience"},
	}).Serialize()
	if err != nil {
		log.Fatal(err)
	}

	// What the upstream does with the public key it was given.
	tok, err := jwt.ParseSigned(assertion, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		log.Fatal(err)
	}
	var claims jwt.Claims
	if err := tok.Claims(key.Public(), &claims); err != nil {
		log.Fatal(err)
	}
	h := tok.Headers[0]
	fmt.Println("alg:", h.Algorithm)
	fmt.Println("typ:", h.ExtraHeaders[jose.HeaderType])
	fmt.Println("kid is the key id:", h.KeyID == key.ID())
	fmt.Println("sub:", claims.Subject)
	// Output:
	// alg: RS256
	// typ: JWT
	// kid is the key id: true
	// sub: verifier-subject
}

// The JWKS endpoint serves a Set: the public halves only.
func ExampleNewSet() {
	key, err := keystore.Generate(2048)
	if err != nil {
		log.Fatal(err)
	}
	jwks, err := keystore.NewSet(key, key).JWKS() // each key once
	if err != nil {
		log.Fatal(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		log.Fatal(err)
	}
	fmt.Println("keys:", len(set.Keys))
	fmt.Println("members:", slices.Sorted(maps.Keys(set.Keys[0])))
	fmt.Println("kid is the key id:", set.Keys[0]["kid"] == key.ID())
	// Output:
	// keys: 1
	// members: [alg e kid kty n use]
	// kid is the key id: true
}
