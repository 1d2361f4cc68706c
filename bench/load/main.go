// Command load drives the tokenbroker binary and the bare gRPC baseline
// (bench/bareserver) in turn with ghz, and reports each and their ratios.
//
// It sets up what production runs: a Pismo emulator (in this process, on
// loopback) for one tenant, a fresh key file, a config with one bearer-key
// caller allowed the tenant, and `tokenbroker serve` logging JSON at info to
// a pipe this program drains. It warms the cache with one call, then starts
// the bare server with a token as long as the broker's. Both servers stay up
// for the whole run; ghz drives one at a time, over loopback, with the same
// request (sent as binary), the same authorization metadata (which the bare
// server ignores), concurrency, connections and duration. Runs alternate,
// broker then bare, -runs times each.
//
// For each run it prints requests/s, p50 and p99 latency and the error
// count; for each pair the ratios broker ÷ bare; then the median of each.
// Every figure worth quoting is a ratio within one pair: the machine's other
// load moves both sides of a pair alike.
//
// Run it with make, which builds both servers and installs the pinned ghz:
//
//	make load                                  # DURATION=10s CONCURRENCY=16 RUNS=3
//	make load DURATION=30s CONCURRENCY=64 RUNS=5
//
// With -replicas N it measures something else (replicas.go, make
// load-replicas): N brokers sharing one Redis against N independent ones,
// each set driven by one ghz per replica at once over -keys distinct keys,
// with the upstream exchanges per key per token lifetime of each:
//
//	make load-replicas                         # 3 replicas, DURATION=60s, 20-s tokens, 100 keys
//	make load-replicas DURATION=8s REPLICAS_LIFETIME=4s
//
// It exits 1 if a server cannot be started or a call fails.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/keystore"
)

const (
	tenant = "tn-load"
	method = "tokenbroker.v1.TokenBrokerService.GetAccessToken"
)

// request is the call both servers get: the same as the Go benchmarks'.
func request() *tokenbrokerv1.GetAccessTokenRequest {
	return &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenant, Uid: "1234567890",
		Groups: []string{"pismo-v1:cards:r", "pismo-v1:accounts:rw"}}
}

type options struct {
	broker, bare, ghz string
	duration          time.Duration
	concurrency       int
	connections       int
	runs              int
	keep              string
	logCalls          string

	// The -replicas mode (replicas.go).
	replicas     int
	keys         int
	lifetime     time.Duration
	skew         time.Duration
	redis        string
	redisTimeout time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "bin/tokenbroker", "the tokenbroker binary")
	flag.StringVar(&o.bare, "bare", "bin/bareserver", "the bare server binary (bench/bareserver)")
	flag.StringVar(&o.ghz, "ghz", "bin/tools/ghz", "the ghz binary")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "the length of each run")
	flag.IntVar(&o.concurrency, "concurrency", 16, "ghz's concurrent workers")
	flag.IntVar(&o.connections, "connections", 1, "ghz's gRPC connections, shared by the workers")
	flag.IntVar(&o.runs, "runs", 3, "runs of each server, alternated")
	flag.StringVar(&o.logCalls, "log-calls", "failures", "the brokers' --log-calls: all or failures (serve's default)")
	flag.StringVar(&o.keep, "keep", "", "a directory to keep ghz's JSON reports and the broker's log in (default: a temporary one, removed)")
	flag.IntVar(&o.replicas, "replicas", 0, "if set, run the replicas scenario instead (see replicas.go): this many brokers on one config, sharing a Redis, against as many independent ones")
	flag.IntVar(&o.keys, "keys", 100, "-replicas: distinct keys (uids), sent round-robin by each ghz process")
	flag.DurationVar(&o.lifetime, "lifetime", 20*time.Second, "-replicas: the life of the emulator's tokens, whole seconds")
	flag.DurationVar(&o.skew, "skew", time.Second, "-replicas: the brokers' cache.skew, less than -lifetime")
	flag.StringVar(&o.redis, "redis", "redis-server", "-replicas: the redis-server binary")
	flag.DurationVar(&o.redisTimeout, "redis-timeout", 0, "-replicas: the brokers' cache.shared.redis.timeout (default: the config's, 50ms)")
	flag.Parse()
	if o.runs < 1 || o.concurrency < 1 || o.connections < 1 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "load: -runs, -concurrency, -connections and -duration must be positive")
		os.Exit(2)
	}
	run := run
	if o.replicas != 0 {
		if err := o.checkReplicas(); err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(2)
		}
		run = runReplicas
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// workDir is where a run keeps its files: -keep, or a temporary directory
// that done removes.
func workDir(keep, pattern string) (dir string, done func(), err error) {
	if keep != "" {
		return keep, func() {}, os.MkdirAll(keep, 0o755)
	}
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

func run(o options) error {
	dir, done, err := workDir(o.keep, "tokenbroker-load-")
	if err != nil {
		return err
	}
	defer done()

	// The upstream and the broker.
	key, err := keystore.Generate(2048)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, tenant+".pem")
	if err := os.WriteFile(keyFile, key.PrivatePEM(), 0o600); err != nil {
		return err
	}
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		return err
	}
	if err := emu.Register(emulator.Tenant{ID: tenant, Issuer: "load-iss", Subject: "load-sub", Audience: "load-aud",
		Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
		return err
	}
	emuLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	emuSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go emuSrv.Serve(emuLis)
	defer emuSrv.Close()
	tokenURL := (&url.URL{Scheme: "http", Host: emuLis.Addr().String(), Path: emulator.TokenPath}).String()

	callerKey := newCallerKey()
	cfgPath := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(cfgPath, []byte(brokerConfig(tokenURL, keyFile, callerKey)), 0o600); err != nil {
		return err
	}
	var brokerLog io.Writer = io.Discard
	if o.keep != "" {
		f, err := os.Create(filepath.Join(dir, "broker.log"))
		if err != nil {
			return err
		}
		defer f.Close()
		brokerLog = f
	}
	brokerProc, err := start("broker", brokerLog, regexp.MustCompile(`"msg":"serving","grpc":"([^"]+)"`),
		o.broker, "serve", "--config", cfgPath, "--log-format", "json", "--log-level", "info", "--log-calls", o.logCalls)
	if err != nil {
		return err
	}
	defer brokerProc.stop()

	// Warm the cache, and learn the token's size.
	first, err := call(brokerProc.addr, callerKey)
	if err != nil {
		return fmt.Errorf("broker: first call: %w", err)
	}
	again, err := call(brokerProc.addr, callerKey)
	if err != nil || again.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT {
		return fmt.Errorf("broker: second call: status %v, err %v; want a cache hit", again.GetCacheStatus(), err)
	}
	size := len(first.GetAccessToken())

	bareProc, err := start("bare", io.Discard, regexp.MustCompile(`^listening on (\S+)`),
		o.bare, "-listen", "127.0.0.1:0", "-token-bytes", strconv.Itoa(size))
	if err != nil {
		return err
	}
	defer bareProc.stop()
	if resp, err := call(bareProc.addr, callerKey); err != nil || len(resp.GetAccessToken()) != size {
		return fmt.Errorf("bare: first call: token of %d bytes, err %v; want %d bytes", len(resp.GetAccessToken()), err, size)
	}

	// ghz's inputs: the API's descriptors, the request and the metadata.
	set, err := protoset()
	if err != nil {
		return err
	}
	setPath := filepath.Join(dir, "tokenbroker.protoset")
	reqPath := filepath.Join(dir, "request.bin")
	reqBytes, err := proto.Marshal(request())
	if err != nil {
		return err
	}
	if err := os.WriteFile(setPath, set, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(reqPath, reqBytes, 0o644); err != nil {
		return err
	}
	md, _ := json.Marshal(map[string]string{"authorization": "Bearer " + callerKey})
	mdPath := filepath.Join(dir, "metadata.json")
	if err := os.WriteFile(mdPath, md, 0o600); err != nil {
		return err
	}

	fmt.Printf("load: ghz %s, %s per run, concurrency %d over %d connection(s), %d runs each, alternated broker, bare\n",
		ghzVersion(o.ghz), o.duration, o.concurrency, o.connections, o.runs)
	fmt.Printf("broker pid %d at %s (bearer auth, allowlist, JSON logs at info, metrics); bare pid %d at %s; token %d bytes; cache warm\n\n",
		brokerProc.cmd.Process.Pid, brokerProc.addr, bareProc.cmd.Process.Pid, bareProc.addr, size)

	servers := []*proc{brokerProc, bareProc}
	results := make([][]result, len(servers))
	fmt.Printf("%-4s %-7s %12s %10s %10s %10s %8s\n", "run", "server", "requests/s", "p50", "p99", "calls", "errors")
	failed := false
	for i := range o.runs {
		for s, p := range servers {
			out := filepath.Join(dir, fmt.Sprintf("ghz-%s-%d.json", p.name, i+1))
			r, err := runGhz(o, p.addr, setPath, reqPath, mdPath, out)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", p.name, i+1, err)
			}
			select {
			case <-p.exited:
				return fmt.Errorf("%s exited during run %d: %v", p.name, i+1, p.err)
			default:
			}
			results[s] = append(results[s], r)
			fmt.Printf("%-4d %-7s %12.0f %10s %10s %10d %8d%s\n", i+1, p.name, r.rps, us(r.p50), us(r.p99), r.count, r.errors, r.note)
			failed = failed || r.errors > 0
		}
	}

	b, bare := results[0], results[1]
	fmt.Printf("\nratios broker ÷ bare, pair by pair\n%-4s %12s %10s %10s\n", "run", "requests/s", "p50", "p99")
	var rr, r50, r99 []float64
	for i := range b {
		rr = append(rr, b[i].rps/bare[i].rps)
		r50 = append(r50, float64(b[i].p50)/float64(bare[i].p50))
		r99 = append(r99, float64(b[i].p99)/float64(bare[i].p99))
		fmt.Printf("%-4d %12.3f %10.3f %10.3f\n", i+1, rr[i], r50[i], r99[i])
	}
	fmt.Printf("\nmedians over %d runs\n%-7s %12s %10s %10s\n", o.runs, "", "requests/s", "p50", "p99")
	fmt.Printf("%-7s %12.0f %10s %10s\n", "broker", median(field(b, rpsOf)), us(time.Duration(median(field(b, p50Of)))), us(time.Duration(median(field(b, p99Of)))))
	fmt.Printf("%-7s %12.0f %10s %10s\n", "bare", median(field(bare, rpsOf)), us(time.Duration(median(field(bare, p50Of)))), us(time.Duration(median(field(bare, p99Of)))))
	fmt.Printf("%-7s %12.3f %10.3f %10.3f\n", "ratio", median(rr), median(r50), median(r99))
	fmt.Println("(ratio: the median of the pairs' ratios, not the ratio of the medians)")
	if failed {
		return errors.New("some calls failed: the figures above count only the successful ones")
	}
	return nil
}

// result is what the report takes from one ghz run.
type result struct {
	rps      float64
	p50, p99 time.Duration
	count    uint64
	errors   int
	note     string
}

func rpsOf(r result) float64 { return r.rps }
func p50Of(r result) float64 { return float64(r.p50) }
func p99Of(r result) float64 { return float64(r.p99) }

func field(rs []result, f func(result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

// ghz runs ghz once against addr for o.duration with concurrency workers,
// the requests from data (ghz's flag and a file: --binary-file for one
// message, --data-file for a JSON array sent round-robin), and writes its
// JSON report to out.
func ghz(o options, addr, setPath, mdPath string, data [2]string, concurrency int, out string) error {
	cmd := exec.Command(o.ghz,
		"--insecure",
		"--protoset", setPath,
		"--call", method,
		data[0], data[1],
		"--metadata-file", mdPath,
		"--disable-template-functions", "--disable-template-data",
		"--concurrency", strconv.Itoa(concurrency),
		"--connections", strconv.Itoa(o.connections),
		"--duration", o.duration.String(),
		"--duration-stop", "ignore", // calls cut short by the end are not errors
		"--format", "json",
		"--output", out,
		addr)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ghz: %w\n%s", err, stderr.Bytes())
	}
	return nil
}

// runGhz runs ghz once against addr and parses its JSON report.
func runGhz(o options, addr, setPath, reqPath, mdPath, out string) (result, error) {
	if err := ghz(o, addr, setPath, mdPath, [2]string{"--binary-file", reqPath}, o.concurrency, out); err != nil {
		return result{}, err
	}
	f, err := os.Open(out)
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	return parseReport(f)
}

// report is the part of ghz's JSON report used here; its per-call details
// are skipped. Durations are in nanoseconds.
type report struct {
	Count               uint64         `json:"count"`
	Rps                 float64        `json:"rps"`
	ErrorDist           map[string]int `json:"errorDistribution"`
	StatusCodeDist      map[string]int `json:"statusCodeDistribution"`
	LatencyDistribution []struct {
		Percentage int           `json:"percentage"`
		Latency    time.Duration `json:"latency"`
	} `json:"latencyDistribution"`
}

func parseReport(r io.Reader) (result, error) {
	var rep report
	if err := json.NewDecoder(bufio.NewReaderSize(r, 1<<20)).Decode(&rep); err != nil {
		return result{}, fmt.Errorf("ghz report: %w", err)
	}
	return rep.result()
}

// result is what the load report takes from rep.
func (rep *report) result() (result, error) {
	res := result{rps: rep.Rps, count: rep.Count}
	for _, l := range rep.LatencyDistribution {
		switch l.Percentage {
		case 50:
			res.p50 = l.Latency
		case 99:
			res.p99 = l.Latency
		}
	}
	if res.p50 == 0 || res.p99 == 0 || rep.Rps == 0 {
		return result{}, errors.New("ghz report: no requests/s or no p50 and p99")
	}
	for code, n := range rep.StatusCodeDist {
		if code != "OK" {
			res.errors += n
		}
	}
	if res.errors > 0 {
		var kinds []string
		for msg, n := range rep.ErrorDist {
			kinds = append(kinds, fmt.Sprintf("%d× %s", n, msg))
		}
		slices.Sort(kinds)
		res.note = "  errors: " + strings.Join(kinds, "; ")
	}
	return res, nil
}

// protoset is the serialised FileDescriptorSet of the API and its imports,
// dependencies first, taken from the generated code: ghz needs no .proto
// files or import paths.
func protoset() ([]byte, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(tokenbrokerv1.File_tokenbroker_v1_tokenbroker_proto)
	return proto.Marshal(set)
}

// call makes one GetAccessToken call to addr with the caller key.
func call(addr, callerKey string) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+callerKey)
	return tokenbrokerv1.NewTokenBrokerServiceClient(conn).GetAccessToken(ctx, request())
}

// proc is a server started as a subprocess.
type proc struct {
	name   string
	cmd    *exec.Cmd
	addr   string        // ready's first group, if it has one
	match  []string      // ready's match and groups
	exited chan struct{} // closed once the process has been waited for
	err    error
}

// start runs the server and waits until a line of its output (stderr for
// the broker's log, stdout for the bare server) matches ready, whose first
// group, if it has one, is the address it serves. All its output goes to
// rest.
func start(name string, rest io.Writer, ready *regexp.Regexp, binary string, args ...string) (*proc, error) {
	cmd := exec.Command(binary, args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close() // the child holds it now: pr reads EOF once the child exits
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	match := make(chan []string, 1)
	read := make(chan struct{}) // closed when the output up to the ready line is read
	var head bytes.Buffer       // that output, for errors
	go func() {
		defer pr.Close()
		br := bufio.NewReaderSize(pr, 64<<10)
		for {
			line, err := br.ReadBytes('\n')
			if m := ready.FindStringSubmatch(string(line)); m != nil {
				match <- m
				close(read)
				rest.Write(head.Bytes())
				rest.Write(line)
				io.Copy(rest, br)
				return
			}
			if head.Len() < 16<<10 {
				head.Write(line)
			}
			if err != nil {
				close(read)
				return
			}
		}
	}()
	ok := func(m []string) (*proc, error) {
		p.match = m
		if len(m) > 1 {
			p.addr = m[1]
		}
		return p, nil
	}
	select {
	case m := <-match:
		return ok(m)
	case <-read:
		select {
		case m := <-match: // both were ready
			return ok(m)
		default:
		}
		p.stop()
		return nil, fmt.Errorf("%s exited before serving (%v):\n%s", name, p.err, head.String())
	case <-time.After(30 * time.Second):
		p.stop()
		<-read
		return nil, fmt.Errorf("%s did not say it was serving within 30s:\n%s", name, head.String())
	}
}

// stop sends SIGTERM and waits up to 15s before killing.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// ghzVersion is the module version ghz was built from: `go install`
// leaves its own --version at "dev".
func ghzVersion(path string) string {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return "(version unknown)"
	}
	return info.Main.Version
}

// newCallerKey makes a caller key the way `tokenbroker hash-key` does.
func newCallerKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "tbk_" + base64.RawURLEncoding.EncodeToString(b)
}

// brokerConfig is the broker's config: ephemeral loopback ports (read from
// its serving log line), the tenant on the emulator, and one caller allowed
// the tenant's pismo-v1 groups and account tokens.
func brokerConfig(tokenURL, keyFile, callerKey string) string {
	sum := sha256.Sum256([]byte(callerKey))
	return fmt.Sprintf(`listen:
  grpc: 127.0.0.1:0
  http: 127.0.0.1:0
tenants:
  - id: %[1]s
    upstream:
      kind: pismo_oidc
      token_url: %[2]s
    issuer: load-iss
    subject: load-sub
    audience: load-aud
    key_file: %[3]s
callers:
  - name: load
    api_key_sha256: %[4]s
    allow:
      - tenant: %[1]s
        groups: ["pismo-v1:*"]
        account_tokens: true
`, tenant, tokenURL, keyFile, hex.EncodeToString(sum[:]))
}
