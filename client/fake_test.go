package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenbroker/tokenbroker/client"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// testKey is the bearer key the tests' callers hold.
const testKey = "tbk_test-0123456789abcdef"

// fakeBroker is a TokenBrokerService whose behaviour each test sets. It
// checks the bearer key of every call, records every request, and hands out
// deterministic tokens "at-1", "at-2", ... that live ttl from now().
type fakeBroker struct {
	tokenbrokerv1.UnimplementedTokenBrokerServiceServer

	// key is the bearer key every call must carry; "" accepts any call,
	// as a broker that names callers by certificate would.
	key string
	now func() time.Time
	ttl time.Duration
	// get answers GetAccessToken once the key is checked; nil answers like
	// a broker: the current token, or a new one when rejected_token names
	// the current one.
	get func(context.Context, *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error)
	// watches, when set, receives every WatchAccessToken stream for the
	// test to drive; nil sends the current token and holds the stream open.
	watches chan *fakeWatch

	mu         sync.Mutex
	current    *tokenbrokerv1.GetAccessTokenResponse
	issued     int
	getReqs    []*tokenbrokerv1.GetAccessTokenRequest
	watchReqs  []*tokenbrokerv1.WatchAccessTokenRequest
	authHeader []string // the authorization metadata of every call
}

// fakeWatch is one WatchAccessToken stream, driven by the test.
type fakeWatch struct {
	req  *tokenbrokerv1.WatchAccessTokenRequest
	ctx  context.Context
	msgs chan *tokenbrokerv1.WatchAccessTokenResponse
	end  chan error
}

// send makes the stream send a token.
func (w *fakeWatch) send(t testing.TB, token string, expiry time.Time) {
	t.Helper()
	m := &tokenbrokerv1.WatchAccessTokenResponse{AccessToken: token, TokenType: "Bearer", ExpireTime: timestamppb.New(expiry)}
	select {
	case w.msgs <- m:
	case <-w.ctx.Done():
		t.Fatal("the watch ended before the token was sent")
	}
}

// finish ends the stream with err (nil: OK).
func (w *fakeWatch) finish(t testing.TB, err error) {
	t.Helper()
	select {
	case w.end <- err:
	case <-w.ctx.Done():
		t.Fatal("the watch ended before it was finished")
	}
}

func (f *fakeBroker) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	f.mu.Lock()
	f.authHeader = append(f.authHeader, strings.Join(vals, ","))
	f.mu.Unlock()
	if f.key == "" {
		return nil
	}
	if len(vals) != 1 || vals[0] != "Bearer "+f.key {
		return status.Error(codes.Unauthenticated, "unknown caller")
	}
	return nil
}

// issueLocked makes the next token current. f.mu must be held.
func (f *fakeBroker) issueLocked() {
	f.issued++
	ttl := f.ttl
	if ttl == 0 {
		ttl = time.Hour
	}
	f.current = &tokenbrokerv1.GetAccessTokenResponse{
		AccessToken: fmt.Sprintf("at-%d", f.issued), TokenType: "Bearer",
		ExpireTime: timestamppb.New(f.now().Add(ttl)), CacheStatus: tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS,
	}
}

// currentToken returns the current token, replacing it first if rejected
// names it.
func (f *fakeBroker) currentToken(rejected string) *tokenbrokerv1.GetAccessTokenResponse {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current == nil || rejected == f.current.GetAccessToken() {
		f.issueLocked()
	}
	return proto.Clone(f.current).(*tokenbrokerv1.GetAccessTokenResponse)
}

func (f *fakeBroker) GetAccessToken(ctx context.Context, req *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	if err := f.authorize(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.getReqs = append(f.getReqs, proto.Clone(req).(*tokenbrokerv1.GetAccessTokenRequest))
	f.mu.Unlock()
	if f.get != nil {
		return f.get(ctx, req)
	}
	return f.currentToken(req.GetRejectedToken()), nil
}

func (f *fakeBroker) WatchAccessToken(req *tokenbrokerv1.WatchAccessTokenRequest, stream grpc.ServerStreamingServer[tokenbrokerv1.WatchAccessTokenResponse]) error {
	ctx := stream.Context()
	if err := f.authorize(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	f.watchReqs = append(f.watchReqs, proto.Clone(req).(*tokenbrokerv1.WatchAccessTokenRequest))
	f.mu.Unlock()
	if f.watches == nil {
		cur := f.currentToken("")
		err := stream.Send(&tokenbrokerv1.WatchAccessTokenResponse{
			AccessToken: cur.GetAccessToken(), TokenType: cur.GetTokenType(), ExpireTime: cur.GetExpireTime(), CacheStatus: cur.GetCacheStatus(),
		})
		if err != nil {
			return nil
		}
		<-ctx.Done()
		return nil
	}
	w := &fakeWatch{req: req, ctx: ctx, msgs: make(chan *tokenbrokerv1.WatchAccessTokenResponse), end: make(chan error)}
	select {
	case f.watches <- w:
	case <-ctx.Done():
		return nil
	}
	for {
		select {
		case m := <-w.msgs:
			if err := stream.Send(m); err != nil {
				return nil
			}
		case err := <-w.end:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// gets returns the GetAccessToken requests so far.
func (f *fakeBroker) gets() []*tokenbrokerv1.GetAccessTokenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*tokenbrokerv1.GetAccessTokenRequest(nil), f.getReqs...)
}

// auths returns the authorization metadata of the calls so far.
func (f *fakeBroker) auths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.authHeader...)
}

// serveBroker serves f over bufconn and returns a connection to it and the
// function that closes both.
func serveBroker(f *fakeBroker, opts ...grpc.DialOption) (*grpc.ClientConn, func()) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	tokenbrokerv1.RegisterTokenBrokerServiceServer(srv, f)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })
	opts = append([]grpc.DialOption{dial, grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("passthrough:///tokenbroker", opts...)
	if err != nil {
		panic(err)
	}
	return conn, func() {
		conn.Close()
		srv.Stop()
		<-served
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rpcCounter counts the calls a client connection makes.
type rpcCounter struct{ unary, streams atomic.Int64 }

func (c *rpcCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.unary.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.streams.Add(1)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

// rig is a client of a fake broker whose watches the test drives, on a
// fake clock, with no wait before a watch is re-opened.
type rig struct {
	f     *fakeBroker
	clock *fakeClock
	rpcs  *rpcCounter
	conn  *grpc.ClientConn
	c     *client.Client
}

func newRig(t *testing.T) *rig {
	t.Helper()
	clock := newClock()
	r := &rig{
		f:     &fakeBroker{key: testKey, now: clock.Now, watches: make(chan *fakeWatch)},
		clock: clock,
		rpcs:  &rpcCounter{},
	}
	conn, stop := serveBroker(r.f, r.rpcs.dialOptions()...)
	t.Cleanup(stop)
	r.conn = conn
	r.c = client.New(client.Config{
		Conn: conn, Key: testKey, Now: clock.Now,
		ReconnectDelay: time.Nanosecond, MaxReconnectDelay: time.Nanosecond,
	})
	return r
}

// connect makes the connection to the broker open, with the goroutines it
// keeps while open, by a call of its own.
func (r *rig) connect(t *testing.T) {
	t.Helper()
	conn := r.conn
	if err := conn.Invoke(t.Context(), "/grpc.health.v1.Health/Check", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("connect: %v, want UNIMPLEMENTED", err)
	}
}

// testRequest is the request the tests watch.
var testRequest = client.Request{Tenant: "tn-a", Groups: []string{"pismo-v1:accounts:rw"}}

// source starts a TokenSource for req, closed when the test ends.
func (r *rig) source(t *testing.T, req client.Request) *client.TokenSource {
	t.Helper()
	ts := r.c.TokenSource(req)
	t.Cleanup(func() { ts.Close() })
	return ts
}

// nextWatch waits for the client to open a watch.
func (r *rig) nextWatch() *fakeWatch { return <-r.f.watches }

// waitFor waits until cond holds, checking again at each change of ts.
func waitFor(ts *client.TokenSource, cond func() bool) {
	for {
		changed := ts.Changed()
		if cond() {
			return
		}
		<-changed
	}
}

// api is an upstream gRPC API (the health service) on TCP loopback that
// records the authorization metadata of every call.
type api struct {
	addr  string
	creds credentials.TransportCredentials // what a client dials it with
	mu    sync.Mutex
	seen  []string
	stop  func()
}

// serveAPI starts an api, over TLS with a throwaway certificate if secure.
func serveAPI(secure bool) *api {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	a := &api{addr: lis.Addr().String(), creds: insecure.NewCredentials()}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(a.record)}
	if secure {
		serverTLS, roots := selfSigned()
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
		a.creds = credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	a.stop = func() {
		srv.Stop()
		<-served
	}
	return a
}

func (a *api) record(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	a.mu.Lock()
	a.seen = append(a.seen, strings.Join(md.Get("authorization"), ","))
	a.mu.Unlock()
	return handler(ctx, req)
}

// auths returns the authorization metadata the api has seen.
func (a *api) auths() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// selfSigned makes a throwaway certificate for 127.0.0.1: the server's TLS
// config and the pool a client trusts it with.
func selfSigned() (*tls.Config, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "upstream api"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}, roots
}

// timestampIn is the time d after c's now, as a proto timestamp.
func timestampIn(c *fakeClock, d time.Duration) *timestamppb.Timestamp {
	return timestamppb.New(c.Now().Add(d))
}
