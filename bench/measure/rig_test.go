package measure_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// The tenant every measurement asks for, with the Pismo verifier values the
// emulator checks, and the groups of the server benchmarks' request.
const (
	tenant   = "tn-bench"
	issuer   = "iss-bench"
	subject  = "sub-bench"
	audience = "aud-bench"
)

var groups = []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"} // sorted, as the broker passes them

var tenantKey = sync.OnceValue(func() *keystore.Key {
	k, err := keystore.Generate(2048)
	if err != nil {
		panic(err)
	}
	return k
})

// countingSigner counts the signatures made through it.
type countingSigner struct {
	jose.Signer
	n atomic.Int64
}

func (s *countingSigner) Sign(payload []byte) (*jose.JSONWebSignature, error) {
	s.n.Add(1)
	return s.Signer.Sign(payload)
}

// newEmulator serves the emulator, with the tenant registered, on an
// httptest server and returns it and its token URL.
func newEmulator(tb testing.TB) (*emulator.Emulator, *url.URL) {
	tb.Helper()
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := emu.Register(emulator.Tenant{ID: tenant, Issuer: issuer, Subject: subject, Audience: audience,
		Keys: []jose.JSONWebKey{tenantKey().PublicJWK()}}); err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	tb.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL + emulator.TokenPath)
	return emu, u
}

// newStub serves an upstream that reads each request and answers it with
// the same token response, whatever it was sent: the exchange without the
// upstream's own work (checking the assertion, signing the token). It
// returns its token URL and the count of requests it answered.
func newStub(tb testing.TB, token string) (*url.URL, *atomic.Int64) {
	tb.Helper()
	body, err := json.Marshal(map[string]string{"access_token": token, "refresh_token": strings.Repeat("r", 43), "expires_in": "3600"})
	if err != nil {
		tb.Fatal(err)
	}
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	}))
	tb.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL + emulator.TokenPath)
	return u, &n
}

// newExchanger is the tenant's exchanger as serve wires it: the Pismo
// exchanger posting to tokenURL, guarded by a resilience.Upstream (retries,
// circuit breaker, at most resilience.DefaultMaxInFlight exchanges in
// flight). It signs through the returned counting signer.
func newExchanger(tb testing.TB, tokenURL *url.URL) (broker.Exchanger, *countingSigner) {
	tb.Helper()
	signer := &countingSigner{Signer: tenantKey().Signer()}
	x, err := upstream.NewPismo(upstream.PismoConfig{TenantID: tenant, TokenURL: tokenURL, Issuer: issuer, Subject: subject,
		Audience: audience, Signer: signer})
	if err != nil {
		tb.Fatal(err)
	}
	guard := resilience.NewUpstream(resilience.Config{Name: tokenURL.Host})
	return upstream.Tenants{tenant: guard.Wrap(x)}, signer
}

// newBroker is a broker on x with production's defaults, except that a
// shared exchange may wait as long as it takes: the measurements queue
// thousands of exchanges behind the in-flight limit.
func newBroker(tb testing.TB, x broker.Exchanger) *broker.Broker {
	b := broker.New(broker.Config{Exchanger: x, ExchangeTimeout: time.Hour})
	tb.Cleanup(b.Close)
	return b
}

// request is an account token request for uid, with the usual groups.
func request(uid string) broker.Request {
	return broker.Request{Tenant: tenant, UID: uid, Groups: groups}
}

// storm asks br for each of reqs from its own goroutine, all released at
// once, and returns the time from the release until the last answer, with
// the count of each status and of errors (and the first error).
func storm(br *broker.Broker, reqs []broker.Request) (wall time.Duration, statuses map[broker.Status]int, errs int, first error) {
	var (
		ready, done sync.WaitGroup
		mu          sync.Mutex
	)
	statuses = map[broker.Status]int{}
	release := make(chan struct{})
	ctx := context.Background()
	for _, r := range reqs {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-release
			_, st, err := br.Token(ctx, r, broker.Options{})
			mu.Lock()
			if err != nil {
				if errs++; first == nil {
					first = err
				}
			} else {
				statuses[st]++
			}
			mu.Unlock()
		}()
	}
	ready.Wait()
	start := time.Now()
	close(release)
	done.Wait()
	return time.Since(start), statuses, errs, first
}

// pismoClaims is the claim set the Pismo exchanger signs for an account
// token request (upstream.Pismo's claims, which are not exported).
func pismoClaims(uid string, now time.Time) map[string]any {
	return map[string]any{
		"iss":       issuer,
		"sub":       subject,
		"aud":       audience,
		"iat":       now.Unix(),
		"exp":       now.Add(upstream.DefaultAssertionLifetime).Unix(),
		"tenant_id": tenant,
		"pismo":     map[string]string{"group": strings.Join(groups, ",")},
		"uid":       uid,
	}
}

// signAlone signs n Pismo assertions, one per uid, with signer across
// GOMAXPROCS goroutines, and returns the wall time: what the signatures of
// n exchanges need on this machine, with nothing else.
func signAlone(tb testing.TB, signer jose.Signer, uids []string) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Bool
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(uids)); i = next.Add(1) - 1 {
				if _, err := jwt.Signed(signer).Claims(pismoClaims(uids[i], time.Now())).Serialize(); err != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if failed.Load() {
		tb.Fatal("signing failed")
	}
	return wall
}

// keyBytes is the length of the broker's cache key for req: broker's
// appendKey, every field length-prefixed (uvarint), groups sorted and
// unique, without custom claims.
func keyBytes(req broker.Request) int {
	str := func(s string) int { return len(binary.AppendUvarint(nil, uint64(len(s)))) + len(s) }
	n := str(req.Tenant) + 1 // the uid tag
	if req.UID != "" {
		n += str(req.UID)
	}
	n += len(binary.AppendUvarint(nil, uint64(len(req.Groups))))
	for _, g := range req.Groups {
		n += str(g)
	}
	return n + 1 // no custom claims
}

// jwtShaped is a JWT-shaped string of n bytes ending in suffix, in one
// allocation of n bytes, so that each token is its own.
func jwtShaped(n int, suffix string) string {
	var b strings.Builder
	b.Grow(n)
	b.WriteString("eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyIsInR5cCI6IkpXVCJ9.")
	body := n - len(suffix) - b.Len()
	for i := 0; i < body; i++ {
		if i == body*2/5 {
			b.WriteByte('.')
			continue
		}
		b.WriteByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i%64])
	}
	b.WriteString(suffix)
	return b.String()
}
