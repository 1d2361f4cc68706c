package server_test

import (
	"context"
	"io"
	"testing"

	"google.golang.org/grpc/metadata"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// benchmarkCacheHit measures GetAccessToken on a warm key as production runs
// it: bearer authentication, validation, the allowlist, the broker, logging
// at info and metrics all on.
func benchmarkCacheHit(b *testing.B, tcp bool) {
	h := newHarness(b, harnessOptions{tcp: tcp, logSink: io.Discard})
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

func BenchmarkGetAccessTokenHitBufconn(b *testing.B) { benchmarkCacheHit(b, false) }
func BenchmarkGetAccessTokenHitTCP(b *testing.B)     { benchmarkCacheHit(b, true) }
