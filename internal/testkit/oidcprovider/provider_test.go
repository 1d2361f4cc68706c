package oidcprovider_test

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/internal/testkit/oidcprovider"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// tokenResponse is a token endpoint's answer, success or error.
type tokenResponse struct {
	status      int
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// postToken sends a client-credentials request; user and password, when
// set, go in HTTP Basic authentication.
func postToken(t *testing.T, p *oidcprovider.Provider, form url.Values, user, password string) tokenResponse {
	t.Helper()
	form.Set("grant_type", "client_credentials")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(password))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tr := tokenResponse{status: resp.StatusCode}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatalf("decode token response (HTTP %d): %v", resp.StatusCode, err)
	}
	return tr
}

// wantToken checks that tr issued a bearer token for clientID with scope,
// and that the token is a JWT for oidcprovider.Resource signed by the
// provider's keys.
func wantToken(t *testing.T, p *oidcprovider.Provider, tr tokenResponse, clientID, scope string) {
	t.Helper()
	if tr.status != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("got HTTP %d %s (%s), want a token\nevents:\n%s", tr.status, tr.Error, tr.Description, strings.Join(p.Events(), "\n"))
	}
	if tr.TokenType != "Bearer" || tr.ExpiresIn <= 0 || tr.Scope != scope {
		t.Errorf("got token_type %q, expires_in %d, scope %q; want Bearer, > 0, %q", tr.TokenType, tr.ExpiresIn, tr.Scope, scope)
	}

	resp, err := http.Get(p.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var keys jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil {
		t.Fatalf("decode provider JWKS: %v", err)
	}
	tok, err := jwt.ParseSigned(tr.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parse access token: %v", err)
	}
	var claims jwt.Claims
	var extra struct {
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
	}
	if err := tok.Claims(keys, &claims, &extra); err != nil {
		t.Fatalf("verify access token: %v", err)
	}
	if err := claims.Validate(jwt.Expected{Issuer: p.Issuer, AnyAudience: jwt.Audience{oidcprovider.Resource}}); err != nil {
		t.Errorf("access token claims: %v", err)
	}
	if extra.ClientID != clientID || extra.Scope != scope {
		t.Errorf("access token has client_id %q, scope %q; want %q, %q", extra.ClientID, extra.Scope, clientID, scope)
	}
}

// wantError checks that tr is an error with this HTTP status and code.
func wantError(t *testing.T, p *oidcprovider.Provider, tr tokenResponse, status int, code string) {
	t.Helper()
	if tr.status != status || tr.Error != code {
		t.Errorf("got HTTP %d %q (%s), want %d %q\nevents:\n%s", tr.status, tr.Error, tr.Description, status, code, strings.Join(p.Events(), "\n"))
	}
}

// wantEvent checks that an event line mentions detail.
func wantEvent(t *testing.T, p *oidcprovider.Provider, detail string) {
	t.Helper()
	events := p.Events()
	if !slices.ContainsFunc(events, func(e string) bool { return strings.Contains(e, detail) }) {
		t.Errorf("no event mentions %q; events:\n%s", detail, strings.Join(events, "\n"))
	}
}

func TestClientSecret(t *testing.T) {
	t.Parallel()
	p := oidcprovider.Start(t,
		oidcprovider.Client{ID: "post", AuthMethod: "client_secret_post", Secret: "s3cret", Scopes: []string{"read", "write"}},
		oidcprovider.Client{ID: "basic client", AuthMethod: "client_secret_basic", Secret: "pa:ss+word", Scopes: []string{"admin"}},
	)

	t.Run("post", func(t *testing.T) {
		tr := postToken(t, p, url.Values{"client_id": {"post"}, "client_secret": {"s3cret"}, "scope": {"read write"}}, "", "")
		wantToken(t, p, tr, "post", "read write")
	})
	t.Run("basic", func(t *testing.T) {
		tr := postToken(t, p, url.Values{"scope": {"admin"}}, "basic client", "pa:ss+word")
		wantToken(t, p, tr, "basic client", "admin")
	})
	t.Run("post client in basic form", func(t *testing.T) {
		// oidc-provider takes either form from either kind of secret client.
		tr := postToken(t, p, url.Values{"scope": {"read"}}, "post", "s3cret")
		wantToken(t, p, tr, "post", "read")
	})
	t.Run("unknown scope dropped", func(t *testing.T) {
		tr := postToken(t, p, url.Values{"client_id": {"post"}, "client_secret": {"s3cret"}, "scope": {"read nobodys"}}, "", "")
		wantToken(t, p, tr, "post", "read")
	})
	t.Run("wrong secret", func(t *testing.T) {
		tr := postToken(t, p, url.Values{"client_id": {"post"}, "client_secret": {"wrong"}}, "", "")
		wantError(t, p, tr, http.StatusUnauthorized, "invalid_client")
		wantEvent(t, p, "invalid secret provided")
	})
	t.Run("scope of another client", func(t *testing.T) {
		tr := postToken(t, p, url.Values{"client_id": {"post"}, "client_secret": {"s3cret"}, "scope": {"read admin"}}, "", "")
		wantError(t, p, tr, http.StatusBadRequest, "invalid_scope")
	})
	t.Run("unknown resource", func(t *testing.T) {
		tr := postToken(t, p, url.Values{"client_id": {"post"}, "client_secret": {"s3cret"}, "resource": {"https://elsewhere.example"}}, "", "")
		wantError(t, p, tr, http.StatusBadRequest, "invalid_target")
	})
}

// newKey generates an RSA key.
func newKey(t *testing.T) *keystore.Key {
	t.Helper()
	key, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// jwks returns the JWK Set of the keys' public halves.
func jwks(t *testing.T, keys ...*keystore.Key) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, k.PublicJWK())
	}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// assertion signs an RFC 7523 client assertion valid for 60 s.
func assertion(t *testing.T, key *keystore.Key, clientID, audience string) string {
	t.Helper()
	now := time.Now()
	s, err := jwt.Signed(key.Signer()).Claims(jwt.Claims{
		Issuer:   clientID,
		Subject:  clientID,
		Audience: jwt.Audience{audience},
		ID:       rand.Text(),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(60 * time.Second)),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertionForm is the body of a private_key_jwt request.
func assertionForm(assertion, scope string) url.Values {
	return url.Values{
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
}

func TestPrivateKeyJWTInline(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	p := oidcprovider.Start(t, oidcprovider.Client{
		ID: "inline", AuthMethod: "private_key_jwt", JWKS: jwks(t, key), Scopes: []string{"read", "write"},
	})

	t.Run("token endpoint audience", func(t *testing.T) {
		a := assertion(t, key, "inline", p.TokenEndpoint)
		wantToken(t, p, postToken(t, p, assertionForm(a, "read"), "", ""), "inline", "read")

		// The very same assertion again: its jti was seen.
		wantError(t, p, postToken(t, p, assertionForm(a, "read"), "", ""), http.StatusUnauthorized, "invalid_client")
		wantEvent(t, p, "client assertion tokens must only be used once")
	})
	t.Run("issuer audience", func(t *testing.T) {
		a := assertion(t, key, "inline", p.Issuer)
		wantToken(t, p, postToken(t, p, assertionForm(a, "write"), "", ""), "inline", "write")
	})
	t.Run("other key", func(t *testing.T) {
		a := assertion(t, newKey(t), "inline", p.TokenEndpoint)
		wantError(t, p, postToken(t, p, assertionForm(a, "read"), "", ""), http.StatusUnauthorized, "invalid_client")
		wantEvent(t, p, "no applicable key found in the JSON Web Key Set")
	})
}

func TestPrivateKeyJWTURI(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	set := jwks(t, key)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(srv.Close)
	p := oidcprovider.Start(t, oidcprovider.Client{
		ID: "by-uri", AuthMethod: "private_key_jwt", JWKSURI: srv.URL + "/jwks", Scopes: []string{"read"},
	})

	a := assertion(t, key, "by-uri", p.TokenEndpoint)
	wantToken(t, p, postToken(t, p, assertionForm(a, "read"), "", ""), "by-uri", "read")
	if n := fetches.Load(); n != 1 { // lazily, once, before answering
		t.Errorf("the provider fetched the JWKS %d times, want 1", n)
	}
}
