package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// state is everything a reload replaces, as one value: callers and their
// allowlists, tenants' exchangers and the published keys.
type state struct {
	policy  *policy.Policy
	tenants upstream.Tenants
	keys    *keyring
	jwks    *keystore.Directory
	// tenantIDs says, per tenant, where and as whom its tokens were
	// obtained; a reload drops the cached tokens of a tenant whose identity
	// changed. The signing key is not part of it: a rotated key signs the
	// next exchange, and the tokens obtained with the old one stay valid.
	tenantIDs map[string]string
}

// live serves the current state to the broker and the server; a reload
// swaps it atomically, and calls in flight finish on the state they began
// with.
type live struct{ cur atomic.Pointer[state] }

func (l *live) Authenticate(c policy.Credentials) (policy.Identity, error) {
	return l.cur.Load().policy.Authenticate(c)
}

func (l *live) Exchange(ctx context.Context, req broker.Request) (broker.Token, error) {
	return l.cur.Load().tenants.Exchange(ctx, req)
}

func (l *live) JWKS(tenant string) ([]byte, bool, error) { return l.cur.Load().jwks.JWKS(tenant) }

// scope is a tenant's identity for the shared cache: replicas share its
// tokens only while they agree on it, and a reload that changes it stops
// this replica from reading the tokens obtained before.
func (l *live) scope(tenant string) string { return l.cur.Load().tenantIDs[tenant] }

// newExchanger builds tenant t's exchanger for its upstream kind, with its
// active key or its client secret from keys.
func newExchanger(t config.Tenant, keys *keyring, client *http.Client) (broker.Exchanger, error) {
	up := t.Upstream
	key := keys.tenants[t.ID].active
	if up.SignsAssertions() && key == nil {
		return nil, errors.New("no active key loaded")
	}
	if up.Kind == config.KindPismoOIDC {
		return upstream.NewPismo(upstream.PismoConfig{
			TenantID:          t.ID,
			TokenURL:          up.TokenURL,
			Issuer:            t.Issuer,
			Subject:           t.Subject,
			Audience:          t.Audience,
			Signer:            key.Signer(),
			AssertionLifetime: t.AssertionLifetime,
			UIDMode:           upstream.UIDMode(t.UIDMode),
			Client:            client,
			Timeout:           up.Timeout,
		})
	}
	var endpoint upstream.Endpoint
	if up.Issuer != nil {
		d, err := upstream.NewDiscovery(upstream.DiscoveryConfig{Issuer: up.Issuer, AuthMethod: up.Kind, Client: client, Timeout: up.Timeout})
		if err != nil {
			return nil, err
		}
		endpoint = d
	} else {
		endpoint = upstream.StaticEndpoint(up.TokenURL, "")
	}
	oc := upstream.OAuthConfig{
		TenantID:          t.ID,
		Kind:              up.Kind,
		Endpoint:          endpoint,
		ClientID:          up.ClientID,
		Secret:            keys.secrets[t.ID],
		AssertionAudience: up.AssertionAudience,
		Subject:           t.Subject,
		Client:            client,
		Timeout:           up.Timeout,
	}
	if up.SignsAssertions() {
		oc.Signer, oc.AssertionLifetime = key.Signer(), t.AssertionLifetime
		if oc.ClientID == "" {
			oc.ClientID = key.ClientEmail()
		}
	}
	return upstream.NewOAuth(oc)
}

// buildState turns a validated config and its keys into a state, which
// holds the keyring from then on. Each tenant's exchanger goes through its
// endpoint's guard (retries, circuit breaker, in-flight limit).
func buildState(cfg *config.Config, keys *keyring, client *http.Client, g *guards) (*state, error) {
	st := &state{tenants: make(upstream.Tenants, len(cfg.Tenants)), keys: keys, jwks: keys.directory(),
		tenantIDs: make(map[string]string, len(cfg.Tenants))}
	for i, t := range cfg.Tenants {
		x, err := newExchanger(t, keys, client)
		if err != nil {
			return nil, fmt.Errorf("tenants[%d]: %w", i, err)
		}
		x = g.get(endpointName(t.Upstream)).Wrap(x)
		st.tenants[t.ID] = x
		up := t.Upstream
		sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%v\x00%v\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s",
			up.Kind, up.TokenURL, up.Issuer, up.ClientID, up.AssertionAudience, t.Issuer, t.Subject, t.Audience, t.UIDMode))
		st.tenantIDs[t.ID] = hex.EncodeToString(sum[:])
	}

	callers := make([]policy.Caller, len(cfg.Callers))
	for i, c := range cfg.Callers {
		grants := make([]policy.Grant, len(c.Allow))
		for j, g := range c.Allow {
			grants[j] = policy.Grant{Tenant: g.Tenant, Groups: g.Groups, AccountTokens: g.AccountTokens,
				CustomClaims: g.CustomClaims, MaxMinTTL: g.MaxMinTTL}
			if g.UIDPattern != "" {
				re, err := regexp.Compile(`^(?:` + g.UIDPattern + `)$`)
				if err != nil { // config validated it; a failure here is a bug
					return nil, fmt.Errorf("callers[%d].allow[%d].uid_pattern: %w", i, j, err)
				}
				grants[j].UIDPattern = re
			}
		}
		mode := policy.Enforce
		if c.Mode == config.ModeAudit {
			mode = policy.Audit
		}
		rl := c.RateLimit
		if rl == nil {
			rl = cfg.RateLimit
		}
		var prl *policy.RateLimit
		if rl != nil {
			prl = &policy.RateLimit{Rate: rl.Rate, Burst: rl.Burst}
		}
		callers[i] = policy.Caller{Name: c.Name, APIKeySHA256: c.APIKeySHA256, HasAPIKey: c.HasAPIKey, TLSIdentity: c.TLSIdentity,
			Mode: mode, RateLimit: prl, Allow: grants}
	}
	pol, err := policy.New(callers)
	if err != nil {
		return nil, err
	}
	st.policy = pol
	return st, nil
}

// loadTLS reads the server certificate and key (the key checked like a
// private key) and the callers' CAs.
func loadTLS(t *config.TLS) (*tls.Config, *x509.CertPool, error) {
	if t == nil {
		return nil, nil, nil
	}
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls.cert_file: %w", err)
	}
	keyPEM, err := keystore.ReadPrivateFile(t.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls.key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %s and %s: %w", t.CertFile, t.KeyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile == "" {
		return cfg, nil, nil
	}
	caPEM, err := os.ReadFile(t.ClientCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls.client_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("tls.client_ca_file: %s holds no PEM certificate", t.ClientCAFile)
	}
	return cfg, pool, nil
}

// newRegistry is the metrics registry with the process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
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

// logTenants logs each tenant's upstream, its signing key and the keys it
// publishes (types and key ids only).
func logTenants(log *slog.Logger, cfg *config.Config, keys *keyring) {
	for _, t := range cfg.Tenants {
		tk := keys.tenants[t.ID]
		endpoint := slog.String("token_url", "")
		if u := t.Upstream.TokenURL; u != nil {
			endpoint = slog.String("token_url", u.Redacted())
		} else if u := t.Upstream.Issuer; u != nil {
			endpoint = slog.String("issuer", u.Redacted())
		}
		log.Info("tenant", "id", t.ID, "upstream", t.Upstream.Kind, endpoint, "key", tk.active, "published", len(tk.published))
	}
}
