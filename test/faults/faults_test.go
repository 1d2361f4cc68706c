package faults_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

// respond is an upstream that answers every request with status and body.
func respond(status int, contentType, body string) func(http.Handler) http.Handler {
	return func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.WriteHeader(status)
			fmt.Fprint(w, body)
		})
	}
}

// A 10 s answer: each attempt times out at the exchanger's timeout and is
// retried, up to the attempt limit; the caller gets UNAVAILABLE naming the
// timeout, long before the 10 s.
func TestLatency10s(t *testing.T) {
	slow := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Read the request first: only then does the server notice the
			// client hanging up, and end this handler.
			io.Copy(io.Discard, r.Body)
			select {
			case <-time.After(10 * time.Second):
			case <-r.Context().Done():
			}
		})
	}
	r := newRig(t, slow, rigOptions{timeout: 200 * time.Millisecond})
	_, st := r.get()
	r.expect(st, codes.Unavailable, "timeout")
	r.expectCalls(3)
}

// A connection reset: a network error, retried up to the attempt limit.
func TestConnectionReset(t *testing.T) {
	reset := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		})
	}
	r := newRig(t, reset, rigOptions{})
	_, st := r.get()
	r.expect(st, codes.Unavailable, "unavailable")
	r.expectCalls(3)
}

// A 500 storm: the breaker opens after 5 failed attempts, and the callers
// after that fail fast, told when the upstream is tried again, with no
// upstream call.
func TestServerErrorStorm(t *testing.T) {
	// The breaker stays open far longer than 100 calls take on any machine.
	openFor := time.Minute
	r := newRig(t, respond(http.StatusInternalServerError, "application/json", `{"error":"server_error"}`),
		rigOptions{policy: func(p *resilience.Policy) { p.OpenFor, p.MaxOpenFor = openFor, openFor }})
	_, st := r.get("pismo-v1:a:r") // 3 attempts
	r.expect(st, codes.Unavailable, "server_error")
	_, st = r.get("pismo-v1:b:r") // 2 more: the breaker opens
	r.expect(st, codes.Unavailable, "HTTP 500")
	r.expectCalls(5)
	for i := range 100 {
		_, st = r.get(fmt.Sprintf("pismo-v1:c%d:r", i))
		r.expect(st, codes.Unavailable, "circuit open")
	}
	r.expectCalls(5)
	var info *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			info = ri
		}
	}
	if info == nil || info.GetRetryDelay().AsDuration() <= 0 || info.GetRetryDelay().AsDuration() > openFor {
		t.Errorf("fast failure's RetryInfo = %v, want the time until the breaker's next attempt", info)
	}
}

// 429 with Retry-After: the broker waits at least that long, then retries
// and gets the token.
func TestTooManyRequestsRetryAfter(t *testing.T) {
	var (
		n     atomic.Int64
		mu    sync.Mutex
		times []time.Time
	)
	limited := func(emu http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			emu.ServeHTTP(w, r)
		})
	}
	r := newRig(t, limited, rigOptions{})
	if _, st := r.get(); st.Code() != codes.OK {
		t.Fatalf("after a 429: %v", st)
	}
	r.expectCalls(2)
	mu.Lock()
	defer mu.Unlock()
	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Errorf("retried %s after a 429 with Retry-After: 1, want at least 1 s", gap)
	}
}

// Bodies that are not a token: not retried (the upstream answered, badly),
// UNAVAILABLE naming a bad response, one call each.
func TestBadBodies(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
	}{
		{"HTML body", "text/html", "<html><body>Service temporarily down for maintenance</body></html>"},
		{"5 MiB body", "application/json", `{"access_token":"` + strings.Repeat("a", 5<<20) + `","expires_in":3600}`},
		{"expires_in missing, opaque token", "application/json", `{"access_token":"opaque-token"}`},
		{"expires_in zero", "application/json", `{"access_token":"t","expires_in":0}`},
		{"expires_in negative", "application/json", `{"access_token":"t","expires_in":-60}`},
		{"expires_in absurdly large", "application/json", `{"access_token":"t","expires_in":1e30}`},
		{"token field missing", "application/json", `{"expires_in":3600,"token_type":"Bearer"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, respond(http.StatusOK, tc.contentType, tc.body), rigOptions{})
			_, st := r.get()
			r.expect(st, codes.Unavailable, "bad_response")
			r.expectCalls(1)
		})
	}
}

// expires_in missing from a JWT access token: its own exp says how long
// to cache it.
func TestExpiresInMissingJWT(t *testing.T) {
	withoutExpiresIn := func(emu http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := &captured{header: http.Header{}}
			emu.ServeHTTP(rec, r)
			body := strings.Replace(rec.body.String(), `"expires_in":"3600",`, "", 1)
			body = strings.Replace(body, `,"expires_in":"3600"`, "", 1)
			if strings.Contains(body, "expires_in") {
				t.Errorf("could not take expires_in out of %s", body)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(rec.status)
			fmt.Fprint(w, body)
		})
	}
	r := newRig(t, withoutExpiresIn, rigOptions{})
	resp, st := r.get()
	if st.Code() != codes.OK {
		t.Fatalf("%v", st)
	}
	if left := time.Until(resp.GetExpireTime().AsTime()); left < 50*time.Minute || left > time.Hour {
		t.Errorf("token expires in %s, want the JWT's own exp (an hour)", left)
	}
	if _, st := r.get(); st.Code() != codes.OK {
		t.Fatalf("again: %v", st)
	}
	r.expectCalls(1) // the second call was a hit
}

// An outage, then recovery: the breaker opens, fails callers fast, lets a
// probe through once its interval has passed, closes when the probe
// succeeds, and tokens flow again.
func TestRecoveryAfterOutage(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	outage := func(emu http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			emu.ServeHTTP(w, r)
		})
	}
	// Open long enough that the call after the opening surely finds it
	// open; the loop below waits this long for the probe.
	openFor := time.Second
	r := newRig(t, outage, rigOptions{policy: func(p *resilience.Policy) { p.OpenFor = openFor }})
	r.get("pismo-v1:a:r")
	r.get("pismo-v1:b:r")
	r.expectCalls(5)
	_, st := r.get("pismo-v1:c:r")
	r.expect(st, codes.Unavailable, "circuit open")
	r.expectCalls(5)

	down.Store(false) // the upstream is back
	for {
		resp, st := r.get("pismo-v1:d:r")
		if st.Code() == codes.OK && resp.GetAccessToken() != "" {
			break
		}
		r.expect(st, codes.Unavailable, "circuit open")
		time.Sleep(openFor / 20) // until the breaker lets its probe through
	}
	r.expectCalls(6) // the one probe
	for i := range 20 {
		if _, st := r.get(fmt.Sprintf("pismo-v1:e%d:r", i)); st.Code() != codes.OK {
			t.Fatalf("after recovery: %v", st)
		}
	}
	r.expectCalls(26)
}

// A refusal (4xx) is neither retried nor counted against the breaker; a
// crowd of callers with it makes one upstream call (the negative cache).
func TestRefusalCrowd(t *testing.T) {
	r := newRig(t, respond(http.StatusUnauthorized, "application/json", `{"error":"invalid_client"}`),
		rigOptions{cache: func(c *broker.Config) { c.NegativeTTL = time.Minute }})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			_, st := r.get()
			r.expect(st, codes.FailedPrecondition, "invalid_client")
		})
	}
	wg.Wait()
	r.expectCalls(1)
	if st, _ := r.guard.State(); st.String() != "closed" {
		t.Errorf("breaker %s after refusals, want closed", st)
	}
}

// Exchanges reuse their keep-alive connection, and a redirect is not
// followed (it would send the assertion elsewhere): the 302 is a bad
// response, and its target gets nothing.
func TestConnectionReuseAndNoRedirects(t *testing.T) {
	var conns atomic.Int64
	var redirect atomic.Bool
	r := newRig(t, func(emu http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if redirect.Load() {
				http.Redirect(w, req, "http://127.0.0.1:9/elsewhere", http.StatusFound)
				return
			}
			emu.ServeHTTP(w, req)
		})
	}, rigOptions{connState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}})
	for i := range 20 {
		if _, st := r.get(fmt.Sprintf("pismo-v1:k%d:r", i)); st.Code() != codes.OK {
			t.Fatal(st)
		}
	}
	r.expectCalls(20)
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential exchanges opened %d connections, want 1 (keep-alive)", n)
	}
	redirect.Store(true)
	_, st := r.get("pismo-v1:redirected:r")
	r.expect(st, codes.Unavailable, "HTTP 302")
	r.expectCalls(21)
}
