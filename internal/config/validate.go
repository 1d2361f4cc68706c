package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults and limits.
const (
	defaultGRPC          = "127.0.0.1:7443"
	defaultHTTP          = "127.0.0.1:7080"
	defaultShutdownGrace = 15 * time.Second
	maxShutdownGrace     = 5 * time.Minute
	defaultSkew          = 10 * time.Second
	maxSkew              = 5 * time.Minute
	defaultTimeout       = 10 * time.Second
	maxTimeout           = 2 * time.Minute
	defaultLifetime      = 5 * time.Minute
	maxLifetime          = time.Hour // Pismo: exp − iat ≤ 3600 s
	maxTenantID          = 128
	maxCallerName        = 64
	maxClaim             = 1024
	maxGroup             = 256
)

const kindPismoOIDC = "pismo_oidc"

// laterKinds are the upstream kinds of the design not implemented yet.
var laterKinds = []string{"pismo_oauth2", "private_key_jwt", "client_secret_post", "client_secret_basic", "jwt_bearer"}

// validate checks the raw values and builds the Config, recording a problem
// for each wrong field. The Config is meaningful only when none was found.
func (p *parser) validate(r *rawConfig) *Config {
	c := &Config{
		Listen: Listen{
			GRPC: p.addr("listen.grpc", r.Listen.GRPC, defaultGRPC, true),
			HTTP: p.addr("listen.http", r.Listen.HTTP, defaultHTTP, false),
		},
		ShutdownGrace: p.duration("shutdown_grace", r.ShutdownGrace, defaultShutdownGrace, false, maxShutdownGrace),
		Cache:         Cache{Skew: p.duration("cache.skew", r.Cache.Skew, defaultSkew, true, maxSkew)},
	}
	if c.Listen.GRPC != "" && c.Listen.GRPC == c.Listen.HTTP && !strings.HasSuffix(c.Listen.GRPC, ":0") {
		p.fail("listen.http", "must differ from listen.grpc")
	}

	var tenants map[string]string
	c.Tenants, tenants = p.tenants(r.Tenants)
	c.Callers = p.callers(r.Callers, tenants)
	return c
}

// tenants checks the tenants and returns them with a map from each id to
// the path of its tenant.
func (p *parser) tenants(raw []rawTenant) ([]Tenant, map[string]string) {
	if len(raw) == 0 {
		p.fail("tenants", "at least one tenant is required")
	}
	var ts []Tenant
	ids := map[string]string{}
	for i, rt := range raw {
		path := fmt.Sprintf("tenants[%d]", i)
		ts = append(ts, p.tenant(path, rt))
		if first, dup := ids[rt.ID]; dup {
			p.fail(path+".id", "duplicate tenant id %s (first at %s)", quote(rt.ID), first)
		} else if rt.ID != "" {
			ids[rt.ID] = path
		}
	}
	return ts, ids
}

// callers checks the callers; their grants must name known tenants.
func (p *parser) callers(raw []rawCaller, tenants map[string]string) []Caller {
	if len(raw) == 0 {
		p.fail("callers", "at least one caller is required")
	}
	var cs []Caller
	names := map[string]string{}    // name → path of its caller
	hashes := map[[32]byte]string{} // hash → path of its caller
	for i, rc := range raw {
		path := fmt.Sprintf("callers[%d]", i)
		c := Caller{Name: rc.Name}
		p.name(path+".name", rc.Name, maxCallerName)
		if first, dup := names[rc.Name]; dup {
			p.fail(path+".name", "duplicate caller name %s (first at %s)", quote(rc.Name), first)
		} else if rc.Name != "" {
			names[rc.Name] = path
		}
		if h, ok := p.hash(path+".api_key_sha256", rc.APIKeySHA256); ok {
			if first, dup := hashes[h]; dup {
				p.fail(path+".api_key_sha256", "same key hash as %s: each caller needs its own key", first)
			} else {
				hashes[h] = path
			}
			c.APIKeySHA256 = h
		}
		if len(rc.Allow) == 0 {
			p.fail(path+".allow", "at least one grant is required")
		}
		for j, rg := range rc.Allow {
			c.Allow = append(c.Allow, p.grant(fmt.Sprintf("%s.allow[%d]", path, j), rg, tenants))
		}
		cs = append(cs, c)
	}
	return cs
}

func (p *parser) tenant(path string, r rawTenant) Tenant {
	p.name(path+".id", r.ID, maxTenantID)
	p.claim(path+".issuer", r.Issuer)
	p.claim(path+".subject", r.Subject)
	p.claim(path+".audience", r.Audience)
	return Tenant{
		ID:                r.ID,
		Upstream:          p.upstream(path+".upstream", r.Upstream),
		Issuer:            r.Issuer,
		Subject:           r.Subject,
		Audience:          r.Audience,
		KeyFile:           p.keyFile(path+".key_file", r.KeyFile),
		AssertionLifetime: p.duration(path+".assertion_lifetime", r.AssertionLifetime, defaultLifetime, false, maxLifetime),
		UIDMode:           p.uidMode(path+".uid_mode", r.UIDMode),
	}
}

func (p *parser) upstream(path string, r *rawUpstream) Upstream {
	if r == nil {
		p.fail(path, "required")
		return Upstream{}
	}
	switch {
	case r.Kind == "":
		p.fail(path+".kind", "required (%s is the only kind supported yet)", kindPismoOIDC)
	case r.Kind == kindPismoOIDC:
	case slices.Contains(laterKinds, r.Kind):
		p.fail(path+".kind", "%s is not supported yet: only %s is", quote(r.Kind), kindPismoOIDC)
	default:
		p.fail(path+".kind", "unknown kind %s, want one of %s (not supported yet: %s)",
			quote(r.Kind), kindPismoOIDC, strings.Join(laterKinds, ", "))
	}
	return Upstream{
		Kind:     r.Kind,
		TokenURL: p.tokenURL(path+".token_url", r.TokenURL),
		Timeout:  p.duration(path+".timeout", r.Timeout, defaultTimeout, false, maxTimeout),
	}
}

func (p *parser) grant(path string, r rawGrant, tenants map[string]string) Grant {
	switch _, ok := tenants[r.Tenant]; {
	case r.Tenant == "":
		p.fail(path+".tenant", "required")
	case !ok:
		p.fail(path+".tenant", "unknown tenant %s", quote(r.Tenant))
	}
	if len(r.Groups) == 0 {
		p.fail(path+".groups", "at least one group is required")
	}
	for k, g := range r.Groups {
		if msg := groupProblem(g); msg != "" {
			p.fail(fmt.Sprintf("%s.groups[%d]", path, k), "%s, got %s", msg, quote(g))
		}
	}
	return Grant(r) // the same fields: a conversion ignores the yaml tags
}

// groupProblem says what is wrong with a group or group pattern, or "".
func groupProblem(g string) string {
	if g == "" || len(g) > maxGroup {
		return fmt.Sprintf("must be 1-%d characters", maxGroup)
	}
	for i := range len(g) {
		switch b := g[i]; {
		case b == ' ':
			return "must not contain spaces"
		case b == ',':
			return "must not contain commas"
		case b < 0x21 || b > 0x7e:
			return "must be printable ASCII"
		}
	}
	segs := strings.Split(g, ":")
	for i, s := range segs {
		if strings.Contains(s, "*") && (s != "*" || i != len(segs)-1) {
			return `may use "*" only as the whole last ":"-separated segment, as in "pismo-v1:accounts:*" or "*"`
		}
	}
	return ""
}

// name checks an id or a name: 1-max of [A-Za-z0-9._-].
func (p *parser) name(path, s string, max int) {
	if s == "" {
		p.fail(path, "required")
		return
	}
	ok := len(s) <= max
	for i := 0; ok && i < len(s); i++ {
		b := s[i]
		ok = b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-'
	}
	if !ok {
		p.fail(path, "must be 1-%d of A-Z a-z 0-9 . _ -, got %s", max, quote(s))
	}
}

// claim checks an assertion claim value: required, at most 1024 bytes of UTF-8.
func (p *parser) claim(path, s string) {
	switch {
	case s == "":
		p.fail(path, "required")
	case len(s) > maxClaim:
		p.fail(path, "must be at most %d bytes, got %d", maxClaim, len(s))
	case !utf8.ValidString(s):
		p.fail(path, "must be valid UTF-8")
	}
}

// hash decodes a caller's api_key_sha256. The value is never echoed: it is
// often the key itself, pasted by mistake.
func (p *parser) hash(path, s string) ([32]byte, bool) {
	var h [32]byte
	const hint = "must be 64 hex digits, the SHA-256 of the caller's key (tokenbroker hash-key prints it)"
	switch {
	case s == "":
		p.fail(path, "required")
	case len(s) != hex.EncodedLen(len(h)):
		p.fail(path, "%s; got %d characters", hint, len(s))
	default:
		if _, err := hex.Decode(h[:], []byte(s)); err != nil {
			p.fail(path, "%s; got a character that is not a hex digit", hint)
		} else if h == sha256.Sum256(nil) {
			p.fail(path, "is the SHA-256 of an empty key")
		} else {
			return h, true
		}
	}
	return h, false
}

// addr checks a host:port address. With loopbackOnly, the host must be a
// loopback IP literal or localhost: gRPC is plaintext.
func (p *parser) addr(path string, s *string, def string, loopbackOnly bool) string {
	if s == nil {
		return def
	}
	host, port, err := net.SplitHostPort(*s)
	if err != nil {
		p.fail(path, "must be host:port, got %s", quote(*s))
		return ""
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		p.fail(path, "port must be a number from 0 to 65535, got %s", quote(port))
		return ""
	}
	if loopbackOnly && !isLoopback(host) {
		p.fail(path, "must be a loopback address (127.0.0.1, [::1] or localhost), got host %s: "+
			"gRPC is served in plaintext, which is allowed only on loopback, and TLS is not supported yet", quote(host))
		return ""
	}
	return *s
}

// isLoopback reports whether host is "localhost" or a loopback IP literal.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// tokenURL parses an absolute https URL, or http on loopback. The URL is
// never echoed: it might carry a password.
func (p *parser) tokenURL(path, s string) *url.URL {
	if s == "" {
		p.fail(path, "required")
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		p.fail(path, "invalid URL: %v", err)
		return nil
	}
	switch {
	case !u.IsAbs() || u.Hostname() == "":
		p.fail(path, "must be an absolute URL, such as https://host/path")
	case u.Scheme != "https" && u.Scheme != "http":
		p.fail(path, "must be an https URL, got scheme %s", quote(u.Scheme))
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		p.fail(path, "must be an https URL: http is allowed only on loopback (127.0.0.1, [::1] or localhost)")
	case u.User != nil:
		p.fail(path, "must not contain a user name or password")
	case strings.Contains(s, "#"):
		p.fail(path, "must not have a fragment")
	default:
		return u
	}
	return nil
}

// keyFile resolves a key file against the base directory and checks that it
// is a readable regular file; reading the key is the keystore's work.
func (p *parser) keyFile(path, s string) string {
	if s == "" {
		p.fail(path, "required")
		return ""
	}
	f := s
	if !filepath.IsAbs(f) {
		f = filepath.Join(p.baseDir, f)
	}
	f = filepath.Clean(f)
	fi, err := os.Stat(f)
	if err == nil && !fi.Mode().IsRegular() {
		p.fail(path, "%s is not a regular file", quote(f))
		return f
	}
	if err == nil { // a FIFO could block here; only regular files get this far
		var fh *os.File
		if fh, err = os.Open(f); err == nil {
			fh.Close()
		}
	}
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.fail(path, "%s does not exist", quote(f))
	case errors.As(err, &pe):
		p.fail(path, "cannot read %s: %v", quote(f), pe.Err)
	case err != nil:
		p.fail(path, "cannot read %s: %v", quote(f), err)
	}
	return f
}

// duration parses an optional duration: absent gives def; it must be at
// most max, and more than zero unless zeroOK.
func (p *parser) duration(path string, s *string, def time.Duration, zeroOK bool, max time.Duration) time.Duration {
	if s == nil {
		return def
	}
	d, err := time.ParseDuration(*s)
	if err != nil {
		// time's errors repeat the value: keep only what they add.
		detail := strings.TrimPrefix(err.Error(), "time: ")
		detail = strings.TrimSuffix(detail, " in duration "+strconv.Quote(*s))
		if detail == "invalid duration "+strconv.Quote(*s) || len(detail) > 100 {
			detail = ""
		} else {
			detail = ": " + detail
		}
		p.fail(path, "invalid duration %s%s, want a Go duration such as \"10s\" or \"1h30m\"", quote(*s), detail)
		return 0
	}
	switch {
	case zeroOK && (d < 0 || d > max):
		p.fail(path, "must be from 0s to %s, got %s", short(max), quote(*s))
	case !zeroOK && (d <= 0 || d > max):
		p.fail(path, "must be more than 0s and at most %s, got %s", short(max), quote(*s))
	}
	return d
}

// short formats a round duration without its zero units: 5m, not 5m0s.
func short(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

func (p *parser) uidMode(path string, s *string) UIDMode {
	if s == nil {
		return UIDOmit
	}
	switch m := UIDMode(*s); m {
	case UIDOmit, UIDTenant:
		return m
	}
	p.fail(path, "unknown uid_mode %s, want %s or %s", quote(*s), UIDOmit, UIDTenant)
	return ""
}
