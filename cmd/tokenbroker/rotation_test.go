package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-jose/go-jose/v4"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// TestRotationWithoutDowntime walks README's key rotation procedure under
// load: publish the new key as next, promote it by a reload, keep the old
// one published until its assertions are gone, retire it. Callers keep
// asking for new tokens (every call a cache miss, so every call signs and
// exchanges) the whole time: no call fails, the upstream refuses no
// assertion, each phase signs with the key it should, the JWKS changes as
// documented, and tokens cached before the promotion are still served.
func TestRotationWithoutDowntime(t *testing.T) {
	const tenant = "tn-rot"
	r := newReloadRig(t, map[string]string{tenant: "aud"}, []string{"pismo-v1:*"})
	oldKey, err := keystore.LoadFile(r.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	newFile := filepath.Join(r.dir, "tenant-2.pem")
	if err := keystore.WriteFileExclusive(newFile, newKey.PrivatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(r.key))
	writeKeys := func(keys string) {
		t.Helper()
		r.writeRaw(fmt.Sprintf(`listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
tenants:
  - id: %s
    upstream: {kind: pismo_oidc, token_url: %q}
    issuer: iss
    subject: sub
    audience: aud
    keys:
%scallers:
  - name: svc
    api_key_sha256: %s
    allow: [{tenant: %s, groups: ["pismo-v1:*"]}]
`, tenant, r.emuURL, keys, hex.EncodeToString(sum[:]), tenant))
	}
	upload := func(keys ...*keystore.Key) { // the operator's step at the upstream
		t.Helper()
		var jwks []jose.JSONWebKey
		for _, k := range keys {
			jwks = append(jwks, k.PublicJWK())
		}
		if err := r.emu.Register(emulator.Tenant{ID: tenant, Issuer: "iss", Subject: "sub", Audience: "aud", Keys: jwks}); err != nil {
			t.Fatal(err)
		}
	}

	// Load: every call asks for a group never asked before, so every call
	// is a cache miss that signs an assertion and exchanges it. The test
	// takes the write lock to look at the upstream with no call in flight.
	var (
		pause   sync.RWMutex
		calls   atomic.Int64
		counter atomic.Int64
		wg      sync.WaitGroup
	)
	ctx, stop := context.WithCancel(context.Background())
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				pause.RLock()
				group := fmt.Sprintf("pismo-v1:g%d:r", counter.Add(1))
				_, err := r.get(ctx, tenant, group)
				pause.RUnlock()
				if err != nil && ctx.Err() == nil {
					t.Errorf("call during rotation: %v", err)
				}
				calls.Add(1)
			}
		})
	}
	defer func() {
		stop()
		wg.Wait()
	}()

	reloads := r.app.reloaded.Load()
	// check waits for the reload, lets some calls through, then pauses the
	// load and checks which key signs and what the JWKS publishes.
	check := func(phase string, signer *keystore.Key, published ...*keystore.Key) {
		t.Helper()
		reloads++
		r.awaitReload(reloads)
		n := calls.Load() + 20
		testkit.WaitFor(t, func() bool { return calls.Load() >= n || t.Failed() })
		pause.Lock()
		defer pause.Unlock()
		if _, err := r.get(context.Background(), tenant, fmt.Sprintf("pismo-v1:%s:r", phase)); err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		if hdr, _, ok := r.emu.LastAssertion(tenant); !ok || hdr["kid"] != signer.ID() {
			t.Errorf("%s: the upstream last saw kid %v, want %s", phase, hdr["kid"], signer.ID())
		}
		want := make([]string, 0, len(published))
		for _, k := range published {
			want = append(want, k.ID())
		}
		slices.Sort(want)
		for _, path := range []string{"/.well-known/jwks.json", "/tenants/" + tenant + "/jwks.json"} {
			if got := jwksKids(t, r.httpURL+path); !slices.Equal(got, want) {
				t.Errorf("%s: %s publishes %q, want %q", phase, path, got, want)
			}
		}
		if n := r.emu.Refusals(); n != 0 {
			t.Fatalf("%s: the upstream refused %d assertions", phase, n)
		}
	}

	// 0. One key, active: only it is published.
	writeKeys(fmt.Sprintf("      - {file: %s, state: active}\n", r.keyFile))
	check("single", oldKey, oldKey)

	// 1. The new key is published as next and uploaded to the upstream; the
	// old one still signs.
	upload(oldKey, newKey)
	writeKeys(fmt.Sprintf("      - {file: %s, state: active}\n      - {file: %s, state: next}\n", r.keyFile, newFile))
	check("published", oldKey, oldKey, newKey)
	cached, err := r.get(context.Background(), tenant, "pismo-v1:cached:r")
	if err != nil {
		t.Fatal(err)
	}

	// 2. Promotion: the new key signs the next exchange; the old one stays
	// published while assertions it signed may still be verified.
	writeKeys(fmt.Sprintf("      - {file: %s, state: next}\n      - {file: %s, state: active}\n", r.keyFile, newFile))
	check("promoted", newKey, oldKey, newKey)
	again, err := r.get(context.Background(), tenant, "pismo-v1:cached:r")
	if err != nil || again.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT || again.GetAccessToken() != cached.GetAccessToken() {
		t.Errorf("a token cached before the promotion: %v %v, want the same token from the cache", again.GetCacheStatus(), err)
	}

	// 3. Retirement: the old key is no longer published, and the upstream
	// forgets it; its file may go.
	writeKeys(fmt.Sprintf("      - {file: %s, state: retired}\n      - {file: %s, state: active}\n", filepath.Join(r.dir, "deleted.pem"), newFile))
	upload(newKey)
	check("retired", newKey, newKey)
}

// jwksKids fetches a JWK Set and returns its key ids, sorted.
func jwksKids(t *testing.T, url string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var set jose.JSONWebKeySet
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &set) != nil {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, body)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	slices.Sort(kids)
	return kids
}

// writeKeyListConfig writes a config whose tenant lists its keys: items are
// the YAML list items under keys:.
func writeKeyListConfig(t *testing.T, items string) string {
	t.Helper()
	dir := t.TempDir()
	path := writeKeyConfig(t, dir, "PLACEHOLDER")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(data), "    key_file: PLACEHOLDER\n", "    keys:\n"+items, 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A key list is loaded whole at start: every problem names the key's field.
func TestCheckConfigKeyList(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, k *keystore.Key) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := keystore.WriteFileExclusive(path, k.PrivatePEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	rsa1, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := keystore.GenerateEC()
	if err != nil {
		t.Fatal(err)
	}
	a, b := write("a.pem", rsa1), write("ec.pem", ec)
	gone := filepath.Join(dir, "gone.pem")

	checkConfigOK(t, writeKeyListConfig(t, fmt.Sprintf("      - {file: %s, state: active}\n      - {file: %s, state: retired}\n", a, gone)))
	checkConfigFails(t, writeKeyListConfig(t, fmt.Sprintf("      - {file: %s, state: active}\n      - {file: %s, state: next}\n", a, a)),
		"tenants[0].keys[1].file", "is also tenants[0].keys[0].file's", "distinct key ids")
	checkConfigFails(t, writeKeyListConfig(t, fmt.Sprintf("      - {file: %s, state: active}\n      - {file: %s, state: next}\n", a, b)),
		"tenants[0].keys[1].file", "signs ES256", "pismo_oidc upstream verifies RS256 only")
	t.Setenv("TB_NEXT_PASS", "")
	checkConfigFails(t, writeKeyListConfig(t, fmt.Sprintf("      - {file: %s, state: active}\n      - {file: %s, state: next, passphrase_env: TB_NEXT_PASS}\n", a, a)),
		"tenants[0].keys[1].passphrase_env", "TB_NEXT_PASS is not set")
	checkConfigFails(t, writeKeyListConfig(t, fmt.Sprintf("      - {file: %s, state: next}\n", a)),
		"tenants[0].keys", "exactly one key must be active, found 0")
}

// A PKCS#11 key is opened at start like a key file, and its problems name
// its field (the SoftHSM2 test in keystore/pkcs11 signs through a real
// token).
func TestCheckConfigPKCS11(t *testing.T) {
	dir := t.TempDir()
	notAModule := filepath.Join(dir, "not-a-module.so")
	pin := filepath.Join(dir, "pin")
	for _, f := range []string{notAModule, pin} {
		if err := os.WriteFile(f, []byte("1234\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	item := func(uri string) string {
		return fmt.Sprintf("      - {state: active, pkcs11: {uri: %q, module: %s, pin_file: %s}}\n", uri, notAModule, pin)
	}
	checkConfigFails(t, writeKeyListConfig(t, item("pkcs11:token=broker;object=k")), "tenants[0].keys[0].pkcs11", "cannot load it as a PKCS#11 module")
	stderr := checkConfigFails(t, writeKeyListConfig(t, item("pkcs11:object=k?pin-value=hunter2")), "tenants[0].keys[0].pkcs11", "pin-value")
	if strings.Contains(stderr, "hunter2") {
		t.Errorf("check-config echoed the PIN:\n%s", stderr)
	}
}
