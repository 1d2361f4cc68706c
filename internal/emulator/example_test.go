package emulator_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
)

// A test registers a tenant's public key, serves the emulator on loopback and
// exchanges a signed assertion for an access token.
func Example() {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		panic(err)
	}
	err = emu.Register(emulator.Tenant{
		ID: "tn-example", Issuer: "verifier-issuer", Subject: "verifier-subject", Audience: "verifier-audience",
		Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1"}},
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()

	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		panic(err)
	}
	now := time.Now()
	assertion, err := jwt.Signed(signer).Claims(map[string]any{
		"iss": "verifier-issuer", "sub": "verifier-subject", "aud": "verifier-audience",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"tenant_id": "tn-example", "pismo": map[string]string{"group": "pismo-v1:accounts:rw"},
	}).Serialize()
	if err != nil {
		panic(err)
	}
	body, _ := json.Marshal(map[string]string{"token": assertion})
	resp, err := http.Post(srv.URL+emulator.TokenPath, "application/json", bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   string `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		panic(err)
	}
	fmt.Println(resp.StatusCode, tok.ExpiresIn, emu.Exchanges())
	// Output: 201 3600 1
}
