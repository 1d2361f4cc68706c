package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

// sentinelACL is the sentinels' own ACL user as docs/deploy.md gives it,
// after "user sentinel-user on >PASSWORD": what go-redis's failover client
// asks a sentinel (HELLO and AUTH need no rule). The PING is its
// subscription's keep-alive after 3 s of silence, which this test does not
// wait for.
var sentinelACL = []string{"resetchannels", "&+switch-master", "&+replica-reconf-done",
	"-@all", "+ping", "+sentinel|get-master-addr-by-name", "+sentinel|sentinels", "+subscribe"}

// A replica configured with a sentinel instead of an address: check-config
// reads the sentinels' password file (and refuses one others may read), and
// the replica finds the master through the sentinel, as the sentinels' own
// ACL user of the docs, and stores the token it obtains there.
func TestSentinelReplicaStoresInMaster(t *testing.T) {
	doc, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	if rule := "user sentinel-user on >PASSWORD " + strings.Join(sentinelACL, " "); !strings.Contains(string(doc), rule) {
		t.Errorf("docs/deploy.md does not give the sentinels' ACL rule:\n%s", rule)
	}

	r := newReplicaRig(t)
	sen := redistest.StartSentinel(t, r.redis, "tb-master")
	const password = "sentinel-secret-8c1f"
	if got := sen.Do(append([]string{"ACL", "SETUSER", "sentinel-user", "on", ">" + password}, sentinelACL...)...); got != "OK" {
		t.Fatalf("ACL SETUSER on the sentinel: %s", got)
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "sentinel-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("redis: {addr: %q, timeout: 1s}", r.redis.Addr())
	if !strings.Contains(string(cfg), addr) {
		t.Fatalf("the rig's config lacks %s", addr)
	}
	r.cfgPath = filepath.Join(dir, "broker.yaml")
	sentinel := fmt.Sprintf("redis: {sentinel: {master: tb-master, addrs: [%q], username: sentinel-user, password_file: %s}, timeout: 1s}", sen.Addr(), pwFile)
	if err := os.WriteFile(r.cfgPath, []byte(strings.Replace(string(cfg), addr, sentinel, 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	if code, stdout, stderr := runCmd(t, "", "check-config", "--config", r.cfgPath); code != 0 || !strings.Contains(stdout, "OK") {
		t.Fatalf("check-config: exit %d\n%s%s", code, stdout, stderr)
	}
	if err := os.Chmod(pwFile, 0o640); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(t, "", "check-config", "--config", r.cfgPath)
	if code != 1 || !strings.HasPrefix(stderr, "cache.shared.redis.sentinel.password_file: ") || strings.Contains(stderr, password) {
		t.Errorf("check-config with a group-readable sentinel password file: exit %d, %q; want 1 and an error naming the field", code, stderr)
	}
	if err := os.Chmod(pwFile, 0o600); err != nil {
		t.Fatal(err)
	}

	rep := r.start()
	if !regexp.MustCompile(`"msg":"shared cache configured","sentinel_master":"tb-master","sentinels":\["` + regexp.QuoteMeta(sen.Addr()) + `"\]`).MatchString(rep.logs()) {
		t.Errorf("the replica's log does not name the master and the sentinels:\n%s", rep.logs())
	}
	resp, err := r.get(context.Background(), rep, "")
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccessToken() == "" {
		t.Fatal("no token")
	}

	rdb := redis.NewClient(&redis.Options{Addr: r.redis.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "tb:v1:v:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("the master holds %d tokens, want 1: %q", len(keys), keys)
	}
	if v, err := rdb.Get(ctx, keys[0]).Bytes(); err != nil || len(v) == 0 || strings.Contains(string(v), resp.GetAccessToken()) {
		t.Errorf("%s = %d bytes, %v; want the sealed token", keys[0], len(v), err)
	}
	if ttl := rdb.PTTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("%s has TTL %v, want the token's life less the skew", keys[0], ttl)
	}

	// The sentinel let the broker's user do all it asked: it follows
	// failovers on the sentinel's channels, and the ACL log holds no
	// refusal (but CLIENT SETINFO's, on Redis 7.2 and later, which go-redis
	// ignores).
	testkit.WaitFor(t, func() bool {
		return regexp.MustCompile(`(?m)sub=2 .*user=sentinel-user`).MatchString(sen.Do("CLIENT", "LIST")) ||
			strings.Contains(sen.Do("ACL", "LOG"), "sentinel-user")
	})
	for entry := range strings.SplitSeq(sen.Do("ACL", "LOG"), "count ") {
		if strings.Contains(entry, "sentinel-user") && !strings.Contains(entry, "object client|setinfo") {
			t.Errorf("the sentinel refused the broker: %s", entry)
		}
	}
}

// The TLS of a Redis found through Sentinel checks, without server_name,
// the host each connection dials: the master's is known only then.
func TestSentinelTLSServerName(t *testing.T) {
	sen := &config.RedisSentinel{Master: "m", Addrs: []string{"sentinel-0:26379"}}
	for _, tc := range []struct {
		name string
		r    config.Redis
		want string
	}{
		{"addr", config.Redis{Addr: "redis.internal:6379", TLS: &config.RedisTLS{}}, "redis.internal"},
		{"sentinel", config.Redis{Sentinel: sen, TLS: &config.RedisTLS{}}, ""},
		{"sentinel with server_name", config.Redis{Sentinel: sen, TLS: &config.RedisTLS{ServerName: "redis.internal"}}, "redis.internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := redisTLS(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ServerName != tc.want {
				t.Errorf("ServerName = %q, want %q", cfg.ServerName, tc.want)
			}
		})
	}
}

// The warning about Redis without TLS is given when any sentinel is off
// loopback, and names the master and the sentinels.
func TestSentinelNoTLSWarning(t *testing.T) {
	sealFile := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(sealFile, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		addrs []string
		warn  bool
	}{
		{"loopback", []string{"127.0.0.1:1", "[::1]:1", "localhost:1"}, false},
		{"one off loopback", []string{"127.0.0.1:1", "192.0.2.7:26379"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testkit.Buffer{}
			c := &config.SharedCache{
				Redis:             config.Redis{Sentinel: &config.RedisSentinel{Master: "m", Addrs: tc.addrs}, Timeout: 10 * time.Millisecond},
				EncryptionKeyFile: sealFile,
			}
			_, closer, err := openShared(c, func(s string) string { return s }, prometheus.NewRegistry(), slog.New(slog.NewJSONHandler(logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			closer.Close()
			warned := strings.Contains(logs.String(), "without TLS")
			if warned != tc.warn {
				t.Errorf("warned %v, want %v:\n%s", warned, tc.warn, logs)
			}
			if warned && !strings.Contains(logs.String(), `"sentinel_master":"m","sentinels":["127.0.0.1:1","192.0.2.7:26379"]`) {
				t.Errorf("the warning does not name the master and the sentinels:\n%s", logs)
			}
		})
	}
}
