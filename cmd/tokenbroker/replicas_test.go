package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// execEnv makes the test binary act as tokenbroker itself, so that a test
// can run a replica as a process and kill it.
const execEnv = "TOKENBROKER_TEST_EXEC"

func TestMain(m *testing.M) {
	silenceRedis() // as main does
	if os.Getenv(execEnv) == "1" {
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// stallable is the upstream in front of the emulator: it counts the
// requests that arrive and can hold them until released.
type stallable struct {
	emu       *emulator.Emulator
	arrived   atomic.Int64
	abandoned atomic.Int64 // held requests whose client went away
	mu        sync.Mutex
	gate      chan struct{} // nil: pass through
}

func (s *stallable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.arrived.Add(1)
	// Read the body first: only then does the server watch the connection
	// and cancel the request's context when the client goes away.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			s.abandoned.Add(1)
			return
		}
	}
	s.emu.ServeHTTP(w, r)
}

// hold makes the requests that follow wait; the returned func lets them
// go, and so does the end of the test, so that a failed test does not hang
// closing the upstream.
func (s *stallable) hold(t *testing.T) (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			close(gate)
		})
	}
	t.Cleanup(release)
	return release
}

// replicaRig is one emulator, one Redis and the config every replica of a
// broker shares.
type replicaRig struct {
	t         *testing.T
	redis     *redistest.Server
	up        *stallable
	cfgPath   string
	callerKey string
}

const (
	rigTenant = "tn-replicated-secret"
	rigGroup  = "pismo-v1:group-secret:rw"
)

// newReplicaRig writes the replicas' config. Its Redis timeout is 1s, not
// the default 50ms: under a loaded test run (-race, every package at once) a
// round trip can take longer, and a replica that counts that as an outage
// exchanges alone, which these tests would read as sharing that failed.
func newReplicaRig(t *testing.T) *replicaRig {
	t.Helper()
	r := &replicaRig{t: t, redis: redistest.Start(t)}
	dir := t.TempDir()
	key, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "tenant.pem")
	if err := keystore.WriteFileExclusive(keyFile, key.PrivatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	sealKey := make([]byte, 32)
	rand.Read(sealKey)
	sealFile := filepath.Join(dir, "cache-seal.key")
	if err := os.WriteFile(sealFile, []byte(base64.StdEncoding.EncodeToString(sealKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Register(emulator.Tenant{ID: rigTenant, Issuer: "iss", Subject: "sub", Audience: "aud",
		Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
		t.Fatal(err)
	}
	r.up = &stallable{emu: emu}
	srv := httptest.NewServer(r.up)
	t.Cleanup(srv.Close)

	r.callerKey, _ = newCallerKey()
	sum := sha256.Sum256([]byte(r.callerKey))
	cfg := fmt.Sprintf(`listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
cache:
  shared:
    redis: {addr: %q, timeout: 1s}
    encryption_key_file: %s
tenants:
  - id: %s
    upstream: {kind: pismo_oidc, token_url: %q}
    issuer: iss
    subject: sub
    audience: aud
    key_file: %s
callers:
  - name: svc
    api_key_sha256: %s
    allow:
      - tenant: %s
        groups: ["pismo-v1:*"]
        account_tokens: true
`, r.redis.Addr(), sealFile, rigTenant, srv.URL+emulator.TokenPath, keyFile, hex.EncodeToString(sum[:]), rigTenant)
	r.cfgPath = filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCmd(t, "", "check-config", "--config", r.cfgPath); code != 0 {
		t.Fatalf("check-config: exit %d\n%s%s", code, stdout, stderr)
	}
	return r
}

// replica is one running broker and a client for it.
type replica struct {
	client tokenbrokerv1.TokenBrokerServiceClient
	http   string
	logs   func() string
}

var servingRE = regexp.MustCompile(`"msg":"serving","grpc":"([^"]+)","http":"([^"]+)"`)

// start runs a replica in-process.
func (r *replicaRig) start() *replica {
	r.t.Helper()
	s := start(r.t, "serve", "--config", r.cfgPath)
	return r.connect(s.stderr.String)
}

// startProcess runs a replica as a process of its own, which the test can
// kill.
func (r *replicaRig) startProcess() (*replica, *exec.Cmd) {
	r.t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", r.cfgPath)
	cmd.Env = append(os.Environ(), execEnv+"=1")
	logs := &testkit.Buffer{}
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return r.connect(logs.String), cmd
}

func (r *replicaRig) connect(logs func() string) *replica {
	r.t.Helper()
	var m []string
	testkit.WaitFor(r.t, func() bool {
		m = servingRE.FindStringSubmatch(logs())
		return m != nil
	})
	conn, err := grpc.NewClient(m[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	return &replica{client: tokenbrokerv1.NewTokenBrokerServiceClient(conn), http: "http://" + m[2], logs: logs}
}

// get asks rep for the rig's tenant token, for account uid ("" for none).
func (r *replicaRig) get(ctx context.Context, rep *replica, uid string) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.callerKey)
	return rep.client.GetAccessToken(ctx, &tokenbrokerv1.GetAccessTokenRequest{Tenant: rigTenant, Uid: uid, Groups: []string{rigGroup}})
}

// crowd sends n concurrent requests for uid spread over reps, each with
// its own deadline, and returns the tokens and the errors.
func (r *replicaRig) crowd(reps []*replica, n int, uid string, deadline time.Duration) (tokens map[string]int, errs []error) {
	var mu sync.Mutex
	tokens = map[string]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			resp, err := r.get(ctx, reps[i%len(reps)], uid)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			tokens[resp.GetAccessToken()]++
		})
	}
	wg.Wait()
	return tokens, errs
}

func metricValue(t *testing.T, url, name string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(string(body))
	if m == nil {
		return ""
	}
	return m[1]
}

// Three replicas, one upstream: 300 concurrent requests for one key spread
// over the three make exactly one exchange, and a replica started
// afterwards serves the key without one. Redis then holds nothing that
// names the tenant, the account, the group or the token.
func TestReplicasShareOneExchange(t *testing.T) {
	r := newReplicaRig(t)
	reps := []*replica{r.start(), r.start(), r.start()}

	release := r.up.hold(t)
	done := make(chan struct{})
	var tokens map[string]int
	var errs []error
	go func() {
		defer close(done)
		tokens, errs = r.crowd(reps, 300, "acct-secret-4711", 30*time.Second)
	}()
	testkit.WaitFor(t, func() bool { return r.up.arrived.Load() == 1 })
	time.Sleep(200 * time.Millisecond) // the rest of the crowd arrives and waits
	release()
	<-done
	for _, err := range errs {
		t.Error(err)
	}
	if len(tokens) != 1 {
		t.Errorf("300 callers got %d distinct tokens, want 1", len(tokens))
	}
	if n := r.up.emu.Exchanges(); n != 1 {
		t.Fatalf("300 requests over 3 replicas made %d exchanges, want 1", n)
	}

	late := r.start()
	resp, err := r.get(context.Background(), late, "acct-secret-4711")
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT || tokens[resp.GetAccessToken()] == 0 {
		t.Errorf("new replica: %v, want a hit on the shared token", resp.GetCacheStatus())
	}
	if n := r.up.emu.Exchanges(); n != 1 {
		t.Errorf("exchanges = %d after the new replica's call, want 1", n)
	}
	if v := metricValue(t, late.http, `tokenbroker_cache_lookups_total{result="remote"}`); v != "1" {
		t.Errorf("the new replica's remote lookups = %q, want 1", v)
	}

	// Nothing usable or identifying at rest.
	var token string
	for tok := range tokens {
		token = tok
	}
	secrets := []string{rigTenant, "acct-secret-4711", "group-secret", token, token[len(token)-20:],
		base64.StdEncoding.EncodeToString([]byte(rigTenant)), base64.RawURLEncoding.EncodeToString([]byte("acct-secret-4711"))}
	rdb := redis.NewClient(&redis.Options{Addr: r.redis.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Errorf("Redis holds %d keys, want the one token's: %q", len(keys), keys)
	}
	for _, k := range keys {
		v, err := rdb.Get(ctx, k).Bytes()
		if err != nil {
			t.Fatalf("GET %s: %v", k, err)
		}
		for _, s := range secrets {
			if strings.Contains(k, s) || strings.Contains(string(v), s) {
				t.Errorf("Redis key %q or its value contains %q", k, s)
			}
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Hour {
			t.Errorf("%s has TTL %v, want the token's life less the skew", k, ttl)
		}
	}
}

// A replica that holds the lease is killed in the middle of its exchange:
// its lease lapses and another replica exchanges, and the callers waiting
// on the other replicas get a token within their deadlines.
func TestReplicaKilledMidExchange(t *testing.T) {
	r := newReplicaRig(t)
	holder, proc := r.startProcess()
	others := []*replica{r.start(), r.start()}

	release := r.up.hold(t)
	go r.get(context.Background(), holder, "") // dies with the process
	testkit.WaitFor(t, func() bool { return r.up.arrived.Load() == 1 })

	done := make(chan struct{})
	var tokens map[string]int
	var errs []error
	start := time.Now()
	go func() {
		defer close(done)
		tokens, errs = r.crowd(others, 40, "", 20*time.Second)
	}()
	time.Sleep(200 * time.Millisecond) // the crowd waits on the holder's lease
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	proc.Wait()
	testkit.WaitFor(t, func() bool { return r.up.abandoned.Load() == 1 }) // the holder's request is gone
	release()
	<-done
	for _, err := range errs {
		t.Errorf("a caller waiting on the killed holder failed: %v", err)
	}
	if len(tokens) != 1 {
		t.Errorf("callers got %d distinct tokens, want 1", len(tokens))
	}
	if n := r.up.emu.Exchanges(); n != 1 {
		t.Errorf("completed exchanges = %d, want 1 (the killed holder's never completed)", n)
	}
	t.Logf("the crowd was served %v after it began (lease TTL 5 s)", time.Since(start).Round(10*time.Millisecond))
}

// Redis stops mid-run: warm keys keep being served by every replica, a cold
// key still makes one exchange per replica (local coalescing), the replicas
// stay ready and say so once; after Redis restarts, sharing resumes.
func TestRedisOutageFallsBackToLocal(t *testing.T) {
	r := newReplicaRig(t)
	reps := []*replica{r.start(), r.start(), r.start()}
	if _, errs := r.crowd(reps, 30, "warm", 10*time.Second); len(errs) > 0 {
		t.Fatal(errs)
	}
	if n := r.up.emu.Exchanges(); n != 1 {
		t.Fatalf("warm-up made %d exchanges, want 1", n)
	}

	r.redis.Stop()
	if tokens, errs := r.crowd(reps, 60, "warm", 10*time.Second); len(errs) > 0 || len(tokens) != 1 {
		t.Errorf("warm key with Redis down: %d tokens, errors %v", len(tokens), errs)
	}
	before := r.up.emu.Exchanges()
	if tokens, errs := r.crowd(reps, 150, "cold-during-outage", 10*time.Second); len(errs) > 0 || len(tokens) > 3 {
		t.Errorf("cold key with Redis down: %d tokens, errors %v", len(tokens), errs)
	}
	if n := r.up.emu.Exchanges() - before; n < 1 || n > 3 {
		t.Errorf("a cold key with Redis down made %d exchanges over 3 replicas, want at most one each", n)
	}
	for i, rep := range reps {
		resp, err := http.Get(rep.http + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("replica %d /readyz = %d with Redis down, want 200", i, resp.StatusCode)
		}
		if v := metricValue(t, rep.http, "tokenbroker_shared_cache_up"); v != "0" {
			t.Errorf("replica %d tokenbroker_shared_cache_up = %q with Redis down, want 0", i, v)
		}
		if n := strings.Count(rep.logs(), "shared cache unavailable"); n != 1 {
			t.Errorf("replica %d logged the outage %d times, want once", i, n)
		}
	}

	r.redis.Restart()
	// Each replica finds Redis again when its subscription reconnects
	// (within a second), even if every call it serves is a local hit; then
	// a cold key is exchanged once for all.
	testkit.WaitFor(t, func() bool {
		for _, rep := range reps {
			if metricValue(t, rep.http, "tokenbroker_shared_cache_up") != "1" {
				return false
			}
		}
		return true
	})
	before, arrived := r.up.emu.Exchanges(), r.up.arrived.Load()
	release := r.up.hold(t)
	done := make(chan struct{})
	var errs []error
	go func() {
		defer close(done)
		_, errs = r.crowd(reps, 150, "cold-after-restart", 10*time.Second)
	}()
	testkit.WaitFor(t, func() bool { return r.up.arrived.Load() > arrived })
	time.Sleep(200 * time.Millisecond)
	release()
	<-done
	for _, err := range errs {
		t.Error(err)
	}
	if n := r.up.emu.Exchanges() - before; n != 1 {
		t.Errorf("a cold key after Redis restarted made %d exchanges, want 1", n)
	}
	for i, rep := range reps {
		if strings.Count(rep.logs(), "shared cache available again") != 1 {
			t.Errorf("replica %d did not log the end of the outage once", i)
		}
	}
}

// A token rejected downstream is evicted from Redis and from the other
// replicas, so the next call anywhere gets the new one.
func TestReplicasRejectedTokenEverywhere(t *testing.T) {
	r := newReplicaRig(t)
	a, b := r.start(), r.start()
	first, err := r.get(context.Background(), a, "")
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := r.get(context.Background(), b, ""); err != nil || resp.GetAccessToken() != first.GetAccessToken() {
		t.Fatalf("b: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+r.callerKey)
	second, err := a.client.GetAccessToken(ctx, &tokenbrokerv1.GetAccessTokenRequest{Tenant: rigTenant, Groups: []string{rigGroup},
		RejectedToken: first.GetAccessToken()})
	if err != nil {
		t.Fatal(err)
	}
	if second.GetAccessToken() == first.GetAccessToken() {
		t.Fatal("the rejected token was served again")
	}
	testkit.WaitFor(t, func() bool {
		resp, err := r.get(context.Background(), b, "")
		return err == nil && resp.GetAccessToken() == second.GetAccessToken()
	})
	if n := r.up.emu.Exchanges(); n != 2 {
		t.Errorf("exchanges = %d, want 2", n)
	}
}

// A replica whose seal key differs shares nothing: it cannot open the
// others' values and exchanges for itself, without errors.
func TestReplicaWithAnotherSealKeyExchangesAlone(t *testing.T) {
	r := newReplicaRig(t)
	a := r.start()
	if _, err := r.get(context.Background(), a, ""); err != nil {
		t.Fatal(err)
	}
	other := *r
	cfg, err := os.ReadFile(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sealKey := make([]byte, 32)
	rand.Read(sealKey)
	sealFile := filepath.Join(dir, "other.key")
	os.WriteFile(sealFile, []byte(base64.StdEncoding.EncodeToString(sealKey)), 0o600)
	other.cfgPath = filepath.Join(dir, "broker.yaml")
	re := regexp.MustCompile(`encryption_key_file: \S+`)
	os.WriteFile(other.cfgPath, re.ReplaceAll(cfg, []byte("encryption_key_file: "+sealFile)), 0o644)
	b := other.start()
	resp, err := r.get(context.Background(), b, "")
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS {
		t.Errorf("replica with another key: %v, want its own exchange", resp.GetCacheStatus())
	}
}
