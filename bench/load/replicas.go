package main

// The -replicas mode (make load-replicas): several brokers on one config
// sharing one Redis (cache.shared), against as many independent brokers (the
// same config without cache.shared), each set under the same load.
//
// It is a mode of this program rather than a program of its own because it
// is the same harness (ghz over loopback, brokers as processes, their logs
// drained, ghz's JSON report) with other servers around it: it reuses
// start, protoset, the report parsing and the broker's config.
//
// Per run and scenario (shared first, then independent): a fresh
// redis-server on a free loopback port without persistence (shared only),
// -replicas fresh `tokenbroker serve` processes on one config (cache.skew
// -skew, the seal key written 0600, the bearer caller key), all pointed at
// one `tokenbroker emulate` process that issues tokens of -lifetime
// (--token-lifetime) for the whole program. Each replica is warmed with all
// -keys uids in turn (with cache.shared the first replica exchanges, the
// others read Redis), then one ghz process per replica drives it for
// -duration, all at once, -concurrency split among them, each sending the
// -keys requests round-robin: ghz gives unary call i element i mod K of a
// JSON array in --data-file. The brokers' counters are then read from their
// /metrics: the emulator command exposes no count of its own (it logs only
// its address and serves no metrics), so the exchanges are the brokers'
// tokenbroker_exchanges_total, summed. Requests/s are summed over the ghz
// processes; p50 and p99 are computed over every successful call of all of
// them (the reports' details) with ghz's own rank rule.
//
// The requests ask for min_ttl 0: the API's default of 60 s is longer than
// such short tokens live.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// replicasDoc is printed below the figures: what the exchange figures mean.
const replicasDoc = `per key per lifetime = exchanges ÷ (keys × ceil(duration ÷ lifetime)). The exchanges are every upstream
exchange of the scenario's brokers (tokenbroker_exchanges_total, summed), the warm-up's first exchange per key
included. Refresh-ahead replaces a token once about a fifth of its usable life (lifetime − skew) is left, so a
key goes through 1 + duration ÷ (≈0.77 × (lifetime − skew)) tokens in a run, more than ceil(duration ÷ lifetime):
one broker alone scores that ratio here (≈1.7 for 60 s of 20-s tokens with a 1-s skew), not 1.
per key per cycle = exchanges ÷ (keys × cycles), cycles = 1 + refreshes ÷ (replicas × keys): the tokens each key
went through (the first, then one refresh started on every replica per token). ≈1 when one replica exchanges
for all (shared), = replicas when each exchanges alone (independent).`

var (
	servingHTTPRE = regexp.MustCompile(`"msg":"serving","grpc":"([^"]+)","http":"([^"]+)"`)
	emulatingRE   = regexp.MustCompile(`emulating Pismo's token endpoint at (http://\S+) for tenant`)
	redisReadyRE  = regexp.MustCompile(`Ready to accept connections`)
)

// checkReplicas checks the flags of the -replicas mode.
func (o options) checkReplicas() error {
	switch {
	case o.replicas < 1:
		return errors.New("-replicas must be positive")
	case o.keys < 1:
		return errors.New("-keys must be positive")
	case o.concurrency < o.replicas:
		return fmt.Errorf("-concurrency %d is less than -replicas %d: each replica's ghz needs a worker", o.concurrency, o.replicas)
	case o.lifetime < time.Second || o.lifetime%time.Second != 0:
		return fmt.Errorf("-lifetime %s is not a whole number of seconds (the emulator's unit)", o.lifetime)
	case o.skew < 0 || o.skew >= o.lifetime:
		return fmt.Errorf("-skew %s must be from 0 to less than -lifetime %s", o.skew, o.lifetime)
	}
	return nil
}

// replicaRig is what every scenario shares: the emulator, the files and
// ghz's inputs.
type replicaRig struct {
	o         options
	dir       string
	tokenURL  string
	keyFile   string
	sealFile  string
	callerKey string
	reqs      []*tokenbrokerv1.GetAccessTokenRequest
	setPath   string
	dataPath  string
	mdPath    string
}

// counts are the brokers' counters read from /metrics, summed over the
// replicas of a scenario.
type counts struct {
	exchanges, exchangeErrors, retries, refreshes, episodes float64
}

func (c counts) add(d counts) counts {
	return counts{c.exchanges + d.exchanges, c.exchangeErrors + d.exchangeErrors, c.retries + d.retries,
		c.refreshes + d.refreshes, c.episodes + d.episodes}
}

// scenarioResult is one scenario's load across its replicas and its counts.
type scenarioResult struct {
	result         // requests/s summed, p50 and p99 of every call of the three ghz processes
	warm   float64 // exchanges during the warm-up
	counts         // at the end of the run
}

// perLifetime is exchanges per key per token lifetime.
func (r scenarioResult) perLifetime(o options) float64 {
	lifetimes := math.Ceil(float64(o.duration) / float64(o.lifetime))
	return r.exchanges / (float64(o.keys) * lifetimes)
}

// perCycle is exchanges per key per token the key went through.
func (r scenarioResult) perCycle(o options) float64 {
	cycles := 1 + r.refreshes/float64(o.replicas*o.keys)
	return r.exchanges / (float64(o.keys) * cycles)
}

func runReplicas(o options) error {
	if _, err := exec.LookPath(o.redis); err != nil {
		return fmt.Errorf("-redis: %w (Debian: apt-get install redis-server)", err)
	}
	dir, done, err := workDir(o.keep, "tokenbroker-replicas-")
	if err != nil {
		return err
	}
	defer done()
	rig := &replicaRig{o: o, dir: dir, callerKey: newCallerKey()}

	// The tenant's key, the emulator that trusts it, and the seal key the
	// replicas share.
	key, err := keystore.Generate(2048)
	if err != nil {
		return err
	}
	rig.keyFile = filepath.Join(dir, tenant+".pem")
	if err := os.WriteFile(rig.keyFile, key.PrivatePEM(), 0o600); err != nil {
		return err
	}
	pubFile := filepath.Join(dir, tenant+".pub.pem")
	if err := os.WriteFile(pubFile, key.PublicPEM(), 0o644); err != nil {
		return err
	}
	seal := make([]byte, 32)
	rand.Read(seal)
	rig.sealFile = filepath.Join(dir, "cache-seal.key")
	if err := os.WriteFile(rig.sealFile, []byte(base64.StdEncoding.EncodeToString(seal)+"\n"), 0o600); err != nil {
		return err
	}
	emuLog, closeLog, err := rig.log("emulator.log")
	if err != nil {
		return err
	}
	defer closeLog()
	emu, err := start("emulator", emuLog, emulatingRE, o.broker, "emulate", "--listen", "127.0.0.1:0",
		"--tenant", tenant, "--issuer", "load-iss", "--subject", "load-sub", "--audience", "load-aud",
		"--public-key", pubFile, "--token-lifetime", o.lifetime.String())
	if err != nil {
		return err
	}
	defer emu.stop()
	rig.tokenURL = emu.addr

	// ghz's inputs: K requests, one per uid, which ghz sends round-robin
	// (call i gets element i mod K of the data file's array).
	set, err := protoset()
	if err != nil {
		return err
	}
	rig.setPath = filepath.Join(dir, "tokenbroker.protoset")
	if err := os.WriteFile(rig.setPath, set, 0o644); err != nil {
		return err
	}
	// Each asks for min_ttl 0: the API's default (60 s) is longer than
	// these short tokens live, and the refresh point is measured past it.
	type jsonReq struct {
		Tenant string   `json:"tenant"`
		UID    string   `json:"uid"`
		Groups []string `json:"groups"`
		MinTTL string   `json:"minTtl"`
	}
	data := make([]jsonReq, o.keys)
	for i := range data {
		r := request()
		r.Uid = fmt.Sprintf("12345%05d", i)
		r.MinTtl = durationpb.New(0)
		rig.reqs = append(rig.reqs, r)
		data[i] = jsonReq{Tenant: r.Tenant, UID: r.Uid, Groups: r.Groups, MinTTL: "0s"}
	}
	b, _ := json.Marshal(data)
	rig.dataPath = filepath.Join(dir, "requests.json")
	if err := os.WriteFile(rig.dataPath, b, 0o644); err != nil {
		return err
	}
	md, _ := json.Marshal(map[string]string{"authorization": "Bearer " + rig.callerKey})
	rig.mdPath = filepath.Join(dir, "metadata.json")
	if err := os.WriteFile(rig.mdPath, md, 0o600); err != nil {
		return err
	}

	split := splitConcurrency(o.concurrency, o.replicas)
	parts := make([]string, len(split))
	for i, c := range split {
		parts[i] = strconv.Itoa(c)
	}
	fmt.Printf("load -replicas: %d × %s serve (bearer auth, JSON logs at info, metrics), one emulator process; ghz %s\n",
		o.replicas, o.broker, ghzVersion(o.ghz))
	fmt.Printf("each scenario: fresh brokers, warmed with every key on every replica, then one ghz per replica at once for %s,\n", o.duration)
	fmt.Printf("concurrency %d in all (%s), %d connection(s) each, over %d keys round-robin; tokens of %s, cache.skew %s,\n",
		o.concurrency, strings.Join(parts, "+"), o.connections, o.keys, o.lifetime, o.skew)
	timeout := "default"
	if o.redisTimeout > 0 {
		timeout = o.redisTimeout.String()
	}
	fmt.Printf("refresh_fraction default (0.2), min_ttl 0; %d lifetime(s) per run\n", int(math.Ceil(float64(o.duration)/float64(o.lifetime))))
	fmt.Printf("shared: a fresh %s per run (no persistence), cache.shared.redis.timeout %s\n", redisVersion(o.redis), timeout)
	fmt.Printf("%d run(s), alternated shared, independent\n\n", o.runs)

	names := []string{"shared", "independent"}
	results := make([][]scenarioResult, len(names))
	failed := false
	fmt.Printf("%-4s %-12s %11s %9s %9s %9s %6s %10s %8s %10s %9s %9s %9s\n", "run", "scenario", "requests/s", "p50", "p99",
		"calls", "errors", "exchanges", "warm-up", "refreshes", "per key", "/lifetime", "/cycle")
	for i := range o.runs {
		for s, name := range names {
			r, err := rig.scenario(name, s == 0, i+1, split)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", name, i+1, err)
			}
			results[s] = append(results[s], r)
			fmt.Printf("%-4d %-12s %11.0f %9s %9s %9d %6d %10.0f %8.0f %10.0f %9.2f %9.2f %9.2f%s\n", i+1, name, r.rps, us(r.p50), us(r.p99),
				r.count, r.errors, r.exchanges, r.warm, r.refreshes, r.exchanges/float64(o.keys), r.perLifetime(o), r.perCycle(o), r.note)
			if notes := r.counts.notes(s == 0); notes != "" {
				fmt.Printf("     %s\n", notes)
			}
			failed = failed || r.errors > 0
		}
	}

	sh, in := results[0], results[1]
	fmt.Printf("\nratios, pair by pair: load shared ÷ independent; exchanges independent ÷ shared\n%-4s %11s %9s %9s %10s\n",
		"run", "requests/s", "p50", "p99", "exchanges")
	var rr, r50, r99, rx []float64
	for i := range sh {
		rr = append(rr, sh[i].rps/in[i].rps)
		r50 = append(r50, float64(sh[i].p50)/float64(in[i].p50))
		r99 = append(r99, float64(sh[i].p99)/float64(in[i].p99))
		rx = append(rx, in[i].exchanges/sh[i].exchanges)
		fmt.Printf("%-4d %11.3f %9.3f %9.3f %10.2f\n", i+1, rr[i], r50[i], r99[i], rx[i])
	}
	if o.runs > 1 {
		fmt.Printf("%-4s %11.3f %9.3f %9.3f %10.2f\n", "med.", median(rr), median(r50), median(r99), median(rx))
		fmt.Printf("\nmedians over %d runs\n%-12s %11s %9s %9s %10s %9s %9s\n", o.runs, "", "requests/s", "p50", "p99", "exchanges", "/lifetime", "/cycle")
		for s, name := range names {
			rs := results[s]
			f := func(g func(scenarioResult) float64) float64 {
				xs := make([]float64, len(rs))
				for i, r := range rs {
					xs[i] = g(r)
				}
				return median(xs)
			}
			fmt.Printf("%-12s %11.0f %9s %9s %10.0f %9.2f %9.2f\n", name, f(func(r scenarioResult) float64 { return r.rps }),
				us(time.Duration(f(func(r scenarioResult) float64 { return float64(r.p50) }))),
				us(time.Duration(f(func(r scenarioResult) float64 { return float64(r.p99) }))),
				f(func(r scenarioResult) float64 { return r.exchanges }),
				f(func(r scenarioResult) float64 { return r.perLifetime(o) }),
				f(func(r scenarioResult) float64 { return r.perCycle(o) }))
		}
	}
	fmt.Printf("\n%s\n", replicasDoc)
	if failed {
		return errors.New("some calls failed: the figures above count only the successful ones")
	}
	return nil
}

// notes names what would make a scenario's exchange count misleading:
// failed exchanges, retries, and (shared) Redis outage episodes.
func (c counts) notes(shared bool) string {
	var n []string
	if c.exchangeErrors > 0 {
		n = append(n, fmt.Sprintf("%.0f exchanges failed", c.exchangeErrors))
	}
	if c.retries > 0 {
		n = append(n, fmt.Sprintf("%.0f upstream retries", c.retries))
	}
	if shared && c.episodes > 0 {
		n = append(n, fmt.Sprintf("%.0f Redis outage episode(s) (tokenbroker_shared_cache_episodes_total): "+
			"a replica exchanges alone during one, so the shared figures are too high", c.episodes))
	}
	return strings.Join(n, "; ")
}

// scenario starts fresh brokers (and, shared, a fresh Redis), warms each
// with every key, drives them all at once with one ghz each and returns the
// figures.
func (rig *replicaRig) scenario(name string, shared bool, run int, split []int) (scenarioResult, error) {
	o := rig.o
	cache := fmt.Sprintf("cache:\n  skew: %s\n", o.skew)
	if shared {
		logw, closeLog, err := rig.log(fmt.Sprintf("%s-%d-redis.log", name, run))
		if err != nil {
			return scenarioResult{}, err
		}
		defer closeLog()
		redis, err := startRedis(o.redis, rig.dir, logw)
		if err != nil {
			return scenarioResult{}, err
		}
		defer redis.stop()
		timeout := ""
		if o.redisTimeout > 0 {
			timeout = ", timeout: " + o.redisTimeout.String()
		}
		cache += fmt.Sprintf("  shared:\n    redis: {addr: %q%s}\n    encryption_key_file: %s\n", redis.addr, timeout, rig.sealFile)
	}
	cfgPath := filepath.Join(rig.dir, name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(brokerConfig(rig.tokenURL, rig.keyFile, rig.callerKey)+cache), 0o600); err != nil {
		return scenarioResult{}, err
	}

	brokers := make([]*proc, o.replicas)
	var closeLogs []func()
	defer func() {
		for _, p := range brokers {
			if p != nil {
				p.stop()
			}
		}
		for _, c := range closeLogs { // after the brokers, so that they never write to a closed pipe
			c()
		}
	}()
	for i := range brokers {
		logw, closeLog, err := rig.log(fmt.Sprintf("%s-%d-broker%d.log", name, run, i+1))
		if err != nil {
			return scenarioResult{}, err
		}
		closeLogs = append(closeLogs, closeLog)
		if brokers[i], err = start(fmt.Sprintf("broker %d", i+1), logw, servingHTTPRE,
			o.broker, "serve", "--config", cfgPath, "--log-format", "json", "--log-level", "info", "--log-calls", o.logCalls); err != nil {
			return scenarioResult{}, err
		}
	}

	// Warm every replica with every key, one replica after the other: with
	// cache.shared the first exchanges and the others find the tokens in
	// Redis.
	for _, p := range brokers {
		if err := rig.warm(p.addr); err != nil {
			return scenarioResult{}, fmt.Errorf("%s: warm-up: %w", p.name, err)
		}
	}
	var res scenarioResult
	for _, p := range brokers {
		c, err := scrape(p.match[2])
		if err != nil {
			return scenarioResult{}, fmt.Errorf("%s: %w", p.name, err)
		}
		res.warm += c.exchanges
	}

	// The load: one ghz per replica, all at once.
	type out struct {
		r    result
		lats []time.Duration
		err  error
	}
	outs := make([]out, len(brokers))
	var wg sync.WaitGroup
	for i, p := range brokers {
		wg.Go(func() {
			report := filepath.Join(rig.dir, fmt.Sprintf("ghz-%s-%d-replica%d.json", name, run, i+1))
			outs[i].r, outs[i].lats, outs[i].err = rig.ghz(p.addr, split[i], report)
		})
	}
	wg.Wait()
	var lats []time.Duration
	var notes []string
	for i, p := range brokers {
		if outs[i].err != nil {
			return scenarioResult{}, fmt.Errorf("%s: %w", p.name, outs[i].err)
		}
		select {
		case <-p.exited:
			return scenarioResult{}, fmt.Errorf("%s exited during the run: %v", p.name, p.err)
		default:
		}
		r := outs[i].r
		res.rps += r.rps
		res.count += r.count
		res.errors += r.errors
		if r.note != "" {
			notes = append(notes, fmt.Sprintf("replica %d:%s", i+1, r.note))
		}
		lats = append(lats, outs[i].lats...)
		c, err := scrape(p.match[2])
		if err != nil {
			return scenarioResult{}, fmt.Errorf("%s: %w", p.name, err)
		}
		res.counts = res.counts.add(c)
	}
	if len(notes) > 0 {
		res.note = "  " + strings.Join(notes, "; ")
	}
	if len(lats) == 0 {
		return scenarioResult{}, errors.New("no successful calls")
	}
	slices.Sort(lats)
	res.p50, res.p99 = rank(lats, 50), rank(lats, 99)
	return res, nil
}

// rank is the p-th percentile of sorted latencies by ghz's own rule, so that
// the merged figures compare with a single ghz report's.
func rank(sorted []time.Duration, p int) time.Duration {
	ip := float64(p) / 100 * float64(len(sorted))
	i := int(ip)
	if ip == float64(i) {
		i--
	}
	return sorted[max(i, 0)]
}

// splitConcurrency divides total workers among n ghz processes, the first
// ones taking one more when it does not divide evenly.
func splitConcurrency(total, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = total / n
		if i < total%n {
			out[i]++
		}
	}
	return out
}

// warm asks addr for every key once, over one connection with a few calls in
// flight, and checks that a second call for the first key is a cache hit.
func (rig *replicaRig) warm(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := tokenbrokerv1.NewTokenBrokerServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+rig.callerKey)
	next := make(chan *tokenbrokerv1.GetAccessTokenRequest)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for r := range next {
				if _, err := client.GetAccessToken(ctx, r); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		defer close(next)
		for _, r := range rig.reqs {
			select {
			case next <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		cancel()
		return err
	}
	resp, err := client.GetAccessToken(ctx, rig.reqs[0])
	if err != nil || resp.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT {
		return fmt.Errorf("second call: status %v, err %v; want a cache hit", resp.GetCacheStatus(), err)
	}
	return nil
}

// ghz drives addr with the rig's requests round-robin at concurrency for
// the duration, and returns the report's figures and the latency of every
// successful call.
func (rig *replicaRig) ghz(addr string, concurrency int, out string) (result, []time.Duration, error) {
	if err := ghz(rig.o, addr, rig.setPath, rig.mdPath, [2]string{"--data-file", rig.dataPath}, concurrency, out); err != nil {
		return result{}, nil, err
	}
	f, err := os.Open(out)
	if err != nil {
		return result{}, nil, err
	}
	defer f.Close()
	if rig.o.keep == "" {
		defer os.Remove(out) // tens of megabytes
	}
	// The report with every call's latency (ghz keeps the first million).
	var rep struct {
		report
		Details []struct {
			Latency time.Duration `json:"latency"`
			Error   string        `json:"error"`
		} `json:"details"`
	}
	if err := json.NewDecoder(bufio.NewReaderSize(f, 1<<20)).Decode(&rep); err != nil {
		return result{}, nil, fmt.Errorf("ghz report: %w", err)
	}
	r, err := rep.result()
	if err != nil {
		return result{}, nil, err
	}
	lats := make([]time.Duration, 0, len(rep.Details))
	for _, d := range rep.Details {
		if d.Error == "" {
			lats = append(lats, d.Latency)
		}
	}
	return r, lats, nil
}

// scrape reads a broker's counters from its /metrics.
func scrape(httpAddr string) (counts, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return counts{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return counts{}, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return counts{}, fmt.Errorf("metrics: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return counts{}, fmt.Errorf("metrics: %w", err)
	}
	text := string(body)
	c := counts{
		exchanges:      sumMetric(text, "tokenbroker_exchanges_total"),
		exchangeErrors: sumMetric(text, "tokenbroker_exchange_errors_total"),
		retries:        sumMetric(text, "tokenbroker_upstream_retries_total"),
		refreshes:      sumMetric(text, "tokenbroker_refreshes_started_total"),
		episodes:       sumMetric(text, "tokenbroker_shared_cache_episodes_total"),
	}
	// A counter vector shows no sample before its first event (a replica
	// that never exchanged has no tokenbroker_exchanges_total): check
	// that this is the broker's page at all.
	if !strings.Contains(text, "tokenbroker_cache_lookups_total{") {
		return counts{}, errors.New("metrics: no tokenbroker_cache_lookups_total")
	}
	return c, nil
}

// sumMetric sums the samples of the metric name, whatever their labels, in
// Prometheus's text format.
func sumMetric(text, name string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// startRedis runs a redis-server on a free loopback port, without
// persistence, and returns it once it accepts connections. A port taken
// between choosing and binding is tried again with another.
func startRedis(binary, dir string, logw io.Writer) (*proc, error) {
	var errs []error
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(addr)
		p, err := start("redis", logw, redisReadyRE, binary, "--port", port, "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", "")
		if err == nil {
			p.addr = addr
			return p, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// redisVersion is what `redis-server --version` says, shortened.
func redisVersion(binary string) string {
	out, err := exec.Command(binary, "--version").Output()
	if err != nil {
		return "redis-server (version unknown)"
	}
	f := strings.Fields(string(out))
	for _, w := range f {
		if v, ok := strings.CutPrefix(w, "v="); ok {
			return "redis-server " + v
		}
	}
	return "redis-server"
}

// log is where a process's output goes: a file in the kept directory, or
// nowhere.
func (rig *replicaRig) log(name string) (io.Writer, func(), error) {
	if rig.o.keep == "" {
		return io.Discard, func() {}, nil
	}
	f, err := os.Create(filepath.Join(rig.dir, name))
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}
