package resilience_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
)

// answers is an httptest token endpoint that gives its answers in turn, the
// last one repeating, and keeps the assertions it was sent.
type answers struct {
	mu      sync.Mutex
	list    []answer
	bodies  []string
	current int
}

type answer struct {
	status     int
	retryAfter string
	body       string
}

func (a *answers) set(list ...answer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list, a.current = list, 0
}

func (a *answers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.bodies = append(a.bodies, string(b))
	ans := a.list[min(a.current, len(a.list)-1)]
	a.current++
	a.mu.Unlock()
	if ans.retryAfter != "" {
		w.Header().Set("Retry-After", ans.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ans.status)
	io.WriteString(w, ans.body)
}

func (a *answers) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.bodies...)
}

var tokenAnswer = answer{status: http.StatusCreated, body: `{"access_token":"at-1","expires_in":3600}`}

func newPismo(t *testing.T, srv *httptest.Server) *upstream.Pismo {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.URL + "/passport/v1/oauth2/token")
	p, err := upstream.NewPismo(upstream.PismoConfig{TenantID: "tn-1", TokenURL: u, Issuer: "iss", Subject: "sub", Audience: "aud",
		Signer: signer, Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestThroughPismo runs the guard around a real exchanger and HTTP: the
// Retry-After of a 503 reaches the backoff, each retry posts a newly signed
// assertion, and a failing endpoint opens the breaker.
func TestThroughPismo(t *testing.T) {
	ans := &answers{}
	srv := httptest.NewServer(ans)
	defer srv.Close()
	p := newPismo(t, srv)
	u, clock, _ := newUpstream(resilience.Policy{FailureThreshold: 3, OpenFor: time.Minute})
	g := u.Wrap(p)

	ans.set(answer{status: 503, retryAfter: "2", body: `{"error":"temporarily_unavailable"}`},
		answer{status: 429, body: `{}`}, tokenAnswer)
	tok, err := g.Exchange(context.Background(), req)
	if err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("Exchange = %v, %v; want at-1", tok, err)
	}
	if sleeps := clock.Sleeps(); len(sleeps) != 2 || sleeps[0].d < 2*time.Second {
		t.Errorf("sleeps %v, want two, the first at least the 2 s Retry-After", sleeps)
	}
	if got := ans.requests(); len(got) != 3 || got[0] == got[1] && got[1] == got[2] {
		t.Errorf("upstream saw %d requests, want 3 (signed anew, so not all equal)", len(got))
	}
	// Three failed attempts in a row open the breaker: the call that made
	// them learns when it will let a probe through.
	ans.set(answer{status: 500, body: `{"error":"server_error"}`})
	n := len(ans.requests())
	_, err = g.Exchange(context.Background(), req)
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.HTTPStatus != 500 || xe.RetryAfter != time.Minute || len(ans.requests()) != n+3 {
		t.Fatalf("Exchange error = %v (%+v) after %d requests; want the 500 with RetryAfter 1m after 3", err, xe, len(ans.requests())-n)
	}
	_, err = g.Exchange(context.Background(), req)
	if !errors.As(err, &xe) || !errors.Is(err, resilience.ErrCircuitOpen) || xe.Upstream != host || len(ans.requests()) != n+3 {
		t.Fatalf("Exchange error = %v; want a fast failure naming %s, without a request", err, host)
	}
	// The endpoint recovers; after the open interval, one probe closes it.
	ans.set(tokenAnswer)
	clock.Advance(time.Minute)
	if _, err := g.Exchange(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if s, _ := u.State(); s != resilience.Closed {
		t.Errorf("breaker %s after a good probe, want closed", s)
	}
}
