package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
)

// cmdEmulate runs the Pismo token endpoint emulator alone, for one tenant,
// so a broker (or anything else) can be pointed at it.
func cmdEmulate(ctx context.Context, args []string, e *env) int {
	fs := newFlags("emulate", e)
	addr := fs.String("listen", "127.0.0.1:9400", "listen address")
	tenant := fs.String("tenant", "", "the tenant id (required)")
	issuer := fs.String("issuer", "", "the verifier issuer the assertion's iss must equal (required)")
	subject := fs.String("subject", "", "the verifier subject the assertion's sub must equal (required)")
	audience := fs.String("audience", "", "the verifier audience the assertion's aud must equal (required)")
	pubFile := fs.String("public-key", "", "the tenant's public key: PEM (public key or certificate) or a JWK Set (required)")
	lifetime := fs.Duration("token-lifetime", time.Hour, "the life of the access tokens it issues")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *tenant == "" || *issuer == "" || *subject == "" || *audience == "" || *pubFile == "" {
		return e.errorf("emulate: --tenant, --issuer, --subject, --audience and --public-key are required")
	}
	data, err := os.ReadFile(*pubFile)
	if err != nil {
		return e.errorf("emulate: %v", err)
	}
	keys, err := emulator.ParsePublicKeys(data)
	if err != nil {
		return e.errorf("emulate: %s: %v", *pubFile, err)
	}
	emu, err := emulator.New(emulator.Config{TokenLifetime: *lifetime})
	if err != nil {
		return e.errorf("emulate: %v", err)
	}
	if err := emu.Register(emulator.Tenant{ID: *tenant, Issuer: *issuer, Subject: *subject, Audience: *audience, Keys: keys}); err != nil {
		return e.errorf("emulate: %v", err)
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return e.errorf("emulate: %v", err)
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(e.stdout, "emulating Pismo's token endpoint at http://%s%s for tenant %q\n", lis.Addr(), emulator.TokenPath, *tenant)
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(lis); err != http.ErrServerClosed {
		return e.errorf("emulate: %v", err)
	}
	return 0
}
