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
	"strings"
	"sync/atomic"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// loadKeys loads every tenant's key file with its options (passphrase, key
// id, algorithm, the group-readable override), reporting each failure on its
// own line naming the field. A pismo_oidc tenant's key must sign RS256.
func loadKeys(cfg *config.Config) (map[string]*keystore.Key, error) {
	keys := make(map[string]*keystore.Key, len(cfg.Tenants))
	var problems []string
	for i, t := range cfg.Tenants {
		passphrase, err := readPassphrase(i, t)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		k, err := keystore.LoadFileWithOptions(t.KeyFile, keystore.Options{
			Passphrase:         passphrase,
			KeyID:              t.KeyID,
			Algorithm:          jose.SignatureAlgorithm(t.Alg),
			AllowGroupReadable: t.AllowGroupReadableKey,
		})
		clear(passphrase)
		if err != nil {
			problems = append(problems, fmt.Sprintf("tenants[%d].key_file: %v", i, err))
			continue
		}
		if t.Upstream.Kind == "pismo_oidc" && k.Algorithm() != jose.RS256 {
			problems = append(problems, fmt.Sprintf("tenants[%d].key_file: %s signs %s, but a pismo_oidc upstream verifies RS256 only; use an RSA key",
				i, t.KeyFile, k.Algorithm()))
			continue
		}
		keys[t.ID] = k
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return keys, nil
}

// readPassphrase returns the passphrase of tenant i's key from its file
// (checked like a private key file, its trailing newline trimmed) or its
// environment variable, or nil when it has neither. The caller clears it.
// Errors name the field, never the passphrase.
func readPassphrase(i int, t config.Tenant) ([]byte, error) {
	switch {
	case t.KeyPassphraseFile != "":
		data, err := keystore.ReadPrivateFile(t.KeyPassphraseFile)
		if err != nil {
			return nil, fmt.Errorf("tenants[%d].key_passphrase_file: %w", i, err)
		}
		passphrase := data
		if n := len(passphrase); n > 0 && passphrase[n-1] == '\n' {
			passphrase = passphrase[:n-1]
			if n := len(passphrase); n > 0 && passphrase[n-1] == '\r' {
				passphrase = passphrase[:n-1]
			}
		}
		if len(passphrase) == 0 {
			clear(data)
			return nil, fmt.Errorf("tenants[%d].key_passphrase_file: %s is empty", i, t.KeyPassphraseFile)
		}
		return passphrase, nil // clearing it clears data up to the newline
	case t.KeyPassphraseEnv != "":
		v := os.Getenv(t.KeyPassphraseEnv)
		if v == "" {
			return nil, fmt.Errorf("tenants[%d].key_passphrase_env: %s is not set", i, t.KeyPassphraseEnv)
		}
		return []byte(v), nil // the string itself cannot be cleared
	}
	return nil, nil
}

// state is everything a reload replaces, as one value: callers and their
// allowlists, tenants' exchangers and the published keys.
type state struct {
	policy  *policy.Policy
	tenants upstream.Tenants
	keys    *keystore.Set
	// tenantIDs says, per tenant, what its tokens were obtained with; a
	// reload drops the cached tokens of a tenant whose identity changed.
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

func (l *live) JWKS() ([]byte, error) { return l.cur.Load().keys.JWKS() }

// buildState turns a validated config and its keys into a state.
func buildState(cfg *config.Config, keys map[string]*keystore.Key, client *http.Client) (*state, error) {
	st := &state{tenants: make(upstream.Tenants, len(cfg.Tenants)), tenantIDs: make(map[string]string, len(cfg.Tenants))}
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
		st.tenants[t.ID] = x
		sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s",
			t.Upstream.Kind, t.Upstream.TokenURL, t.Issuer, t.Subject, t.Audience, key.ID(), t.UIDMode, t.AssertionLifetime))
		st.tenantIDs[t.ID] = hex.EncodeToString(sum[:])
	}
	st.keys = keystore.NewSet(published...)

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

func logTenants(log *slog.Logger, cfg *config.Config, keys map[string]*keystore.Key) {
	for _, t := range cfg.Tenants {
		log.Info("tenant", "id", t.ID, "upstream", t.Upstream.Kind, "token_url", t.Upstream.TokenURL.Redacted(), "key", keys[t.ID])
	}
}
