// Command soak drives the real tokenbroker binary under load while its
// upstream misbehaves, and reports what happened.
//
// It starts an in-process Pismo emulator (short-lived tokens, so the broker
// refreshes during the run) behind a fault injector that follows a schedule
// derived from -seed and printed at the start: added latency, a 500 storm,
// 429 with Retry-After, TCP resets and a short full outage (listener closed)
// followed by recovery. It generates a key per tenant, registers the tenants
// with the emulator, writes a config with one bearer-key caller, starts
// `tokenbroker serve` as a subprocess and drives GetAccessToken over gRPC for
// -duration: mostly repeated keys (cache hits), some new keys (a fresh uid:
// misses) and a few rejected_token calls (compare-and-evict). It samples the
// server's RSS every second from /proc and reads /metrics at the end.
//
// The report gives calls and calls/s, errors by gRPC code with sample
// messages, calls and errors in each fault window, latency quantiles, the
// upstream's counts (token requests, exchanges, injected faults), the
// server's memory, log levels and exit status after SIGTERM, and the key
// /metrics lines, including any whose names mention refresh, breaker,
// stale, evict or retry.
//
// Run it with make (which builds bin/tokenbroker first):
//
//	make soak                      # SOAK_DURATION=5m by default
//	make soak SOAK_DURATION=1m
//
// or directly, after make build:
//
//	go run ./test/soak -duration 1m -binary bin/tokenbroker -seed 7 -faults 500,outage
//
// It reports and does not judge: call errors never fail it. It exits 1 only
// when the harness itself fails: the server does not start or serve, exits
// during the run, or does not exit with status 0 within its grace after
// SIGTERM. It needs Linux for the memory figures (/proc).
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// options are the command-line flags.
type options struct {
	binary        string
	duration      time.Duration
	workers       int
	conns         int
	tenants       int
	hotKeys       int
	missRate      float64
	rejectRate    float64
	callTimeout   time.Duration
	minTTL        time.Duration
	tokenLifetime time.Duration
	seed          uint64
	faults        string
	cycles        int
	latency       time.Duration
	progress      time.Duration
	logLevel      string
	serverLog     string
}

// The config's fixed timings.
const (
	shutdownGrace = 5 * time.Second  // the server's shutdown_grace
	cacheSkew     = 10 * time.Second // the server's default cache.skew
	defaultMinTTL = 60 * time.Second // the server's default min_ttl
)

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	flag.StringVar(&o.binary, "binary", "bin/tokenbroker", "the tokenbroker binary to run (make build)")
	flag.DurationVar(&o.duration, "duration", 5*time.Minute, "how long to drive load")
	flag.IntVar(&o.workers, "concurrency", 64, "concurrent callers, each one call at a time")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections the callers share")
	flag.IntVar(&o.tenants, "tenants", 4, "tenants, each with its own key")
	flag.IntVar(&o.hotKeys, "hot-keys", 16, "repeated requests (cache keys) per tenant")
	flag.Float64Var(&o.missRate, "miss-rate", 0.02, "fraction of calls for a new cache key (a fresh uid)")
	flag.Float64Var(&o.rejectRate, "reject-rate", 0.0005, "fraction of calls sending rejected_token (the last token of a repeated key, which evicts it)")
	flag.DurationVar(&o.callTimeout, "call-timeout", 10*time.Second, "each call's deadline")
	flag.DurationVar(&o.minTTL, "min-ttl", 0, "min_ttl sent with each call; 0 sends none (the server's default, 60s)")
	flag.DurationVar(&o.tokenLifetime, "token-lifetime", 120*time.Second, "the emulator's token lifetime; must exceed min_ttl + 10s of cache skew")
	flag.Uint64Var(&o.seed, "seed", 1, "seeds the fault schedule, the injector and the load")
	flag.StringVar(&o.faults, "faults", joinKinds(allFaults[:]), "faults to schedule, comma-separated, or none")
	flag.IntVar(&o.cycles, "cycles", 1, "how many times the fault sequence runs over the duration")
	flag.DurationVar(&o.latency, "latency", 2*time.Second, "the delay the latency fault adds")
	flag.DurationVar(&o.progress, "progress", 10*time.Second, "how often to print a progress line; 0 for never")
	flag.StringVar(&o.logLevel, "log-level", "info", "the server's --log-level: debug or info (the harness reads the info line \"serving\")")
	flag.StringVar(&o.serverLog, "server-log", "", "a file to copy the server's full log into (it logs every call)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	kinds, err := parseFaults(o.faults)
	if err == nil {
		err = o.check()
	}
	if err != nil {
		return fail(err)
	}
	if _, err := os.Stat(o.binary); err != nil {
		return fail(fmt.Errorf("%w (run make build, or make soak)", err))
	}
	return soak(o, kinds)
}

func (o *options) check() error {
	switch {
	case o.duration <= 0:
		return errors.New("-duration must be positive")
	case o.workers < 1, o.conns < 1, o.tenants < 1, o.hotKeys < 1, o.cycles < 1:
		return errors.New("-concurrency, -conns, -tenants, -hot-keys and -cycles must be at least 1")
	case o.missRate < 0 || o.rejectRate < 0 || o.missRate+o.rejectRate > 1:
		return errors.New("-miss-rate and -reject-rate must be fractions that add up to at most 1")
	case o.tokenLifetime < time.Second:
		return errors.New("-token-lifetime must be at least 1s")
	case o.minTTL < 0:
		return errors.New("-min-ttl must not be negative")
	case o.logLevel != "debug" && o.logLevel != "info":
		return errors.New("-log-level must be debug or info: the harness waits for the server's info line \"serving\"")
	}
	return nil
}

// fail reports a harness failure.
func fail(err error) int {
	fmt.Fprintf(os.Stderr, "soak: %v\n", err)
	return 1
}

func logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func soak(o options, kinds []faultKind) int {
	minTTL := o.minTTL
	if minTTL == 0 {
		minTTL = defaultMinTTL
	}
	if o.tokenLifetime <= minTTL+cacheSkew {
		logf("warning: tokens live %s, not more than min_ttl %s + skew %s: no token is ever served from cache", o.tokenLifetime, minTTL, cacheSkew)
	}
	dir, err := os.MkdirTemp("", "tokenbroker-soak-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)

	// The upstream: the emulator behind the fault injector.
	emu, err := emulator.New(emulator.Config{TokenLifetime: o.tokenLifetime})
	if err != nil {
		return fail(err)
	}
	sched := newSchedule(o.seed, o.duration, kinds, o.cycles, o.latency)
	inj := newInjector(emu, sched, o.seed)
	up := &upstream{handler: inj}
	if err := up.up(); err != nil {
		return fail(err)
	}
	defer up.down()
	tokenURL := (&url.URL{Scheme: "http", Host: up.Addr(), Path: emulator.TokenPath}).String()

	// Tenants, keys and the caller.
	tenants := make([]string, o.tenants)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tn-soak-%d", i+1)
		key, err := keystore.Generate(2048)
		if err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(dir, tenants[i]+".pem"), key.PrivatePEM(), 0o600); err != nil {
			return fail(err)
		}
		if err := emu.Register(emulator.Tenant{ID: tenants[i], Issuer: "soak-iss-" + tenants[i], Subject: "soak-sub-" + tenants[i],
			Audience: "soak-aud-" + tenants[i], Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
			return fail(err)
		}
	}
	callerKey := newCallerKey()
	cfgPath := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(cfgPath, []byte(brokerConfig(tenants, tokenURL, callerKey)), 0o600); err != nil {
		return fail(err)
	}

	fmt.Printf("soak: %s of load, %d callers over %d connections, %d tenants x %d repeated keys, miss rate %g, rejected_token rate %g\n",
		o.duration, o.workers, o.conns, o.tenants, o.hotKeys, o.missRate, o.rejectRate)
	fmt.Printf("upstream: emulator at %s, tokens live %s; fault schedule (seed %d, %s, times from the start of the load):\n",
		tokenURL, o.tokenLifetime, o.seed, orNone(joinKinds(kinds)))
	for _, w := range sched {
		fmt.Println("  " + w.String())
	}
	if len(sched) == 0 {
		fmt.Println("  none")
	}

	srv, err := startServer(o.binary, cfgPath, o.logLevel, o.serverLog, 30*time.Second)
	if err != nil {
		return fail(err)
	}
	defer func() { // whatever happens, leave no server behind
		select {
		case <-srv.exited:
		default:
			srv.cmd.Process.Kill()
			<-srv.exited
		}
	}()
	logf("server pid %d serving: gRPC %s, HTTP %s", srv.Pid(), srv.grpcAddr, srv.httpAddr)

	conns := make([]grpc.ClientConnInterface, o.conns)
	for i := range conns {
		cc, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fail(err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	var minTTLpb *durationpb.Duration
	if o.minTTL > 0 {
		minTTLpb = durationpb.New(o.minTTL)
	}
	specs := hotSpecs(o.seed, tenants, o.hotKeys)

	// The load, the memory sampler, the outages and the progress line.
	interrupt, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	mem := &memSampler{}
	go mem.run(sampleCtx, srv.Pid())

	start := time.Now()
	inj.begin(start)
	outageCtx, stopOutages := context.WithCancel(context.Background())
	outagesDone := make(chan struct{})
	go func() {
		defer close(outagesDone)
		up.followOutages(outageCtx, sched, start, logf)
	}()
	stop := make(chan struct{})
	var p progress
	loaded := make(chan *stats, 1)
	go func() {
		loaded <- runLoad(loadConfig{
			conns: conns, callerKey: callerKey, workers: o.workers, specs: specs, tenants: tenants,
			missRate: o.missRate, rejectRate: o.rejectRate, callTimeout: o.callTimeout, minTTL: minTTLpb,
			seed: o.seed, sched: sched,
		}, start, stop, &p)
	}()

	var tick <-chan time.Time
	if o.progress > 0 {
		t := time.NewTicker(o.progress)
		defer t.Stop()
		tick = t.C
	}
	end := time.NewTimer(o.duration)
	defer end.Stop()
	crashed, interrupted := false, false
wait:
	for {
		select {
		case <-end.C:
			break wait
		case <-interrupt.Done():
			logf("interrupted: stopping the load and reporting")
			interrupted = true
			break wait
		case <-srv.exited:
			logf("the server exited during the run: %s", srv.exitStatus())
			crashed = true
			break wait
		case <-tick:
			el := time.Since(start)
			fault := "none"
			if i := sched.at(el); i >= 0 {
				fault = string(sched[i].Kind)
			}
			logf("t=%-6s calls %d (%.0f/s), errors %d, server RSS %s, upstream: %d token requests, %d exchanges; fault now: %s",
				el.Round(time.Second), p.calls.Load(), float64(p.calls.Load())/el.Seconds(), p.errors.Load(),
				mib(mem.last()), inj.requests.Load(), emu.Exchanges(), fault)
		}
	}
	close(stop)
	stopOutages()
	<-outagesDone
	st := <-loaded
	elapsed := time.Since(start)
	stopSampling()

	// Measure the server before stopping it.
	var hwm int64
	var metrics string
	var metricsErr error
	if !crashed {
		mem.sample(srv.Pid())
		_, hwm, _ = readProcStatus(srv.Pid())
		metrics, metricsErr = fetchMetrics(srv.httpAddr)
	}
	took, killed := srv.stop(shutdownGrace + 10*time.Second)

	r := report{o: o, st: st, elapsed: elapsed, sched: sched, emu: emu, inj: inj, up: up, tenants: tenants,
		srv: srv, mem: mem, hwm: hwm, metrics: metrics, metricsErr: metricsErr, crashed: crashed,
		stopTook: took, killed: killed, interrupted: interrupted}
	r.print()

	switch {
	case crashed:
		return fail(errors.New("the server exited during the run"))
	case killed:
		return fail(fmt.Errorf("the server did not exit within %s of SIGTERM and was killed", shutdownGrace+10*time.Second))
	case !srv.state.Success():
		return fail(fmt.Errorf("the server exited with %s after SIGTERM", srv.exitStatus()))
	}
	return 0
}

// newCallerKey makes a caller key the way `tokenbroker hash-key` does.
func newCallerKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "tbk_" + base64.RawURLEncoding.EncodeToString(b)
}

// brokerConfig is the server's config: ephemeral loopback ports (the
// harness reads them from the serving log line), every tenant on the
// emulator, and one caller allowed every tenant, the pismo-v1 groups,
// account tokens and the "channel" custom claim.
func brokerConfig(tenants []string, tokenURL, callerKey string) string {
	sum := sha256.Sum256([]byte(callerKey))
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\nshutdown_grace: %s\ncache:\n  skew: %s\ntenants:\n", shutdownGrace, cacheSkew)
	for _, t := range tenants {
		fmt.Fprintf(&b, `  - id: %[1]s
    upstream:
      kind: pismo_oidc
      token_url: %[2]s
    issuer: soak-iss-%[1]s
    subject: soak-sub-%[1]s
    audience: soak-aud-%[1]s
    key_file: %[1]s.pem
`, t, tokenURL)
	}
	fmt.Fprintf(&b, "callers:\n  - name: soak\n    api_key_sha256: %s\n    allow:\n", hex.EncodeToString(sum[:]))
	for _, t := range tenants {
		fmt.Fprintf(&b, "      - tenant: %s\n        groups: [\"pismo-v1:*\"]\n        account_tokens: true\n        custom_claims: [channel]\n", t)
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "no faults"
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// report is everything the final report prints.
type report struct {
	o           options
	st          *stats
	elapsed     time.Duration
	sched       schedule
	emu         *emulator.Emulator
	inj         *injector
	up          *upstream
	tenants     []string
	srv         *server
	mem         *memSampler
	hwm         int64
	metrics     string
	metricsErr  error
	crashed     bool
	stopTook    time.Duration
	killed      bool
	interrupted bool
}

func (r *report) print() {
	st := r.st
	fmt.Println()
	fmt.Println("==== soak report ====")
	note := ""
	if r.interrupted {
		note = " (interrupted)"
	}
	fmt.Printf("load        %s%s, %d callers, seed %d\n", r.elapsed.Round(time.Millisecond), note, r.o.workers, r.o.seed)
	fmt.Printf("calls       %d (%.0f/s): %d ok, %d errors (%.2f%%)\n", st.calls, float64(st.calls)/r.elapsed.Seconds(),
		st.ok, st.calls-st.ok, pct(st.calls-st.ok, st.calls))
	kinds := make([]string, len(st.byKind))
	for i, n := range st.byKind {
		kinds[i] = fmt.Sprintf("%s %d (%d errors)", callKindNames[i], n, st.errsByKind[i])
	}
	fmt.Printf("  by kind   %s\n", strings.Join(kinds, ", "))
	fmt.Printf("  ok by cache status   HIT %d, MISS %d, SHARED %d\n", st.cache[tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT],
		st.cache[tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS], st.cache[tokenbrokerv1.CacheStatus_CACHE_STATUS_SHARED])
	fmt.Printf("latency     ok calls: p50 %s, p99 %s, max %s;  all calls: p50 %s, p99 %s, max %s\n",
		dur(st.okLat.quantile(0.5)), dur(st.okLat.quantile(0.99)), dur(st.okLat.max),
		dur(st.all.quantile(0.5)), dur(st.all.quantile(0.99)), dur(st.all.max))

	fmt.Println("errors by code")
	if len(st.byCode) == 0 {
		fmt.Println("  none")
	}
	for _, c := range slices.SortedFunc(maps.Keys(st.byCode), func(a, b codes.Code) int { return cmp.Compare(a.String(), b.String()) }) {
		fmt.Printf("  %-20s %d\n", c, st.byCode[c])
		for _, m := range st.messages[c] {
			fmt.Printf("      %q\n", m)
		}
	}

	fmt.Println("calls by fault window (by when the call began)")
	fmt.Printf("  %-32s %10s %10s %8s\n", "window", "calls", "errors", "error %")
	for i, w := range r.sched {
		fmt.Printf("  %-32s %10d %10d %7.2f%%\n", w.label(), st.windowCalls[i], st.windowErrs[i], pct(st.windowErrs[i], st.windowCalls[i]))
	}
	clean := len(r.sched)
	fmt.Printf("  %-32s %10d %10d %7.2f%%\n", "outside every window", st.windowCalls[clean], st.windowErrs[clean], pct(st.windowErrs[clean], st.windowCalls[clean]))

	fmt.Println("upstream")
	fmt.Printf("  token requests     %d (%d handed to the emulator)\n", r.inj.requests.Load(), r.inj.passed.Load())
	fmt.Printf("  exchanges          %d ok (", r.emu.Exchanges())
	for i, t := range r.tenants {
		if i > 0 {
			fmt.Print(", ")
		}
		fmt.Printf("%s %d", t, r.emu.ExchangesFor(t))
	}
	fmt.Printf("), %d refused by the emulator\n", r.emu.Refusals())
	var injected int64
	var parts []string
	for _, k := range allFaults {
		n := r.inj.Injected(k)
		injected += n
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	r.up.mu.Lock()
	outages, downtime := r.up.outages, r.up.downtime
	r.up.mu.Unlock()
	fmt.Printf("  injected faults    %d (%s); outages %d, listener down %s in all\n", injected, strings.Join(parts, ", "),
		outages, downtime.Round(time.Millisecond))

	fmt.Println("server")
	r.mem.mu.Lock()
	samples, peak, memErr := r.mem.samples, r.mem.peak, r.mem.err
	r.mem.mu.Unlock()
	if len(samples) > 0 {
		fmt.Printf("  RSS                first %s, last %s, peak sampled %s, VmHWM %s (%d samples)\n",
			mib(samples[0]), mib(samples[len(samples)-1]), mib(peak), mib(r.hwm), len(samples))
		fmt.Printf("  RSS over the run  ")
		for i := range 11 {
			fmt.Printf(" %.1f", float64(samples[i*(len(samples)-1)/10])/(1<<20))
		}
		fmt.Println("  MiB (every tenth)")
	}
	if memErr != nil {
		fmt.Printf("  RSS sampling       %v\n", memErr)
	}
	r.srv.log.mu.Lock()
	fmt.Printf("  log                %d lines, %s;", r.srv.log.lines, mib(r.srv.log.bytes))
	levels := make([]string, 0, len(r.srv.log.levels))
	for l, n := range r.srv.log.levels {
		levels = append(levels, fmt.Sprintf(" %s %d", l, n))
	}
	slices.Sort(levels)
	fmt.Println(strings.Join(levels, ","))
	problems := r.srv.log.problems
	for _, kind := range slices.SortedFunc(maps.Keys(problems), func(a, b string) int { return cmp.Compare(problems[b], problems[a]) }) {
		fmt.Printf("    %8d  %s\n", problems[kind], kind)
	}
	if r.srv.log.others > 0 {
		fmt.Printf("    %8d  other warnings and errors\n", r.srv.log.others)
	}
	r.srv.log.mu.Unlock()
	switch {
	case r.crashed:
		fmt.Printf("  exit               during the run: %s; last log lines:\n%s", r.srv.exitStatus(), r.srv.log.tailText())
	case r.killed:
		fmt.Printf("  exit               no exit within %s of SIGTERM: killed (%s)\n", r.stopTook.Round(time.Millisecond), r.srv.exitStatus())
	default:
		fmt.Printf("  exit               SIGTERM -> %s after %s\n", r.srv.exitStatus(), r.stopTook.Round(time.Millisecond))
	}

	fmt.Println("metrics (/metrics at the end of the load)")
	switch {
	case r.crashed:
		fmt.Println("  none: the server had exited")
	case r.metricsErr != nil:
		fmt.Printf("  %v\n", r.metricsErr)
	default:
		lines, missing := keyMetrics(r.metrics)
		for _, l := range lines {
			fmt.Println("  " + l)
		}
		if len(missing) > 0 {
			fmt.Printf("  (no metric name contains: %s)\n", strings.Join(missing, ", "))
		}
	}
}

func pct(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

func dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}
