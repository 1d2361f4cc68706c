package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
)

// idp is an httptest OpenID provider: it serves a discovery document under
// its issuer path, built from a template in which ISSUER and BASE are
// replaced, and a token endpoint at /token.
type idp struct {
	srv        *httptest.Server
	issuerPath string

	mu       sync.Mutex
	doc      string // the template
	status   int    // of the discovery answer
	fetches  int
	tokenErr int // when non-zero, the token endpoint answers this status
	block    chan struct{}
	arrived  chan struct{} // when non-nil, closed at the first discovery request
}

const stdDoc = `{"issuer":"ISSUER","token_endpoint":"BASE/token",
	"token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post","private_key_jwt"]}`

func newIDP(t *testing.T, issuerPath, doc string) *idp {
	t.Helper()
	p := &idp{issuerPath: issuerPath, doc: doc, status: 200}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

// issuer is the issuer as the provider names it.
func (p *idp) issuer() string { return p.srv.URL + p.issuerPath }

func (p *idp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	switch {
	case r.URL.Path == strings.TrimSuffix(p.issuerPath, "/")+"/.well-known/openid-configuration" && r.Method == http.MethodGet:
		p.fetches++
		doc, status, block, arrived := p.doc, p.status, p.block, p.arrived
		p.arrived = nil
		p.mu.Unlock()
		if arrived != nil {
			close(arrived)
		}
		if block != nil {
			<-block
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		doc = strings.ReplaceAll(doc, "ISSUER", p.issuer())
		io.WriteString(w, strings.ReplaceAll(doc, "BASE", p.srv.URL))
	case r.URL.Path == "/token" && r.Method == http.MethodPost:
		status := p.tokenErr
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if status != 0 {
			w.WriteHeader(status)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		io.WriteString(w, `{"access_token":"at","token_type":"Bearer","expires_in":60}`)
	default:
		p.mu.Unlock()
		http.NotFound(w, r)
	}
}

func (p *idp) set(f func(p *idp)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *idp) fetchCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fetches
}

// fakeClock is a settable clock.
type fakeClock struct{ now atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.now.Store(fixedNow.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time                  { return time.Unix(0, c.now.Load()) }
func (c *fakeClock) Advance(d time.Duration)         { c.now.Add(int64(d)) }
func (c *fakeClock) cfg(d *upstream.DiscoveryConfig) { d.Clock = c.Now }

func newDiscovery(t *testing.T, issuer, method string, mod func(*upstream.DiscoveryConfig)) *upstream.Discovery {
	t.Helper()
	u, err := url.Parse(issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := upstream.DiscoveryConfig{Issuer: u, AuthMethod: method}
	if mod != nil {
		mod(&cfg)
	}
	d, err := upstream.NewDiscovery(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDiscoveryHappyPath(t *testing.T) {
	for _, path := range []string{"", "/", "/realms/tn-1", "/realms/tn-1/"} {
		t.Run("issuer path "+path, func(t *testing.T) {
			p := newIDP(t, path, stdDoc)
			d := newDiscovery(t, p.issuer(), upstream.KindPrivateKeyJWT, nil)
			u, issuer, err := d.Resolve(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != p.srv.URL+"/token" || issuer != p.issuer() {
				t.Errorf("Resolve = %s, %s; want %s/token, %s", u, issuer, p.srv.URL, p.issuer())
			}
			if p.fetchCount() != 1 {
				t.Errorf("fetches = %d, want 1", p.fetchCount())
			}
		})
	}
}

func TestDiscoveryRefusesBadDocuments(t *testing.T) {
	tests := []struct {
		name, method, doc string
		wantReason        broker.Reason
		wantDetail        string
	}{
		{"issuer mismatch", upstream.KindPrivateKeyJWT,
			`{"issuer":"https://evil.example","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":["private_key_jwt"]}`,
			broker.ReasonBadResponse, `names issuer "https://evil.example"`},
		{"issuer differs by a trailing slash", upstream.KindPrivateKeyJWT,
			`{"issuer":"ISSUER/","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":["private_key_jwt"]}`,
			broker.ReasonBadResponse, "trailing slash"},
		{"issuer key in the wrong case", upstream.KindPrivateKeyJWT,
			`{"Issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":["private_key_jwt"]}`,
			broker.ReasonBadResponse, "names no issuer"},
		{"no issuer", upstream.KindPrivateKeyJWT, `{"token_endpoint":"BASE/token"}`, broker.ReasonBadResponse, "names no issuer"},
		{"no token_endpoint", upstream.KindPrivateKeyJWT,
			`{"issuer":"ISSUER","token_endpoint_auth_methods_supported":["private_key_jwt"]}`, broker.ReasonBadResponse, "no token_endpoint"},
		{"http token_endpoint off loopback", upstream.KindPrivateKeyJWT,
			`{"issuer":"ISSUER","token_endpoint":"http://idp.example/token","token_endpoint_auth_methods_supported":["private_key_jwt"]}`,
			broker.ReasonBadResponse, "http is allowed only on loopback"},
		{"relative token_endpoint", upstream.KindPrivateKeyJWT,
			`{"issuer":"ISSUER","token_endpoint":"/token","token_endpoint_auth_methods_supported":["private_key_jwt"]}`,
			broker.ReasonBadResponse, "absolute"},
		{"token_endpoint with a password", upstream.KindPrivateKeyJWT,
			`{"issuer":"ISSUER","token_endpoint":"https://u:p@idp.example/token","token_endpoint_auth_methods_supported":["private_key_jwt"]}`,
			broker.ReasonBadResponse, "user name or password"},
		{"method not supported", upstream.KindPrivateKeyJWT,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":["client_secret_basic","tls_client_auth"]}`,
			broker.ReasonBadResponse, "does not accept private_key_jwt at its token endpoint: token_endpoint_auth_methods_supported lists client_secret_basic, tls_client_auth"},
		{"absent methods list means client_secret_basic only", upstream.KindClientSecretPost,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token"}`, broker.ReasonBadResponse, "absent, which means client_secret_basic only"},
		{"pismo_oauth2 needs client_secret_post", upstream.KindPismoOAuth2,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":["client_secret_basic"]}`,
			broker.ReasonBadResponse, "does not accept client_secret_post"},
		{"empty methods list", upstream.KindClientSecretBasic,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":[]}`, broker.ReasonBadResponse, "is empty"},
		{"methods not a list", upstream.KindClientSecretBasic,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":"client_secret_basic"}`,
			broker.ReasonBadResponse, "not a list of strings"},
		{"issuer not a string", upstream.KindClientSecretBasic, `{"issuer":42,"token_endpoint":"BASE/token"}`, broker.ReasonBadResponse, "issuer is not a string"},
		{"not JSON", upstream.KindClientSecretBasic, `<html>`, broker.ReasonBadResponse, "not a JSON object"},
		{"a JSON array", upstream.KindClientSecretBasic, `[]`, broker.ReasonBadResponse, "not a JSON object"},
		{"null", upstream.KindClientSecretBasic, `null`, broker.ReasonBadResponse, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newIDP(t, "/idp", tt.doc)
			d := newDiscovery(t, p.issuer(), tt.method, nil)
			u, _, err := d.Resolve(context.Background())
			var xe *broker.ExchangeError
			if !errors.As(err, &xe) {
				t.Fatalf("Resolve = %v, %v; want an ExchangeError", u, err)
			}
			if xe.Reason != tt.wantReason || xe.HTTPStatus != 200 {
				t.Errorf("reason %s status %d, want %s 200", xe.Reason, xe.HTTPStatus, tt.wantReason)
			}
			if !strings.Contains(xe.Err.Error(), tt.wantDetail) {
				t.Errorf("detail %q, want it to say %q", xe.Err, tt.wantDetail)
			}
			if strings.Contains(xe.Error(), "{") {
				t.Errorf("error %q shows the document to callers", xe)
			}
		})
	}
}

func TestDiscoveryMethods(t *testing.T) {
	tests := []struct {
		name, method, doc string
	}{
		{"absent list allows client_secret_basic", upstream.KindClientSecretBasic, `{"issuer":"ISSUER","token_endpoint":"BASE/token"}`},
		{"jwt_bearer checks no method", upstream.KindJWTBearer,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":["tls_client_auth"]}`},
		{"jwt_bearer with an absent list", upstream.KindJWTBearer, `{"issuer":"ISSUER","token_endpoint":"BASE/token"}`},
		{"pismo_oauth2 is client_secret_post", upstream.KindPismoOAuth2,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":["client_secret_post"]}`},
		{"null list is absent", upstream.KindClientSecretBasic,
			`{"issuer":"ISSUER","token_endpoint":"BASE/token","token_endpoint_auth_methods_supported":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newIDP(t, "", tt.doc)
			if _, _, err := newDiscovery(t, p.issuer(), tt.method, nil).Resolve(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDiscoveryHTTPFailures(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		wantReason broker.Reason
	}{
		{"500", 500, broker.ReasonUnavailable},
		{"429", 429, broker.ReasonUnavailable},
		{"404", 404, broker.ReasonBadResponse},
		{"redirect not followed", 302, broker.ReasonBadResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newIDP(t, "", stdDoc)
			p.set(func(p *idp) { p.status = tt.status })
			_, _, err := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, nil).Resolve(context.Background())
			var xe *broker.ExchangeError
			if !errors.As(err, &xe) || xe.Reason != tt.wantReason || xe.HTTPStatus != tt.status {
				t.Fatalf("err = %v, want %s with HTTP %d", err, tt.wantReason, tt.status)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		addr := srv.URL
		srv.Close()
		_, _, err := newDiscovery(t, addr, upstream.KindClientSecretBasic, nil).Resolve(context.Background())
		var xe *broker.ExchangeError
		if !errors.As(err, &xe) || xe.Reason != broker.ReasonUnavailable {
			t.Fatalf("err = %v, want unavailable", err)
		}
	})
}

func TestDiscoveryBodyCap(t *testing.T) {
	pad := strings.Repeat(" ", upstream.MaxBodyBytes)
	p := newIDP(t, "", `{"issuer":"ISSUER","token_endpoint":"BASE/token",`+pad+`"x":1}`)
	_, _, err := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, nil).Resolve(context.Background())
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonBadResponse || !strings.Contains(xe.Err.Error(), "exceeds") {
		t.Fatalf("err = %v, want bad_response for an oversized document", err)
	}
}

func TestDiscoveryCaches(t *testing.T) {
	p := newIDP(t, "", stdDoc)
	clock := newFakeClock()
	d := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, clock.cfg)
	for range 10 {
		if _, _, err := d.Resolve(context.Background()); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
	}
	if n := p.fetchCount(); n != 1 {
		t.Errorf("fetches = %d after 10 resolves within the hour, want 1", n)
	}
}

// doneProbe is a context that tells when a caller first waits on Done:
// Resolve does so only after it has joined the fetch in flight.
type doneProbe struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func (c *doneProbe) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

func TestDiscoveryConcurrentResolvesShareOneFetch(t *testing.T) {
	p := newIDP(t, "", stdDoc)
	block, arrived := make(chan struct{}), make(chan struct{})
	p.set(func(p *idp) { p.block, p.arrived = block, arrived })
	d := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, nil)

	const n = 8
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	probes := make([]*doneProbe, n)
	for i := range n {
		probes[i] = &doneProbe{Context: context.Background(), waiting: make(chan struct{})}
		wg.Go(func() {
			u, _, err := d.Resolve(probes[i])
			errs[i] = err
			if u != nil {
				results[i] = u.String()
			}
		})
	}
	<-arrived // the fetch is in flight, held by the provider
	for _, pr := range probes {
		<-pr.waiting // every caller waits on it
	}
	close(block)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i] != p.srv.URL+"/token" {
			t.Errorf("caller %d: %q, %v", i, results[i], errs[i])
		}
	}
	if got := p.fetchCount(); got != 1 {
		t.Errorf("fetches = %d, want 1 shared by %d callers", got, n)
	}
}

func TestDiscoveryCallerGivingUpDoesNotFailTheFetch(t *testing.T) {
	p := newIDP(t, "", stdDoc)
	block, arrived := make(chan struct{}), make(chan struct{})
	p.set(func(p *idp) { p.block, p.arrived = block, arrived })
	d := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, nil)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, _, err := d.Resolve(ctx); done <- err }()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the caller's cancellation", err)
	}
	close(block) // the shared fetch goes on and its result is kept
	if _, _, err := d.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := p.fetchCount(); got != 1 {
		t.Errorf("fetches = %d, want 1", got)
	}
}

func TestDiscoveryRefreshes(t *testing.T) {
	p := newIDP(t, "", stdDoc)
	clock := newFakeClock()
	d := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, func(c *upstream.DiscoveryConfig) {
		clock.cfg(c)
		c.Refresh = 10 * time.Minute
	})
	resolve := func() string {
		t.Helper()
		u, _, err := d.Resolve(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return u.String()
	}
	resolve()
	clock.Advance(10*time.Minute - time.Second)
	resolve()
	if n := p.fetchCount(); n != 1 {
		t.Fatalf("fetches = %d before Refresh elapsed, want 1", n)
	}
	// The provider moves its token endpoint; the refresh finds it.
	p.set(func(p *idp) { p.doc = strings.Replace(stdDoc, "BASE/token", "BASE/v2/token", 1) })
	clock.Advance(time.Second)
	if got := resolve(); got != p.srv.URL+"/v2/token" {
		t.Errorf("after Refresh: %s, want the new endpoint", got)
	}
	if n := p.fetchCount(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
}

func TestDiscoveryRefetchesAfterFailed(t *testing.T) {
	p := newIDP(t, "", stdDoc)
	d := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, newFakeClock().cfg)
	if _, _, err := d.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Failed()
	if _, _, err := d.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := p.fetchCount(); n != 2 {
		t.Errorf("fetches = %d, want 2: one more after Failed, and only one", n)
	}
}

func TestDiscoveryKeepsTheCachedDocumentWhenARefreshFails(t *testing.T) {
	for name, breakIt := range map[string]func(p *idp){
		"provider down":       func(p *idp) { p.status = 503 },
		"document now broken": func(p *idp) { p.doc = `{"issuer":"https://elsewhere.example","token_endpoint":"BASE/token"}` },
	} {
		t.Run(name, func(t *testing.T) {
			p := newIDP(t, "", stdDoc)
			clock := newFakeClock()
			d := newDiscovery(t, p.issuer(), upstream.KindClientSecretBasic, clock.cfg)
			if _, _, err := d.Resolve(context.Background()); err != nil {
				t.Fatal(err)
			}
			p.set(breakIt)
			clock.Advance(time.Hour)
			u, _, err := d.Resolve(context.Background())
			if err != nil || u.String() != p.srv.URL+"/token" {
				t.Fatalf("Resolve = %v, %v; want the cached endpoint and no error", u, err)
			}
			if n := p.fetchCount(); n != 2 {
				t.Fatalf("fetches = %d, want 2 (the failed refresh)", n)
			}
			// Failing again at once would add the provider's trouble to
			// every exchange: the next try waits a little.
			d.Failed()
			clock.Advance(29 * time.Second)
			if _, _, err := d.Resolve(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := p.fetchCount(); n != 2 {
				t.Errorf("fetches = %d right after a failed refresh, want still 2", n)
			}
			p.set(func(p *idp) { p.status, p.doc = 200, stdDoc })
			clock.Advance(time.Second)
			if _, _, err := d.Resolve(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := p.fetchCount(); n != 3 {
				t.Errorf("fetches = %d, want 3: a retry 30 s after the failure", n)
			}
			if _, _, err := d.Resolve(context.Background()); err != nil || p.fetchCount() != 3 {
				t.Errorf("after a successful retry: err %v, fetches %d; want the cache", err, p.fetchCount())
			}
		})
	}
}

func TestNewDiscoveryRefusesBadConfig(t *testing.T) {
	parse := func(s string) *url.URL { u, _ := url.Parse(s); return u }
	tests := []struct {
		name string
		cfg  upstream.DiscoveryConfig
		want string
	}{
		{"no issuer", upstream.DiscoveryConfig{AuthMethod: upstream.KindClientSecretBasic}, "issuer is missing"},
		{"http issuer off loopback", upstream.DiscoveryConfig{Issuer: parse("http://idp.example"), AuthMethod: upstream.KindClientSecretBasic}, "loopback"},
		{"relative issuer", upstream.DiscoveryConfig{Issuer: parse("/idp"), AuthMethod: upstream.KindClientSecretBasic}, "absolute"},
		{"issuer with a query", upstream.DiscoveryConfig{Issuer: parse("https://idp.example/?x=1"), AuthMethod: upstream.KindClientSecretBasic}, "query"},
		{"issuer with a fragment", upstream.DiscoveryConfig{Issuer: parse("https://idp.example/#x"), AuthMethod: upstream.KindClientSecretBasic}, "fragment"},
		{"issuer with a password", upstream.DiscoveryConfig{Issuer: parse("https://u:p@idp.example"), AuthMethod: upstream.KindClientSecretBasic}, "password"},
		{"unknown method", upstream.DiscoveryConfig{Issuer: parse("https://idp.example"), AuthMethod: "tls_client_auth"}, "unknown auth method"},
		{"no method", upstream.DiscoveryConfig{Issuer: parse("https://idp.example")}, "unknown auth method"},
		{"negative refresh", upstream.DiscoveryConfig{Issuer: parse("https://idp.example"), AuthMethod: upstream.KindClientSecretBasic, Refresh: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := upstream.NewDiscovery(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "u:p") {
				t.Errorf("err = %v echoes a password", err)
			}
		})
	}
}

// TestOAuthWithDiscovery runs exchanges against a discovered endpoint: the
// assertion's aud can be the issuer, and a refused exchange makes the next
// one look the endpoint up again.
func TestOAuthWithDiscovery(t *testing.T) {
	p := newIDP(t, "/realms/tn-1", stdDoc)
	d := newDiscovery(t, p.issuer(), upstream.KindPrivateKeyJWT, nil)
	o, err := upstream.NewOAuth(upstream.OAuthConfig{TenantID: "tn-1", Kind: upstream.KindPrivateKeyJWT, Endpoint: d,
		ClientID: testClientID, Signer: rsaKey().Signer(), AssertionAudience: upstream.AudienceIssuer})
	if err != nil {
		t.Fatal(err)
	}
	req := broker.Request{Tenant: "tn-1", Groups: []string{"g"}}
	for range 3 {
		if _, err := o.Exchange(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.fetchCount(); n != 1 {
		t.Fatalf("fetches = %d after three exchanges, want 1", n)
	}

	p.set(func(p *idp) { p.tokenErr = http.StatusUnauthorized })
	_, err = o.Exchange(context.Background(), req)
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonRefused {
		t.Fatalf("err = %v, want refused", err)
	}
	p.set(func(p *idp) { p.tokenErr = 0 })
	if _, err := o.Exchange(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if n := p.fetchCount(); n != 2 {
		t.Errorf("fetches = %d, want 2: the refusal made the next exchange look again", n)
	}

	// A discovery failure without a document is the exchange's error.
	bad := newIDP(t, "", `{"issuer":"https://evil.example","token_endpoint":"BASE/token"}`)
	o2, err := upstream.NewOAuth(upstream.OAuthConfig{TenantID: "tn-1", Kind: upstream.KindClientSecretBasic,
		Endpoint: newDiscovery(t, bad.issuer(), upstream.KindClientSecretBasic, nil), ClientID: testClientID, Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = o2.Exchange(context.Background(), req)
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonBadResponse {
		t.Fatalf("err = %v, want bad_response from discovery", err)
	}
	if strings.Contains(fmt.Sprint(err), testSecret) || strings.Contains(xe.Err.Error(), testSecret) {
		t.Errorf("err %v carries the secret", err)
	}
}
