package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/testkit/oidcprovider"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// TestInteropOIDCProvider runs the broker against panva's oidc-provider, an
// OpenID-certified implementation, on loopback: a private_key_jwt client
// that verifies the broker's assertions with the keys at the broker's own
// JWKS endpoint, found by discovery; a client_secret_post client; and a
// client registered with another key, which the provider refuses. It also
// replays one of the broker's assertions, which the provider must refuse.
func TestInteropOIDCProvider(t *testing.T) {
	dir := t.TempDir()
	key, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := keystore.GenerateEC()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "broker.pem")
	if err := keystore.WriteFileExclusive(keyFile, key.PrivatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("interop-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherJWKS, err := keystore.NewSet(other).JWKS()
	if err != nil {
		t.Fatal(err)
	}

	// The broker's listeners come first: the provider is told where the
	// broker publishes its keys, and fetches them on first use.
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	jwksURI := "http://" + httpLis.Addr().String() + "/tenants/idp-jwt/jwks.json"
	p := oidcprovider.Start(t,
		oidcprovider.Client{ID: "broker-jwt", AuthMethod: "private_key_jwt", JWKSURI: jwksURI, Scopes: []string{"api:read", "api:write"}},
		oidcprovider.Client{ID: "broker-secret", AuthMethod: "client_secret_post", Secret: "interop-s3cret", Scopes: []string{"reports:read"}},
		oidcprovider.Client{ID: "broker-wrong", AuthMethod: "private_key_jwt", JWKS: otherJWKS, Scopes: []string{"api:read"}},
	)

	const callerKey = "tbk_interop-caller"
	cfgPath := filepath.Join(dir, "broker.yaml")
	cfg := fmt.Sprintf(`listen: {grpc: %q, http: %q}
tenants:
  - {id: idp-jwt, upstream: {kind: private_key_jwt, issuer: %[3]q, client_id: broker-jwt}, key_file: %[4]s, assertion_lifetime: 1m}
  - {id: idp-secret, upstream: {kind: client_secret_post, issuer: %[3]q, client_id: broker-secret, client_secret_file: %[5]s}}
  - {id: idp-wrong, upstream: {kind: private_key_jwt, token_url: %[6]q, client_id: broker-wrong}, key_file: %[4]s}
callers:
  - name: svc
    api_key_sha256: %[7]s
    allow:
      - {tenant: idp-jwt, groups: ["api:*"]}
      - {tenant: idp-secret, groups: ["reports:read"]}
      - {tenant: idp-wrong, groups: ["api:read"]}
`, grpcLis.Addr(), httpLis.Addr(), p.Issuer, keyFile, secretFile, p.TokenEndpoint, hashKey(callerKey))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	config, keys, err := loadAll(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	a, err := newApp(cfgPath, config, keys, logging{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, grpcLis, httpLis, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if t.Failed() {
			t.Logf("broker log:\n%s\nprovider events:\n%s", logs, strings.Join(p.Events(), "\n"))
		}
	})
	conn, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := tokenbrokerv1.NewTokenBrokerServiceClient(conn)
	get := func(tenant string, groups ...string) (*tokenbrokerv1.GetAccessTokenResponse, error) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+callerKey)
		return client.GetAccessToken(ctx, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenant, Groups: groups})
	}
	provKeys := providerKeys(t, p.JWKSURI)

	for _, tc := range []struct {
		tenant, clientID string
		groups           []string
	}{
		{"idp-jwt", "broker-jwt", []string{"api:read", "api:write"}},
		{"idp-secret", "broker-secret", []string{"reports:read"}},
	} {
		resp, err := get(tc.tenant, tc.groups...)
		if err != nil {
			t.Fatalf("%s: %v", tc.tenant, err)
		}
		// The token is the provider's: signed by it, for this client and scope.
		tok, err := jwt.ParseSigned(resp.GetAccessToken(), []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256})
		if err != nil {
			t.Fatalf("%s: the access token is not a JWT: %v", tc.tenant, err)
		}
		var claims struct {
			jwt.Claims
			ClientID string `json:"client_id"`
			Scope    string `json:"scope"`
		}
		if err := tok.Claims(provKeys, &claims); err != nil {
			t.Fatalf("%s: the provider's keys do not verify the token: %v", tc.tenant, err)
		}
		if claims.Issuer != p.Issuer || claims.ClientID != tc.clientID || claims.Scope != strings.Join(tc.groups, " ") {
			t.Errorf("%s: token iss %q client_id %q scope %q; want %q %q %q", tc.tenant, claims.Issuer, claims.ClientID, claims.Scope,
				p.Issuer, tc.clientID, strings.Join(tc.groups, " "))
		}
		if again, err := get(tc.tenant, tc.groups...); err != nil || again.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT {
			t.Errorf("%s again: %v %v, want a cache hit", tc.tenant, again.GetCacheStatus(), err)
		}
	}

	// A client registered with another key: the provider answers the
	// generic invalid_client, which reaches the caller.
	_, err = get("idp-wrong", "api:read")
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "invalid_client") {
		t.Errorf("idp-wrong: %v %q, want FAILED_PRECONDITION with invalid_client", st.Code(), st.Message())
	}

	// Replay: the broker's exchanger, with a transport that keeps what it
	// sends; its assertion, sent a second time, is refused.
	rec := &recorder{next: http.DefaultTransport}
	x, err := upstream.NewOAuth(upstream.OAuthConfig{TenantID: "replay", Kind: upstream.KindPrivateKeyJWT,
		Endpoint: upstream.StaticEndpoint(mustParseURL(t, p.TokenEndpoint), p.Issuer), ClientID: "broker-jwt",
		Signer: key.Signer(), Client: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Exchange(context.Background(), broker.Request{Tenant: "replay", Groups: []string{"api:read"}}); err != nil {
		t.Fatalf("first use of the assertion: %v", err)
	}
	resp, err := http.Post(p.TokenEndpoint, "application/x-www-form-urlencoded", bytes.NewReader(rec.last()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "invalid_client") {
		t.Errorf("replayed assertion: %d %s, want 401 invalid_client", resp.StatusCode, body)
	}
	if !strings.Contains(strings.Join(p.Events(), "\n"), "must only be used once") {
		t.Errorf("the provider's events do not name the replay:\n%s", strings.Join(p.Events(), "\n"))
	}
	if strings.Contains(logs.String(), "interop-s3cret") {
		t.Errorf("the broker's log holds the client secret")
	}
}

// recorder is an http.RoundTripper that keeps the last request body it sent.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	body []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.body = body
	r.mu.Unlock()
	req.Body = io.NopCloser(bytes.NewReader(body))
	return r.next.RoundTrip(req)
}

func (r *recorder) last() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body
}

// providerKeys fetches the provider's signing keys.
func providerKeys(t *testing.T, jwksURI string) *jose.JSONWebKeySet {
	t.Helper()
	resp, err := http.Get(jwksURI)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("provider JWKS: %v", err)
	}
	return &set
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
