package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/config"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, every
// failure must be an *Error with one problem per line, and every config it
// accepts must be usable.
func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.pem"), []byte("not parsed here"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(base))
	f.Add([]byte("callers: [{name: c, allow: [{tenant: t, groups: [\"a:*:b\"]}]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, dir)
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %q, want *config.Error", err, err)
			}
			if len(ce.Problems) == 0 {
				t.Fatal("an *Error without problems")
			}
			if got, want := strings.Count(err.Error(), "\n")+1, len(ce.Problems); got != want {
				t.Fatalf("Error() has %d lines for %d problems:\n%s", got, want, err)
			}
			if cfg != nil {
				t.Fatal("a config returned with an error")
			}
			return
		}
		if len(cfg.Tenants) == 0 || len(cfg.Callers) == 0 {
			t.Fatalf("accepted a config without tenants or callers: %+v", cfg)
		}
		ids := map[string]bool{}
		for _, tn := range cfg.Tenants {
			if tn.ID == "" || ids[tn.ID] || tn.Upstream.TokenURL == nil || tn.Upstream.Timeout <= 0 ||
				tn.AssertionLifetime <= 0 || tn.KeyFile == "" || tn.UIDMode == "" {
				t.Fatalf("accepted an unusable tenant: %+v", tn)
			}
			ids[tn.ID] = true
		}
		for _, c := range cfg.Callers {
			if c.Name == "" || len(c.Allow) == 0 {
				t.Fatalf("accepted an unusable caller: %+v", c)
			}
			for _, g := range c.Allow {
				if !ids[g.Tenant] || len(g.Groups) == 0 {
					t.Fatalf("accepted an unusable grant: %+v", g)
				}
			}
		}
	})
}
