package server_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/server"
)

// benchmarkCacheHit measures GetAccessToken on a warm key as production runs
// it: bearer authentication, validation, the allowlist, the broker, logging
// at info (failures only, or every call) and metrics all on.
func benchmarkCacheHit(b *testing.B, tcp bool, calls server.CallLog) {
	h := newHarness(b, harnessOptions{tcp: tcp, logSink: io.Discard, callLog: calls})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keyFull)
	req := &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA, Uid: "1234567890", Groups: []string{"pismo-v1:cards:r", "pismo-v1:accounts:rw"}}
	if _, err := h.client.GetAccessToken(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := h.client.GetAccessToken(ctx, req)
			if err != nil || resp.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT {
				b.Fatalf("status %v err %v", resp.GetCacheStatus(), err)
			}
		}
	})
}

// As serve runs by default (--log-calls failures): no line for a call that
// succeeds.
func BenchmarkGetAccessTokenHitBufconn(b *testing.B) {
	benchmarkCacheHit(b, false, server.CallLogFailures)
}
func BenchmarkGetAccessTokenHitTCP(b *testing.B) { benchmarkCacheHit(b, true, server.CallLogFailures) }

// The same with --log-calls all: a line per call.
func BenchmarkGetAccessTokenHitLogAllBufconn(b *testing.B) {
	benchmarkCacheHit(b, false, server.CallLogAll)
}
func BenchmarkGetAccessTokenHitLogAllTCP(b *testing.B) { benchmarkCacheHit(b, true, server.CallLogAll) }

// BenchmarkGetAccessTokenMissBufconn is a cache miss through the whole
// server, each call for a new uid: the broker signs an assertion and
// exchanges it at the emulator, which checks it and signs the access token
// on the same machine.
func BenchmarkGetAccessTokenMissBufconn(b *testing.B) {
	h := newHarness(b, harnessOptions{logSink: io.Discard})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keyFull)
	var next atomic.Int64
	exchanges := h.emu.Exchanges()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA, Uid: "u" + strconv.FormatInt(next.Add(1), 10),
				Groups: []string{"pismo-v1:cards:r", "pismo-v1:accounts:rw"}}
			resp, err := h.client.GetAccessToken(ctx, req)
			if err != nil || resp.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS {
				b.Fatalf("status %v err %v", resp.GetCacheStatus(), err)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(h.emu.Exchanges()-exchanges)/float64(b.N), "exchanges/op")
}

// bare is the baseline: the same service with no interceptors, no auth and
// no broker, answering a constant token of the same size.
type bare struct {
	tokenbrokerv1.UnimplementedTokenBrokerServiceServer
	resp *tokenbrokerv1.GetAccessTokenResponse
}

func (b *bare) GetAccessToken(context.Context, *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	return b.resp, nil
}

// benchmarkBare measures a bare gRPC call over the same transport, with the
// same request and a response as large as the broker's.
func benchmarkBare(b *testing.B, tcp bool) {
	h := newHarness(b, harnessOptions{logSink: io.Discard})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keyFull)
	req := &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA, Uid: "1234567890", Groups: []string{"pismo-v1:cards:r", "pismo-v1:accounts:rw"}}
	real, err := h.client.GetAccessToken(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	real.CacheStatus = tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT

	srv := grpc.NewServer()
	tokenbrokerv1.RegisterTokenBrokerServiceServer(srv, &bare{resp: real})
	var lis net.Listener
	var conn *grpc.ClientConn
	if tcp {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		conn, err = grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }))
	}
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	defer conn.Close()
	client := tokenbrokerv1.NewTokenBrokerServiceClient(conn)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.GetAccessToken(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkBareGRPCBufconn(b *testing.B) { benchmarkBare(b, false) }
func BenchmarkBareGRPCTCP(b *testing.B)     { benchmarkBare(b, true) }
