package audit_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// A sink on stdout, written without Run: Close drains the queue. The line's
// hash covers every byte before `,"hash"`.
func Example() {
	s, err := audit.Open(audit.Config{Path: "-", Stdout: os.Stdout})
	if err != nil {
		panic(err)
	}
	err = s.Record(context.Background(), audit.Record{
		Time:   time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Caller: "payments-api", Peer: "10.0.0.7:51234", Tenant: "tn-example",
		Groups: []string{"pismo-v1:accounts:rw"}, Decision: audit.Allowed,
		Cache: "hit", TokenFP: "9f86d081884c", Latency: 213 * time.Microsecond,
	})
	if err != nil {
		panic(err)
	}
	if err := s.Close(); err != nil {
		panic(err)
	}
	// Output:
	// {"time":"2026-01-02T03:04:05.000000006Z","caller":"payments-api","peer":"10.0.0.7:51234","tenant":"tn-example","groups":["pismo-v1:accounts:rw"],"decision":"allowed","cache":"hit","token_fp":"9f86d081884c","latency_ms":0.213,"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"ca8b4f11674cdf100bb4161bdf5644b6c351d2b377112fabc4629525042355f3"}
}

// Verify names the first line that breaks the chain.
func ExampleVerify() {
	var trail strings.Builder
	s, _ := audit.Open(audit.Config{Path: "-", Stdout: &trail})
	for _, d := range []audit.Decision{audit.Allowed, audit.Denied, audit.Allowed} {
		_ = s.Record(context.Background(), audit.Record{Time: time.Unix(0, 0), Caller: "c", Tenant: "t", Decision: d})
	}
	_ = s.Close()

	n, err := audit.Verify(strings.NewReader(trail.String()))
	fmt.Println(n, err)
	tampered := strings.Replace(trail.String(), `"denied"`, `"allowed"`, 1)
	n, err = audit.Verify(strings.NewReader(tampered))
	fmt.Println(n, err)
	// Output:
	// 3 <nil>
	// 1 line 2: hash does not match the line's content
}
