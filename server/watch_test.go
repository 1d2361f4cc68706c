package server_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokenbroker/tokenbroker/broker"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/server"
)

// shortLived is a harness whose upstream issues two-second tokens and whose
// broker keeps no skew margin, so that watches renew within a test.
func shortLived(opts harnessOptions) harnessOptions {
	opts.emu = emulator.Config{TokenLifetime: 2 * time.Second}
	opts.broker = func(c *broker.Config) { c.Skew = -1 }
	return opts
}

func watchReq() *tokenbrokerv1.WatchAccessTokenRequest {
	return &tokenbrokerv1.WatchAccessTokenRequest{Tenant: tenantA, Groups: []string{"pismo-v1:accounts:rw"},
		MinTtl: durationpb.New(500 * time.Millisecond)}
}

func (h *harness) watch(ctx context.Context, key string, req *tokenbrokerv1.WatchAccessTokenRequest) tokenbrokerv1.TokenBrokerService_WatchAccessTokenClient {
	h.t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	stream, err := h.client.WatchAccessToken(ctx, req)
	if err != nil {
		h.t.Fatal(err)
	}
	return stream
}

// recv reads the next token and keeps it as a secret the logs must not hold.
func (h *harness) recv(stream tokenbrokerv1.TokenBrokerService_WatchAccessTokenClient) (*tokenbrokerv1.WatchAccessTokenResponse, error) {
	resp, err := stream.Recv()
	if err == nil {
		h.remember(resp.GetAccessToken())
	}
	return resp, err
}

// A watch sends the token at once, then each renewal while the previous
// token still meets min_ttl; five watchers of one key share every exchange.
func TestWatchSendsRenewals(t *testing.T) {
	h := newHarness(t, shortLived(harnessOptions{}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const watchers, renewals = 5, 3
	var wg sync.WaitGroup
	var tokens sync.Map // token → how many watchers got it
	for range watchers {
		stream := h.watch(ctx, keyFull, watchReq())
		wg.Go(func() {
			var prev *tokenbrokerv1.WatchAccessTokenResponse
			for range renewals + 1 {
				resp, err := h.recv(stream)
				if err != nil {
					t.Errorf("recv: %v", err)
					return
				}
				now := time.Now()
				if left := resp.GetExpireTime().AsTime().Sub(now); left < 500*time.Millisecond {
					t.Errorf("sent a token with %s left, want at least min_ttl (500ms)", left)
				}
				if prev != nil {
					if prev.GetAccessToken() == resp.GetAccessToken() {
						t.Errorf("sent the same token twice")
					}
					// The renewal came before the previous token fell
					// below min_ttl.
					if left := prev.GetExpireTime().AsTime().Sub(now); left < 500*time.Millisecond {
						t.Errorf("renewal came with %s left on the previous token, want at least min_ttl", left)
					}
				}
				n, _ := tokens.LoadOrStore(resp.GetAccessToken(), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				prev = resp
			}
		})
	}
	wg.Wait()
	distinct := 0
	tokens.Range(func(_, _ any) bool { distinct++; return true })
	if ex := h.emu.Exchanges(); ex > int64(distinct)+1 {
		t.Errorf("%d exchanges for %d distinct tokens sent to %d watchers, want one per token", ex, distinct, watchers)
	}
	if distinct > renewals+2 {
		t.Errorf("watchers saw %d distinct tokens, want them to share (about %d)", distinct, renewals+1)
	}
}

// swappable is an Authenticator whose policy a test replaces, as a reload
// does.
type swappable struct{ p atomic.Pointer[policy.Policy] }

func (s *swappable) Authenticate(c policy.Credentials) (policy.Identity, error) {
	return s.p.Load().Authenticate(c)
}

// A reload that revokes the caller's grant ends its watch with
// PERMISSION_DENIED, and the trail records the tokens sent and the denial.
func TestWatchEndsWhenTheGrantIsRevoked(t *testing.T) {
	sink, path := openSink(t)
	sw := &swappable{}
	h := newHarness(t, shortLived(harnessOptions{auditor: sink, authn: func(p *policy.Policy) server.Authenticator {
		sw.p.Store(p)
		return sw
	}}))
	stream := h.watch(context.Background(), keyFull, watchReq())
	if _, err := h.recv(stream); err != nil {
		t.Fatal(err)
	}
	callers := defaultCallers()
	callers[0].Allow = []policy.Grant{{Tenant: tenantB, Groups: []string{"*"}}} // tn-a no more
	revoked, err := policy.New(callers)
	if err != nil {
		t.Fatal(err)
	}
	sw.p.Store(revoked)
	for {
		_, err := h.recv(stream)
		if err == nil {
			continue // a renewal sent before the look that saw the change
		}
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), tenantA) {
			t.Fatalf("stream ended with %v %q, want PERMISSION_DENIED naming the tenant", st.Code(), st.Message())
		}
		break
	}
	sink.Close()
	recs := readTrail(t, path)
	last := recs[len(recs)-1]
	if last["decision"] != "denied" || recs[0]["decision"] != "allowed" || recs[0]["token_fp"] == "" {
		t.Errorf("audit records = %v, want allowed ones with token fingerprints, then a denial", recs)
	}
}

// Removing the caller ends its watch with UNAUTHENTICATED.
func TestWatchEndsWhenTheCallerIsRemoved(t *testing.T) {
	sw := &swappable{}
	h := newHarness(t, shortLived(harnessOptions{authn: func(p *policy.Policy) server.Authenticator {
		sw.p.Store(p)
		return sw
	}}))
	stream := h.watch(context.Background(), keyFull, watchReq())
	if _, err := h.recv(stream); err != nil {
		t.Fatal(err)
	}
	others, err := policy.New(defaultCallers()[1:])
	if err != nil {
		t.Fatal(err)
	}
	sw.p.Store(others)
	for {
		_, err := h.recv(stream)
		if err == nil {
			continue
		}
		if code := status.Code(err); code != codes.Unauthenticated {
			t.Fatalf("stream ended with %v, want UNAUTHENTICATED", err)
		}
		break
	}
}

// Shutdown ends watches at once with UNAVAILABLE, instead of waiting out
// the grace period.
func TestWatchEndsAtShutdown(t *testing.T) {
	h := newHarness(t, harnessOptions{grace: time.Hour})
	stream := h.watch(context.Background(), keyFull, watchReq())
	if _, err := h.recv(stream); err != nil {
		t.Fatal(err)
	}
	h.stop()
	_, err := h.recv(stream)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "shutting down") {
		t.Fatalf("after shutdown: %v, want UNAVAILABLE saying the broker is shutting down", err)
	}
}

// A watch is validated and authorized like GetAccessToken, and ends when
// the caller cancels.
func TestWatchChecksAndCancel(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	bad := watchReq()
	bad.Groups = nil
	if _, err := h.recv(h.watch(context.Background(), keyFull, bad)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no groups: %v, want INVALID_ARGUMENT", err)
	}
	denied := watchReq()
	denied.Groups = []string{"pismo-v1:payments:w"}
	if _, err := h.recv(h.watch(context.Background(), keyFull, denied)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a group not granted: %v, want PERMISSION_DENIED", err)
	}
	if _, err := h.recv(h.watch(context.Background(), "tbk_nobody", watchReq())); status.Code(err) != codes.Unauthenticated {
		t.Errorf("unknown key: %v, want UNAUTHENTICATED", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream := h.watch(ctx, keyFull, watchReq())
	if _, err := h.recv(stream); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := h.recv(stream); status.Code(err) != codes.Canceled && err != io.EOF {
		t.Errorf("after cancel: %v", err)
	}
}
