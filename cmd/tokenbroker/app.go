package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/upstream"
	"github.com/tokenbroker/tokenbroker/server"
)

// app is a running broker: its reloadable state, the broker core, the
// server, the audit sink, and the config file it reloads from.
type app struct {
	log    *slog.Logger
	path   string         // "" when there is no file to reload (dev)
	cfg    *config.Config // as started: what a reload cannot change
	client *http.Client
	guards *guards
	live   live
	broker *broker.Broker
	server *server.Server
	audit  *audit.Sink // nil without audit.file
	shared io.Closer   // the shared cache's connection to Redis; nil without cache.shared

	settle   time.Duration // how long file events must pause before a reload
	mu       sync.Mutex    // one reload at a time
	keysMu   sync.Mutex
	retiring map[*keyring]*time.Timer // replaced keyrings, each closed when its timer fires
	reloads  *prometheus.CounterVec
	reloaded atomic.Int64 // reload attempts finished, either way; tests wait on it
}

// keyCloseDelay is how long a keyring replaced by a reload stays open:
// exchanges that began before the reload may still be signing with its keys.
const keyCloseDelay = time.Minute

// newApp builds a broker from a validated config and its keys, which it
// owns from then on: it closes them, whether it fails or runs.
func newApp(path string, cfg *config.Config, keys *keyring, lg logging) (a *app, err error) {
	log := lg.Logger
	var sharedStore io.Closer
	defer func() {
		if err != nil {
			keys.Close()
			if sharedStore != nil {
				sharedStore.Close()
			}
		}
	}()
	a = &app{log: log, path: path, cfg: cfg, client: upstream.NewHTTPClient(), settle: 100 * time.Millisecond,
		retiring: map[*keyring]*time.Timer{}}
	reg := newRegistry()
	a.guards = newGuards(reg)
	st, err := buildState(cfg, keys, a.client, a.guards)
	if err != nil {
		return nil, err
	}
	a.live.cur.Store(st)
	logTenants(log, cfg, keys)

	metrics, err := server.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	a.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenbroker_config_reloads_total",
		Help: "Config reloads, by result: success, or failure (the previous config kept serving).",
	}, []string{"result"})
	auditErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tokenbroker_audit_errors_total",
		Help: "Audit sink failures: failed writes and records that could not be queued.",
	})
	reg.MustRegister(a.reloads, auditErrors)
	bc := brokerConfig(cfg.Cache, &a.live, metrics)
	if bc.Shared, sharedStore, err = openShared(cfg.Cache.Shared, a.live.scope, reg, log); err != nil {
		return nil, err
	}
	a.shared = sharedStore
	a.broker = broker.New(bc)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenbroker_cache_entries",
		Help: "Entries in the token cache, remembered refusals included.",
	}, func() float64 { return float64(a.broker.Len()) }))

	tlsCfg, clientCAs, err := loadTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	scfg := server.Config{
		Tokens: a.broker, Callers: &a.live, Keys: &a.live, Logger: log, Registry: reg,
		ShutdownGrace: cfg.ShutdownGrace, TLS: tlsCfg, ClientCAs: clientCAs, Metrics: metrics,
		Upstreams: a.guards.states, CallLog: lg.calls, CallLogger: lg.callLines,
	}
	if cfg.Audit != nil {
		a.audit, err = audit.Open(audit.Config{
			Path: cfg.Audit.File, QueueSize: cfg.Audit.Queue, FailClosed: cfg.Audit.FailClosed,
			OnError: func(err error) {
				log.Error("audit sink failure", "error", err)
				auditErrors.Inc()
			},
		})
		if err != nil {
			return nil, fmt.Errorf("audit.file: %w", err)
		}
		scfg.Auditor = a.audit
	} else if lg.calls == server.CallLogFailures {
		log.Info("successful calls leave no line and no audit record: only metrics count them; " +
			"configure audit.file for a record of every token, or run with --log-calls all")
	}
	if a.server, err = server.New(scfg); err != nil {
		return nil, err
	}
	return a, nil
}

// run serves until ctx is done, reloading on SIGHUP (hup) and when the
// config file changes; then it drains the server and flushes the audit
// trail.
func (a *app) run(ctx context.Context, grpcLis, httpLis net.Listener, hup <-chan os.Signal) error {
	auditDone := make(chan struct{})
	stopAudit := func() {}
	if a.audit != nil {
		actx, cancel := context.WithCancel(context.Background())
		stopAudit = cancel
		go func() {
			defer close(auditDone)
			if err := a.audit.Run(actx); err != nil {
				a.log.Error("audit sink stopped", "error", err)
			}
		}()
	} else {
		close(auditDone)
	}
	// The watch is in place before the first call is served, so no change
	// made after the broker answers can be missed.
	w := a.startWatch()
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		a.watch(wctx, w, hup)
	}()

	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		a.sweep(wctx)
	}()

	err := a.server.Serve(ctx, grpcLis, httpLis)
	stopWatch()
	<-watched
	<-sweepDone
	a.broker.Close() // after the server: no call is waiting for a refresh any more
	if a.shared != nil {
		a.shared.Close() // after the broker: nothing is using it any more
	}
	stopAudit() // after the server: calls that finished during the drain are recorded
	<-auditDone
	a.closeKeys()
	return err
}

// sweepEvery is how often expired cache entries are swept.
const sweepEvery = time.Minute

// sweep drops expired cache entries every sweepEvery until ctx ends.
func (a *app) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.broker.Sweep()
		}
	}
}

// brokerConfig is the broker's configuration: the cache settings, where 0
// turns refresh-ahead or the negative cache off.
func brokerConfig(c config.Cache, x broker.Exchanger, m broker.Metrics) broker.Config {
	bc := broker.Config{Exchanger: x, Skew: c.Skew, RefreshFraction: c.RefreshFraction, MaxEntries: c.MaxEntries,
		NegativeTTL: c.NegativeTTL, Metrics: m}
	if c.Skew == 0 {
		bc.Skew = -1 // the broker's zero is its default
	}
	if c.RefreshFraction == 0 {
		bc.RefreshFraction = -1
	}
	if c.NegativeTTL == 0 {
		bc.NegativeTTL = -1
	}
	return bc
}

// retireKeys closes a keyring a reload replaced once exchanges that began
// with it have had keyCloseDelay to finish signing.
func (a *app) retireKeys(r *keyring) {
	if r == nil || len(r.closers) == 0 {
		return
	}
	a.keysMu.Lock()
	defer a.keysMu.Unlock()
	a.retiring[r] = time.AfterFunc(keyCloseDelay, func() {
		a.keysMu.Lock()
		_, ok := a.retiring[r]
		delete(a.retiring, r)
		a.keysMu.Unlock()
		if ok {
			a.closeKeyring(r)
		}
	})
}

// closeKeys closes the keyrings waiting to be retired and the current one,
// once the server has stopped.
func (a *app) closeKeys() {
	a.keysMu.Lock()
	retiring := a.retiring
	a.retiring = map[*keyring]*time.Timer{}
	a.keysMu.Unlock()
	for r, t := range retiring {
		t.Stop()
		a.closeKeyring(r)
	}
	a.closeKeyring(a.live.cur.Load().keys)
}

func (a *app) closeKeyring(r *keyring) {
	if err := r.Close(); err != nil {
		a.log.Warn("closing keys", "error", err)
	}
}

// startWatch watches the config file's directory (editors and Kubernetes
// ConfigMaps replace files rather than write them); nil when there is no
// file, or the watch cannot be had, in which case SIGHUP still reloads.
func (a *app) startWatch() *fsnotify.Watcher {
	if a.path == "" {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(filepath.Dir(a.path)); err != nil {
			w.Close()
		}
	}
	if err != nil {
		a.log.Warn("not watching the config file; SIGHUP still reloads", "error", err)
		return nil
	}
	return w
}

// watch reloads on SIGHUP and on changes to the config file, until ctx is
// done; it closes w.
func (a *app) watch(ctx context.Context, w *fsnotify.Watcher, hup <-chan os.Signal) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	name := filepath.Base(a.path)
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			a.reload("SIGHUP")
		case ev := <-events:
			if base := filepath.Base(ev.Name); base == name || strings.HasPrefix(base, "..") {
				settle = time.After(a.settle) // let a burst of writes finish
			}
		case err := <-errs:
			a.log.Warn("config file watch", "error", err)
		case <-settle:
			settle = nil
			a.reload("file change")
		}
	}
}

// reload reads, validates and builds the whole new state before swapping it
// in; a config that fails anywhere is refused whole and the old one keeps
// serving. Cached tokens of tenants whose identity changed are dropped; a
// key rotation alone keeps them (they stay valid upstream), and the new
// active key signs the next exchange.
func (a *app) reload(trigger string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.reloaded.Add(1)
	cfg, keys, err := loadAll(a.path)
	var st *state
	if err == nil {
		if st, err = buildState(cfg, keys, a.client, a.guards); err != nil {
			keys.Close()
		}
	}
	if err != nil {
		a.reloads.WithLabelValues("failure").Inc()
		a.log.Error("config reload refused; the previous config keeps serving", "trigger", trigger, "error", err)
		return err
	}
	if fields := restartOnly(a.cfg, cfg); len(fields) > 0 {
		a.log.Warn("config changes that take effect only on restart were not applied", "fields", fields)
	}
	old := a.live.cur.Swap(st)
	a.retireKeys(old.keys)
	var dropped []string
	for id, was := range old.tenantIDs {
		if st.tenantIDs[id] != was {
			a.broker.DropTenant(id)
			dropped = append(dropped, id)
		}
	}
	a.reloads.WithLabelValues("success").Inc()
	logTenants(a.log, cfg, keys)
	a.log.Info("config reloaded", "trigger", trigger, "tenants", len(cfg.Tenants), "callers", len(cfg.Callers), "tokens_dropped_for", dropped)
	return nil
}

// restartOnly names the changed settings a reload cannot apply.
func restartOnly(was, now *config.Config) []string {
	var fields []string
	for name, pair := range map[string][2]any{
		"listen": {was.Listen, now.Listen}, "tls": {was.TLS, now.TLS}, "audit": {was.Audit, now.Audit},
		"shutdown_grace": {was.ShutdownGrace, now.ShutdownGrace}, "cache": {was.Cache, now.Cache},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			fields = append(fields, name)
		}
	}
	return fields
}
