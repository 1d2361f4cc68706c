// Package faults_test is the fault suite: the broker, its resilience guard
// and a real Pismo exchanger, served over gRPC on loopback, against httptest
// upstreams that misbehave one way each. Every test asserts what the caller
// sees and how many calls the upstream got.
package faults_test

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
	"github.com/tokenbroker/tokenbroker/server"
)

// TestMain fails the suite if any goroutine outlives it: every retry,
// refresh, probe and connection must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	tenant    = "tn-f"
	callerKey = "tbk_fault-suite"
)

var tenantKey = sync.OnceValues(func() (*keystore.Key, error) { return keystore.Generate(2048) })

// policy is the guard's policy in the suite: the production shape, with
// short waits so the suite runs in seconds.
var testPolicy = resilience.Policy{
	MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond, Budget: 5 * time.Second,
	FailureThreshold: 5, OpenFor: 300 * time.Millisecond, MaxOpenFor: time.Second, MaxInFlight: 4,
}

// rig is one broker in front of one faulty upstream.
type rig struct {
	t      *testing.T
	emu    *emulator.Emulator
	calls  atomic.Int64 // requests the upstream received
	guard  *resilience.Upstream
	broker *broker.Broker
	client tokenbrokerv1.TokenBrokerServiceClient
}

// rigOptions tune a rig.
type rigOptions struct {
	timeout time.Duration          // the exchanger's timeout; default 2 s
	emu     emulator.Config        // the emulator's
	cache   func(c *broker.Config) // tunes the broker
	// policy tunes the guard's policy (a copy of testPolicy). Tests that
	// count calls while the breaker is open give it an OpenFor no slow
	// machine can outlast.
	policy func(p *resilience.Policy)
	// connState, when set, sees the upstream's connections change state.
	connState func(net.Conn, http.ConnState)
}

// newRig starts the upstream (fault wrapping the emulator), the broker and
// the server, and stops them at the end of the test.
func newRig(t *testing.T, fault func(emu http.Handler) http.Handler, opts rigOptions) *rig {
	t.Helper()
	key, err := tenantKey()
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t}
	if r.emu, err = emulator.New(opts.emu); err != nil {
		t.Fatal(err)
	}
	if err := r.emu.Register(emulator.Tenant{ID: tenant, Issuer: "iss", Subject: "sub", Audience: "aud",
		Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = r.emu
	if fault != nil {
		h = fault(h)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		h.ServeHTTP(w, req)
	}))
	up.Config.ConnState = opts.connState
	up.Start()
	t.Cleanup(up.Close)
	tokenURL, _ := url.Parse(up.URL + emulator.TokenPath)

	if opts.timeout == 0 {
		opts.timeout = 2 * time.Second
	}
	client := upstream.NewHTTPClient()
	t.Cleanup(client.CloseIdleConnections)
	x, err := upstream.NewPismo(upstream.PismoConfig{TenantID: tenant, TokenURL: tokenURL, Issuer: "iss", Subject: "sub",
		Audience: "aud", Signer: key.Signer(), AssertionLifetime: 5 * time.Minute, UIDMode: upstream.UIDOmit,
		Client: client, Timeout: opts.timeout})
	if err != nil {
		t.Fatal(err)
	}
	p := testPolicy
	if opts.policy != nil {
		opts.policy(&p)
	}
	r.guard = resilience.NewUpstream(resilience.Config{Name: tokenURL.Host, Policy: p})
	bc := broker.Config{Exchanger: upstream.Tenants{tenant: r.guard.Wrap(x)}}
	if opts.cache != nil {
		opts.cache(&bc)
	}
	r.broker = broker.New(bc)
	t.Cleanup(r.broker.Close)

	pol, err := policy.New([]policy.Caller{{Name: "svc", APIKeySHA256: sha256.Sum256([]byte(callerKey)), HasAPIKey: true,
		Allow: []policy.Grant{{Tenant: tenant, Groups: []string{"pismo-v1:*"}, AccountTokens: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Tokens: r.broker, Callers: pol, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.client = tokenbrokerv1.NewTokenBrokerServiceClient(conn)
	t.Cleanup(func() {
		conn.Close()
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return r
}

// get asks for a tenant token with groups (one key per distinct groups),
// and returns it or the call's status.
func (r *rig) get(groups ...string) (*tokenbrokerv1.GetAccessTokenResponse, *status.Status) {
	r.t.Helper()
	if len(groups) == 0 {
		groups = []string{"pismo-v1:accounts:r"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+callerKey)
	resp, err := r.client.GetAccessToken(ctx, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenant, Groups: groups})
	return resp, status.Convert(err)
}

// expect checks a call's outcome: its code, and a part of its message.
func (r *rig) expect(st *status.Status, code codes.Code, msg string) {
	r.t.Helper()
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		r.t.Errorf("got %v %q, want %v mentioning %q", st.Code(), st.Message(), code, msg)
	}
}

// expectCalls checks how many requests the upstream received.
func (r *rig) expectCalls(want int64) {
	r.t.Helper()
	if got := r.calls.Load(); got != want {
		r.t.Errorf("the upstream got %d calls, want %d", got, want)
	}
}

// captured is an http.ResponseWriter that keeps the answer.
type captured struct {
	header http.Header
	status int
	body   strings.Builder
}

func (c *captured) Header() http.Header { return c.header }
func (c *captured) WriteHeader(s int)   { c.status = s }
func (c *captured) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}
