package audit_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// BenchmarkRecord is the cost of auditing a call, from every core at once,
// with Run writing to a file. When the queue fills the callers wait for the
// writer, so under sustained load this measures the writer's throughput.
func BenchmarkRecord(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	s, stop := startSink(b, audit.Config{Path: path})
	r := audit.Record{
		Time: time.Now(), Caller: "payments-api", Peer: "10.1.2.3:55555", Tenant: "tn-example", UID: "1234567890",
		Groups: []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"}, Decision: audit.Allowed, Cache: "hit",
		TokenFP: "9f86d081884c", Latency: 213 * time.Microsecond,
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Record(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	if err := stop(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if st := s.Stats(); st.Written != uint64(b.N) || st.Lost != 0 {
		b.Fatalf("Stats() = %+v after %d records", st, b.N)
	}
}
