package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
)

// faultKind is one way the upstream misbehaves.
type faultKind string

const (
	faultLatency faultKind = "latency" // a fraction of requests answered late
	fault500     faultKind = "500"     // a storm: most requests answered 500
	fault429     faultKind = "429"     // throttling: 429 with Retry-After
	faultReset   faultKind = "reset"   // the connection reset (RST) instead of an answer
	faultOutage  faultKind = "outage"  // the listener closed: connection refused, then recovery
)

// allFaults is every kind, in the order the -faults flag documents them.
var allFaults = [...]faultKind{faultLatency, fault500, fault429, faultReset, faultOutage}

// maxOutage bounds a full outage: the brief is a short one followed by
// recovery, whatever the run's length.
const maxOutage = 15 * time.Second

// parseFaults reads the -faults flag: a comma-separated list of kinds, or
// "none".
func parseFaults(s string) ([]faultKind, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	var kinds []faultKind
	for _, f := range strings.Split(s, ",") {
		k := faultKind(strings.TrimSpace(f))
		if !slices.Contains(allFaults[:], k) {
			return nil, fmt.Errorf("unknown fault %q (want a comma-separated list of %s, or none)", k, joinKinds(allFaults[:]))
		}
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	return kinds, nil
}

func joinKinds(kinds []faultKind) string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

// window is one fault, active from Start to End (offsets from the start of
// the load).
type window struct {
	Kind       faultKind
	Start, End time.Duration
	Fraction   float64       // of token requests affected; 1 for an outage
	Delay      time.Duration // latency: added to each affected request
	RetryAfter int           // 429: the Retry-After header, in seconds
}

func (w window) String() string {
	span := fmt.Sprintf("%6.1fs-%6.1fs", w.Start.Seconds(), w.End.Seconds())
	pct := int(w.Fraction*100 + 0.5)
	switch w.Kind {
	case faultLatency:
		return fmt.Sprintf("%s  latency  %s added to %d%% of token requests", span, w.Delay, pct)
	case fault500:
		return fmt.Sprintf("%s  500      storm: %d%% of token requests answered 500", span, pct)
	case fault429:
		return fmt.Sprintf("%s  429      %d%% of token requests answered 429, Retry-After: %d", span, pct, w.RetryAfter)
	case faultReset:
		return fmt.Sprintf("%s  reset    %d%% of token requests get a TCP reset", span, pct)
	case faultOutage:
		return fmt.Sprintf("%s  outage   listener closed (%s): connection refused, then back", span, w.End-w.Start)
	}
	return span + " " + string(w.Kind)
}

// label is a short name for the report's table.
func (w window) label() string {
	return fmt.Sprintf("%.1fs-%.1fs %s", w.Start.Seconds(), w.End.Seconds(), w.Kind)
}

// schedule is the run's faults, in time order, never overlapping.
type schedule []window

// newSchedule lays the faults out over a run of length total, as a pure
// function of seed: the first and last tenth of the run are clean (a
// baseline, and time to watch recovery); the rest is cut into one slot per
// fault and cycle, each fault in seed-shuffled order taking 30-60% of its
// slot at a seed-chosen offset, so clean gaps separate the windows.
func newSchedule(seed uint64, total time.Duration, kinds []faultKind, cycles int, delay time.Duration) schedule {
	if len(kinds) == 0 || cycles < 1 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	lead := total / 10
	slot := (total - 2*lead) / time.Duration(len(kinds)*cycles)
	round := func(f float64) float64 { return float64(int(f*100+0.5)) / 100 }
	var s schedule
	for c := range cycles {
		order := slices.Clone(kinds)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for i, k := range order {
			slotStart := lead + slot*time.Duration(c*len(kinds)+i)
			length := (slot * time.Duration(30+rng.IntN(31)) / 100).Truncate(100 * time.Millisecond)
			if k == faultOutage {
				length = min(length, maxOutage)
			}
			offset := time.Duration(rng.Int64N(int64(slot-length) + 1)).Truncate(100 * time.Millisecond)
			w := window{Kind: k, Start: slotStart + offset, End: slotStart + offset + length}
			switch k {
			case faultLatency:
				w.Fraction, w.Delay = round(0.2+0.3*rng.Float64()), delay
			case fault500:
				w.Fraction = round(0.8 + 0.15*rng.Float64())
			case fault429:
				w.Fraction, w.RetryAfter = round(0.5+0.4*rng.Float64()), 1+rng.IntN(5)
			case faultReset:
				w.Fraction = round(0.3 + 0.4*rng.Float64())
			case faultOutage:
				w.Fraction = 1
			}
			s = append(s, w)
		}
	}
	return s
}

// at returns the index of the window active at offset t, or -1.
func (s schedule) at(t time.Duration) int {
	for i, w := range s {
		if t >= w.Start && t < w.End {
			return i
		}
	}
	return -1
}

// injector is the fault-injecting http.Handler in front of the emulator. It
// applies the schedule to POSTs to the token path once begin has been
// called; everything else passes through untouched.
type injector struct {
	next  http.Handler
	sched schedule
	start atomic.Int64 // UnixNano of the load's start; 0 before

	mu  sync.Mutex
	rng *rand.Rand

	requests atomic.Int64                 // token requests seen
	passed   atomic.Int64                 // token requests handed to the emulator
	injected [len(allFaults)]atomic.Int64 // by kind, in allFaults' order
}

func newInjector(next http.Handler, sched schedule, seed uint64) *injector {
	return &injector{next: next, sched: sched, rng: rand.New(rand.NewPCG(seed, 1))}
}

// begin starts the schedule's clock.
func (f *injector) begin(t time.Time) { f.start.Store(t.UnixNano()) }

// active returns the window in force now, if any.
func (f *injector) active() (window, bool) {
	start := f.start.Load()
	if start == 0 {
		return window{}, false
	}
	i := f.sched.at(time.Duration(time.Now().UnixNano() - start))
	if i < 0 {
		return window{}, false
	}
	return f.sched[i], true
}

func (f *injector) roll(p float64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < p
}

func (f *injector) count(k faultKind) {
	f.injected[slices.Index(allFaults[:], k)].Add(1)
}

// Injected returns how many token requests each fault hit.
func (f *injector) Injected(k faultKind) int64 {
	return f.injected[slices.Index(allFaults[:], k)].Load()
}

func (f *injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != emulator.TokenPath || r.Method != http.MethodPost {
		f.next.ServeHTTP(w, r)
		return
	}
	f.requests.Add(1)
	if win, ok := f.active(); ok && f.roll(win.Fraction) {
		f.count(win.Kind)
		switch win.Kind {
		case faultLatency:
			t := time.NewTimer(win.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		case fault500:
			oauthError(w, http.StatusInternalServerError, "server_error")
			return
		case fault429:
			w.Header().Set("Retry-After", strconv.Itoa(win.RetryAfter))
			oauthError(w, http.StatusTooManyRequests, "temporarily_unavailable")
			return
		case faultReset, faultOutage: // outage: a request that slipped in as the listener closed
			reset(w)
			return
		}
	}
	f.passed.Add(1)
	f.next.ServeHTTP(w, r)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":"injected by the soak harness"}`, code)
}

// reset takes the connection over and closes it with SO_LINGER 0, so the
// client sees a TCP reset rather than an orderly close.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		oauthError(w, http.StatusBadGateway, "server_error")
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

// upstream serves a handler on a loopback address that survives outages:
// down closes the listener and every connection, up listens again on the
// same address.
type upstream struct {
	handler http.Handler

	mu       sync.Mutex
	addr     string
	srv      *http.Server
	outages  int
	downtime time.Duration
}

// up starts serving, on a free port the first time and on the same address
// afterwards. The port is ours alone on loopback, but a fresh listen may
// briefly fail, so it retries for a few seconds.
func (u *upstream) up() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.srv != nil {
		return nil
	}
	addr := u.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for range 50 {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("upstream: listen %s: %w", addr, err)
	}
	u.addr = lis.Addr().String()
	u.srv = &http.Server{Handler: u.handler, ReadHeaderTimeout: 5 * time.Second}
	go u.srv.Serve(lis)
	return nil
}

// down closes the listener and every open connection.
func (u *upstream) down() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.srv != nil {
		u.srv.Close()
		u.srv = nil
	}
}

// Addr is the address the upstream listens on.
func (u *upstream) Addr() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.addr
}

// followOutages takes the upstream down and up again per the schedule's
// outage windows, measured from start, until ctx ends; then it leaves the
// upstream up.
func (u *upstream) followOutages(ctx context.Context, sched schedule, start time.Time, logf func(string, ...any)) {
	defer u.up()
	for _, w := range sched {
		if w.Kind != faultOutage {
			continue
		}
		if !sleepUntil(ctx, start.Add(w.Start)) {
			return
		}
		u.down()
		logf("outage: upstream listener closed")
		down := time.Now()
		ok := sleepUntil(ctx, start.Add(w.End))
		if err := u.up(); err != nil {
			logf("outage: %v", err)
		} else {
			logf("outage over: upstream listening again on %s", u.Addr())
		}
		u.mu.Lock()
		u.outages++
		u.downtime += time.Since(down)
		u.mu.Unlock()
		if !ok {
			return
		}
	}
}

// sleepUntil waits until t, or reports false if ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
