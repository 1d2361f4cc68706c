package measure_test

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

var (
	cold       = flag.Bool("cold", false, "run TestCold10k, which takes a while (make bench-cold)")
	coldKeys   = flag.Int("cold.keys", 10_000, "TestCold10k: distinct cold keys asked for at once")
	coldRounds = flag.Int("cold.rounds", 3, "TestCold10k: rounds of signing alone, the broker on the stub upstream, the broker on the emulator")
)

// BenchmarkCacheMissEmulator is a cache miss from every core at once, each
// call for a new key: the broker signs an assertion and exchanges it at the
// emulator (which checks it and signs the access token, on the same
// machine) through the Pismo exchanger and production's upstream guard.
func BenchmarkCacheMissEmulator(b *testing.B) {
	emu, u := newEmulator(b)
	x, signer := newExchanger(b, u)
	br := newBroker(b, x)
	var next atomic.Int64
	ctx := context.Background()
	exchanges, signatures := emu.Exchanges(), signer.n.Load()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := request(fmt.Sprintf("miss-%d", next.Add(1)))
			if _, st, err := br.Token(ctx, r, broker.Options{}); err != nil || st != broker.StatusMiss {
				b.Fatalf("status %v err %v", st, err)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(emu.Exchanges()-exchanges)/float64(b.N), "exchanges/op")
	b.ReportMetric(float64(signer.n.Load()-signatures)/float64(b.N), "signatures/op")
}

// BenchmarkColdStorm is 1,000 concurrent identical requests for a key not
// in the cache, released at once; one op is one storm, timed from the
// release to the last answer. The broker must make exactly one exchange
// (counted at the emulator) and one signature (counted at the signer) per
// storm: it fails otherwise.
func BenchmarkColdStorm(b *testing.B) {
	const callers = 1000
	emu, u := newEmulator(b)
	x, signer := newExchanger(b, u)
	br := newBroker(b, x)
	reqs := make([]broker.Request, callers)
	var shared, hits int
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer() // the goroutines start outside the timing
		r := request(fmt.Sprintf("storm-%d", i))
		for j := range reqs {
			reqs[j] = r
		}
		exchanges, signatures := emu.Exchanges(), signer.n.Load()
		b.StartTimer()
		_, statuses, errs, first := storm(br, reqs)
		b.StopTimer()
		if errs > 0 {
			b.Fatalf("storm %d: %d of %d calls failed, the first with %v", i, errs, callers, first)
		}
		if x, s := emu.Exchanges()-exchanges, signer.n.Load()-signatures; x != 1 || s != 1 || statuses[broker.StatusMiss] != 1 {
			b.Fatalf("storm %d: %d exchanges, %d signatures, %d misses; want 1 each", i, x, s, statuses[broker.StatusMiss])
		}
		shared += statuses[broker.StatusShared]
		hits += statuses[broker.StatusHit]
		b.StartTimer()
	}
	b.StopTimer()
	// Checked above to be exactly 1 in every storm.
	b.ReportMetric(float64(emu.Exchanges())/float64(b.N), "exchanges/storm")
	b.ReportMetric(float64(signer.n.Load())/float64(b.N), "signatures/storm")
	b.ReportMetric(float64(shared)/float64(b.N), "shared/storm")
	b.ReportMetric(float64(hits)/float64(b.N), "hits/storm")
}

// BenchmarkCacheMemory100k is the heap a cached token takes: HeapAlloc
// after a collection, before and after filling a cache with 100,000
// distinct keys through an exchanger that returns a distinct 1 KiB
// JWT-shaped token for each. The broker's bound is raised to 200,000 so
// that nothing is evicted. It reports the heap per entry, and what is left
// of it beyond the token's and the key's bytes; the map sub-benchmark is
// the same tokens in a bare map[string]string under the same keys, the
// floor any cache pays.
func BenchmarkCacheMemory100k(b *testing.B) {
	const (
		n          = 100_000
		tokenBytes = 1024
	)
	uids := make([]string, n)
	for i := range uids {
		uids[i] = fmt.Sprintf("u%09d", i)
	}
	keyLen := keyBytes(request(uids[0]))
	expiry := time.Now().Add(time.Hour)
	fake := broker.ExchangerFunc(func(_ context.Context, req broker.Request) (broker.Token, error) {
		return broker.Token{AccessToken: jwtShaped(tokenBytes, req.UID), TokenType: "Bearer", Expiry: expiry}, nil
	})
	report := func(b *testing.B, heap uint64) {
		b.ReportMetric(float64(heap)/n, "heap-B/token")
		b.ReportMetric((float64(heap)-n*float64(tokenBytes+keyLen))/n, "beyond-B/token")
	}

	b.Run("broker", func(b *testing.B) {
		var heap uint64
		for i := 0; i < b.N; i++ {
			before := heapAlloc()
			br := broker.New(broker.Config{Exchanger: fake, MaxEntries: 2 * n})
			fill(b, n, func(j int) {
				if _, _, err := br.Token(context.Background(), request(uids[j]), broker.Options{}); err != nil {
					b.Error(err)
				}
			})
			after := heapAlloc()
			if got := br.Len(); got != n {
				b.Fatalf("the cache holds %d entries, want %d", got, n)
			}
			heap += after - before
			br.Close()
		}
		report(b, heap/uint64(b.N))
	})

	b.Run("map", func(b *testing.B) {
		var heap uint64
		for i := 0; i < b.N; i++ {
			before := heapAlloc()
			m := map[string]string{}
			var mu sync.Mutex
			fill(b, n, func(j int) {
				key := string(make([]byte, keyLen-len(uids[j]))) + uids[j] // a distinct string of keyLen bytes
				tok := jwtShaped(tokenBytes, uids[j])
				mu.Lock()
				m[key] = tok
				mu.Unlock()
			})
			after := heapAlloc()
			if len(m) != n {
				b.Fatalf("the map holds %d entries, want %d", len(m), n)
			}
			runtime.KeepAlive(m)
			heap += after - before
		}
		report(b, heap/uint64(b.N))
	})
}

// fill calls f for 0 ≤ j < n from GOMAXPROCS goroutines.
func fill(b *testing.B, n int, f func(j int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := next.Add(1) - 1; j < int64(n); j = next.Add(1) - 1 {
				f(int(j))
			}
		})
	}
	wg.Wait()
}

// heapAlloc is the live heap after two collections.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestCold10k asks a cold broker for 10,000 distinct keys at once (-cold.keys),
// each from its own goroutine, as a restart under full traffic would, and
// compares the wall time with signing 10,000 Pismo assertions alone across
// GOMAXPROCS goroutines with the same key, measured in the same round. The
// broker runs the Pismo exchanger behind production's upstream guard (16
// exchanges in flight), once against a stub upstream that answers at once
// (the broker's own cost: the ratio to signing alone is the figure to
// judge) and once against the emulator (which also checks each assertion
// and signs each access token on this machine's cores, so expect about
// twice signing alone). Each round runs the three in turn. It checks that
// every key cost exactly one exchange and one signature.
//
// It measures and does not judge: it fails only if a call fails or the
// counts are wrong. Skipped unless -cold is given: make bench-cold.
func TestCold10k(t *testing.T) {
	if !*cold {
		t.Skip("a measurement: run with -cold (make bench-cold)")
	}
	n := *coldKeys
	emu, emuURL := newEmulator(t)

	// The stub answers with a token the emulator issued, so both upstreams
	// send tokens of the same size.
	x, _ := newExchanger(t, emuURL)
	tok, _, err := newBroker(t, x).Token(context.Background(), request("sample"), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stubURL, stubCalls := newStub(t, tok.AccessToken)

	t.Logf("GOMAXPROCS %d, %d distinct keys at once, token %d bytes, RSA-%d", runtime.GOMAXPROCS(0), n,
		len(tok.AccessToken), tenantKey().Public().(interface{ Size() int }).Size()*8)
	t.Logf("%-6s %12s %14s %8s %14s %8s", "round", "sign alone", "broker+stub", "÷sign", "broker+emu", "÷sign")
	var stubRatios, emuRatios []float64
	var signs, stubs, emus []time.Duration
	for round := 1; round <= *coldRounds; round++ {
		uids := make([]string, n)
		reqs := make([]broker.Request, n)
		for i := range uids {
			uids[i] = fmt.Sprintf("r%d-%06d", round, i)
			reqs[i] = request(uids[i])
		}
		sign := signAlone(t, tenantKey().Signer(), uids)

		run := func(name string, x broker.Exchanger, signer *countingSigner, upstreamCalls func() int64) time.Duration {
			br := newBroker(t, x)
			calls := upstreamCalls()
			wall, statuses, errs, first := storm(br, reqs)
			if errs > 0 {
				t.Fatalf("round %d, %s: %d of %d calls failed, the first with %v", round, name, errs, n, first)
			}
			if c, s := upstreamCalls()-calls, signer.n.Load(); c != int64(n) || s != int64(n) || statuses[broker.StatusMiss] != n {
				t.Fatalf("round %d, %s: %d upstream exchanges, %d signatures, %d misses; want %d each", round, name, c, s, statuses[broker.StatusMiss], n)
			}
			br.Close()
			return wall
		}
		xs, ss := newExchanger(t, stubURL)
		stub := run("stub", xs, ss, stubCalls.Load)
		xe, se := newExchanger(t, emuURL)
		emuWall := run("emulator", xe, se, emu.Exchanges)

		signs, stubs, emus = append(signs, sign), append(stubs, stub), append(emus, emuWall)
		stubRatios = append(stubRatios, float64(stub)/float64(sign))
		emuRatios = append(emuRatios, float64(emuWall)/float64(sign))
		t.Logf("%-6d %12s %14s %8.2f %14s %8.2f", round, ms(sign), ms(stub), stubRatios[round-1], ms(emuWall), emuRatios[round-1])
	}
	t.Logf("%-6s %12s %14s %8.2f %14s %8.2f", "median", ms(medianD(signs)), ms(medianD(stubs)), medianF(stubRatios), ms(medianD(emus)), medianF(emuRatios))
	t.Logf("exchanges: %d per round against each upstream, one per key; signatures: the same (checked)", n)
	t.Logf("(ratios are per round, the median is of the rounds' ratios; target for broker+stub ÷ sign alone: ≤ 1.5)")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianD(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(medianF(xs))
}
