package config_test

import (
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/config"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, every
// failure must be an *Error with one problem per line, and every config it
// accepts must be usable.
func FuzzParse(f *testing.F) {
	dir := keyDir(f)
	f.Add([]byte(base))
	f.Add([]byte(full))
	f.Add([]byte(keyOpt(f, "key_id: kid-1\n    alg: RS256\n    key_passphrase_env: TN_PASS\n    allow_group_readable_key: true")))
	f.Add([]byte(keyList(f, "    - {file: k.pem, state: next, key_id: b}\n    - {state: active, pkcs11: {uri: \"pkcs11:object=a\", module: k.pem, pin_file: k.pem}}\n    - {file: gone.pem, state: retired}\n")))
	f.Add([]byte(kindsDoc))
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
			if tn.ID == "" || ids[tn.ID] || tn.Upstream.Timeout <= 0 ||
				tn.UIDMode == "" || tn.Upstream.Kind == config.KindPismoOIDC && tn.Alg != "" && tn.Alg != "RS256" {
				t.Fatalf("accepted an unusable tenant: %+v", tn)
			}
			up := tn.Upstream
			if (up.TokenURL == nil) == (up.Issuer == nil) || up.ClientID == "" && up.Kind != config.KindPismoOIDC && up.Kind != config.KindJWTBearer ||
				!up.SignsAssertions() && (up.ClientSecretFile == "") == (up.ClientSecretEnv == "") ||
				up.SignsAssertions() && (tn.AssertionLifetime <= 0 || tn.AssertionLifetime > time.Hour) {
				t.Fatalf("accepted an unusable upstream: %+v", tn)
			}
			active := 0
			for _, k := range tn.Keys {
				if k.State == config.KeyActive {
					active++
				}
				if k.State != config.KeyRetired && (k.File == "") == (k.PKCS11 == nil) ||
					k.PassphraseFile != "" && k.PassphraseEnv != "" || k.PKCS11 != nil && (k.PassphraseFile != "" || k.PassphraseEnv != "") ||
					len(k.KeyID) > 256 || strings.ContainsFunc(k.KeyID, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
					t.Fatalf("accepted an unusable key: %+v", k)
				}
			}
			if tn.Upstream.SignsAssertions() != (active == 1) || active > 1 || len(tn.Keys) > 16 {
				t.Fatalf("accepted a tenant with %d keys, %d active", len(tn.Keys), active)
			}
			ids[tn.ID] = true
		}
		if !rateLimitOK(cfg.RateLimit) {
			t.Fatalf("accepted an unusable rate limit: %+v", cfg.RateLimit)
		}
		if a := cfg.Audit; a != nil && (a.File == "" || a.Queue < 1 || a.Queue > 1_000_000) {
			t.Fatalf("accepted an unusable audit block: %+v", a)
		}
		if tl := cfg.TLS; tl != nil && (tl.CertFile == "" || tl.KeyFile == "") {
			t.Fatalf("accepted an unusable tls block: %+v", tl)
		}
		if s := cfg.Cache.Shared; s != nil && !sharedOK(s) {
			t.Fatalf("accepted an unusable shared cache: %+v (redis %+v)", s, s.Redis)
		}
		identities := map[string]bool{}
		for _, c := range cfg.Callers {
			if c.Name == "" || len(c.Allow) == 0 || !c.HasAPIKey && c.TLSIdentity == "" ||
				c.Mode != config.ModeEnforce && c.Mode != config.ModeAudit || !rateLimitOK(c.RateLimit) {
				t.Fatalf("accepted an unusable caller: %+v", c)
			}
			if c.TLSIdentity != "" {
				if identities[c.TLSIdentity] || cfg.TLS == nil || cfg.TLS.ClientCAFile == "" {
					t.Fatalf("accepted a tls_identity that cannot name the caller: %+v", c)
				}
				identities[c.TLSIdentity] = true
			}
			for _, g := range c.Allow {
				if !ids[g.Tenant] || len(g.Groups) == 0 || g.MaxMinTTL < 0 || g.MaxMinTTL > 55*time.Minute {
					t.Fatalf("accepted an unusable grant: %+v", g)
				}
				if g.UIDPattern != "" {
					if _, err := regexp.Compile(`^(?:` + g.UIDPattern + `)$`); err != nil || !g.AccountTokens {
						t.Fatalf("accepted an unusable uid_pattern: %+v (%v)", g, err)
					}
				}
			}
		}
	})
}

func rateLimitOK(rl *config.RateLimit) bool {
	return rl == nil || rl.Rate > 0 && rl.Rate <= 1e6 && rl.Burst >= 1 && rl.Burst <= 1e6
}

// sharedOK reports whether an accepted cache.shared block is usable: a
// Redis address with a host and a port, or else a sentinel block with a
// master name and 1-16 distinct such addresses, values in range, a client
// certificate with its key, and distinct encryption keys.
func sharedOK(s *config.SharedCache) bool {
	r := s.Redis
	switch sn := r.Sentinel; {
	case sn == nil && !hostPortOK(r.Addr):
		return false
	case sn != nil:
		if r.Addr != "" || sn.Master == "" || len(sn.Addrs) == 0 || len(sn.Addrs) > 16 {
			return false
		}
		seen := map[string]bool{}
		for _, a := range sn.Addrs {
			if !hostPortOK(a) || seen[strings.ToLower(a)] {
				return false
			}
			seen[strings.ToLower(a)] = true
		}
	}
	if r.DB < 0 || r.DB > 65535 || r.Timeout < time.Millisecond || r.Timeout > 5*time.Second {
		return false
	}
	if r.TLS != nil && (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		return false
	}
	if s.EncryptionKeyFile == "" || len(s.PreviousEncryptionKeyFiles) > 4 {
		return false
	}
	files := map[string]bool{s.EncryptionKeyFile: true}
	for _, f := range s.PreviousEncryptionKeyFiles {
		if f == "" || files[f] {
			return false
		}
		files[f] = true
	}
	return true
}

// hostPortOK reports whether addr is host:port with a host and a port from
// 1 to 65535.
func hostPortOK(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.ParseUint(port, 10, 16)
	return err == nil && perr == nil && host != "" && n != 0
}
