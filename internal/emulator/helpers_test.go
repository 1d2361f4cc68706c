package emulator_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
)

// The test tenant's registration.
const (
	testTenant   = "tn-test"
	testIssuer   = "verifier-issuer"
	testSubject  = "verifier-subject"
	testAudience = "verifier-audience"
	testKID      = "k1"
	testUID      = "account-42"
	testGroups   = "pismo-v1:accounts:rw,pismo-v1:cards:r"
)

// RSA keys are slow to generate, above all under -race: the tests share these.
var (
	tenantKey = sync.OnceValue(func() *rsa.PrivateKey { return mustRSAKey(2048) })
	otherKey  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSAKey(2048) })
)

func mustRSAKey(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

// t0 is the emulators' time in most tests.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// testTenantReg is the test tenant with the given public keys.
func testTenantReg(keys ...jose.JSONWebKey) emulator.Tenant {
	return emulator.Tenant{ID: testTenant, Issuer: testIssuer, Subject: testSubject, Audience: testAudience, Keys: keys}
}

// publicJWK is the public half of key, with a kid.
func publicJWK(key *rsa.PrivateKey, kid string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid}
}

// newEmulator starts an emulator on a real loopback server, with the test
// tenant registered with tenantKey as kid k1 and the clock at t0.
func newEmulator(t *testing.T, cfg emulator.Config) (*emulator.Emulator, *httptest.Server) {
	t.Helper()
	if cfg.Clock == nil {
		cfg.Clock = func() time.Time { return t0 }
	}
	e, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(testTenantReg(publicJWK(tenantKey(), testKID))); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv
}

// goodClaims is a correct assertion's claim set, issued at now.
func goodClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss":          testIssuer,
		"sub":          testSubject,
		"aud":          testAudience,
		"iat":          now.Unix(),
		"exp":          now.Add(time.Hour).Unix(),
		"tenant_id":    testTenant,
		"uid":          testUID,
		"pismo":        map[string]any{"group": testGroups},
		"customClaims": map[string]any{"channel": "app"},
		"jti":          "assertion-1",
	}
}

// sign signs claims RS256 (or alg, with an HMAC key) with typ JWT and, if
// kid is not empty, kid.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// assertionWith is a correct assertion at t0 after mutate changed its claims.
func assertionWith(t testing.TB, mutate func(c map[string]any)) string {
	t.Helper()
	c := goodClaims(t0)
	if mutate != nil {
		mutate(c)
	}
	return sign(t, jose.RS256, tenantKey(), testKID, c)
}

// unsigned builds a compact JWS by hand with the given header, claims and
// signature.
func unsigned(t testing.TB, header, claims any, sig string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + sig
}

// tokenBody is the JSON body of a token request.
func tokenBody(t testing.TB, token string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"token": token})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request to the emulator's server.
func do(t testing.TB, method, url, contentType string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// exchange posts an assertion to the token endpoint.
func exchange(t testing.TB, srv *httptest.Server, token string) response {
	t.Helper()
	return do(t, http.MethodPost, srv.URL+emulator.TokenPath, "application/json", tokenBody(t, token))
}

// oauthError decodes an OAuth error body.
func oauthError(t testing.TB, r response) (code, description string) {
	t.Helper()
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e.Error, e.Description
}

// tokenResponse decodes a successful exchange's body.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    string `json:"expires_in"`
}

func decodeTokenResponse(t testing.TB, r response) tokenResponse {
	t.Helper()
	if r.status != http.StatusCreated {
		t.Fatalf("status = %d (%s), want 201", r.status, r.body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(r.body, &tr); err != nil {
		t.Fatalf("token response %q: %v", r.body, err)
	}
	return tr
}

// accessClaims are the claims of the emulator's access tokens.
type accessClaims struct {
	Issuer            string            `json:"iss"`
	Subject           string            `json:"sub"`
	TenantID          string            `json:"tenant_id"`
	UID               *string           `json:"uid"`
	ExternalAccountID *string           `json:"external_account_id"`
	Groups            []string          `json:"groups"`
	CustomClaims      map[string]string `json:"customClaims"`
	IssuedAt          int64             `json:"iat"`
	Expiry            int64             `json:"exp"`
	ID                string            `json:"jti"`
}

// verifyAccessToken verifies an access token with the emulator's published
// keys and returns its header and claims.
func verifyAccessToken(t testing.TB, keys jose.JSONWebKeySet, token string) (jose.Header, accessClaims) {
	t.Helper()
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("access token does not parse: %v", err)
	}
	var c accessClaims
	if err := parsed.Claims(keys, &c); err != nil {
		t.Fatalf("access token does not verify with the emulator's keys: %v", err)
	}
	return parsed.Headers[0], c
}
