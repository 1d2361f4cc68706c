package upstream_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
)

var (
	rsaKey = sync.OnceValue(func() *keystore.Key {
		k, err := keystore.Generate(2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	ecKey = sync.OnceValue(func() *keystore.Key {
		k, err := keystore.GenerateEC()
		if err != nil {
			panic(err)
		}
		return k
	})
)

const (
	testClientID = "my-client"
	testSecret   = "s3cret-Value_that+must/never=leak"
	testIssuer   = "https://issuer.example"
	okBody       = `{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"scope":"a:r b:w"}`
)

// newOAuth builds an exchanger of kind for tenant tn-1 against the token
// endpoint at tokenURL, with the credentials the kind needs; mod adjusts the
// config before NewOAuth sees it.
func newOAuth(t *testing.T, kind, tokenURL string, mod func(*upstream.OAuthConfig)) *upstream.OAuth {
	t.Helper()
	u, err := url.Parse(tokenURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := upstream.OAuthConfig{
		TenantID: "tn-1", Kind: kind, Endpoint: upstream.StaticEndpoint(u, testIssuer), ClientID: testClientID,
		Clock: func() time.Time { return fixedNow },
	}
	switch kind {
	case upstream.KindPrivateKeyJWT, upstream.KindJWTBearer:
		cfg.Signer = rsaKey().Signer()
	default:
		cfg.Secret = []byte(testSecret)
	}
	if mod != nil {
		mod(&cfg)
	}
	o, err := upstream.NewOAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// sentForm checks that r is a form POST and returns its form.
func sentForm(t *testing.T, r *http.Request, body []byte) url.Values {
	t.Helper()
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("request = %s (%s), want a form POST", r.Method, r.Header.Get("Content-Type"))
	}
	f, err := url.ParseQuery(string(body))
	if err != nil {
		t.Fatalf("request body is not a form: %v", err)
	}
	for k, v := range f {
		if len(v) != 1 {
			t.Errorf("form field %s sent %d times", k, len(v))
		}
	}
	return f
}

// wantFields fails unless f has exactly the fields want, with those values;
// a want value of "*" matches any non-empty value.
func wantFields(t *testing.T, f url.Values, want map[string]string) {
	t.Helper()
	for k := range f {
		if _, ok := want[k]; !ok {
			t.Errorf("form carries %s, which it must not", k)
		}
	}
	for k, v := range want {
		got := f.Get(k)
		switch {
		case !f.Has(k):
			t.Errorf("form lacks %s", k)
		case v == "*" && got == "":
			t.Errorf("form %s is empty", k)
		case v != "*" && got != v:
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
}

// verifiedAssertion checks the assertion's signature with key's public half
// and returns its header and claims.
func verifiedAssertion(t *testing.T, assertion string, key *keystore.Key) (jose.Header, map[string]any) {
	t.Helper()
	tok, err := jwt.ParseSigned(assertion, []jose.SignatureAlgorithm{key.Algorithm()})
	if err != nil {
		t.Fatalf("assertion: %v", err)
	}
	var claims map[string]any
	if err := tok.Claims(key.Public(), &claims); err != nil {
		t.Fatalf("assertion does not verify with the tenant's public key: %v", err)
	}
	h := tok.Headers[0]
	if h.Algorithm != string(key.Algorithm()) || h.KeyID != key.ID() || h.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header = alg %s kid %s typ %v, want %s %s JWT", h.Algorithm, h.KeyID, h.ExtraHeaders["typ"], key.Algorithm(), key.ID())
	}
	return h, claims
}

func TestPrivateKeyJWT(t *testing.T) {
	for _, key := range []*keystore.Key{rsaKey(), ecKey()} {
		t.Run(string(key.Algorithm()), func(t *testing.T) {
			rec := &recorder{status: 200, body: okBody}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			tokenURL := srv.URL + "/oauth2/token"
			o := newOAuth(t, upstream.KindPrivateKeyJWT, tokenURL, func(c *upstream.OAuthConfig) {
				c.Signer = key.Signer()
				c.AssertionLifetime = 2 * time.Minute
			})
			req := broker.Request{Tenant: "tn-1", Groups: []string{"a:r", "b:w"}}
			for range 2 {
				tok, err := o.Exchange(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				if tok.AccessToken != "at-1" || tok.TokenType != "Bearer" || !tok.Expiry.Equal(fixedNow.Add(time.Hour)) {
					t.Errorf("token = %+v", tok)
				}
			}
			var jtis []string
			for i, r := range rec.got {
				if r.URL.Path != "/oauth2/token" {
					t.Errorf("path = %s", r.URL.Path)
				}
				if h := r.Header.Get("Authorization"); h != "" {
					t.Errorf("Authorization header %q sent, want none", h)
				}
				f := sentForm(t, r, rec.bodies[i])
				wantFields(t, f, map[string]string{
					"grant_type":            "client_credentials",
					"client_id":             testClientID,
					"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
					"client_assertion":      "*",
					"scope":                 "a:r b:w",
				})
				_, claims := verifiedAssertion(t, f.Get("client_assertion"), key)
				jti, _ := claims["jti"].(string)
				raw, err := base64.RawURLEncoding.DecodeString(jti)
				if err != nil || len(raw) < 16 {
					t.Errorf("jti %q: want at least 128 bits, base64url", jti)
				}
				jtis = append(jtis, jti)
				delete(claims, "jti")
				want := map[string]any{
					"iss": testClientID, "sub": testClientID, "aud": tokenURL,
					"iat": float64(fixedNow.Unix()), "exp": float64(fixedNow.Add(2 * time.Minute).Unix()),
				}
				gotJSON, _ := json.Marshal(claims)
				wantJSON, _ := json.Marshal(want)
				if string(gotJSON) != string(wantJSON) {
					t.Errorf("claims\n got %s\nwant %s", gotJSON, wantJSON)
				}
				if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat > 300 {
					t.Errorf("exp − iat = %vs, want at most 5 minutes", exp-iat)
				}
			}
			if len(jtis) != 2 || jtis[0] == jtis[1] {
				t.Errorf("jtis = %q, want two different ones", jtis)
			}
		})
	}
}

func TestPrivateKeyJWTAudienceAndScope(t *testing.T) {
	tests := []struct {
		name, audience string
		groups         []string
		wantAud        string
		wantScope      bool
	}{
		{"default audience is the token endpoint", "", []string{"g"}, "", true},
		{"token_endpoint audience", upstream.AudienceTokenEndpoint, []string{"g"}, "", true},
		{"issuer audience", upstream.AudienceIssuer, []string{"g"}, testIssuer, true},
		{"no groups, no scope", "", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: 200, body: okBody}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			o := newOAuth(t, upstream.KindPrivateKeyJWT, srv.URL+"/token", func(c *upstream.OAuthConfig) { c.AssertionAudience = tt.audience })
			if _, err := o.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: tt.groups}); err != nil {
				t.Fatal(err)
			}
			f := sentForm(t, rec.got[0], rec.bodies[0])
			if f.Has("scope") != tt.wantScope {
				t.Errorf("scope sent = %v, want %v", f.Has("scope"), tt.wantScope)
			}
			_, claims := verifiedAssertion(t, f.Get("client_assertion"), rsaKey())
			want := tt.wantAud
			if want == "" {
				want = srv.URL + "/token"
			}
			if claims["aud"] != want {
				t.Errorf("aud = %v, want %s", claims["aud"], want)
			}
		})
	}
}

func TestClientSecretPost(t *testing.T) {
	rec := &recorder{status: 200, body: okBody}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	o := newOAuth(t, upstream.KindClientSecretPost, srv.URL, nil)
	if _, err := o.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"a:r", "b:w"}}); err != nil {
		t.Fatal(err)
	}
	if h := rec.got[0].Header.Get("Authorization"); h != "" {
		t.Errorf("Authorization header %q sent, want none", h)
	}
	wantFields(t, sentForm(t, rec.got[0], rec.bodies[0]), map[string]string{
		"grant_type": "client_credentials", "client_id": testClientID, "client_secret": testSecret, "scope": "a:r b:w",
	})
}

func TestClientSecretBasic(t *testing.T) {
	tests := []struct{ id, secret string }{
		{"plain-client", "plain-secret"},
		{"my:client%1 ü", "p@ss:w%rd+/ =&"}, // ':' and '%' must be form-encoded
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			rec := &recorder{status: 200, body: okBody}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			o := newOAuth(t, upstream.KindClientSecretBasic, srv.URL, func(c *upstream.OAuthConfig) {
				c.ClientID, c.Secret = tt.id, []byte(tt.secret)
			})
			if _, err := o.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"a:r", "b:w"}}); err != nil {
				t.Fatal(err)
			}
			r := rec.got[0]
			wantFields(t, sentForm(t, r, rec.bodies[0]), map[string]string{"grant_type": "client_credentials", "scope": "a:r b:w"})
			if bytes.Contains(rec.bodies[0], []byte(url.QueryEscape(tt.secret))) {
				t.Error("the body carries the secret")
			}
			auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Basic ")
			if !ok {
				t.Fatalf("Authorization = %q, want Basic", r.Header.Get("Authorization"))
			}
			raw, err := base64.StdEncoding.DecodeString(auth)
			if err != nil {
				t.Fatal(err)
			}
			wantRaw := url.QueryEscape(tt.id) + ":" + url.QueryEscape(tt.secret)
			if string(raw) != wantRaw {
				t.Errorf("basic credentials = %q, want %q", raw, wantRaw)
			}
			// What a server does (RFC 6749 §2.3.1): split at the one raw ':',
			// then form-decode each half.
			id, secret, _ := strings.Cut(string(raw), ":")
			gotID, err1 := url.QueryUnescape(id)
			gotSecret, err2 := url.QueryUnescape(secret)
			if err1 != nil || err2 != nil || gotID != tt.id || gotSecret != tt.secret {
				t.Errorf("server decodes %q / %q, want the originals", gotID, gotSecret)
			}
		})
	}
}

func TestJWTBearer(t *testing.T) {
	const email = "svc@project.iam.gserviceaccount.com"
	tests := []struct {
		name    string
		subject string
		req     broker.Request
		wantSub any // nil: no sub claim
	}{
		{"no subject", "", broker.Request{Tenant: "tn-1", Groups: []string{"https://www.googleapis.com/auth/cloud-platform", "openid"}}, nil},
		{"configured subject", "admin@corp.example", broker.Request{Tenant: "tn-1", Groups: []string{"openid"}}, "admin@corp.example"},
		{"uid wins over the configured subject", "admin@corp.example", broker.Request{Tenant: "tn-1", UID: "user@corp.example", Groups: []string{"openid"}}, "user@corp.example"},
		{"uid without a configured subject", "", broker.Request{Tenant: "tn-1", UID: "user@corp.example", Groups: []string{"openid"}}, "user@corp.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: 200, body: `{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}`}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			tokenURL := srv.URL + "/token"
			o := newOAuth(t, upstream.KindJWTBearer, tokenURL, func(c *upstream.OAuthConfig) {
				c.ClientID, c.Subject, c.AssertionLifetime = email, tt.subject, time.Hour
			})
			tok, err := o.Exchange(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != "ya29.x" || !tok.Expiry.Equal(fixedNow.Add(3599*time.Second)) {
				t.Errorf("token = %+v", tok)
			}
			r := rec.got[0]
			if h := r.Header.Get("Authorization"); h != "" {
				t.Errorf("Authorization header %q sent, want none", h)
			}
			scope := strings.Join(tt.req.Groups, " ")
			f := sentForm(t, r, rec.bodies[0])
			wantFields(t, f, map[string]string{
				"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "*", "scope": scope,
			})
			_, claims := verifiedAssertion(t, f.Get("assertion"), rsaKey())
			want := map[string]any{
				"iss": email, "aud": tokenURL, "scope": scope,
				"iat": float64(fixedNow.Unix()), "exp": float64(fixedNow.Add(time.Hour).Unix()),
			}
			if tt.wantSub != nil {
				want["sub"] = tt.wantSub
			}
			gotJSON, _ := json.Marshal(claims)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("claims\n got %s\nwant %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestPismoOAuth2(t *testing.T) {
	tests := []struct {
		name    string
		req     broker.Request
		status  int
		body    string
		wantTok string
		wantExp time.Time
		wantUID string // "" : no uid field
	}{
		{"tenant token, 201, token field, string expires_in", broker.Request{Tenant: "tn-1", Groups: []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"}},
			201, `{"token":"pt-1","expires_in":"3600"}`, "pt-1", fixedNow.Add(time.Hour), ""},
		{"account token, 200", broker.Request{Tenant: "tn-1", UID: "12345", Groups: []string{"pismo-v1:accounts:rw"}},
			200, `{"access_token":"pt-2","expires_in":1800}`, "pt-2", fixedNow.Add(30 * time.Minute), "12345"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: tt.status, body: tt.body}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			o := newOAuth(t, upstream.KindPismoOAuth2, srv.URL+"/passport/v2/oauth/token", nil)
			tok, err := o.Exchange(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != tt.wantTok || !tok.Expiry.Equal(tt.wantExp) {
				t.Errorf("token = %+v", tok)
			}
			if rec.got[0].URL.Path != "/passport/v2/oauth/token" {
				t.Errorf("path = %s", rec.got[0].URL.Path)
			}
			want := map[string]string{
				"grant_type": "client_credentials", "client_id": testClientID, "client_secret": testSecret,
				"scope": strings.Join(tt.req.Groups, " "),
			}
			if tt.wantUID != "" {
				want["uid"] = tt.wantUID
			}
			wantFields(t, sentForm(t, rec.got[0], rec.bodies[0]), want)
		})
	}
}

func TestOAuthRefusesWhatTheKindCannotCarry(t *testing.T) {
	uid := broker.Request{Tenant: "tn-1", UID: "acct-1", Groups: []string{"g"}}
	ext := broker.Request{Tenant: "tn-1", ExternalAccountID: "ext-1", Groups: []string{"g"}}
	custom := broker.Request{Tenant: "tn-1", Groups: []string{"g"}, CustomClaims: map[string]string{"k": "v"}}
	tests := []struct {
		kind string
		req  broker.Request
		what string
	}{
		{upstream.KindPrivateKeyJWT, uid, "uid"},
		{upstream.KindClientSecretPost, uid, "uid"},
		{upstream.KindClientSecretBasic, uid, "uid"},
		{upstream.KindPrivateKeyJWT, ext, "external_account_id"},
		{upstream.KindClientSecretPost, ext, "external_account_id"},
		{upstream.KindClientSecretBasic, ext, "external_account_id"},
		{upstream.KindJWTBearer, ext, "external_account_id"},
		{upstream.KindPismoOAuth2, ext, "external_account_id"},
		{upstream.KindPrivateKeyJWT, custom, "custom_claims"},
		{upstream.KindClientSecretPost, custom, "custom_claims"},
		{upstream.KindClientSecretBasic, custom, "custom_claims"},
		{upstream.KindJWTBearer, custom, "custom_claims"},
		{upstream.KindPismoOAuth2, custom, "custom_claims"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"/"+tt.what, func(t *testing.T) {
			rec := &recorder{status: 200, body: okBody}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			_, err := newOAuth(t, tt.kind, srv.URL, nil).Exchange(context.Background(), tt.req)
			if !errors.Is(err, broker.ErrNotSupported) {
				t.Fatalf("err = %v, want ErrNotSupported", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.what+" is not supported") || !strings.Contains(msg, tt.kind) || !strings.Contains(msg, "tn-1") {
				t.Errorf("message %q should name the tenant, the kind and %s", msg, tt.what)
			}
			if strings.Contains(msg, testSecret) {
				t.Errorf("message %q carries the secret", msg)
			}
			if len(rec.got) != 0 {
				t.Errorf("%d requests reached the upstream, want none", len(rec.got))
			}
		})
	}
}

func TestOAuthUnknownTenant(t *testing.T) {
	o := newOAuth(t, upstream.KindClientSecretPost, "https://idp.example/token", nil)
	if _, err := o.Exchange(context.Background(), broker.Request{Tenant: "other", Groups: []string{"g"}}); !errors.Is(err, broker.ErrUnknownTenant) {
		t.Errorf("err = %v, want ErrUnknownTenant", err)
	}
}

func TestOAuthResponses(t *testing.T) {
	tests := []struct {
		name       string
		kind       string
		status     int
		body       string
		wantReason broker.Reason // "": success
		wantCode   string
	}{
		{"bearer, any case", upstream.KindClientSecretPost, 200, `{"access_token":"a","token_type":"bEaReR","expires_in":60}`, "", ""},
		{"no token_type", upstream.KindClientSecretPost, 200, `{"access_token":"a","expires_in":60}`, "", ""},
		{"DPoP token is unusable", upstream.KindClientSecretPost, 200, `{"access_token":"a","token_type":"DPoP","expires_in":60}`, broker.ReasonBadResponse, ""},
		{"MAC token is unusable", upstream.KindPrivateKeyJWT, 200, `{"access_token":"a","token_type":"mac","expires_in":60}`, broker.ReasonBadResponse, ""},
		{"no expiry", upstream.KindClientSecretPost, 200, `{"access_token":"opaque","token_type":"Bearer"}`, broker.ReasonBadResponse, ""},
		{"201 is not a standard success", upstream.KindClientSecretPost, 201, okBody, broker.ReasonBadResponse, ""},
		{"201 from pismo_oauth2", upstream.KindPismoOAuth2, 201, okBody, "", ""},
		{"400 invalid_scope", upstream.KindClientSecretBasic, 400, `{"error":"invalid_scope","error_description":"scope b:w unknown"}`, broker.ReasonRefused, "invalid_scope"},
		{"401 invalid_client", upstream.KindPrivateKeyJWT, 401, `{"error":"invalid_client"}`, broker.ReasonRefused, "invalid_client"},
		{"400 unauthorized_client", upstream.KindJWTBearer, 400, `{"error":"unauthorized_client","error_description":"Client is unauthorized to retrieve access tokens using this method"}`, broker.ReasonRefused, "unauthorized_client"},
		{"429", upstream.KindClientSecretPost, 429, `{"error":"slow_down"}`, broker.ReasonUnavailable, "slow_down"},
		{"503", upstream.KindPismoOAuth2, 503, `{"error":"temporarily_unavailable"}`, broker.ReasonUnavailable, "temporarily_unavailable"},
		{"error code with a quote is dropped", upstream.KindClientSecretPost, 400, `{"error":"bad\"code"}`, broker.ReasonRefused, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(&recorder{status: tt.status, body: tt.body})
			defer srv.Close()
			tok, err := newOAuth(t, tt.kind, srv.URL, nil).Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
			if tt.wantReason == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tok.TokenType != "Bearer" || tok.AccessToken == "" {
					t.Errorf("token = %+v", tok)
				}
				return
			}
			var xe *broker.ExchangeError
			if !errors.As(err, &xe) {
				t.Fatalf("err = %v, want an ExchangeError", err)
			}
			if xe.Reason != tt.wantReason || xe.Code != tt.wantCode || xe.HTTPStatus != tt.status {
				t.Errorf("reason %q code %q status %d, want %q %q %d", xe.Reason, xe.Code, xe.HTTPStatus, tt.wantReason, tt.wantCode, tt.status)
			}
			if strings.Contains(err.Error(), "error_description") || strings.Contains(err.Error(), "unknown") {
				t.Errorf("error %q shows the upstream's description to callers", err)
			}
		})
	}
}

func TestOAuthTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	o := newOAuth(t, upstream.KindClientSecretPost, srv.URL, func(c *upstream.OAuthConfig) { c.Timeout = 50 * time.Millisecond })
	_, err := o.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonTimeout {
		t.Fatalf("err = %v, want timeout", err)
	}
}

// TestSecretsNeverLeak covers the config, the exchanger and its errors
// under every way they are likely to be printed, including an upstream
// that echoes the secret (short enough to escape the generic redaction)
// and the assertion back.
func TestSecretsNeverLeak(t *testing.T) {
	const short = "hunter2x"
	for _, kind := range []string{upstream.KindClientSecretPost, upstream.KindClientSecretBasic, upstream.KindPismoOAuth2, upstream.KindPrivateKeyJWT} {
		t.Run(kind, func(t *testing.T) {
			var echoed []string
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.ParseForm()
				mu.Lock()
				echoed = append(echoed, r.PostForm.Get("client_assertion"))
				mu.Unlock()
				w.WriteHeader(400)
				fmt.Fprintf(w, `{"error":"invalid_client","error_description":"secret %s / %s and assertion %s rejected"}`,
					short, url.QueryEscape(short), r.PostForm.Get("client_assertion"))
			}))
			defer srv.Close()
			u, _ := url.Parse(srv.URL)
			cfg := upstream.OAuthConfig{TenantID: "tn-1", Kind: kind, Endpoint: upstream.StaticEndpoint(u, ""), ClientID: testClientID}
			secrets := []string{}
			if kind == upstream.KindPrivateKeyJWT {
				cfg.Signer = rsaKey().Signer()
			} else {
				cfg.Secret = []byte(short)
				secrets = append(secrets, short, url.QueryEscape(short), base64.StdEncoding.EncodeToString([]byte(short)), fmt.Sprintf("%x", short))
			}
			o, err := upstream.NewOAuth(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = o.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}})
			var xe *broker.ExchangeError
			if !errors.As(err, &xe) || xe.Reason != broker.ReasonRefused || xe.Code != "invalid_client" {
				t.Fatalf("err = %v, want refused invalid_client", err)
			}
			if kind != upstream.KindPrivateKeyJWT && !strings.Contains(xe.Err.Error(), "[redacted]") {
				t.Errorf("detail %q: want the echoed secret redacted", xe.Err)
			}
			for _, a := range echoed {
				if a != "" {
					secrets = append(secrets, a, strings.Split(a, ".")[2])
				}
			}

			var logged bytes.Buffer
			slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "cfg", cfg, "secret", cfg.Secret, "exchanger", o, "err", err)
			js, _ := json.Marshal(cfg.Secret)
			texts := map[string]string{"error": err.Error(), "detail": xe.Err.Error(), "log": logged.String(), "json": string(js)}
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q", "%d"} {
				texts["config "+verb] = fmt.Sprintf(verb, cfg)
				texts["&config "+verb] = fmt.Sprintf(verb, &cfg)
				texts["exchanger "+verb] = fmt.Sprintf(verb, o)
				texts["secret "+verb] = fmt.Sprintf(verb, cfg.Secret)
				texts["error "+verb] = fmt.Sprintf(verb, err)
			}
			for where, text := range texts {
				for _, s := range secrets {
					if strings.Contains(text, s) {
						t.Errorf("%s carries a secret: %s", where, text)
					}
				}
			}
			if got := fmt.Sprintf("%v", o); got != "upstream.OAuth(tenant=tn-1 kind="+kind+" client_id="+testClientID+")" {
				t.Errorf("%%v of the exchanger = %q", got)
			}
		})
	}
}

func TestNewOAuthCopiesTheSecret(t *testing.T) {
	rec := &recorder{status: 200, body: okBody}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	secret := []byte(testSecret)
	o := newOAuth(t, upstream.KindClientSecretPost, srv.URL, func(c *upstream.OAuthConfig) { c.Secret = secret })
	clear(secret) // the caller wipes its copy
	if _, err := o.Exchange(context.Background(), broker.Request{Tenant: "tn-1", Groups: []string{"g"}}); err != nil {
		t.Fatal(err)
	}
	if got := sentForm(t, rec.got[0], rec.bodies[0]).Get("client_secret"); got != testSecret {
		t.Errorf("client_secret = %q, want the secret as configured", got)
	}
}

func TestNewOAuthRefusesBadConfig(t *testing.T) {
	u, _ := url.Parse("https://idp.example/token")
	static := upstream.StaticEndpoint(u, "")
	plain, _ := url.Parse("http://idp.example/token")
	signer := rsaKey().Signer()
	secret := []byte(testSecret)
	tests := []struct {
		name string
		cfg  upstream.OAuthConfig
		want string
	}{
		{"no tenant", upstream.OAuthConfig{Kind: upstream.KindClientSecretPost, Endpoint: static, ClientID: "c", Secret: secret}, "tenant id"},
		{"unknown kind", upstream.OAuthConfig{TenantID: "t", Kind: "magic", Endpoint: static, ClientID: "c", Secret: secret}, "unknown kind"},
		{"pismo_oidc", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindPismoOIDC, Endpoint: static, ClientID: "c"}, "NewPismo"},
		{"no endpoint", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindClientSecretPost, ClientID: "c", Secret: secret}, "endpoint"},
		{"http token URL", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindClientSecretPost, Endpoint: upstream.StaticEndpoint(plain, ""), ClientID: "c", Secret: secret}, "https"},
		{"no client id", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindClientSecretPost, Endpoint: static, Secret: secret}, "client id"},
		{"no secret", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindClientSecretBasic, Endpoint: static, ClientID: "c"}, "needs a client secret"},
		{"secret for a key kind", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindPrivateKeyJWT, Endpoint: static, ClientID: "c", Signer: signer, Secret: secret}, "not a client secret"},
		{"no signer", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindJWTBearer, Endpoint: static, ClientID: "c"}, "needs a signing key"},
		{"signer for a secret kind", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindPismoOAuth2, Endpoint: static, ClientID: "c", Secret: secret, Signer: signer}, "signs nothing"},
		{"subject for private_key_jwt", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindPrivateKeyJWT, Endpoint: static, ClientID: "c", Signer: signer, Subject: "s"}, "subject"},
		{"private_key_jwt lifetime over 5m", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindPrivateKeyJWT, Endpoint: static, ClientID: "c", Signer: signer, AssertionLifetime: 5*time.Minute + time.Second}, "1s..5m"},
		{"jwt_bearer lifetime over 1h", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindJWTBearer, Endpoint: static, ClientID: "c", Signer: signer, AssertionLifetime: 61 * time.Minute}, "1s..1h"},
		{"negative lifetime", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindJWTBearer, Endpoint: static, ClientID: "c", Signer: signer, AssertionLifetime: -time.Minute}, "lifetime"},
		{"unknown audience", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindPrivateKeyJWT, Endpoint: static, ClientID: "c", Signer: signer, AssertionAudience: "everyone"}, "audience"},
		{"issuer audience without an issuer", upstream.OAuthConfig{TenantID: "t", Kind: upstream.KindPrivateKeyJWT, Endpoint: static, ClientID: "c", Signer: signer, AssertionAudience: upstream.AudienceIssuer}, "issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := upstream.NewOAuth(tt.cfg)
			if err == nil {
				t.Fatal("NewOAuth succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("err = %v carries the secret", err)
			}
		})
	}
	// What every kind takes, and what the kinds that sign nothing ignore.
	for _, kind := range []string{upstream.KindPrivateKeyJWT, upstream.KindClientSecretPost, upstream.KindClientSecretBasic, upstream.KindJWTBearer, upstream.KindPismoOAuth2} {
		cfg := upstream.OAuthConfig{TenantID: "t", Kind: kind, Endpoint: static, ClientID: "c", AssertionLifetime: 5 * time.Minute}
		if slices.Contains([]string{upstream.KindPrivateKeyJWT, upstream.KindJWTBearer}, kind) {
			cfg.Signer = signer
		} else {
			cfg.Secret = secret
		}
		if _, err := upstream.NewOAuth(cfg); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
}
