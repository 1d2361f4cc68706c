package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// reloadRig is a broker app over an in-process emulator, with its config in
// a file the test rewrites.
type reloadRig struct {
	t       *testing.T
	dir     string
	path    string
	keyFile string
	emu     *emulator.Emulator
	emuURL  string
	app     *app
	client  tokenbrokerv1.TokenBrokerServiceClient
	logs    *testkit.Buffer
	hup     chan os.Signal
	key     string
	httpURL string // the JWKS, health and metrics endpoints
}

const rigKey = "tbk_reload-test-caller"

func newReloadRig(t *testing.T, tenantAudiences map[string]string, groups []string) *reloadRig {
	t.Helper()
	r := &reloadRig{t: t, dir: t.TempDir(), logs: &testkit.Buffer{}, hup: make(chan os.Signal, 1), key: rigKey}
	r.path = filepath.Join(r.dir, "broker.yaml")
	r.keyFile = filepath.Join(r.dir, "tenant.pem")
	key, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := keystore.WriteFileExclusive(r.keyFile, key.PrivatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if r.emu, err = emulator.New(emulator.Config{}); err != nil {
		t.Fatal(err)
	}
	for id, aud := range tenantAudiences {
		r.register(id, aud, key)
	}
	srv := httptest.NewServer(r.emu)
	t.Cleanup(srv.Close)
	r.emuURL = srv.URL + emulator.TokenPath
	r.write(tenantAudiences, groups)

	cfg, keys, err := loadAll(r.path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(r.logs, nil))
	if r.app, err = newApp(r.path, cfg, keys, logging{Logger: log}); err != nil {
		t.Fatal(err)
	}
	r.app.settle = 5 * time.Millisecond
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.httpURL = "http://" + httpLis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.app.run(ctx, lis, httpLis, r.hup) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.client = tokenbrokerv1.NewTokenBrokerServiceClient(conn)
	// Serving implies watching: wait for the first answer before any rewrite.
	testkit.WaitFor(t, func() bool {
		_, err := r.client.GetAccessToken(context.Background(), &tokenbrokerv1.GetAccessTokenRequest{})
		return status.Code(err) == codes.Unauthenticated
	})
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return r
}

func (r *reloadRig) register(id, audience string, key *keystore.Key) {
	r.t.Helper()
	if err := r.emu.Register(emulator.Tenant{ID: id, Issuer: "iss", Subject: "sub", Audience: audience,
		Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
		r.t.Fatal(err)
	}
}

// write replaces the config file atomically, as careful tools do.
func (r *reloadRig) write(tenantAudiences map[string]string, groups []string) {
	r.t.Helper()
	sum := sha256.Sum256([]byte(r.key))
	cfg := "listen:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\ntenants:\n"
	for _, id := range sortedKeys(tenantAudiences) {
		cfg += fmt.Sprintf("  - id: %s\n    upstream: {kind: pismo_oidc, token_url: %q}\n    issuer: iss\n    subject: sub\n    audience: %s\n    key_file: %s\n",
			id, r.emuURL, tenantAudiences[id], r.keyFile)
	}
	cfg += fmt.Sprintf("callers:\n  - name: svc\n    api_key_sha256: %s\n    allow:\n", hex.EncodeToString(sum[:]))
	for _, id := range sortedKeys(tenantAudiences) {
		cfg += fmt.Sprintf("      - tenant: %s\n        groups: [\"%s\"]\n", id, strings.Join(groups, `", "`))
	}
	r.writeRaw(cfg)
}

func (r *reloadRig) writeRaw(content string) {
	r.t.Helper()
	tmp := filepath.Join(r.dir, ".broker.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		r.t.Fatal(err)
	}
}

// awaitReload waits until the app has finished n reloads in all.
func (r *reloadRig) awaitReload(n int64) {
	r.t.Helper()
	testkit.WaitFor(r.t, func() bool { return r.app.reloaded.Load() >= n })
}

func (r *reloadRig) get(ctx context.Context, tenant, group string) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.key)
	return r.client.GetAccessToken(ctx, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenant, Groups: []string{group}})
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// TestReloadUnderLoad: 32 goroutines call continuously while the config is
// rewritten 100 times, valid and invalid alternately. No call fails but the
// denials the policy in force demands, and the last valid policy wins.
func TestReloadUnderLoad(t *testing.T) {
	tenants := map[string]string{"tn-r": "aud"}
	wide, narrow := []string{"pismo-v1:a:r", "pismo-v1:b:r"}, []string{"pismo-v1:a:r"}
	r := newReloadRig(t, tenants, wide)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var calls, unexpected atomic.Int64
	for i := range 32 {
		group := "pismo-v1:a:r" // allowed by every valid config
		if i%2 == 1 {
			group = "pismo-v1:b:r" // allowed only by the wide one
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := r.get(ctx, "tn-r", group)
				calls.Add(1)
				switch code := status.Code(err); {
				case code == codes.OK, ctx.Err() != nil:
				case code == codes.PermissionDenied && group == "pismo-v1:b:r":
				default:
					unexpected.Add(1)
					t.Errorf("%s: unexpected %v", group, err)
				}
			}
		})
	}
	// On any failure below, stop the callers before the rig is torn down.
	defer func() {
		stop()
		wg.Wait()
	}()
	for i := range 100 {
		switch {
		case i%2 == 1:
			r.writeRaw("tenants: [\n  this is not YAML")
		case i%4 == 0:
			r.write(tenants, wide)
		default:
			r.write(tenants, narrow)
		}
		r.awaitReload(int64(i + 1))
	}
	stop()
	wg.Wait()
	if calls.Load() < 100 {
		t.Errorf("only %d calls ran during the reloads", calls.Load())
	}
	if unexpected.Load() > 0 {
		t.Fatalf("%d calls failed for other reasons than the policy", unexpected.Load())
	}
	// The last valid config (i = 98) is the narrow one, and it is in force.
	if _, err := r.get(context.Background(), "tn-r", "pismo-v1:b:r"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("after the reloads, group b: %v; want PermissionDenied from the narrow policy", err)
	}
	if _, err := r.get(context.Background(), "tn-r", "pismo-v1:a:r"); err != nil {
		t.Errorf("after the reloads, group a: %v", err)
	}
	if got := r.app.reloaded.Load(); got < 100 {
		t.Errorf("%d reloads ran, want one per rewrite (100)", got)
	}
}

func TestReloadDropsOnlyChangedTenants(t *testing.T) {
	tenants := map[string]string{"tn-same": "aud-1", "tn-moved": "aud-1"}
	r := newReloadRig(t, tenants, []string{"pismo-v1:*"})
	ctx := context.Background()
	for _, id := range []string{"tn-same", "tn-moved"} {
		if _, err := r.get(ctx, id, "pismo-v1:a:r"); err != nil {
			t.Fatal(err)
		}
	}
	// The upstream gives tn-moved a new audience; the operator follows.
	key, err := keystore.LoadFile(r.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r.register("tn-moved", "aud-2", key)
	r.write(map[string]string{"tn-same": "aud-1", "tn-moved": "aud-2"}, []string{"pismo-v1:*"})
	r.awaitReload(1)
	for id, want := range map[string]tokenbrokerv1.CacheStatus{
		"tn-same":  tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT,
		"tn-moved": tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS,
	} {
		resp, err := r.get(ctx, id, "pismo-v1:a:r")
		if err != nil || resp.GetCacheStatus() != want {
			t.Errorf("%s after reload: %v %v, want %v", id, resp.GetCacheStatus(), err, want)
		}
	}
}

func TestSIGHUPReloadsAndBadConfigKeepsServing(t *testing.T) {
	tenants := map[string]string{"tn-h": "aud"}
	r := newReloadRig(t, tenants, []string{"pismo-v1:a:r"})
	before := r.app.reloaded.Load()
	r.hup <- syscall.SIGHUP
	r.awaitReload(before + 1)
	if _, err := r.get(context.Background(), "tn-h", "pismo-v1:a:r"); err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	// A broken config is refused whole, and the old one keeps serving.
	r.writeRaw("callers: 3\n")
	r.awaitReload(before + 2)
	if _, err := r.get(context.Background(), "tn-h", "pismo-v1:a:r"); err != nil {
		t.Fatalf("after a refused reload the old config must keep serving: %v", err)
	}
	if !containsAll(r.logs.String(), "config reload refused", "SIGHUP") {
		t.Errorf("the log does not report the SIGHUP reload and the refusal:\n%s", r.logs)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
