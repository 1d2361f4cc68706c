package emulator_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
)

func TestExchange(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	claims := goodClaims(t0)
	assertion := sign(t, jose.RS256, tenantKey(), testKID, claims)

	r := exchange(t, srv, assertion)
	if got, want := r.status, http.StatusCreated; got != want {
		t.Fatalf("status = %d (%s), want %d", got, r.body, want)
	}
	for name, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"} {
		if got := r.header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// The body is exactly Pismo's three fields, expires_in a JSON string.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	if got, want := len(raw), 3; got != want {
		t.Errorf("response has %d members (%s), want %d", got, r.body, want)
	}
	if got, want := string(raw["expires_in"]), `"3600"`; got != want {
		t.Errorf("expires_in = %s, want %s", got, want)
	}
	tr := decodeTokenResponse(t, r)
	if tr.RefreshToken == "" {
		t.Error("refresh_token is empty")
	}

	// The access token verifies with the published key and says who for.
	keys := e.PublicKeys()
	header, got := verifyAccessToken(t, keys, tr.AccessToken)
	if got, want := header.KeyID, keys.Keys[0].KeyID; got != want {
		t.Errorf("access token kid = %q, want %q", got, want)
	}
	if got, want := header.ExtraHeaders[jose.HeaderType], "JWT"; got != want {
		t.Errorf("access token typ = %v, want %v", got, want)
	}
	want := accessClaims{
		Issuer: emulator.DefaultIssuer, Subject: testUID, TenantID: testTenant, UID: ptr(testUID),
		Groups: []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"}, CustomClaims: map[string]string{"channel": "app"},
		IssuedAt: t0.Unix(), Expiry: t0.Add(time.Hour).Unix(), ID: got.ID,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("access token claims = %+v, want %+v", got, want)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got.ID) {
		t.Errorf("jti = %q, want 16 random bytes in hex", got.ID)
	}

	// The emulator recorded exactly the assertion it accepted.
	gotHeader, gotClaims, ok := e.LastAssertion(testTenant)
	if !ok {
		t.Fatal("LastAssertion: no assertion recorded")
	}
	if want := map[string]any{"alg": "RS256", "typ": "JWT", "kid": testKID}; !reflect.DeepEqual(gotHeader, want) {
		t.Errorf("LastAssertion header = %v, want %v", gotHeader, want)
	}
	if want := jsonRoundTrip(t, claims); !reflect.DeepEqual(gotClaims, want) {
		t.Errorf("LastAssertion claims = %v, want %v", gotClaims, want)
	}
	if _, _, ok := e.LastAssertion("tn-other"); ok {
		t.Error("LastAssertion(tn-other) = ok, want nothing recorded")
	}

	// A second exchange, same assertion: a different access token.
	tr2 := decodeTokenResponse(t, exchange(t, srv, assertion))
	if tr2.AccessToken == tr.AccessToken {
		t.Error("two exchanges gave the same access token")
	}
	if tr2.RefreshToken == tr.RefreshToken {
		t.Error("two exchanges gave the same refresh token")
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"Exchanges()", e.Exchanges(), 2},
		{"ExchangesFor(tenant)", e.ExchangesFor(testTenant), 2},
		{"ExchangesFor(tn-other)", e.ExchangesFor("tn-other"), 0},
		{"Refusals()", e.Refusals(), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestLastAssertionIsACopy checks callers cannot change what the emulator
// recorded.
func TestLastAssertionIsACopy(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	decodeTokenResponse(t, exchange(t, srv, assertionWith(t, nil)))
	h, c, _ := e.LastAssertion(testTenant)
	h["alg"], c["uid"] = "changed", "changed"
	h, c, _ = e.LastAssertion(testTenant)
	if h["alg"] != "RS256" || c["uid"] != testUID {
		t.Errorf("LastAssertion after the caller changed its maps = %v %v, want the recorded values", h, c)
	}
}

func ptr[T any](v T) *T { return &v }

// jsonRoundTrip is v as it reads back from JSON.
func jsonRoundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAccessTokenSubject(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	tests := []struct {
		name        string
		mutate      func(c map[string]any)
		wantSub     string
		wantUID     *string
		wantExtID   *string
		wantCustoms map[string]string
	}{
		{
			name:        "account token",
			wantSub:     testUID,
			wantUID:     ptr(testUID),
			wantCustoms: map[string]string{"channel": "app"},
		},
		{
			name: "external account token",
			mutate: func(c map[string]any) {
				delete(c, "uid")
				delete(c, "customClaims")
				c["external_account_id"] = "ext-7"
			},
			wantSub:   "ext-7",
			wantExtID: ptr("ext-7"),
		},
		{
			name:    "tenant token",
			mutate:  func(c map[string]any) { delete(c, "uid"); delete(c, "customClaims") },
			wantSub: testTenant,
		},
		{
			name: "unknown claims are accepted",
			mutate: func(c map[string]any) {
				c["nbf"] = t0.Unix()
				c["extra"] = []int{1}
				c["customClaims"] = map[string]any{}
			},
			wantSub:     testUID,
			wantUID:     ptr(testUID),
			wantCustoms: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := decodeTokenResponse(t, exchange(t, srv, assertionWith(t, tt.mutate)))
			_, got := verifyAccessToken(t, e.PublicKeys(), tr.AccessToken)
			if got.Subject != tt.wantSub {
				t.Errorf("sub = %q, want %q", got.Subject, tt.wantSub)
			}
			if !reflect.DeepEqual(got.UID, tt.wantUID) {
				t.Errorf("uid = %v, want %v", deref(got.UID), deref(tt.wantUID))
			}
			if !reflect.DeepEqual(got.ExternalAccountID, tt.wantExtID) {
				t.Errorf("external_account_id = %v, want %v", deref(got.ExternalAccountID), deref(tt.wantExtID))
			}
			if !reflect.DeepEqual(got.CustomClaims, tt.wantCustoms) {
				t.Errorf("customClaims = %#v, want %#v", got.CustomClaims, tt.wantCustoms)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "<absent>"
	}
	return fmt.Sprintf("%q", *s)
}

func TestConfig(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{TokenLifetime: 90 * time.Second, Issuer: "urn:test:issuer"})
	tr := decodeTokenResponse(t, exchange(t, srv, assertionWith(t, nil)))
	if got, want := tr.ExpiresIn, "90"; got != want {
		t.Errorf("expires_in = %q, want %q", got, want)
	}
	_, c := verifyAccessToken(t, e.PublicKeys(), tr.AccessToken)
	if got, want := c.Expiry, t0.Add(90*time.Second).Unix(); got != want {
		t.Errorf("exp = %d, want %d", got, want)
	}
	if got, want := c.Issuer, "urn:test:issuer"; got != want {
		t.Errorf("iss = %q, want %q", got, want)
	}

	for _, lifetime := range []time.Duration{-time.Second, time.Millisecond} {
		if _, err := emulator.New(emulator.Config{TokenLifetime: lifetime}); err == nil || !strings.HasPrefix(err.Error(), "emulator: ") {
			t.Errorf("New(TokenLifetime: %s) error = %v, want an emulator: error", lifetime, err)
		}
	}
}

// TestRefusals sends one faulty request per row: each is refused with the
// right status and OAuth error, counted as a refusal and never as an
// exchange, and its description holds neither the token nor a value sent.
func TestRefusals(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	// A claim value the client sent must never come back in a description.
	const leak = "leak-me"

	type row struct {
		name        string
		method      string // default POST
		path        string // default TokenPath
		contentType string // default application/json
		body        []byte // default {"token": token}
		token       string
		wantStatus  int
		wantCode    string
	}
	client := func(name, token string) row {
		return row{name: name, token: token, wantStatus: http.StatusUnauthorized, wantCode: "invalid_client"}
	}
	grant := func(name string, mutate func(c map[string]any)) row {
		return row{name: name, token: assertionWith(t, mutate), wantStatus: http.StatusBadRequest, wantCode: "invalid_grant"}
	}
	request := func(name string, body []byte) row {
		return row{name: name, body: body, wantStatus: http.StatusBadRequest, wantCode: "invalid_request"}
	}

	good := assertionWith(t, nil)
	noneHeader := map[string]any{"alg": "none", "typ": "JWT", "kid": testKID}
	tests := []row{
		client("alg none", unsigned(t, noneHeader, goodClaims(t0), "")),
		client("alg none with a signature", unsigned(t, noneHeader, goodClaims(t0), "c2ln")),
		client("HS256", sign(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), testKID, goodClaims(t0))),
		client("unknown kid", sign(t, jose.RS256, tenantKey(), leak, goodClaims(t0))),
		client("wrong key", sign(t, jose.RS256, otherKey(), testKID, goodClaims(t0))),
		client("unknown tenant", assertionWith(t, func(c map[string]any) { c["tenant_id"] = leak })),
		client("iss mismatch", assertionWith(t, func(c map[string]any) { c["iss"] = leak })),
		client("sub mismatch", assertionWith(t, func(c map[string]any) { c["sub"] = leak })),
		client("aud mismatch", assertionWith(t, func(c map[string]any) { c["aud"] = leak })),
		client("signature of other claims", func() string {
			signed := strings.Split(good, ".")
			forged := strings.Split(assertionWith(t, func(c map[string]any) { c["uid"] = leak }), ".")
			return signed[0] + "." + forged[1] + "." + signed[2]
		}()),

		grant("aud as an array", func(c map[string]any) { c["aud"] = []string{testAudience} }),
		grant("expired", func(c map[string]any) { c["iat"] = t0.Add(-time.Hour).Unix(); c["exp"] = t0.Unix() }),
		grant("exp − iat = 3601", func(c map[string]any) { c["exp"] = t0.Unix() + 3601 }),
		grant("exp before iat", func(c map[string]any) { c["iat"] = t0.Unix() + 30; c["exp"] = t0.Unix() + 10 }),
		grant("iat 120 s in the future", func(c map[string]any) {
			c["iat"] = t0.Unix() + 120
			c["exp"] = t0.Unix() + 120 + 3600
		}),
		grant("iat as a string", func(c map[string]any) { c["iat"] = fmt.Sprint(t0.Unix()) }),
		grant("exp as a string", func(c map[string]any) { c["exp"] = fmt.Sprint(t0.Add(time.Hour).Unix()) }),
		grant("exp null", func(c map[string]any) { c["exp"] = nil }),
		grant("iss as a number", func(c map[string]any) { c["iss"] = 7 }),
		grant("tenant_id as a number", func(c map[string]any) { c["tenant_id"] = 7 }),
		grant("pismo as a string", func(c map[string]any) { c["pismo"] = testGroups }),
		grant("group missing", func(c map[string]any) { c["pismo"] = map[string]any{"groups": testGroups} }),
		grant("group empty", func(c map[string]any) { c["pismo"] = map[string]any{"group": ""} }),
		grant("group not a string", func(c map[string]any) { c["pismo"] = map[string]any{"group": []string{"g1"}} }),
		grant("group with an empty item", func(c map[string]any) { c["pismo"] = map[string]any{"group": "g1,,g2"} }),
		grant("group with a trailing comma", func(c map[string]any) { c["pismo"] = map[string]any{"group": "g1,"} }),
		grant("group with a padded item", func(c map[string]any) { c["pismo"] = map[string]any{"group": "g1, g2"} }),
		grant("uid empty", func(c map[string]any) { c["uid"] = "" }),
		grant("uid as a number", func(c map[string]any) { c["uid"] = 42 }),
		grant("external_account_id empty", func(c map[string]any) { delete(c, "uid"); c["external_account_id"] = "" }),
		grant("uid and external_account_id", func(c map[string]any) { c["external_account_id"] = leak }),
		grant("customClaims with a number", func(c map[string]any) { c["customClaims"] = map[string]any{"n": 1} }),
		grant("customClaims as an array", func(c map[string]any) { c["customClaims"] = []string{leak} }),

		{name: "wrong content type", contentType: "text/plain", token: good, wantStatus: http.StatusBadRequest, wantCode: "invalid_request"},
		request("malformed JSON", []byte(`{"token": `)),
		request("JSON array", []byte(`["x"]`)),
		request("no token", []byte(`{}`)),
		request("token as a number", []byte(`{"token": 42}`)),
		request("token null", []byte(`{"token": null}`)),
		request("token empty", []byte(`{"token": ""}`)),
		request("extra member", fmt.Appendf(nil, `{"token": %q, "grant_type": "jwt"}`, good)),
		request("token twice", fmt.Appendf(nil, `{"token": %q, "token": %q}`, good, good)),
		request("trailing data", fmt.Appendf(nil, `{"token": %q} {}`, good)),
		request("invalid UTF-8", []byte("{\"token\": \"\xff\"}")),
		request("not a JWT", tokenBody(t, "not-a-jwt")),
		request("JWT with four parts", tokenBody(t, good+".x")),
		request("header not JSON", tokenBody(t, "bm90LWpzb24."+strings.SplitN(good, ".", 2)[1])),
		request("typ not JWT", tokenBody(t, unsigned(t, map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": testKID}, goodClaims(t0), "c2ln"))),
		request("kid not a string", tokenBody(t, unsigned(t, map[string]any{"alg": "RS256", "kid": 1}, goodClaims(t0), "c2ln"))),
		request("crit header", tokenBody(t, unsigned(t, map[string]any{"alg": "RS256", "kid": testKID, "crit": []string{"exp"}, "exp": 1}, goodClaims(t0), "c2ln"))),
		{name: "body over 64 KiB", body: tokenBody(t, strings.Repeat("a", emulator.MaxBodyBytes)), wantStatus: http.StatusRequestEntityTooLarge, wantCode: "invalid_request"},
		{name: "GET on the token path", method: http.MethodGet, wantStatus: http.StatusMethodNotAllowed, wantCode: "invalid_request"},
	}
	for _, required := range []string{"iss", "sub", "aud", "iat", "exp", "tenant_id", "pismo"} {
		tests = append(tests, grant("missing "+required, func(c map[string]any) { delete(c, required) }))
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path, ct, body := tt.method, tt.path, tt.contentType, tt.body
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = emulator.TokenPath
			}
			if ct == "" {
				ct = "application/json"
			}
			if body == nil {
				body = tokenBody(t, tt.token)
			}
			exchanges, refusals := e.Exchanges(), e.Refusals()

			r := do(t, method, srv.URL+path, ct, body)
			code, desc := oauthError(t, r)
			t.Logf("%d %s: %s", r.status, code, desc)
			if r.status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %s (%s), want %d %s", r.status, code, desc, tt.wantStatus, tt.wantCode)
			}
			if got, want := r.header.Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type = %q, want %q", got, want)
			}
			if desc == "" {
				t.Error("error_description is empty")
			}
			if strings.Contains(desc, leak) || (len(tt.token) > 8 && strings.Contains(desc, tt.token)) {
				t.Errorf("error_description %q echoes what the client sent", desc)
			}
			if got, want := e.Refusals(), refusals+1; got != want {
				t.Errorf("Refusals() = %d, want %d", got, want)
			}
			if got, want := e.Exchanges(), exchanges; got != want {
				t.Errorf("Exchanges() = %d, want %d", got, want)
			}
			if tt.wantStatus == http.StatusMethodNotAllowed {
				if got, want := r.header.Get("Allow"), http.MethodPost; got != want {
					t.Errorf("Allow = %q, want %q", got, want)
				}
			}
		})
	}
	if _, _, ok := e.LastAssertion(testTenant); ok {
		t.Error("LastAssertion recorded a refused assertion")
	}
}

// TestContentTypes checks the media types the endpoint takes.
func TestContentTypes(t *testing.T) {
	_, srv := newEmulator(t, emulator.Config{})
	tests := []struct {
		contentType string
		want        int
	}{
		{"application/json", http.StatusCreated},
		{"application/json; charset=utf-8", http.StatusCreated},
		{"Application/JSON; charset=UTF-8", http.StatusCreated},
		{"application/json; charset=latin1", http.StatusBadRequest},
		{"application/x-www-form-urlencoded", http.StatusBadRequest},
		{"", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.contentType, func(t *testing.T) {
			r := do(t, http.MethodPost, srv.URL+emulator.TokenPath, tt.contentType, tokenBody(t, assertionWith(t, nil)))
			if got := r.status; got != tt.want {
				t.Errorf("status = %d (%s), want %d", got, r.body, tt.want)
			}
		})
	}
}

// TestClock checks expiry follows the injected clock, to the second.
func TestClock(t *testing.T) {
	clock := newFakeClock(t0)
	_, srv := newEmulator(t, emulator.Config{Clock: clock.Now})
	assertion := assertionWith(t, func(c map[string]any) { c["exp"] = t0.Unix() + 60 })
	tests := []struct {
		now  time.Time
		want int
	}{
		{t0, http.StatusCreated},
		{t0.Add(59 * time.Second), http.StatusCreated},
		{t0.Add(60 * time.Second), http.StatusBadRequest},
		{t0.Add(-60 * time.Second), http.StatusCreated}, // iat 60 s ahead: allowed
		{t0.Add(-61 * time.Second), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.now.Sub(t0).String(), func(t *testing.T) {
			clock.Set(tt.now)
			if got := exchange(t, srv, assertion).status; got != tt.want {
				t.Errorf("status = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestKeyID(t *testing.T) {
	e, err := emulator.New(emulator.Config{Clock: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	tp, err := (&jose.JSONWebKey{Key: &tenantKey().PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	thumbprint := base64.RawURLEncoding.EncodeToString(tp)
	claims := goodClaims(t0)
	kidless := sign(t, jose.RS256, tenantKey(), "", claims)

	tests := []struct {
		name  string
		keys  []jose.JSONWebKey
		token string
		want  int
	}{
		{"no kid, one key", []jose.JSONWebKey{publicJWK(tenantKey(), testKID)}, kidless, http.StatusCreated},
		{"no kid, two keys", []jose.JSONWebKey{publicJWK(tenantKey(), testKID), publicJWK(otherKey(), "k2")}, kidless, http.StatusUnauthorized},
		{"kid, two keys", []jose.JSONWebKey{publicJWK(otherKey(), "k2"), publicJWK(tenantKey(), testKID)}, sign(t, jose.RS256, tenantKey(), testKID, claims), http.StatusCreated},
		{"thumbprint kid", []jose.JSONWebKey{publicJWK(tenantKey(), "")}, sign(t, jose.RS256, tenantKey(), thumbprint, claims), http.StatusCreated},
		{"no kid, one key without kid", []jose.JSONWebKey{publicJWK(tenantKey(), "")}, kidless, http.StatusCreated},
		{"empty kid", []jose.JSONWebKey{publicJWK(tenantKey(), testKID)}, unsigned(t, map[string]any{"alg": "RS256", "kid": ""}, claims, "c2ln"), http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.Register(testTenantReg(tt.keys...)); err != nil {
				t.Fatal(err)
			}
			r := exchange(t, srv, tt.token)
			if got := r.status; got != tt.want {
				t.Errorf("status = %d (%s), want %d", got, r.body, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				if code, _ := oauthError(t, r); code != "invalid_client" {
					t.Errorf("error = %q, want invalid_client", code)
				}
			}
		})
	}
}

func TestRegister(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small := mustRSAKey(1024)
	good := publicJWK(tenantKey(), testKID)
	tests := []struct {
		name   string
		tenant emulator.Tenant
	}{
		{"no id", emulator.Tenant{Issuer: "i", Subject: "s", Audience: "a", Keys: []jose.JSONWebKey{good}}},
		{"no issuer", emulator.Tenant{ID: "t", Subject: "s", Audience: "a", Keys: []jose.JSONWebKey{good}}},
		{"no subject", emulator.Tenant{ID: "t", Issuer: "i", Audience: "a", Keys: []jose.JSONWebKey{good}}},
		{"no audience", emulator.Tenant{ID: "t", Issuer: "i", Subject: "s", Keys: []jose.JSONWebKey{good}}},
		{"no key", emulator.Tenant{ID: "t", Issuer: "i", Subject: "s", Audience: "a"}},
		{"empty key", testTenantReg(jose.JSONWebKey{KeyID: "k"})},
		{"EC key", testTenantReg(jose.JSONWebKey{Key: &ecKey.PublicKey})},
		{"private key", testTenantReg(jose.JSONWebKey{Key: tenantKey()})},
		{"1024-bit key", testTenantReg(publicJWK(small, ""))},
		{"encryption key", testTenantReg(jose.JSONWebKey{Key: &tenantKey().PublicKey, Use: "enc"})},
		{"PS256 key", testTenantReg(jose.JSONWebKey{Key: &tenantKey().PublicKey, Algorithm: "PS256"})},
		{"kid twice", testTenantReg(publicJWK(tenantKey(), "k"), publicJWK(otherKey(), "k"))},
		{"same key twice without kid", testTenantReg(publicJWK(tenantKey(), ""), publicJWK(tenantKey(), ""))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.Register(tt.tenant)
			if err == nil {
				t.Fatal("Register succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), "emulator: ") {
				t.Errorf("error %q lacks the emulator: prefix", err)
			}
		})
	}

	// A failed Register left the registration alone.
	decodeTokenResponse(t, exchange(t, srv, assertionWith(t, nil)))

	// Registering again replaces the registration: the old key stops working.
	if err := e.Register(testTenantReg(publicJWK(otherKey(), testKID))); err != nil {
		t.Fatal(err)
	}
	if got, want := exchange(t, srv, assertionWith(t, nil)).status, http.StatusUnauthorized; got != want {
		t.Errorf("old key after re-registration: status = %d, want %d", got, want)
	}
	decodeTokenResponse(t, exchange(t, srv, sign(t, jose.RS256, otherKey(), testKID, goodClaims(t0))))
	if got, want := e.ExchangesFor(testTenant), int64(2); got != want {
		t.Errorf("ExchangesFor after re-registration = %d, want %d (counts outlive registrations)", got, want)
	}
}

func TestFailNext(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	assertion := assertionWith(t, nil)

	e.FailNext(2, http.StatusServiceUnavailable)
	for i := range 2 {
		r := exchange(t, srv, assertion)
		code, _ := oauthError(t, r)
		if r.status != http.StatusServiceUnavailable || code != "temporarily_unavailable" {
			t.Errorf("request %d: got %d %s, want 503 temporarily_unavailable", i+1, r.status, code)
		}
	}
	decodeTokenResponse(t, exchange(t, srv, assertion))
	if got, want := e.Exchanges(), int64(1); got != want {
		t.Errorf("Exchanges() = %d, want %d", got, want)
	}
	if got, want := e.Refusals(), int64(0); got != want {
		t.Errorf("Refusals() = %d, want %d", got, want)
	}

	codes := []struct {
		status int
		want   string
	}{
		{http.StatusInternalServerError, "server_error"},
		{http.StatusBadGateway, "server_error"},
		{http.StatusServiceUnavailable, "temporarily_unavailable"},
		{http.StatusUnauthorized, "invalid_client"},
		{http.StatusTooManyRequests, "invalid_request"},
		{http.StatusBadRequest, "invalid_request"},
	}
	for _, tt := range codes {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			e.FailNext(1, tt.status)
			// Even a request the emulator would refuse fails as told.
			r := do(t, http.MethodPost, srv.URL+emulator.TokenPath, "text/plain", nil)
			code, _ := oauthError(t, r)
			if r.status != tt.status || code != tt.want {
				t.Errorf("got %d %s, want %d %s", r.status, code, tt.status, tt.want)
			}
			if got, want := r.header.Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type = %q, want %q", got, want)
			}
		})
	}

	// FailNext(0, …) cancels what is pending.
	e.FailNext(5, http.StatusInternalServerError)
	e.FailNext(0, 0)
	decodeTokenResponse(t, exchange(t, srv, assertion))

	defer func() {
		if recover() == nil {
			t.Error("FailNext(1, 200) did not panic")
		}
	}()
	e.FailNext(1, http.StatusOK)
}

func TestRoutes(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	tests := []struct {
		method, path string
		wantStatus   int
		wantAllow    string
	}{
		{http.MethodGet, emulator.JWKSPath, http.StatusOK, ""},
		{http.MethodHead, emulator.JWKSPath, http.StatusOK, ""},
		{http.MethodPost, emulator.JWKSPath, http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodPut, emulator.TokenPath, http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/", http.StatusNotFound, ""},
		{http.MethodPost, emulator.TokenPath + "/", http.StatusNotFound, ""},
		{http.MethodPost, "/passport/v2/oauth/token", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := do(t, tt.method, srv.URL+tt.path, "application/json", nil)
			if r.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", r.status, tt.wantStatus)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
	if got, want := e.Refusals(), int64(1); got != want {
		t.Errorf("Refusals() = %d, want %d (only the token path counts)", got, want)
	}

	// The JWKS endpoint serves PublicKeys, public only, and it verifies an
	// access token.
	r := do(t, http.MethodGet, srv.URL+emulator.JWKSPath, "", nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.body, &set); err != nil {
		t.Fatal(err)
	}
	if got, want := len(set.Keys), 1; got != want {
		t.Fatalf("JWKS has %d keys, want %d", got, want)
	}
	k := set.Keys[0]
	if !k.IsPublic() || k.KeyID == "" || k.KeyID != e.PublicKeys().Keys[0].KeyID || k.Algorithm != "RS256" || k.Use != "sig" {
		t.Errorf("JWKS key = public %v kid %q alg %q use %q, want a public RS256 signing key with the emulator's kid", k.IsPublic(), k.KeyID, k.Algorithm, k.Use)
	}
	if strings.Contains(string(r.body), `"d"`) {
		t.Error("the JWKS holds private key material")
	}
	tr := decodeTokenResponse(t, exchange(t, srv, assertionWith(t, nil)))
	verifyAccessToken(t, set, tr.AccessToken)
}

// TestConcurrency exchanges from several goroutines while the tenant is
// registered again and again; run with -race.
func TestConcurrency(t *testing.T) {
	e, srv := newEmulator(t, emulator.Config{})
	assertion := assertionWith(t, nil)
	const workers, each = 8, 4
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if r := exchange(t, srv, assertion); r.status != http.StatusCreated {
					t.Errorf("status = %d (%s), want 201", r.status, r.body)
				}
				e.LastAssertion(testTenant)
				e.ExchangesFor(testTenant)
			}
		})
	}
	wg.Go(func() {
		for range workers * each {
			if err := e.Register(testTenantReg(publicJWK(tenantKey(), testKID))); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if got, want := e.Exchanges(), int64(workers*each); got != want {
		t.Errorf("Exchanges() = %d, want %d", got, want)
	}
	if got, want := e.ExchangesFor(testTenant), int64(workers*each); got != want {
		t.Errorf("ExchangesFor() = %d, want %d", got, want)
	}
}
