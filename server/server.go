package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// TokenSource is what the service needs of the broker core.
type TokenSource interface {
	Token(ctx context.Context, req broker.Request, opt broker.Options) (broker.Token, broker.Status, error)
}

// Authenticator names the caller that presented creds, or says why none.
type Authenticator interface {
	Authenticate(creds policy.Credentials) (policy.Identity, error)
}

// PublicKeys is what the JWKS endpoints serve; a [keystore.Directory]
// satisfies it.
type PublicKeys interface {
	// JWKS returns the JWK Set of tenant's published keys, or of every
	// tenant's when tenant is ""; ok is false for an unknown tenant.
	JWKS(tenant string) (jwks []byte, ok bool, err error)
}

// UpstreamState is an upstream endpoint's circuit breaker, as /readyz shows
// it.
type UpstreamState struct {
	Name    string    // the endpoint's host
	State   string    // closed, open or half_open
	RetryAt time.Time // when an open breaker lets the next attempt through
}

// DefaultShutdownGrace bounds how long in-flight calls may finish on stop.
const DefaultShutdownGrace = 15 * time.Second

// maxRequestBytes caps a request message: the largest valid
// GetAccessTokenRequest is about 30 KiB.
const maxRequestBytes = 64 << 10

// streamWorkersPerCPU sizes grpc-go's pool of call goroutines: enough idle
// workers for the calls in flight at once on a busy broker. With 16 calls
// in flight on 2 CPUs, one worker per CPU (grpc-go's own suggestion) was no
// faster than none, and 16 per CPU 4% faster. An idle worker costs its
// stack, a few KiB.
const streamWorkersPerCPU = 16

// Config is what [New] needs. Tokens and Callers are required.
type Config struct {
	Tokens  TokenSource
	Callers Authenticator
	// Upstreams reports each upstream endpoint's circuit breaker for
	// /readyz; nil reports none.
	Upstreams func() []UpstreamState
	// Keys are served at /.well-known/jwks.json (every tenant's) and
	// /tenants/{id}/jwks.json; nil serves an empty set and no tenants.
	Keys PublicKeys
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// CallLog says which calls get a "finished call" line: every call
	// (the zero value) or only those that failed or were let through in
	// audit mode (what `tokenbroker serve` chooses unless told otherwise).
	CallLog CallLog
	// CallLogger writes the "finished call" lines; nil means Logger.
	CallLogger *slog.Logger
	// Registry holds the metrics served at /metrics; nil makes a new one.
	// The gRPC server metrics are registered on it.
	Registry *prometheus.Registry
	// ShutdownGrace defaults to [DefaultShutdownGrace].
	ShutdownGrace time.Duration
	// TLS, when set, serves gRPC over TLS (1.2 at least) with its
	// certificates. Without it gRPC is plaintext, and loopback only.
	TLS *tls.Config
	// ClientCAs, with TLS, asks callers for certificates and verifies them
	// against these CAs once per connection (mTLS). Callers are named by
	// the certificate's URI SAN, else its CN.
	ClientCAs *x509.CertPool
	// Auditor, when set, receives one record per GetAccessToken decision.
	Auditor Auditor
	// Metrics receives the server's own counters (rate limiting, audit
	// mode); nil counts nothing.
	Metrics *Metrics
	// Clock defaults to time.Now; it judges certificates and rate limits.
	Clock func() time.Time
}

// Server serves the gRPC API and the HTTP endpoints.
type Server struct {
	cfg     Config
	log     *slog.Logger
	callLog *slog.Logger // the finished-call lines': Config.CallLogger, or log
	grpc    *grpc.Server
	health  *health.Server
	http    *http.Server
	ready   atomic.Bool
	creds   credentials.TransportCredentials // nil: plaintext
	limits  limiters
	metrics *Metrics
	now     func() time.Time
	svc     *service
}

// New wires the gRPC server, its interceptors and the HTTP handlers.
func New(cfg Config) (*Server, error) {
	if cfg.Tokens == nil || cfg.Callers == nil {
		return nil, errors.New("server: Config.Tokens and Config.Callers are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ClientCAs != nil && cfg.TLS == nil {
		return nil, errors.New("server: client CAs need TLS")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, callLog: cfg.CallLogger, health: health.NewServer(), metrics: cfg.Metrics, now: cfg.Clock}
	if s.callLog == nil {
		s.callLog = s.log
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRequestBytes),
		// By default grpc-go runs each call on a new goroutine, whose small
		// stack the broker's call path (interceptors, slog, the broker)
		// outgrows: runtime.morestack was a tenth of a cache hit's CPU.
		// Workers keep their grown stacks. A call goes to an idle worker
		// or, when none is idle, to a new goroutine as before, so the count
		// bounds nothing; it is sized for the calls in flight on a busy
		// broker (BENCHMARKS.md has the before and after).
		grpc.NumStreamWorkers(uint32(streamWorkersPerCPU * runtime.GOMAXPROCS(0))),
	}
	if cfg.TLS != nil {
		s.creds = newCallerCreds(cfg.TLS, cfg.ClientCAs, cfg.Clock)
		opts = append(opts, grpc.Creds(s.creds))
	}

	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	if err := cfg.Registry.Register(grpcMetrics); err != nil {
		return nil, fmt.Errorf("server: register gRPC metrics: %w", err)
	}
	recoverPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		// The panic value stays in the log: it may hold anything.
		s.log.ErrorContext(ctx, "panic in gRPC handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	// Health checks and reflection need no caller key; everything else does.
	needsAuth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName &&
			c.Service != "grpc.reflection.v1.ServerReflection" &&
			c.Service != "grpc.reflection.v1alpha.ServerReflection"
	})
	// The call layer (audit record and log line) sits outside everything
	// that can refuse a call, so that both see how the call ended.
	s.grpc = grpc.NewServer(append(opts,
		grpc.ChainUnaryInterceptor(
			recovery.UnaryServerInterceptor(recoverPanic),
			s.unaryCall,
			grpcMetrics.UnaryServerInterceptor(),
			selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(s.authenticate), needsAuth), // and the rate limit
		),
		grpc.ChainStreamInterceptor(
			recovery.StreamServerInterceptor(recoverPanic),
			s.streamCall,
			grpcMetrics.StreamServerInterceptor(),
			selector.StreamServerInterceptor(auth.StreamServerInterceptor(s.authenticate), needsAuth), // and the rate limit
		),
	)...)
	s.svc = &service{tokens: cfg.Tokens, callers: cfg.Callers, log: cfg.Logger, metrics: cfg.Metrics, auditor: cfg.Auditor,
		now: cfg.Clock, stopping: make(chan struct{})}
	tokenbrokerv1.RegisterTokenBrokerServiceServer(s.grpc, s.svc)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	grpcMetrics.InitializeMetrics(s.grpc)
	s.health.SetServingStatus(tokenbrokerv1.TokenBrokerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.health.Shutdown() // everything NOT_SERVING until Serve runs

	s.http = &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Serve serves gRPC on grpcLis and, when httpLis is not nil, HTTP on httpLis,
// until ctx is done. Then it stops taking calls, lets in-flight calls finish
// within the shutdown grace, cuts the rest, and returns nil. It returns an
// error at once if a listener fails. Without TLS, gRPC is refused on any TCP
// address that is not loopback: bearer keys never cross a network in clear.
func (s *Server) Serve(ctx context.Context, grpcLis, httpLis net.Listener) error {
	if a, ok := grpcLis.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() && s.creds == nil {
		return fmt.Errorf("server: refusing plaintext gRPC on %s: only loopback addresses may serve without TLS", a)
	}
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(grpcLis) }()
	if httpLis != nil {
		go func() {
			if err := s.http.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	s.health.Resume()
	s.ready.Store(true)
	s.log.InfoContext(ctx, "serving", "grpc", grpcLis.Addr().String(), "http", addrString(httpLis))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.stop()
	if serveErr != nil {
		return fmt.Errorf("server: %w", serveErr)
	}
	return nil
}

// stop drains: readiness and health go down first so balancers move away,
// then in-flight calls get the grace period.
func (s *Server) stop() {
	s.ready.Store(false)
	s.health.Shutdown()
	close(s.svc.stopping) // watchers end their streams, so GracefulStop need not wait for them
	grace := s.cfg.ShutdownGrace
	s.log.Info("shutting down", "grace", grace.String())
	cut := time.AfterFunc(grace, func() {
		s.log.Warn("shutdown grace ran out: cutting remaining calls")
		s.grpc.Stop()
	})
	s.grpc.GracefulStop()
	cut.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	s.log.Info("stopped")
}

func addrString(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}
