package main

import (
	"context"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// groupCatalog is what the load asks for; the caller is allowed "pismo-v1:*".
var groupCatalog = []string{
	"pismo-v1:accounts:rw", "pismo-v1:accounts:r", "pismo-v1:cards:r",
	"pismo-v1:cards:rw", "pismo-v1:transactions:r", "pismo-v1:statements:r",
}

// spec is one request the load repeats: a cache key.
type spec struct {
	tenant, uid, ext string
	groups           []string
	claims           map[string]string
	last             atomic.Pointer[string] // the last token it got, for rejected_token calls
}

func (s *spec) request(minTTL *durationpb.Duration) *tokenbrokerv1.GetAccessTokenRequest {
	return &tokenbrokerv1.GetAccessTokenRequest{
		Tenant: s.tenant, Uid: s.uid, ExternalAccountId: s.ext, Groups: s.groups,
		CustomClaims: s.claims, MinTtl: minTTL,
	}
}

// hotSpecs builds n repeated requests per tenant, deterministically: a
// quarter each with groups only, a uid, an external account id, and a custom
// claim.
func hotSpecs(seed uint64, tenants []string, n int) []*spec {
	rng := rand.New(rand.NewPCG(seed, 2))
	var specs []*spec
	for _, t := range tenants {
		for i := range n {
			s := &spec{tenant: t}
			first := rng.IntN(len(groupCatalog))
			for j := range 1 + rng.IntN(3) {
				s.groups = append(s.groups, groupCatalog[(first+j)%len(groupCatalog)])
			}
			switch i % 4 {
			case 1:
				s.uid = fmt.Sprintf("acct-%d", i)
			case 2:
				s.ext = fmt.Sprintf("ext-%d", i)
			case 3:
				s.claims = map[string]string{"channel": fmt.Sprintf("c%d", i)}
			}
			specs = append(specs, s)
		}
	}
	return specs
}

// loadConfig is what the workers do.
type loadConfig struct {
	conns       []grpc.ClientConnInterface
	callerKey   string
	workers     int
	specs       []*spec
	tenants     []string
	missRate    float64 // fraction of calls for a new cache key (a fresh uid)
	rejectRate  float64 // fraction of calls with rejected_token
	callTimeout time.Duration
	minTTL      *durationpb.Duration // nil: the server's default
	seed        uint64
	sched       schedule
}

// The kinds of call, for the report.
const (
	callHot = iota
	callNew
	callRejected
	callKinds
)

var callKindNames = [callKinds]string{"repeated key", "new key", "rejected_token"}

const keepMessages = 3 // distinct messages kept per code

// stats is what one worker saw; merged at the end.
type stats struct {
	calls, ok   int64
	byKind      [callKinds]int64
	errsByKind  [callKinds]int64
	byCode      map[codes.Code]int64
	messages    map[codes.Code][]string
	cache       map[tokenbrokerv1.CacheStatus]int64
	windowCalls []int64 // by schedule window; the last entry is the clean time
	windowErrs  []int64
	all, okLat  histogram
}

func newStats(windows int) *stats {
	return &stats{
		byCode: map[codes.Code]int64{}, messages: map[codes.Code][]string{},
		cache:       map[tokenbrokerv1.CacheStatus]int64{},
		windowCalls: make([]int64, windows+1), windowErrs: make([]int64, windows+1),
	}
}

func (s *stats) merge(o *stats) {
	s.calls += o.calls
	s.ok += o.ok
	for i := range s.byKind {
		s.byKind[i] += o.byKind[i]
		s.errsByKind[i] += o.errsByKind[i]
	}
	for c, n := range o.byCode {
		s.byCode[c] += n
	}
	for c, msgs := range o.messages {
		for _, m := range msgs {
			if len(s.messages[c]) < keepMessages && !slices.Contains(s.messages[c], m) {
				s.messages[c] = append(s.messages[c], m)
			}
		}
	}
	for c, n := range o.cache {
		s.cache[c] += n
	}
	for i := range s.windowCalls {
		s.windowCalls[i] += o.windowCalls[i]
		s.windowErrs[i] += o.windowErrs[i]
	}
	s.all.merge(&o.all)
	s.okLat.merge(&o.okLat)
}

// progress is what the periodic progress line reads while workers run.
type progress struct {
	calls, errors atomic.Int64
}

// runLoad runs the workers until stop closes, each finishing its call in
// flight, and returns their merged stats.
func runLoad(cfg loadConfig, start time.Time, stop <-chan struct{}, p *progress) *stats {
	var wg sync.WaitGroup
	results := make([]*stats, cfg.workers)
	newKeys := atomic.Int64{}
	for w := range cfg.workers {
		wg.Go(func() {
			results[w] = worker(cfg, w, start, stop, p, &newKeys)
		})
	}
	wg.Wait()
	total := newStats(len(cfg.sched))
	for _, r := range results {
		total.merge(r)
	}
	return total
}

func worker(cfg loadConfig, w int, start time.Time, stop <-chan struct{}, p *progress, newKeys *atomic.Int64) *stats {
	rng := rand.New(rand.NewPCG(cfg.seed, uint64(w)+100))
	client := tokenbrokerv1.NewTokenBrokerServiceClient(cfg.conns[w%len(cfg.conns)])
	base := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+cfg.callerKey)
	st := newStats(len(cfg.sched))
	for {
		select {
		case <-stop:
			return st
		default:
		}
		kind := callHot
		var req *tokenbrokerv1.GetAccessTokenRequest
		var hot *spec
		switch r := rng.Float64(); {
		case r < cfg.rejectRate:
			kind = callRejected
			s := cfg.specs[rng.IntN(len(cfg.specs))]
			req = s.request(cfg.minTTL)
			if tok := s.last.Load(); tok != nil {
				req.RejectedToken = *tok // compare-and-evict: a fresh exchange
			} else {
				req.RejectedToken = "soak-no-token-yet" // not held: answered from cache
			}
		case r < cfg.rejectRate+cfg.missRate:
			kind = callNew
			req = &tokenbrokerv1.GetAccessTokenRequest{
				Tenant: cfg.tenants[rng.IntN(len(cfg.tenants))],
				Uid:    fmt.Sprintf("new-%d", newKeys.Add(1)),
				Groups: []string{groupCatalog[rng.IntN(len(groupCatalog))]},
				MinTtl: cfg.minTTL,
			}
		default:
			hot = cfg.specs[rng.IntN(len(cfg.specs))]
			req = hot.request(cfg.minTTL)
		}

		began := time.Now()
		win := cfg.sched.at(began.Sub(start))
		if win < 0 {
			win = len(cfg.sched)
		}
		ctx, cancel := context.WithTimeout(base, cfg.callTimeout)
		resp, err := client.GetAccessToken(ctx, req)
		took := time.Since(began)
		cancel()

		st.calls++
		st.byKind[kind]++
		st.windowCalls[win]++
		st.all.add(took)
		p.calls.Add(1)
		if err != nil {
			st.windowErrs[win]++
			st.errsByKind[kind]++
			p.errors.Add(1)
			s := status.Convert(err)
			st.byCode[s.Code()]++
			if msgs := st.messages[s.Code()]; len(msgs) < keepMessages && !slices.Contains(msgs, s.Message()) {
				st.messages[s.Code()] = append(msgs, s.Message())
			}
			continue
		}
		st.ok++
		st.okLat.add(took)
		st.cache[resp.GetCacheStatus()]++
		if hot != nil {
			if old := hot.last.Load(); old == nil || *old != resp.GetAccessToken() {
				tok := resp.GetAccessToken()
				hot.last.Store(&tok)
			}
		}
	}
}

// histogram is a log-linear latency histogram: 32 buckets per power of two
// of nanoseconds, so a quantile is within about 3% of the truth.
type histogram struct {
	counts [64 << subBits]int64
	n      int64
	max    time.Duration
}

const subBits = 5

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)<<subBits + int(v>>shift) - 1<<subBits
}

// bucketTop is the largest value bucketOf maps to i.
func bucketTop(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	shift := i>>subBits - 1
	m := uint64(i&(1<<subBits-1) + 1<<subBits)
	return (m+1)<<shift - 1
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(uint64(max(d, 0)))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q <= 1), rounded up to its bucket's
// top, never above the maximum seen.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	target := int64(q*float64(h.n) + 0.999999)
	var seen int64
	for i, c := range h.counts {
		if seen += c; seen >= target {
			return min(time.Duration(bucketTop(i)), h.max)
		}
	}
	return h.max
}
