package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/seal"
	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/sharedtoken"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// openShared connects the cache tier the replicas share through Redis, as
// cache.shared configures it; nil without one. It reads the sealing keys and
// the Redis and sentinel passwords (each file checked like a private key)
// but does not wait for Redis: a replica starts and serves alone until Redis
// answers.
// scope names a tenant's identity, so that replicas share a tenant's tokens
// only while they agree on where and as whom they are obtained.
func openShared(c *config.SharedCache, scope func(string) string, reg prometheus.Registerer, log *slog.Logger) (broker.Shared, io.Closer, error) {
	if c == nil {
		return nil, nil, nil
	}
	sec, err := loadShared(c)
	if err != nil {
		return nil, nil, err
	}
	r, sealer, tlsCfg := c.Redis, sec.sealer, sec.tls
	// Where Redis is, for the log: its address, or the master's name and
	// the sentinels that know where it is.
	where := []any{"redis", r.Addr}
	addrs := []string{r.Addr}
	if s := r.Sentinel; s != nil {
		where = []any{"sentinel_master", s.Master, "sentinels", s.Addrs}
		addrs = s.Addrs
	}
	offLoopback := func(addr string) bool {
		host, _, _ := net.SplitHostPort(addr) // the config checked it is host:port
		return !config.IsLoopback(host)
	}
	if tlsCfg == nil && slices.ContainsFunc(addrs, offLoopback) {
		log.Warn("the shared cache talks to Redis without TLS: the values are sealed, but its password and traffic are not; set cache.shared.redis.tls",
			where...)
	}

	m := newSharedMetrics(log)
	if err := m.register(reg); err != nil {
		return nil, nil, err
	}
	cfg := shared.Config{Addr: r.Addr, Username: r.Username, Password: sec.password, TLS: tlsCfg, DB: r.DB,
		Timeout: r.Timeout, Metrics: m}
	if s := r.Sentinel; s != nil {
		cfg.SentinelMaster, cfg.SentinelAddrs = s.Master, s.Addrs
		cfg.SentinelUsername, cfg.SentinelPassword = s.Username, sec.sentinelPassword
	}
	store, err := shared.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("cache.shared.redis: %w", err)
	}
	tier, err := sharedtoken.New(sharedtoken.Config{Store: store, Sealer: sealer, Scope: scope, Metrics: m})
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("cache.shared: %w", err)
	}
	// A failure here is not fatal: the replica serves alone until Redis
	// answers, and the episode is logged once.
	_ = store.Ping(context.Background())
	log.Info("shared cache configured", append(where, "tls", tlsCfg != nil, "seal", sealer)...)
	return tier, store, nil
}

// sharedSecrets is what the shared cache reads from files: the sealing
// keys, the Redis and sentinel passwords and the TLS configuration.
type sharedSecrets struct {
	sealer           *seal.Sealer
	password         string
	sentinelPassword string
	tls              *tls.Config // nil: plain TCP
}

// loadShared reads and checks the shared cache's files (check-config does
// too): the sealing keys and the password files as private keys, the TLS
// files as the server's.
func loadShared(c *config.SharedCache) (sharedSecrets, error) {
	current, err := seal.LoadKeyFile(c.EncryptionKeyFile)
	if err != nil {
		return sharedSecrets{}, fmt.Errorf("cache.shared.encryption_key_file: %w", err)
	}
	var older []seal.Key
	for i, f := range c.PreviousEncryptionKeyFiles {
		k, err := seal.LoadKeyFile(f)
		if err != nil {
			return sharedSecrets{}, fmt.Errorf("cache.shared.previous_encryption_key_files[%d]: %w", i, err)
		}
		older = append(older, k)
	}
	var sec sharedSecrets
	if sec.sealer, err = seal.NewSealer(current, older...); err != nil {
		return sharedSecrets{}, fmt.Errorf("cache.shared: %w", err)
	}
	if f := c.Redis.PasswordFile; f != "" {
		b, err := keystore.ReadSecretLine(f)
		if err != nil {
			return sharedSecrets{}, fmt.Errorf("cache.shared.redis.password_file: %w", err)
		}
		sec.password = string(b)
		clear(b)
	}
	if s := c.Redis.Sentinel; s != nil && s.PasswordFile != "" {
		b, err := keystore.ReadSecretLine(s.PasswordFile)
		if err != nil {
			return sharedSecrets{}, fmt.Errorf("cache.shared.redis.sentinel.password_file: %w", err)
		}
		sec.sentinelPassword = string(b)
		clear(b)
	}
	if sec.tls, err = redisTLS(c.Redis); err != nil {
		return sharedSecrets{}, err
	}
	return sec, nil
}

// redisTLS is the client TLS configuration for Redis; nil for plain TCP.
// Through Sentinel it serves the sentinels too, and without a server_name
// each connection checks the host it dials (go-redis's dialer fills in an
// empty ServerName), since the master's address is known only then.
func redisTLS(r config.Redis) (*tls.Config, error) {
	t := r.TLS
	if t == nil {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if cfg.ServerName == "" && r.Sentinel == nil {
		host, _, err := net.SplitHostPort(r.Addr)
		if err != nil {
			return nil, fmt.Errorf("cache.shared.redis.addr: %w", err)
		}
		cfg.ServerName = host
	}
	if t.CAFile != "" {
		caPEM, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cache.shared.redis.tls.ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("cache.shared.redis.tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		certPEM, err := os.ReadFile(t.CertFile)
		if err != nil {
			return nil, fmt.Errorf("cache.shared.redis.tls.cert_file: %w", err)
		}
		keyPEM, err := keystore.ReadPrivateFile(t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cache.shared.redis.tls.key_file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("cache.shared.redis.tls: %s and %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// sharedMetrics logs and counts the shared cache's events: one log line
// per outage episode, however many calls fall back during it.
type sharedMetrics struct {
	log        *slog.Logger
	up         prometheus.Gauge
	episodes   prometheus.Counter
	unreadable *prometheus.CounterVec
	dropped    prometheus.Counter
}

func newSharedMetrics(log *slog.Logger) *sharedMetrics {
	m := &sharedMetrics{
		log: log,
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenbroker_shared_cache_up",
			Help: "1 while Redis answers; 0 during an outage episode, when the replica serves from its own cache alone.",
		}),
		episodes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_shared_cache_episodes_total",
			Help: "Outage episodes of the shared cache: Redis unreachable or slower than cache.shared.redis.timeout.",
		}),
		unreadable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_shared_cache_unreadable_total",
			Help: "Values in Redis that did not open, treated as misses, by reason: unknown_key (sealed under a key not configured here) or invalid (tampered or corrupt).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_shared_cache_invalidations_dropped_total",
			Help: "Invalidations from other replicas dropped because this replica fell behind; the local copies expire on their own.",
		}),
	}
	m.up.Set(1)
	return m
}

func (m *sharedMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.up, m.episodes, m.unreadable, m.dropped} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Episode logs and counts an outage of Redis and its end.
func (m *sharedMetrics) Episode(down bool, cause error) {
	if down {
		m.up.Set(0)
		m.episodes.Inc()
		m.log.Warn("shared cache unavailable; this replica serves from its own cache until Redis answers", "error", cause)
		return
	}
	m.up.Set(1)
	m.log.Info("shared cache available again")
}

// InvalidationDropped counts an invalidation this replica missed.
func (m *sharedMetrics) InvalidationDropped() { m.dropped.Inc() }

// Unreadable counts a value that did not open.
func (m *sharedMetrics) Unreadable(unknownKey bool) {
	reason := "invalid"
	if unknownKey {
		reason = "unknown_key"
	}
	m.unreadable.WithLabelValues(reason).Inc()
}

// quietRedis drops go-redis's own log lines (dial failures, pool
// messages): the shared cache logs one line per outage episode instead,
// with the cause.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// silenceRedis installs quietRedis as go-redis's logger, which is global
// to the process: main calls it once.
func silenceRedis() { redis.SetLogger(quietRedis{}) }
