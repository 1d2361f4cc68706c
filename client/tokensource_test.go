package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/client"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// The source is an oauth2.TokenSource.
var _ oauth2.TokenSource = (*client.TokenSource)(nil)

// checkToken fails the test unless tok is the bearer token want expiring at
// expiry.
func checkToken(t *testing.T, tok *oauth2.Token, err error, want string, expiry time.Time) {
	t.Helper()
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.AccessToken != want || tok.TokenType != "Bearer" || !tok.Expiry.Equal(expiry) {
		t.Fatalf("Token = %q %q %v, want %q Bearer %v", tok.AccessToken, tok.TokenType, tok.Expiry, want, expiry)
	}
}

func TestTokenSourceServesWatchedTokenFromMemory(t *testing.T) {
	r := newRig(t)
	req := client.Request{
		Tenant: "tn-a", UID: "acc-1", Groups: []string{"g:r", "g:w"},
		CustomClaims: map[string]string{"k": "v"}, MinTTL: 2 * time.Minute,
	}
	ts := r.source(t, req)
	req.Groups[0] = "changed" // the source keeps its own copy

	w := r.nextWatch()
	if got := w.req; got.GetTenant() != "tn-a" || got.GetUid() != "acc-1" || fmt.Sprint(got.GetGroups()) != "[g:r g:w]" ||
		got.GetCustomClaims()["k"] != "v" || got.GetMinTtl().AsDuration() != 2*time.Minute {
		t.Fatalf("watch request = %v", got)
	}
	exp := r.clock.Now().Add(time.Hour)
	w.send(t, "A", exp)

	for i := range 100 {
		var tok *oauth2.Token
		var err error
		if i%2 == 0 {
			tok, err = ts.Token()
		} else {
			tok, err = ts.TokenContext(t.Context())
		}
		checkToken(t, tok, err, "A", exp)
	}
	if u, s := r.rpcs.unary.Load(), r.rpcs.streams.Load(); u != 0 || s != 1 {
		t.Errorf("client made %d unary calls and opened %d streams, want 0 and 1", u, s)
	}
	if got := r.f.auths(); len(got) != 1 || got[0] != "Bearer "+testKey {
		t.Errorf("broker saw %d authorization values (or the wrong one), want one Bearer <key>", len(got))
	}
}

func TestTokenSourceDefaultMinTTL(t *testing.T) {
	r := newRig(t)
	r.source(t, testRequest)
	if got := r.nextWatch().req.GetMinTtl().AsDuration(); got != client.DefaultMinTTL {
		t.Errorf("min_ttl = %v, want %v", got, client.DefaultMinTTL)
	}
	r2 := newRig(t)
	req := testRequest
	req.MinTTL = -1
	r2.source(t, req)
	if got := r2.nextWatch().req.GetMinTtl(); got == nil || got.AsDuration() != 0 {
		t.Errorf("min_ttl = %v, want an explicit 0", got)
	}
}

func TestTokenSourcePicksUpRenewals(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	w := r.nextWatch()
	w.send(t, "A", r.clock.Now().Add(time.Hour))
	tok, err := ts.Token()
	checkToken(t, tok, err, "A", r.clock.Now().Add(time.Hour))

	for _, next := range []string{"B", "C"} {
		r.clock.Advance(50 * time.Minute)
		exp := r.clock.Now().Add(time.Hour)
		w.send(t, next, exp)
		waitFor(ts, func() bool { return ts.Held() == next })
		tok, err := ts.Token()
		checkToken(t, tok, err, next, exp)
	}
	if n := len(r.f.gets()); n != 0 {
		t.Errorf("%d GetAccessToken calls, want 0", n)
	}
}

// A watch that cannot be opened, or ends, leaves Token to GetAccessToken, and
// is opened again.
func TestTokenSourceFallsBackAndReopens(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"older broker", status.Error(codes.Unimplemented, "method WatchAccessToken not implemented")},
		{"broker shutting down", status.Error(codes.Unavailable, "the broker is shutting down; reconnect")},
		{"upstream down", status.Error(codes.Unavailable, "upstream unavailable")},
		{"rate limited", status.Error(codes.ResourceExhausted, "slow down")},
		{"ended without status", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			ts := r.source(t, testRequest)

			// The first Token waits for the watch, which fails.
			got := make(chan error, 1)
			go func() {
				tok, err := ts.Token()
				if err == nil && tok.AccessToken != "at-1" {
					err = fmt.Errorf("Token = %q, want at-1", tok.AccessToken)
				}
				got <- err
			}()
			r.nextWatch().finish(t, tc.err)
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			gets := r.f.gets()
			if len(gets) != 1 || gets[0].GetTenant() != "tn-a" || gets[0].GetRejectedToken() != "" || gets[0].GetMinTtl().AsDuration() != client.DefaultMinTTL {
				t.Fatalf("GetAccessToken calls = %v, want one for tn-a", gets)
			}

			// The fallback token is cached while the watch is re-opened.
			w := r.nextWatch()
			tok, err := ts.Token()
			checkToken(t, tok, err, "at-1", r.clock.Now().Add(time.Hour))
			if n := len(r.f.gets()); n != 1 {
				t.Fatalf("%d GetAccessToken calls, want 1", n)
			}

			// The re-opened watch takes over.
			exp := r.clock.Now().Add(2 * time.Hour)
			w.send(t, "B", exp)
			waitFor(ts, func() bool { return ts.Held() == "B" })
			tok, err = ts.Token()
			checkToken(t, tok, err, "B", exp)
		})
	}
}

// A watch that ends leaves its token cached while it has life left.
func TestTokenSourceKeepsTokenAcrossWatchEnd(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	w := r.nextWatch()
	exp := r.clock.Now().Add(time.Hour)
	w.send(t, "A", exp)
	waitFor(ts, ts.Watching)
	w.finish(t, status.Error(codes.Unavailable, "the broker is shutting down; reconnect"))
	w2 := r.nextWatch() // opened again, so the first has ended

	tok, err := ts.Token()
	checkToken(t, tok, err, "A", exp)
	if n := len(r.f.gets()); n != 0 {
		t.Fatalf("%d GetAccessToken calls, want 0", n)
	}
	w2.send(t, "B", exp.Add(time.Hour))
	waitFor(ts, func() bool { return ts.Held() == "B" })
}

func TestTokenSourceNeverHandsOutStaleToken(t *testing.T) {
	for _, tc := range []struct {
		name    string
		minTTL  time.Duration
		life    time.Duration // of the watched token when sent
		advance time.Duration // then the clock moves this far
	}{
		{"stale on arrival", 0, 30 * time.Second, 0},
		{"exactly min_ttl left", 0, time.Hour, 59 * time.Minute},
		{"past expiry", 0, time.Hour, 2 * time.Hour},
		{"longer min_ttl", 10 * time.Minute, time.Hour, 50*time.Minute + time.Nanosecond},
		{"no min_ttl, expired", -1, time.Hour, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			req := testRequest
			req.MinTTL = tc.minTTL
			ts := r.source(t, req)
			w := r.nextWatch()
			w.send(t, "A", r.clock.Now().Add(tc.life))
			waitFor(ts, ts.Watching)
			r.clock.Advance(tc.advance)

			tok, err := ts.Token()
			checkToken(t, tok, err, "at-1", r.clock.Now().Add(time.Hour))
			if n := len(r.f.gets()); n != 1 {
				t.Fatalf("%d GetAccessToken calls, want 1", n)
			}
		})
	}

	// One nanosecond more than min_ttl left is enough.
	r := newRig(t)
	ts := r.source(t, testRequest)
	r.nextWatch().send(t, "A", r.clock.Now().Add(client.DefaultMinTTL+time.Nanosecond))
	tok, err := ts.Token()
	checkToken(t, tok, err, "A", r.clock.Now().Add(client.DefaultMinTTL+time.Nanosecond))
}

var permanentCodes = []codes.Code{codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition}

func TestTokenSourcePermanentErrors(t *testing.T) {
	for _, code := range permanentCodes {
		t.Run(code.String(), func(t *testing.T) {
			t.Run("first watch", func(t *testing.T) {
				r := newRig(t)
				ts := r.source(t, testRequest)
				r.nextWatch().finish(t, status.Error(code, "refused"))
				_, err := ts.Token()
				if status.Code(err) != code {
					t.Fatalf("Token error = %v, want %v", err, code)
				}
				if n := len(r.f.gets()); n != 0 {
					t.Errorf("%d GetAccessToken calls, want none", n)
				}
			})

			t.Run("revoked while watching", func(t *testing.T) {
				r := newRig(t)
				ts := r.source(t, testRequest)
				w := r.nextWatch()
				w.send(t, "A", r.clock.Now().Add(time.Hour))
				waitFor(ts, ts.Watching)
				w.finish(t, status.Error(code, "revoked"))
				w2 := r.nextWatch()
				if held := ts.Held(); held != "" {
					t.Fatalf("source still holds %q after the grant was revoked", held)
				}
				for range 3 {
					if _, err := ts.Token(); status.Code(err) != code {
						t.Fatalf("Token error = %v, want %v", err, code)
					}
				}
				if n := len(r.f.gets()); n != 0 {
					t.Errorf("%d GetAccessToken calls, want none", n)
				}
				// A token got anyway is handed to its caller, not cached.
				if _, err := ts.Reject(t.Context(), "A"); err != nil {
					t.Fatal(err)
				}
				if _, err := ts.Token(); status.Code(err) != code {
					t.Fatalf("Token error after Reject = %v, want %v", err, code)
				}

				// Granted again: the re-opened watch's token is served.
				exp := r.clock.Now().Add(time.Hour)
				w2.send(t, "B", exp)
				waitFor(ts, ts.Watching)
				tok, err := ts.Token()
				checkToken(t, tok, err, "B", exp)
			})

			t.Run("fallback call", func(t *testing.T) {
				r := newRig(t)
				r.f.get = func(context.Context, *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
					return nil, status.Error(code, "refused")
				}
				ts := r.source(t, testRequest)
				r.nextWatch().finish(t, status.Error(codes.Unimplemented, "not implemented"))
				if _, err := ts.Token(); status.Code(err) != code {
					t.Fatalf("Token error = %v, want %v", err, code)
				}
			})
		})
	}
}

func TestTokenSourceFirstTokenBoundedByContext(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	r.nextWatch() // open, and never sends

	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan error, 1)
	go func() {
		_, err := ts.TokenContext(ctx)
		got <- err
	}()
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("TokenContext error = %v, want context.Canceled", err)
	}
}

func TestTokenSourceClose(t *testing.T) {
	t.Run("watching", func(t *testing.T) {
		r := newRig(t)
		r.connect(t)
		before := goleak.IgnoreCurrent()
		ts := r.c.TokenSource(testRequest)
		r.nextWatch().send(t, "A", r.clock.Now().Add(time.Hour))
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
		if err := ts.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ts.Close(); err != nil {
			t.Fatal(err)
		}
		goleak.VerifyNone(t, before)
		if _, err := ts.Token(); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Token after Close = %v, want ErrClosed", err)
		}
		if _, err := ts.Reject(t.Context(), "A"); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Reject after Close = %v, want ErrClosed", err)
		}
	})

	t.Run("waiting for the first token", func(t *testing.T) {
		r := newRig(t)
		ts := r.c.TokenSource(testRequest)
		r.nextWatch()
		got := make(chan error, 1)
		go func() {
			_, err := ts.Token()
			got <- err
		}()
		ts.Close()
		if err := <-got; !errors.Is(err, client.ErrClosed) {
			t.Errorf("Token = %v, want ErrClosed", err)
		}
	})

	t.Run("call in flight", func(t *testing.T) {
		r := newRig(t)
		entered := make(chan struct{})
		r.f.get = func(ctx context.Context, _ *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
			close(entered)
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		r.connect(t)
		before := goleak.IgnoreCurrent()
		ts := r.c.TokenSource(testRequest)
		r.nextWatch().finish(t, status.Error(codes.Unimplemented, "not implemented"))
		got := make(chan error, 1)
		go func() {
			_, err := ts.Token()
			got <- err
		}()
		<-entered
		ts.Close()
		if err := <-got; !errors.Is(err, client.ErrClosed) {
			t.Errorf("Token = %v, want ErrClosed", err)
		}
		goleak.VerifyNone(t, before)
	})
}

// Concurrent callers without a token share one GetAccessToken call.
func TestTokenSourceSharesFallbackCall(t *testing.T) {
	r := newRig(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	r.f.get = func(context.Context, *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
		entered <- struct{}{}
		<-release
		return r.f.currentToken(""), nil
	}
	ts := r.source(t, testRequest)
	r.nextWatch().finish(t, status.Error(codes.Unimplemented, "not implemented"))

	const callers = 8
	got := make(chan error, callers)
	call := func() {
		tok, err := ts.Token()
		if err == nil && tok.AccessToken != "at-1" {
			err = fmt.Errorf("Token = %q, want at-1", tok.AccessToken)
		}
		got <- err
	}
	go call()
	<-entered // the call is in flight: everyone after joins it
	for range callers - 1 {
		go call()
	}
	close(release)
	for range callers {
		if err := <-got; err != nil {
			t.Error(err)
		}
	}
	if n := len(r.f.gets()); n != 1 {
		t.Errorf("%d GetAccessToken calls, want 1", n)
	}
}

func TestTokenSourceReject(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	w := r.nextWatch()
	w.send(t, "at-1", r.clock.Now().Add(time.Hour))
	waitFor(ts, ts.Watching)

	// The fake's current token is at-1 once GetAccessToken has made it.
	r.f.currentToken("")
	tok, err := ts.Reject(t.Context(), "at-1")
	checkToken(t, tok, err, "at-2", r.clock.Now().Add(time.Hour))
	if gets := r.f.gets(); len(gets) != 1 || gets[0].GetRejectedToken() != "at-1" {
		t.Fatalf("GetAccessToken calls = %v, want one rejecting at-1", gets)
	}
	// Rejecting it again, or asking, is answered from memory.
	tok, err = ts.Reject(t.Context(), "at-1")
	checkToken(t, tok, err, "at-2", r.clock.Now().Add(time.Hour))
	tok, err = ts.Token()
	checkToken(t, tok, err, "at-2", r.clock.Now().Add(time.Hour))
	if n := len(r.f.gets()); n != 1 {
		t.Fatalf("%d GetAccessToken calls, want 1", n)
	}
	// Printing the source shows neither token.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(verb, ts); strings.Contains(got, "at-") {
			t.Errorf("%s of the source shows a token: %s", verb, got)
		}
	}
	// The watch cannot bring the refused token back.
	w.send(t, "at-1", r.clock.Now().Add(time.Hour))
	w.send(t, "at-3", r.clock.Now().Add(2*time.Hour))
	waitFor(ts, func() bool { return ts.Held() == "at-3" })
}
