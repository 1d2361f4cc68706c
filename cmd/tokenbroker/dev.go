package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/emulator"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// The dev default's names. The verifier values are what Pismo's Control
// Center would hand a tenant.
const (
	devTenant   = "tn-demo"
	devCaller   = "demo"
	devIssuer   = "tokenbroker-dev-issuer"
	devSubject  = "tokenbroker-dev-subject"
	devAudience = "tokenbroker-dev-audience"
	devGroup    = "pismo-v1:accounts:rw"
)

// cmdDev runs the broker on an embedded default: an emulated Pismo upstream
// on a free loopback port, a throwaway key, a demo tenant and a demo caller.
// Nothing is written to disk.
func cmdDev(ctx context.Context, args []string, e *env) int {
	fs := newFlags("dev", e)
	grpcAddr := fs.String("grpc", "127.0.0.1:7443", "the gRPC listen address (loopback)")
	httpAddr := fs.String("http", "127.0.0.1:7080", "the HTTP listen address (JWKS, metrics, health)")
	// A developer trying the broker sees each call.
	newLogger := logFlags(fs, e, logDefaults{format: "text", calls: "all"})
	if code, ok := parse(fs, args); !ok {
		return code
	}
	log, err := newLogger()
	if err != nil {
		return e.errorf("dev: %v", err)
	}

	key, err := keystore.Generate(2048)
	if err != nil {
		return e.errorf("dev: %v", err)
	}
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		return e.errorf("dev: %v", err)
	}
	if err := emu.Register(emulator.Tenant{ID: devTenant, Issuer: devIssuer, Subject: devSubject, Audience: devAudience,
		Keys: []jose.JSONWebKey{key.PublicJWK()}}); err != nil {
		return e.errorf("dev: %v", err)
	}
	emuLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return e.errorf("dev: emulator: %v", err)
	}
	emuSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go emuSrv.Serve(emuLis)
	defer emuSrv.Close()
	tokenURL := &url.URL{Scheme: "http", Host: emuLis.Addr().String(), Path: emulator.TokenPath}

	callerKey, _ := newCallerKey()
	cfg := &config.Config{
		Listen:        config.Listen{GRPC: *grpcAddr, HTTP: *httpAddr},
		ShutdownGrace: 5 * time.Second,
		Cache:         config.Cache{Skew: 10 * time.Second},
		Tenants: []config.Tenant{{
			ID:                devTenant,
			Upstream:          config.Upstream{Kind: "pismo_oidc", TokenURL: tokenURL, Timeout: 10 * time.Second},
			Issuer:            devIssuer,
			Subject:           devSubject,
			Audience:          devAudience,
			AssertionLifetime: 5 * time.Minute,
			UIDMode:           config.UIDOmit,
		}},
		Callers: []config.Caller{{
			Name:         devCaller,
			APIKeySHA256: sha256.Sum256([]byte(callerKey)),
			HasAPIKey:    true,
			Allow:        []config.Grant{{Tenant: devTenant, Groups: []string{"pismo-v1:*"}, AccountTokens: true}},
		}},
	}
	keys := &keyring{tenants: map[string]tenantKeys{devTenant: {active: key, published: []*keystore.Key{key}}}}
	a, err := newApp("", cfg, keys, log)
	if err != nil {
		return e.errorf("dev: %v", err)
	}
	grpcLis, httpLis, err := listen(cfg.Listen.GRPC, cfg.Listen.HTTP)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return e.errorf("dev: %v (is another broker running? pick other ports with --grpc and --http)", err)
		}
		return e.errorf("dev: %v", err)
	}
	printDevHelp(e, grpcLis.Addr().String(), httpLis.Addr().String(), tokenURL.String(), callerKey, key, log.Logger)
	if err := a.run(ctx, grpcLis, httpLis, nil); err != nil {
		return e.errorf("dev: %v", err)
	}
	return 0
}

func printDevHelp(e *env, grpcAddr, httpAddr, emuURL, callerKey string, key *keystore.Key, log *slog.Logger) {
	grpcurl := "grpcurl"
	if _, err := os.Stat("bin/tools/grpcurl"); err == nil {
		grpcurl = "bin/tools/grpcurl"
	}
	log.Info("dev mode: throwaway key and caller", "tenant", devTenant, "caller", devCaller, "caller_key_fp", broker.Fingerprint(callerKey), "key", key)
	fmt.Fprintf(e.stdout, `
tokenbroker dev is running (throwaway key and caller key; nothing is written to disk)
  gRPC      %[1]s   (plaintext, loopback)
  HTTP      http://%[2]s   (/.well-known/jwks.json, /metrics, /healthz, /readyz)
  upstream  %[3]s   (built-in Pismo emulator)
  tenant %[4]q, caller %[5]q allowed groups "pismo-v1:*" and account tokens

Ask for a token:
  %[6]s token --addr %[1]s --key %[7]s --tenant %[4]s --groups %[8]s

Or with grpcurl (make tools installs it as bin/tools/grpcurl):
  %[9]s -plaintext -H 'authorization: Bearer %[7]s' -d '{"tenant":"%[4]s","groups":["%[8]s"]}' %[1]s tokenbroker.v1.TokenBrokerService/GetAccessToken

Stop with Ctrl-C.
`, grpcAddr, httpAddr, emuURL, devTenant, devCaller, os.Args[0], callerKey, devGroup, grpcurl)
}
