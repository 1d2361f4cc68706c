package server_test

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tokenbroker/tokenbroker/broker"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
	"github.com/tokenbroker/tokenbroker/server"
)

// The callers every harness knows.
const (
	keyFull   = "tbk_full-access-caller-key"
	keyReader = "tbk_reader-caller-key"
	tenantA   = "tn-a"
	tenantB   = "tn-b" // configured upstream, but no caller may have it
)

var tenantKey = sync.OnceValue(func() *keystore.Key {
	k, err := keystore.Generate(2048)
	if err != nil {
		panic(err)
	}
	return k
})

// harness is a whole broker over real parts: the emulator behind an
// httptest server, the Pismo exchanger, the broker core, the policy and the
// gRPC server on bufconn, with the HTTP endpoints on TCP loopback.
type harness struct {
	t        testing.TB
	emu      *emulator.Emulator
	client   tokenbrokerv1.TokenBrokerServiceClient
	conn     *grpc.ClientConn
	httpURL  string
	logs     *testkit.Buffer
	upstream *httptest.Server
	stop     context.CancelFunc
	served   chan error
	addr     string // the gRPC address, when on TCP
	reg      *prometheus.Registry
	m        *server.Metrics

	mu      sync.Mutex
	secrets []string // every token and assertion seen: none may reach the logs
}

type harnessOptions struct {
	grace     time.Duration
	wrapper   func(http.Handler) http.Handler // wraps the emulator, e.g. to slow it
	tokens    server.TokenSource              // replaces the broker
	tcp       bool                            // serve gRPC on TCP loopback instead of bufconn
	logSink   io.Writer                       // where logs go instead of the checked buffer (benchmarks)
	callers   []policy.Caller                 // replaces the default callers
	pki       *testPKI                        // serve TLS (on TCP) with this PKI's server certificate and client CA
	auditor   server.Auditor
	clock     func() time.Time
	emu       emulator.Config                           // the emulator's, e.g. a short token lifetime
	broker    func(*broker.Config)                      // tunes the broker
	authn     func(*policy.Policy) server.Authenticator // wraps the callers' policy, e.g. to swap it
	upstreams func() []server.UpstreamState             // the breakers /readyz lists
	callLog   server.CallLog
}

func newHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, logs: &testkit.Buffer{}, served: make(chan error, 1)}
	key := tenantKey()

	emu, err := emulator.New(opts.emu)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{tenantA, tenantB} {
		if err := emu.Register(emulator.Tenant{ID: id, Issuer: "iss-" + id, Subject: "sub-" + id, Audience: "aud-" + id,
			Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
			t.Fatal(err)
		}
	}
	h.emu = emu
	// Record every assertion sent, to check none is logged.
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ Token string }
		if json.Unmarshal(body, &req) == nil && req.Token != "" {
			h.remember(req.Token)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		emu.ServeHTTP(w, r)
	})
	if opts.wrapper != nil {
		handler = opts.wrapper(handler)
	}
	h.upstream = httptest.NewServer(handler)
	t.Cleanup(h.upstream.Close)

	var log *slog.Logger
	if opts.logSink != nil { // production's level, not the tests' debug
		log = slog.New(slog.NewJSONHandler(opts.logSink, &slog.HandlerOptions{Level: slog.LevelInfo}))
	} else {
		log = slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg := prometheus.NewRegistry()
	tokens := opts.tokens
	if tokens == nil {
		tenants := upstream.Tenants{}
		for _, id := range []string{tenantA, tenantB} {
			u, _ := url.Parse(h.upstream.URL + emulator.TokenPath)
			x, err := upstream.NewPismo(upstream.PismoConfig{TenantID: id, TokenURL: u, Issuer: "iss-" + id, Subject: "sub-" + id,
				Audience: "aud-" + id, Signer: key.Signer()})
			if err != nil {
				t.Fatal(err)
			}
			tenants[id] = x
		}
		bc := broker.Config{Exchanger: tenants, Metrics: h.metrics(reg)}
		if opts.broker != nil {
			opts.broker(&bc)
		}
		b := broker.New(bc)
		t.Cleanup(b.Close) // after the server has stopped
		tokens = b
	}
	callers := opts.callers
	if callers == nil {
		callers = defaultCallers()
	}
	pol, err := policy.New(callers)
	if err != nil {
		t.Fatal(err)
	}
	metrics := h.metrics(reg)
	var authn server.Authenticator = pol
	if opts.authn != nil {
		authn = opts.authn(pol)
	}
	scfg := server.Config{Tokens: tokens, Callers: authn, Keys: keystore.NewDirectory(map[string][]*keystore.Key{tenantA: {key}, tenantB: {key}}), Logger: log,
		Registry: reg, ShutdownGrace: opts.grace, Auditor: opts.auditor, Metrics: metrics, Clock: opts.clock,
		Upstreams: opts.upstreams, CallLog: opts.callLog}
	if opts.pki != nil {
		scfg.TLS, scfg.ClientCAs = opts.pki.serverTLS(), opts.pki.caPool
		opts.tcp = true
	}
	srv, err := server.New(scfg)
	if err != nil {
		t.Fatal(err)
	}

	var lis net.Listener
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.(*bufconn.Listener).DialContext(ctx) })
	target := "passthrough:///bufnet"
	if opts.tcp {
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		dial, target = grpc.EmptyDialOption{}, lis.Addr().String()
		h.addr = target
	} else {
		lis = bufconn.Listen(1 << 20)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.httpURL = "http://" + httpLis.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	h.stop = stop
	go func() { h.served <- srv.Serve(ctx, lis, httpLis) }()

	transport := grpc.WithTransportCredentials(insecure.NewCredentials())
	if opts.pki != nil {
		transport = grpc.WithTransportCredentials(opts.pki.clientCreds(nil))
	}
	conn, err := grpc.NewClient(target, dial, transport)
	if err != nil {
		t.Fatal(err)
	}
	h.conn = conn
	h.client = tokenbrokerv1.NewTokenBrokerServiceClient(conn)
	t.Cleanup(func() {
		conn.Close()
		stop()
		<-h.served
		if opts.logSink == nil {
			h.checkLogs()
		}
	})
	return h
}

// metrics registers the server metrics on reg once per harness.
func (h *harness) metrics(reg *prometheus.Registry) *server.Metrics {
	if h.m == nil {
		m, err := server.NewMetrics(reg)
		if err != nil {
			h.t.Fatal(err)
		}
		h.m, h.reg = m, reg
	}
	return h.m
}

func defaultCallers() []policy.Caller {
	return []policy.Caller{
		{Name: "full", APIKeySHA256: sha256.Sum256([]byte(keyFull)), HasAPIKey: true, Allow: []policy.Grant{
			{Tenant: tenantA, Groups: []string{"pismo-v1:accounts:*", "pismo-v1:cards:r"}, AccountTokens: true, CustomClaims: []string{"channel"}},
		}},
		{Name: "reader", APIKeySHA256: sha256.Sum256([]byte(keyReader)), HasAPIKey: true, Allow: []policy.Grant{
			{Tenant: tenantA, Groups: []string{"pismo-v1:cards:r"}},
		}},
	}
}

func (h *harness) remember(secret string) {
	h.mu.Lock()
	h.secrets = append(h.secrets, secret)
	h.mu.Unlock()
}

// get calls GetAccessToken as the caller with key, remembering the token.
func (h *harness) get(ctx context.Context, key string, req *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	resp, err := h.client.GetAccessToken(ctx, req)
	if err == nil {
		h.remember(resp.GetAccessToken())
	}
	return resp, err
}

// checkLogs fails the test if any secret the harness saw, a caller key or
// the tenant's private key reached the logs.
func (h *harness) checkLogs() {
	logs := h.logs.String()
	if logs == "" {
		h.t.Error("no logs were captured: the check below would prove nothing")
	}
	h.mu.Lock()
	secrets := append([]string{keyFull, keyReader}, h.secrets...)
	h.mu.Unlock()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			h.t.Errorf("the logs contain a secret (fingerprint %s)", broker.Fingerprint(s))
		}
		// A JWT's signature alone is as telling as the whole.
		if parts := strings.Split(s, "."); len(parts) == 3 && len(parts[2]) > 20 && strings.Contains(logs, parts[2]) {
			h.t.Errorf("the logs contain a JWT signature (fingerprint %s)", broker.Fingerprint(s))
		}
	}
	for _, line := range strings.Split(string(tenantKey().PrivatePEM()), "\n") {
		if len(line) > 20 && !strings.HasPrefix(line, "-----") && strings.Contains(logs, line) {
			h.t.Error("the logs contain private key material")
			break
		}
	}
}
