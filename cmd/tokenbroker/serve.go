package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenbroker/tokenbroker/internal/config"
)

func cmdServe(ctx context.Context, args []string, e *env) int {
	fs := newFlags("serve", e)
	path := fs.String("config", "", "the YAML config file (required)")
	// A busy broker's successful calls are counted by its metrics and, with
	// an audit trail, recorded there: a line for each would cost a quarter
	// of a cache hit (BENCHMARKS.md).
	newLogger := logFlags(fs, e, logDefaults{format: "json", calls: "failures", batch: true})
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *path == "" {
		return e.errorf("serve: --config is required")
	}
	log, err := newLogger()
	if err != nil {
		return e.errorf("serve: %v", err)
	}
	defer log.Close() // after the server has drained: the last calls' lines
	cfg, keys, err := loadAll(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return 1
	}
	a, err := newApp(*path, cfg, keys, log)
	if err != nil {
		return e.errorf("serve: %v", err)
	}
	grpcLis, httpLis, err := listen(cfg.Listen.GRPC, cfg.Listen.HTTP)
	if err != nil {
		return e.errorf("serve: %v", err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := a.run(ctx, grpcLis, httpLis, hup); err != nil {
		return e.errorf("serve: %v", err)
	}
	return 0
}

func cmdCheckConfig(_ context.Context, args []string, e *env) int {
	fs := newFlags("check-config", e)
	path := fs.String("config", "", "the YAML config file (required)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *path == "" {
		return e.errorf("check-config: --config is required")
	}
	cfg, keys, err := loadAll(*path)
	if err == nil {
		keys.Close()
		_, _, err = loadTLS(cfg.TLS)
	}
	if err == nil && cfg.Cache.Shared != nil {
		_, err = loadShared(cfg.Cache.Shared)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return 1
	}
	fmt.Fprintf(e.stdout, "%s: OK (%d tenants, %d callers)\n", *path, len(cfg.Tenants), len(cfg.Callers))
	return 0
}

// loadAll reads and validates the config, then loads the keys it names. Its
// error lists one problem per line, each naming the field. The caller closes
// the keyring.
func loadAll(path string) (*config.Config, *keyring, error) {
	cfg, err := config.Load(path)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return nil, nil, fmt.Errorf("%s: %d problem(s):\n%w", path, len(ce.Problems), err)
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	keys, err := loadKeys(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: keys:\n%w", path, err)
	}
	return cfg, keys, nil
}
