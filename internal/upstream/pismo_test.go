package upstream_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func testSigner(t *testing.T) jose.Signer {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: testKey(), KeyID: "kid-1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var fixedNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// recorder is an httptest upstream that keeps what it was sent and answers
// with a canned status and body.
type recorder struct {
	status int
	body   string
	mu     sync.Mutex
	got    []*http.Request
	bodies [][]byte
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.got = append(rec.got, r)
	rec.bodies = append(rec.bodies, b)
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rec.status)
	io.WriteString(w, rec.body)
}

func newPismo(t *testing.T, tokenURL string, mod func(*upstream.PismoConfig)) *upstream.Pismo {
	t.Helper()
	u, err := url.Parse(tokenURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := upstream.PismoConfig{
		TenantID: "tn-1", TokenURL: u, Issuer: "the-issuer", Subject: "the-subject", Audience: "the-audience",
		Signer: testSigner(t), AssertionLifetime: 10 * time.Minute, Clock: func() time.Time { return fixedNow },
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := upstream.NewPismo(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sentClaims verifies the assertion the upstream received and returns its
// header and claims.
func sentClaims(t *testing.T, body []byte) (jose.Header, map[string]any) {
	t.Helper()
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("request body is not JSON: %v", err)
	}
	if len(req) != 1 {
		t.Errorf("request body has %d members, want only token", len(req))
	}
	tok, err := jwt.ParseSigned(req["token"].(string), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := tok.Claims(&testKey().PublicKey, &claims); err != nil {
		t.Fatalf("assertion does not verify with the tenant's public key: %v", err)
	}
	return tok.Headers[0], claims
}

func TestPismoAssertionClaims(t *testing.T) {
	tests := []struct {
		name string
		mode upstream.UIDMode
		req  broker.Request
		want map[string]any // besides iss, sub, aud, iat, exp, tenant_id
	}{
		{"tenant token, uid omitted", upstream.UIDOmit,
			broker.Request{Tenant: "tn-1", Groups: []string{"a:r", "b:rw"}},
			map[string]any{"pismo": map[string]any{"group": "a:r,b:rw"}}},
		{"tenant token, uid is the tenant", upstream.UIDTenant,
			broker.Request{Tenant: "tn-1", Groups: []string{"a:r"}},
			map[string]any{"uid": "tn-1", "pismo": map[string]any{"group": "a:r"}}},
		{"account token", upstream.UIDTenant,
			broker.Request{Tenant: "tn-1", UID: "12345", Groups: []string{"a:r"}},
			map[string]any{"uid": "12345", "pismo": map[string]any{"group": "a:r"}}},
		{"external account id", upstream.UIDOmit,
			broker.Request{Tenant: "tn-1", ExternalAccountID: "ext-9", Groups: []string{"a:r"}},
			map[string]any{"external_account_id": "ext-9", "pismo": map[string]any{"group": "a:r"}}},
		{"custom claims", upstream.UIDOmit,
			broker.Request{Tenant: "tn-1", Groups: []string{"a:r"}, CustomClaims: map[string]string{"custom1": "v1", "user": "me"}},
			map[string]any{"pismo": map[string]any{"group": "a:r"}, "customClaims": map[string]any{"custom1": "v1", "user": "me"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: http.StatusCreated, body: `{"access_token":"at-1","refresh_token":"rt","expires_in":"3600"}`}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			p := newPismo(t, srv.URL+"/passport/v1/oauth2/token", func(c *upstream.PismoConfig) { c.UIDMode = tt.mode })

			tok, err := p.Exchange(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != "at-1" || tok.TokenType != "Bearer" || !tok.Expiry.Equal(fixedNow.Add(time.Hour)) {
				t.Errorf("token = %+v, want at-1 Bearer expiring an hour after now", tok)
			}
			r := rec.got[0]
			if r.Method != http.MethodPost || r.URL.Path != "/passport/v1/oauth2/token" || r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request = %s %s (%s), want a JSON POST to the token path", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
			}
			hdr, claims := sentClaims(t, rec.bodies[0])
			if hdr.Algorithm != "RS256" || hdr.KeyID != "kid-1" || hdr.ExtraHeaders["typ"] != "JWT" {
				t.Errorf("header = alg %s kid %s typ %v, want RS256 kid-1 JWT", hdr.Algorithm, hdr.KeyID, hdr.ExtraHeaders["typ"])
			}
			want := map[string]any{
				"iss": "the-issuer", "sub": "the-subject", "aud": "the-audience", "tenant_id": "tn-1",
				"iat": float64(fixedNow.Unix()), "exp": float64(fixedNow.Add(10 * time.Minute).Unix()),
			}
			for k, v := range tt.want {
				want[k] = v
			}
			gotJSON, _ := json.Marshal(claims)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("claims\n got %s\nwant %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestPismoResponses(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantToken  string
		wantExpiry time.Time
		wantReason broker.Reason
		wantCode   string
	}{
		{"201 string expires_in", 201, `{"access_token":"a","expires_in":"3600"}`, "a", fixedNow.Add(time.Hour), "", ""},
		{"200 numeric expires_in", 200, `{"access_token":"a","expires_in":1800,"token_type":"bearer"}`, "a", fixedNow.Add(30 * time.Minute), "", ""},
		{"token field instead of access_token", 201, `{"token":"t","expires_in":60}`, "t", fixedNow.Add(time.Minute), "", ""},
		{"expiry from the JWT's exp", 201, `{"access_token":"` + unsignedJWT(`{"exp":1900000000}`) + `"}`, unsignedJWT(`{"exp":1900000000}`), time.Unix(1900000000, 0), "", ""},
		{"no expiry anywhere", 201, `{"access_token":"opaque"}`, "", time.Time{}, broker.ReasonBadResponse, ""},
		{"no token", 201, `{"expires_in":"3600"}`, "", time.Time{}, broker.ReasonBadResponse, ""},
		{"not JSON", 201, `<html>`, "", time.Time{}, broker.ReasonBadResponse, ""},
		{"negative expires_in", 201, `{"access_token":"a","expires_in":-5}`, "", time.Time{}, broker.ReasonBadResponse, ""},
		{"not a bearer token", 201, `{"access_token":"a","expires_in":5,"token_type":"mac"}`, "", time.Time{}, broker.ReasonBadResponse, ""},
		{"401 invalid_client", 401, `{"error":"invalid_client","error_description":"bad signature"}`, "", time.Time{}, broker.ReasonRefused, "invalid_client"},
		{"400 invalid_grant", 400, `{"error":"invalid_grant"}`, "", time.Time{}, broker.ReasonRefused, "invalid_grant"},
		{"403 without a body", 403, ``, "", time.Time{}, broker.ReasonRefused, ""},
		{"429", 429, `{"error":"slow_down"}`, "", time.Time{}, broker.ReasonUnavailable, "slow_down"},
		{"503", 503, `{"error":"temporarily_unavailable"}`, "", time.Time{}, broker.ReasonUnavailable, "temporarily_unavailable"},
		{"500 html", 500, `<h1>oops</h1>`, "", time.Time{}, broker.ReasonUnavailable, ""},
		{"redirect not followed", 302, ``, "", time.Time{}, broker.ReasonBadResponse, ""},
		{"code with a newline is dropped", 400, `{"error":"bad\ncode"}`, "", time.Time{}, broker.ReasonRefused, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(&recorder{status: tt.status, body: tt.body})
			defer srv.Close()
			tok, err := newPismo(t, srv.URL, nil).Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
			if tt.wantReason == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tok.AccessToken != tt.wantToken || !tok.Expiry.Equal(tt.wantExpiry) {
					t.Errorf("got %q expiring %s, want %q expiring %s", tok.AccessToken, tok.Expiry, tt.wantToken, tt.wantExpiry)
				}
				return
			}
			var xe *broker.ExchangeError
			if !errors.As(err, &xe) {
				t.Fatalf("err = %v, want an ExchangeError", err)
			}
			if xe.Reason != tt.wantReason || xe.Code != tt.wantCode {
				t.Errorf("reason %q code %q, want %q %q", xe.Reason, xe.Code, tt.wantReason, tt.wantCode)
			}
			if tt.body != "" && len(tt.body) > 8 && strings.Contains(err.Error(), tt.body) {
				t.Errorf("error %q contains the raw body", err)
			}
		})
	}
}

func TestUpstreamErrorTextNeverCarriesSecrets(t *testing.T) {
	jwtLike := unsignedJWT(`{"sub":"someone","exp":1900000000}`)
	srv := httptest.NewServer(&recorder{status: 400, body: `{"error":"invalid_grant","error_description":"assertion ` + jwtLike + ` rejected"}`})
	defer srv.Close()
	_, err := newPismo(t, srv.URL, nil).Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) {
		t.Fatalf("err = %v", err)
	}
	for _, s := range []string{err.Error(), xe.Err.Error()} {
		if strings.Contains(s, jwtLike) || strings.Contains(s, strings.Split(jwtLike, ".")[1]) {
			t.Errorf("error text %q carries the echoed token", s)
		}
	}
	if !strings.Contains(xe.Err.Error(), "[redacted]") {
		t.Errorf("detail %q: want the echoed token redacted", xe.Err)
	}
}

func TestOversizedBodyIsRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		io.WriteString(w, `{"access_token":"`+strings.Repeat("a", upstream.MaxBodyBytes)+`","expires_in":60}`)
	}))
	defer srv.Close()
	_, err := newPismo(t, srv.URL, nil).Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonBadResponse {
		t.Fatalf("err = %v, want bad_response", err)
	}
}

func TestNetworkFailuresAreUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there now
	_, err := newPismo(t, addr, nil).Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonUnavailable {
		t.Fatalf("err = %v, want unavailable", err)
	}
}

func TestSlowUpstreamTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	p := newPismo(t, srv.URL, func(c *upstream.PismoConfig) { c.Timeout = 50 * time.Millisecond })
	_, err := p.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonTimeout {
		t.Fatalf("err = %v, want timeout", err)
	}
}

func TestNewPismoRefusesBadConfig(t *testing.T) {
	u, _ := url.Parse("https://x.example/token")
	for name, cfg := range map[string]upstream.PismoConfig{
		"no tenant":         {TokenURL: u, Issuer: "i", Subject: "s", Audience: "a", Signer: testSigner(t)},
		"relative url":      {TenantID: "t", TokenURL: &url.URL{Path: "/token"}, Issuer: "i", Subject: "s", Audience: "a", Signer: testSigner(t)},
		"no audience":       {TenantID: "t", TokenURL: u, Issuer: "i", Subject: "s", Signer: testSigner(t)},
		"no signer":         {TenantID: "t", TokenURL: u, Issuer: "i", Subject: "s", Audience: "a"},
		"lifetime too long": {TenantID: "t", TokenURL: u, Issuer: "i", Subject: "s", Audience: "a", Signer: testSigner(t), AssertionLifetime: 61 * time.Minute},
		"bad uid mode":      {TenantID: "t", TokenURL: u, Issuer: "i", Subject: "s", Audience: "a", Signer: testSigner(t), UIDMode: "sometimes"},
	} {
		if _, err := upstream.NewPismo(cfg); err == nil {
			t.Errorf("%s: NewPismo succeeded, want an error", name)
		}
	}
}

func TestTenantsRoutes(t *testing.T) {
	srv := httptest.NewServer(&recorder{status: 201, body: `{"access_token":"a","expires_in":60}`})
	defer srv.Close()
	ts := upstream.Tenants{"tn-1": newPismo(t, srv.URL, nil)}
	if _, err := ts.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Exchange(context.Background(), broker.Request{Tenant: "nope", Groups: []string{"g"}}); !errors.Is(err, broker.ErrUnknownTenant) {
		t.Errorf("unknown tenant: err = %v, want ErrUnknownTenant", err)
	}
}

func unsignedJWT(payload string) string {
	enc := func(s string) string { return strings.TrimRight(base64url(s), "=") }
	return enc(`{"alg":"RS256","typ":"JWT"}`) + "." + enc(payload) + "." + enc("signature-bytes-not-checked")
}
