package server_test

import (
	"encoding/json"

	"github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/keystore"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func keystoreGenerate() (*keystore.Key, error) { return keystore.Generate(2048) }

func emulatorTenant(id string, key *keystore.Key) emulator.Tenant {
	return emulator.Tenant{ID: id, Issuer: "iss-" + id, Subject: "sub-" + id, Audience: "aud-" + id, Keys: []jose.JSONWebKey{key.PublicJWK()}}
}

// nilCallers authenticates nobody.
type nilCallers struct{}

func (nilCallers) Authenticate(policy.Credentials) (policy.Identity, error) {
	return policy.Identity{}, policy.ErrNoCredentials
}
