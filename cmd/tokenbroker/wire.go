package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
	"github.com/tokenbroker/tokenbroker/server"
)

// loadKeys loads every tenant's key file, reporting each failure on its own
// line naming the field.
func loadKeys(cfg *config.Config) (map[string]*keystore.Key, error) {
	keys := make(map[string]*keystore.Key, len(cfg.Tenants))
	var problems []string
	for i, t := range cfg.Tenants {
		k, err := keystore.LoadFile(t.KeyFile)
		if err != nil {
			problems = append(problems, fmt.Sprintf("tenants[%d].key_file: %v", i, err))
			continue
		}
		keys[t.ID] = k
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return keys, nil
}

// assemble builds the broker and the server from a validated config and the
// tenants' keys.
func assemble(cfg *config.Config, keys map[string]*keystore.Key, log *slog.Logger) (*server.Server, error) {
	client := upstream.NewHTTPClient()
	tenants := make(upstream.Tenants, len(cfg.Tenants))
	published := make([]*keystore.Key, 0, len(keys))
	for i, t := range cfg.Tenants {
		key, ok := keys[t.ID]
		if !ok {
			return nil, fmt.Errorf("tenants[%d]: no key loaded", i)
		}
		published = append(published, key)
		x, err := upstream.NewPismo(upstream.PismoConfig{
			TenantID:          t.ID,
			TokenURL:          t.Upstream.TokenURL,
			Issuer:            t.Issuer,
			Subject:           t.Subject,
			Audience:          t.Audience,
			Signer:            key.Signer(),
			AssertionLifetime: t.AssertionLifetime,
			UIDMode:           upstream.UIDMode(t.UIDMode),
			Client:            client,
			Timeout:           t.Upstream.Timeout,
		})
		if err != nil {
			return nil, fmt.Errorf("tenants[%d]: %w", i, err)
		}
		tenants[t.ID] = x
		log.Info("tenant", "id", t.ID, "upstream", t.Upstream.Kind, "token_url", t.Upstream.TokenURL.Redacted(), "key", key)
	}

	callers := make([]policy.Caller, len(cfg.Callers))
	for i, c := range cfg.Callers {
		grants := make([]policy.Grant, len(c.Allow))
		for j, g := range c.Allow {
			grants[j] = policy.Grant{Tenant: g.Tenant, Groups: g.Groups, AccountTokens: g.AccountTokens}
		}
		callers[i] = policy.Caller{Name: c.Name, APIKeySHA256: c.APIKeySHA256, Allow: grants}
	}
	pol, err := policy.New(callers)
	if err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := server.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	b := broker.New(broker.Config{Exchanger: tenants, Skew: cfg.Cache.Skew, Metrics: metrics})
	return server.New(server.Config{
		Tokens:        b,
		Callers:       pol,
		Keys:          keystore.NewSet(published...),
		Logger:        log,
		Registry:      reg,
		ShutdownGrace: cfg.ShutdownGrace,
	})
}

// listen opens the gRPC and HTTP listeners.
func listen(grpcAddr, httpAddr string) (grpcLis, httpLis net.Listener, err error) {
	grpcLis, err = net.Listen("tcp", grpcAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen.grpc: %w", err)
	}
	if httpAddr == "" {
		return grpcLis, nil, nil
	}
	httpLis, err = net.Listen("tcp", httpAddr)
	if err != nil {
		grpcLis.Close()
		return nil, nil, fmt.Errorf("listen.http: %w", err)
	}
	return grpcLis, httpLis, nil
}
