package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// BenchmarkCacheHit is the hot path alone: a warm key, looked up from every
// core at once. It must not allocate.
func BenchmarkCacheHit(b *testing.B) {
	// The system clock, as in production: the fake clock's mutex would be
	// the bottleneck.
	br := broker.New(broker.Config{Exchanger: broker.ExchangerFunc(func(context.Context, broker.Request) (broker.Token, error) {
		return broker.Token{AccessToken: "token", Expiry: time.Now().Add(time.Hour)}, nil
	})})
	r := broker.Request{Tenant: "tn-bench", UID: "1234567890", Groups: []string{"pismo-v1:cards:r", "pismo-v1:accounts:rw"}}
	opt := broker.Options{MinTTL: time.Minute}
	ctx := context.Background()
	if _, _, err := br.Token(ctx, r, opt); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, st, err := br.Token(ctx, r, opt); err != nil || st != broker.StatusHit {
				b.Fatalf("status %v err %v", st, err)
			}
		}
	})
}
