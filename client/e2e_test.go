package client_test

// The client kit against the real broker stack: the Pismo emulator behind
// httptest, the Pismo exchanger, the broker core, the callers' policy and
// the gRPC server on TCP loopback. Every test asserts what the client hands
// out and how many exchanges the emulator made.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	pismo "github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
	"github.com/tokenbroker/tokenbroker/server"
)

const (
	e2eTenant = "tn-e2e"
	// e2eOtherTenant is configured upstream, but no caller may have it.
	e2eOtherTenant = "tn-e2e-other"
	e2eCallerKey   = "tbk_client-e2e-caller-key"
	e2eUnknownKey  = "tbk_client-e2e-key-nobody-holds"
	e2eUID         = "acct-42"
	e2eGroup       = "pismo-v1:accounts:r"
)

// e2eTenantKey is the tenants' signing key, made once per test binary.
var e2eTenantKey = sync.OnceValues(func() (*keystore.Key, error) { return keystore.Generate(2048) })

// e2eStack is one real broker on loopback, and a connection to it.
type e2eStack struct {
	emu  *emulator.Emulator
	conn *grpc.ClientConn
	// unary and streams count the calls made on conn: GetAccessToken and
	// WatchAccessToken.
	unary, streams atomic.Int64
}

// e2eOptions tune a stack.
type e2eOptions struct {
	lifetime time.Duration // the emulator's token lifetime; zero: an hour
	skew     time.Duration // the broker's skew margin; zero: its default
}

// newE2EStack starts the emulator, the exchangers, the broker and the
// server, dials the server, and stops all of it when the test ends.
func newE2EStack(t *testing.T, opts e2eOptions) *e2eStack {
	t.Helper()
	key, err := e2eTenantKey()
	if err != nil {
		t.Fatal(err)
	}
	s := &e2eStack{}
	if s.emu, err = emulator.New(emulator.Config{TokenLifetime: opts.lifetime}); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(s.emu)
	t.Cleanup(up.Close)
	tokenURL, err := url.Parse(up.URL + emulator.TokenPath)
	if err != nil {
		t.Fatal(err)
	}
	httpClient := pismo.NewHTTPClient()
	t.Cleanup(httpClient.CloseIdleConnections)

	tenants := pismo.Tenants{}
	for _, id := range []string{e2eTenant, e2eOtherTenant} {
		if err := s.emu.Register(emulator.Tenant{ID: id, Issuer: "iss-" + id, Subject: "sub-" + id, Audience: "aud-" + id,
			Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
			t.Fatal(err)
		}
		x, err := pismo.NewPismo(pismo.PismoConfig{TenantID: id, TokenURL: tokenURL, Issuer: "iss-" + id, Subject: "sub-" + id,
			Audience: "aud-" + id, Signer: key.Signer(), AssertionLifetime: 5 * time.Minute, UIDMode: pismo.UIDOmit,
			Client: httpClient, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		tenants[id] = x
	}
	b := broker.New(broker.Config{Exchanger: tenants, Skew: opts.skew})
	t.Cleanup(b.Close)

	pol, err := policy.New([]policy.Caller{{Name: "svc", APIKeySHA256: sha256.Sum256([]byte(e2eCallerKey)), HasAPIKey: true,
		Allow: []policy.Grant{{Tenant: e2eTenant, Groups: []string{"pismo-v1:*"}, AccountTokens: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Tokens: b, Callers: pol, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis, nil) }()

	s.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			s.unary.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s.streams.Add(1)
			return streamer(ctx, desc, cc, method, opts...)
		}))
	if err != nil {
		stop()
		<-served
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.conn.Close()
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

// client returns a Client of the stack holding key.
func (s *e2eStack) client(key string) *client.Client {
	return client.New(client.Config{Conn: s.conn, Key: key})
}

// source starts a TokenSource of c for req, closed when the test ends
// (before the stack stops).
func e2eSource(t *testing.T, c *client.Client, req client.Request) *client.TokenSource {
	t.Helper()
	ts := c.TokenSource(req)
	t.Cleanup(func() { ts.Close() })
	return ts
}

// expectExchanges checks how many tokens the emulator issued.
func (s *e2eStack) expectExchanges(t *testing.T, want int64) {
	t.Helper()
	if got := s.emu.Exchanges(); got != want {
		t.Errorf("the emulator made %d exchanges, want %d", got, want)
	}
}

// e2eClaims are the claims of an emulator token the tests look at.
type e2eClaims struct {
	Sub      string   `json:"sub"`
	TenantID string   `json:"tenant_id"`
	Groups   []string `json:"groups"`
	Exp      int64    `json:"exp"`
}

// verify checks that tok is a token the emulator signed for the tenant,
// uid and group the tests ask for, valid now, with the expiry the broker
// reported (to the second, as expires_in is), and returns its claims.
func (s *e2eStack) verify(t *testing.T, tok *oauth2.Token, uid string) e2eClaims {
	t.Helper()
	if tok == nil || tok.AccessToken == "" {
		t.Fatalf("no access token: %+v", tok)
	}
	if tok.Type() != "Bearer" {
		t.Errorf("token type %q, want Bearer", tok.Type())
	}
	jws, err := jose.ParseSignedCompact(tok.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("the access token is not a JWS: %v", err)
	}
	payload, err := jws.Verify(s.emu.PublicKeys())
	if err != nil {
		t.Fatalf("the access token does not verify with the emulator's key: %v", err)
	}
	var c e2eClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	wantSub := e2eTenant
	if uid != "" {
		wantSub = uid
	}
	if c.Sub != wantSub || c.TenantID != e2eTenant || !slices.Equal(c.Groups, []string{e2eGroup}) {
		t.Errorf("token claims sub %q tenant_id %q groups %q, want %q %q %q", c.Sub, c.TenantID, c.Groups, wantSub, e2eTenant, []string{e2eGroup})
	}
	now := time.Now()
	if !tok.Expiry.After(now) || c.Exp <= now.Unix()-1 {
		t.Errorf("token expiry %v (exp claim %d) is not in the future (now %v)", tok.Expiry, c.Exp, now)
	}
	// The broker's expiry is its own receipt time plus expires_in; the
	// claim is the emulator's issue time plus the same lifetime, in
	// seconds. They name the same instant, give or take the exchange.
	if d := tok.Expiry.Sub(time.Unix(c.Exp, 0)); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("token expiry %v and its exp claim %v disagree by %v", tok.Expiry, time.Unix(c.Exp, 0), d)
	}
	return c
}

// e2eRequest is the account token the tests ask for.
func e2eRequest() client.Request {
	return client.Request{Tenant: e2eTenant, UID: e2eUID, Groups: []string{e2eGroup}}
}

func TestClientAgainstServer_Token(t *testing.T) {
	s := newE2EStack(t, e2eOptions{})
	c := s.client(e2eCallerKey)
	ctx := t.Context()

	first, err := c.Token(ctx, e2eRequest())
	if err != nil {
		t.Fatal(err)
	}
	s.verify(t, first, e2eUID)
	if left := time.Until(first.Expiry); left <= client.DefaultMinTTL {
		t.Errorf("token has %v left, want more than the default min_ttl %v", left, client.DefaultMinTTL)
	}
	s.expectExchanges(t, 1)

	second, err := c.Token(ctx, e2eRequest())
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken != first.AccessToken || !second.Expiry.Equal(first.Expiry) {
		t.Error("a second identical call returned another token, want the broker's cached one")
	}
	s.expectExchanges(t, 1)
	if n := s.emu.ExchangesFor(e2eTenant); n != 1 {
		t.Errorf("%d exchanges for %s, want 1", n, e2eTenant)
	}

	// A tenant-level token is another cache key: another exchange, and a
	// token whose subject is the tenant.
	tenantTok, err := c.Token(ctx, client.Request{Tenant: e2eTenant, Groups: []string{e2eGroup}})
	if err != nil {
		t.Fatal(err)
	}
	s.verify(t, tenantTok, "")
	if tenantTok.AccessToken == first.AccessToken {
		t.Error("the tenant-level token is the account token")
	}
	s.expectExchanges(t, 2)
	if n := s.unary.Load(); n != 3 {
		t.Errorf("%d GetAccessToken calls, want 3", n)
	}
}

func TestClientAgainstServer_TokenSourcePicksUpRenewal(t *testing.T) {
	// Tokens live 4 s; the source wants 1 s left. The broker refreshes a
	// token when about a fifth of its usable life is left beyond that, and
	// the server's watch pushes the renewal about a second before the
	// source would stop handing out the old token.
	s := newE2EStack(t, e2eOptions{lifetime: 4 * time.Second, skew: 200 * time.Millisecond})
	req := e2eRequest()
	req.MinTTL = time.Second
	ts := e2eSource(t, s.client(e2eCallerKey), req)

	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	s.verify(t, first, e2eUID)
	s.expectExchanges(t, 1)

	seen := map[string]bool{first.AccessToken: true}
	var renewed *oauth2.Token
	testkit.WaitFor(t, func() bool {
		tok, err := ts.Token()
		if err != nil {
			t.Errorf("Token while waiting for the renewal: %v", err)
			return true
		}
		if !tok.Expiry.After(time.Now()) {
			t.Errorf("Token handed out a token that expired at %v", tok.Expiry)
			return true
		}
		seen[tok.AccessToken] = true
		if tok.AccessToken != first.AccessToken {
			renewed = tok
			return true
		}
		return false
	})
	if renewed == nil {
		t.FailNow()
	}
	s.verify(t, renewed, e2eUID)
	if !renewed.Expiry.After(first.Expiry) {
		t.Errorf("the renewal expires at %v, not after the first token (%v)", renewed.Expiry, first.Expiry)
	}
	if n, tokens := s.emu.Exchanges(), int64(len(seen)); n < tokens || n > tokens+1 {
		t.Errorf("the emulator made %d exchanges for %d tokens, want %d or %d", n, tokens, tokens, tokens+1)
	}
	// The renewal came down the watch: the source never called
	// GetAccessToken, and never re-opened the watch.
	if n := s.unary.Load(); n != 0 {
		t.Errorf("%d GetAccessToken calls, want 0: the renewal should have come by the watch", n)
	}
	if n := s.streams.Load(); n != 1 {
		t.Errorf("%d watches opened, want 1", n)
	}
	again, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if again.AccessToken != renewed.AccessToken {
		t.Error("after the renewal, Token went back to another token")
	}
}

func TestClientAgainstServer_RejectComparesAndEvicts(t *testing.T) {
	s := newE2EStack(t, e2eOptions{})
	c := s.client(e2eCallerKey)
	ctx := t.Context()
	a := e2eSource(t, c, e2eRequest())
	b := e2eSource(t, c, e2eRequest())

	first, err := a.Token()
	if err != nil {
		t.Fatal(err)
	}
	s.verify(t, first, e2eUID)
	fromB, err := b.Token()
	if err != nil {
		t.Fatal(err)
	}
	if fromB.AccessToken != first.AccessToken {
		t.Error("two sources of one request got different tokens from the broker's cache")
	}
	s.expectExchanges(t, 1)

	// a's downstream refused the token: the broker drops exactly it and
	// exchanges once for a replacement, which a then serves from memory.
	replacement, err := a.Reject(ctx, first.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	s.verify(t, replacement, e2eUID)
	if replacement.AccessToken == first.AccessToken {
		t.Fatal("Reject returned the rejected token")
	}
	s.expectExchanges(t, 2)
	switch tok, err := a.Token(); {
	case err != nil:
		t.Errorf("Token after Reject: %v", err)
	case tok.AccessToken != replacement.AccessToken:
		t.Errorf("after Reject, Token hands out another token than the replacement (the rejected one: %v)", tok.AccessToken == first.AccessToken)
	}

	// b's downstream refuses the same, already replaced token: the broker
	// holds another one, so it hands that out without evicting or
	// exchanging.
	fromB, err = b.Reject(ctx, first.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if fromB.AccessToken != replacement.AccessToken {
		t.Error("a second rejection of the replaced token did not get the replacement")
	}
	s.expectExchanges(t, 2)

	// a holds a usable token other than the one rejected: no call at all.
	switch tok, err := a.Reject(ctx, first.AccessToken); {
	case err != nil:
		t.Errorf("rejecting the replaced token again: %v", err)
	case tok.AccessToken != replacement.AccessToken:
		t.Error("rejecting the replaced token again did not give the replacement")
	}
	if n := s.unary.Load(); n != 2 {
		t.Errorf("%d GetAccessToken calls, want 2 (one Reject per source)", n)
	}
	s.expectExchanges(t, 2)
}

func TestClientAgainstServer_TransportReplacesRefusedToken(t *testing.T) {
	s := newE2EStack(t, e2eOptions{})
	ts := e2eSource(t, s.client(e2eCallerKey), e2eRequest())
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	s.expectExchanges(t, 1)

	// The upstream API refuses the first token and takes any other.
	type seenRequest struct{ auth, body string }
	var mu sync.Mutex
	var seen []seenRequest
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, seenRequest{auth, string(body)})
		mu.Unlock()
		if auth == "Bearer "+first.AccessToken || !strings.HasPrefix(auth, "Bearer ") {
			http.Error(w, "token refused", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(api.Close)
	hc := &http.Client{Transport: &client.Transport{Source: ts, Base: api.Client().Transport}}

	post := func() (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, api.URL, bytes.NewReader([]byte("payload")))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := post(); code != http.StatusOK || body != "ok" {
		t.Fatalf("POST through the Transport: %d %q, want 200 \"ok\"", code, body)
	}
	s.expectExchanges(t, 2)
	second, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	s.verify(t, second, e2eUID)
	if second.AccessToken == first.AccessToken {
		t.Fatal("the source still hands out the refused token")
	}
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	want := []seenRequest{{"Bearer " + first.AccessToken, "payload"}, {"Bearer " + second.AccessToken, "payload"}}
	if !slices.Equal(got, want) {
		t.Errorf("the API saw %d requests %v, want the refused token then the replacement, each with the body", len(got), redact(got, first, second))
	}

	// The next request carries the replacement at once.
	if code, _ := post(); code != http.StatusOK {
		t.Errorf("second POST: %d, want 200", code)
	}
	s.expectExchanges(t, 2)
}

// redact names the tokens in what the API saw, so that a failure prints no
// token.
func redact[T any](v T, first, second *oauth2.Token) string {
	b, _ := json.Marshal(v)
	s := strings.ReplaceAll(string(b), first.AccessToken, "<first>")
	return strings.ReplaceAll(s, second.AccessToken, "<second>")
}

func TestClientAgainstServer_Errors(t *testing.T) {
	s := newE2EStack(t, e2eOptions{})
	for _, tc := range []struct {
		name string
		key  string
		req  client.Request
		code codes.Code
	}{
		{"unknown key", e2eUnknownKey, e2eRequest(), codes.Unauthenticated},
		{"tenant not granted", e2eCallerKey, client.Request{Tenant: e2eOtherTenant, UID: e2eUID, Groups: []string{e2eGroup}}, codes.PermissionDenied},
		{"group not granted", e2eCallerKey, client.Request{Tenant: e2eTenant, Groups: []string{"other-api:accounts:r"}}, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.client(tc.key)
			check := func(what string, tok *oauth2.Token, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s: got a token, want %v", what, tc.code)
				}
				if tok != nil {
					t.Errorf("%s: a token came with the error", what)
				}
				if got := status.Code(err); got != tc.code {
					t.Errorf("%s: status code %v (%v), want %v", what, got, err, tc.code)
				}
				for _, k := range []string{e2eCallerKey, e2eUnknownKey} {
					if strings.Contains(err.Error(), k) || strings.Contains(err.Error(), k[len("tbk_"):]) {
						t.Errorf("%s: the error text contains a bearer key", what)
					}
				}
			}
			tok, err := c.Token(t.Context(), tc.req)
			check("Client.Token", tok, err)

			ts := e2eSource(t, c, tc.req)
			tok, err = ts.Token()
			check("TokenSource.Token", tok, err)
			// The watch's refusal is permanent: asking again gives it
			// again, without another call to the broker.
			before := s.unary.Load()
			tok, err = ts.Token()
			check("TokenSource.Token again", tok, err)
			if n := s.unary.Load() - before; n != 0 {
				t.Errorf("%d GetAccessToken calls after a permanent refusal, want 0", n)
			}
		})
	}
	s.expectExchanges(t, 0)
}

func TestClientAgainstServer_PerRPCCredentials(t *testing.T) {
	s := newE2EStack(t, e2eOptions{})
	ts := e2eSource(t, s.client(e2eCallerKey), e2eRequest())

	api, conn := dialAPI(t, ts)
	for range 2 {
		if err := checkHealth(t, conn); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	s.verify(t, tok, e2eUID)
	want := "Bearer " + tok.AccessToken
	if got := api.auths(); len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("the API saw %d calls, want 2 carrying \"Bearer <the broker's token>\" (match: %v)", len(got), slices.Equal(got, []string{want, want}))
	}
	s.expectExchanges(t, 1)

	// The same metadata, asked for directly.
	md, err := client.PerRPCCredentials{Source: ts, InsecureAllowPlaintext: true}.GetRequestMetadata(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if md["authorization"] != want {
		t.Error("GetRequestMetadata's authorization is not \"Bearer <the broker's token>\"")
	}
	if n := s.unary.Load(); n != 0 {
		t.Errorf("%d GetAccessToken calls, want 0: the token came by the watch", n)
	}
}
