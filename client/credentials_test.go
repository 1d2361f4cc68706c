package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/client"
)

// checkHealth calls the api's health service on conn.
func checkHealth(t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	_, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	return err
}

// dialAPI starts the API (a health service over TLS on loopback that
// records the authorization of every call) and a connection to it whose
// calls carry ts's tokens; both end with the test.
func dialAPI(t *testing.T, ts *client.TokenSource) (*api, *grpc.ClientConn) {
	t.Helper()
	api := serveAPI(true)
	t.Cleanup(api.stop)
	conn, err := grpc.NewClient(api.addr, grpc.WithTransportCredentials(api.creds),
		grpc.WithPerRPCCredentials(client.PerRPCCredentials{Source: ts}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return api, conn
}

func TestPerRPCCredentials(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	w := r.nextWatch()
	w.send(t, "A", r.clock.Now().Add(time.Hour))

	api, conn := dialAPI(t, ts)

	for range 2 {
		if err := checkHealth(t, conn); err != nil {
			t.Fatal(err)
		}
	}
	w.send(t, "B", r.clock.Now().Add(2*time.Hour))
	waitFor(ts, func() bool { return ts.Held() == "B" })
	if err := checkHealth(t, conn); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(api.auths(), " | "), "Bearer A | Bearer A | Bearer B"; got != want {
		t.Errorf("api saw authorization %q, want %q", got, want)
	}
	if n := r.rpcs.unary.Load(); n != 0 {
		t.Errorf("%d unary calls to the broker, want 0", n)
	}
}

func TestPerRPCCredentialsRequireTransportSecurity(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	if !(client.PerRPCCredentials{Source: ts}).RequireTransportSecurity() {
		t.Error("RequireTransportSecurity = false by default")
	}
	if (client.PerRPCCredentials{Source: ts, InsecureAllowPlaintext: true}).RequireTransportSecurity() {
		t.Error("RequireTransportSecurity = true with InsecureAllowPlaintext")
	}

	api := serveAPI(false)
	t.Cleanup(api.stop)
	if conn, err := grpc.NewClient(api.addr, grpc.WithTransportCredentials(api.creds),
		grpc.WithPerRPCCredentials(client.PerRPCCredentials{Source: ts})); err == nil {
		conn.Close()
		t.Fatal("grpc.NewClient accepted the credentials on a plaintext connection")
	}

	// A connection without privacy is refused by the credentials
	// themselves, before any token is asked for.
	ctx := credentials.NewContextWithRequestInfo(t.Context(), credentials.RequestInfo{
		AuthInfo: plainAuth{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}},
	})
	if md, err := (client.PerRPCCredentials{Source: ts}).GetRequestMetadata(ctx); err == nil {
		t.Fatalf("GetRequestMetadata on a plaintext connection = %v, want an error", md)
	}

	// Allowed, for loopback.
	r.nextWatch().send(t, "A", r.clock.Now().Add(time.Hour))
	conn, err := grpc.NewClient(api.addr, grpc.WithTransportCredentials(api.creds),
		grpc.WithPerRPCCredentials(client.PerRPCCredentials{Source: ts, InsecureAllowPlaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := checkHealth(t, conn); err != nil {
		t.Fatal(err)
	}
	if got := api.auths(); len(got) != 1 || got[0] != "Bearer A" {
		t.Errorf("api saw authorization %q, want [Bearer A]", got)
	}
}

// plainAuth is the AuthInfo of a connection without transport security.
type plainAuth struct{ credentials.CommonAuthInfo }

func (plainAuth) AuthType() string { return "plain" }

// A broker that refuses the token fails the call with its code, and the call
// never reaches the api.
func TestPerRPCCredentialsBrokerRefuses(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	r.nextWatch().finish(t, status.Error(codes.PermissionDenied, "tenant not allowed"))

	api, conn := dialAPI(t, ts)
	err := checkHealth(t, conn)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "client:") {
		t.Errorf("call error = %v, want PERMISSION_DENIED from the client", err)
	}
	if got := api.auths(); len(got) != 0 {
		t.Errorf("the api was called: %q", got)
	}
}

// The call's context bounds the wait for a token.
func TestPerRPCCredentialsCallContext(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	r.nextWatch() // never sends

	_, conn := dialAPI(t, ts)
	// Cancelled once the call is under way and the credentials are waiting
	// for the first token (a call cancelled before it starts never reaches
	// them): credentials that ignored the call's context would hang here.
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Canceled {
		t.Errorf("call error = %v, want CANCELED", err)
	}
}
