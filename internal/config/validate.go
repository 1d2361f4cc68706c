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
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults and limits.
const (
	defaultGRPC            = "127.0.0.1:7443"
	defaultHTTP            = "127.0.0.1:7080"
	defaultShutdownGrace   = 15 * time.Second
	maxShutdownGrace       = 5 * time.Minute
	defaultSkew            = 10 * time.Second
	maxSkew                = 5 * time.Minute
	defaultRefreshFraction = 0.2
	maxRefreshFraction     = 0.9
	defaultMaxEntries      = 100_000
	maxMaxEntries          = 10_000_000
	defaultNegativeTTL     = 5 * time.Second
	maxNegativeTTL         = time.Minute
	defaultTimeout         = 10 * time.Second
	maxTimeout             = 2 * time.Minute
	defaultLifetime        = 5 * time.Minute
	maxLifetime            = time.Hour // Pismo: exp − iat ≤ 3600 s
	maxTenantID            = 128
	maxCallerName          = 64
	maxClaim               = 1024
	maxGroup               = 256
	defaultQueue           = 4096
	maxQueue               = 1_000_000
	maxRate                = 1_000_000 // calls a second
	maxBurst               = 1_000_000
	maxMaxMinTTL           = 55 * time.Minute // the API's limit on min_ttl
	maxUIDPattern          = 1024
	maxClaimKey            = 64
	maxCN                  = 256
	maxURIIdentity         = 2048 // the SPIFFE ID limit
	maxKeyID               = 256
	maxClientID            = 1024
	maxClientAssertion     = 5 * time.Minute // private_key_jwt (RFC 7523 practice; providers refuse longer)
	maxKeys                = 16              // per tenant, every state
	maxPKCS11URI           = 4096            // bytes
	minRedisTimeout        = time.Millisecond
	maxRedisTimeout        = 5 * time.Second
	maxRedisDB             = 65535
	maxPreviousSealKeys    = 4
	maxSentinels           = 16
)

// kinds are the upstream kinds, in the order messages list them.
var kinds = []string{KindPismoOIDC, KindPismoOAuth2, KindPrivateKeyJWT, KindClientSecretPost, KindClientSecretBasic, KindJWTBearer}

// The JWS algorithms a tenant's key may sign with; Pismo verifies RS256 only.
const (
	algRS256 = "RS256"
	algPS256 = "PS256"
	algES256 = "ES256"
)

// validate checks the raw values and builds the Config, recording a problem
// for each wrong field. The Config is meaningful only when none was found.
func (p *parser) validate(r *rawConfig) *Config {
	c := &Config{
		Listen: Listen{
			GRPC: p.addr("listen.grpc", r.Listen.GRPC, defaultGRPC, r.TLS == nil),
			HTTP: p.addr("listen.http", r.Listen.HTTP, defaultHTTP, false),
		},
		ShutdownGrace: p.duration("shutdown_grace", r.ShutdownGrace, defaultShutdownGrace, false, maxShutdownGrace),
		TLS:           p.tls("tls", r.TLS),
		Audit:         p.audit("audit", r.Audit),
		RateLimit:     p.rateLimit("rate_limit", r.RateLimit),
		Cache:         p.cache("cache", r.Cache),
	}
	if c.Listen.GRPC != "" && c.Listen.GRPC == c.Listen.HTTP && !strings.HasSuffix(c.Listen.GRPC, ":0") {
		p.fail("listen.http", "must differ from listen.grpc")
	}

	var tenants map[string]tenantRef
	c.Tenants, tenants = p.tenants(r.Tenants)
	// A tls block of the wrong type is one problem, not one per caller.
	clientCA := r.TLS != nil && (r.TLS.ClientCAFile != nil || p.bad["tls"])
	c.Callers = p.callers(r.Callers, tenants, clientCA)
	return c
}

// tenantRef is what a grant needs to know of its tenant.
type tenantRef struct {
	path string // "tenants[i]"
	kind string // the upstream kind, "" if invalid
}

// tenants checks the tenants and returns them with a map from each id to
// where its tenant is and its upstream kind.
func (p *parser) tenants(raw []rawTenant) ([]Tenant, map[string]tenantRef) {
	if len(raw) == 0 {
		p.fail("tenants", "at least one tenant is required")
	}
	var ts []Tenant
	ids := map[string]tenantRef{}
	for i, rt := range raw {
		path := fmt.Sprintf("tenants[%d]", i)
		t := p.tenant(path, rt)
		ts = append(ts, t)
		if first, dup := ids[rt.ID]; dup {
			p.fail(path+".id", "duplicate tenant id %s (first at %s)", quote(rt.ID), first.path)
		} else if rt.ID != "" {
			ref := tenantRef{path: path}
			if slices.Contains(kinds, t.Upstream.Kind) {
				ref.kind = t.Upstream.Kind
			}
			ids[rt.ID] = ref
		}
	}
	return ts, ids
}

// callers checks the callers; their grants must name known tenants, and a
// caller matched by certificate needs a client CA (tls.client_ca_file).
func (p *parser) callers(raw []rawCaller, tenants map[string]tenantRef, clientCA bool) []Caller {
	if len(raw) == 0 {
		p.fail("callers", "at least one caller is required")
	}
	var cs []Caller
	names := map[string]string{}      // name → path of its caller
	hashes := map[[32]byte]string{}   // hash → path of its caller
	identities := map[string]string{} // tls_identity → path of its caller
	for i, rc := range raw {
		path := fmt.Sprintf("callers[%d]", i)
		c := Caller{
			Name:      rc.Name,
			Mode:      p.mode(path+".mode", rc.Mode),
			RateLimit: p.rateLimit(path+".rate_limit", rc.RateLimit),
		}
		p.name(path+".name", rc.Name, maxCallerName)
		if first, dup := names[rc.Name]; dup {
			p.fail(path+".name", "duplicate caller name %s (first at %s)", quote(rc.Name), first)
		} else if rc.Name != "" {
			names[rc.Name] = path
		}
		if rc.APIKeySHA256 == nil && rc.TLSIdentity == nil {
			p.fail(path, "needs api_key_sha256 (a bearer key), tls_identity (a client certificate), or both")
		}
		if rc.APIKeySHA256 != nil {
			if h, ok := p.hash(path+".api_key_sha256", *rc.APIKeySHA256); ok {
				if first, dup := hashes[h]; dup {
					p.fail(path+".api_key_sha256", "same key hash as %s: each caller needs its own key", first)
				} else {
					hashes[h] = path
				}
				c.APIKeySHA256, c.HasAPIKey = h, true
			}
		}
		if rc.TLSIdentity != nil {
			id, ipath := *rc.TLSIdentity, path+".tls_identity"
			if p.tlsIdentity(ipath, id) {
				if first, dup := identities[id]; dup {
					p.fail(ipath, "same tls_identity as %s: a certificate must name one caller", first)
				} else {
					identities[id] = path
				}
				if !clientCA {
					p.fail(ipath, "needs tls.client_ca_file: without it callers present no certificate to name them")
				}
			}
			c.TLSIdentity = id
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
	t := Tenant{ID: r.ID, Upstream: p.upstream(path+".upstream", r.Upstream)}
	kind := "" // unknown: its problem is reported, and the fields that depend on it are not checked
	if r.Upstream != nil && slices.Contains(kinds, r.Upstream.Kind) {
		kind = r.Upstream.Kind
	}

	// The Pismo assertion's iss, sub and aud; a jwt_bearer default sub.
	for _, c := range []struct {
		name string
		raw  *string
		to   *string
	}{{"issuer", r.Issuer, &t.Issuer}, {"subject", r.Subject, &t.Subject}, {"audience", r.Audience, &t.Audience}} {
		switch {
		case kind == KindPismoOIDC || kind == KindJWTBearer && c.name == "subject" && c.raw != nil:
			var v string
			if c.raw != nil {
				v = *c.raw
			}
			p.claim(path+"."+c.name, v)
			*c.to = v
		case kind != "" && c.raw != nil:
			p.notFor(path+"."+c.name, kind)
		}
	}

	signs := kind == "" || t.Upstream.SignsAssertions()
	maxLife := maxLifetime
	if kind == KindPrivateKeyJWT {
		maxLife = maxClientAssertion
	}
	switch {
	case signs:
		t.AssertionLifetime = p.duration(path+".assertion_lifetime", r.AssertionLifetime, defaultLifetime, false, maxLife)
	case r.AssertionLifetime != nil:
		p.notFor(path+".assertion_lifetime", kind)
	}
	t.UIDMode = UIDOmit
	switch {
	case kind == "" || kind == KindPismoOIDC:
		t.UIDMode = p.uidMode(path+".uid_mode", r.UIDMode)
	case r.UIDMode != nil:
		p.notFor(path+".uid_mode", kind)
	}
	switch {
	case r.Alg != nil && !signs:
		p.notFor(path+".alg", kind)
	case r.Alg != nil:
		t.Alg = p.alg(path+".alg", *r.Alg, kind)
	}

	shorthand := r.KeyFile != nil || r.KeyID != nil || r.KeyPassphraseFile != nil || r.KeyPassphraseEnv != nil || r.AllowGroupReadableKey
	switch {
	case p.bad[path+".keys"]: // already a problem
	case !signs && (r.Keys != nil || shorthand):
		field := ".keys"
		if r.Keys == nil {
			field = ".key_file"
		}
		p.fail(path+field, "a %s upstream signs nothing: it authenticates with client_secret_file or client_secret_env; remove the key", kind)
	case !signs:
	case r.Keys != nil && shorthand:
		p.fail(path+".keys", "cannot be set with key_file (or key_id, key_passphrase_file, key_passphrase_env, allow_group_readable_key): "+
			"list every key under keys, or give one key with key_file")
	case r.Keys != nil:
		t.Keys = p.keys(path+".keys", r.Keys)
	default:
		var file string
		if r.KeyFile != nil {
			file = *r.KeyFile
		}
		k := Key{State: KeyActive, File: p.file(path+".key_file", file), AllowGroupReadable: r.AllowGroupReadableKey, Field: path + ".key_"}
		if r.KeyID != nil {
			k.KeyID = *r.KeyID
			p.keyID(path+".key_id", k.KeyID)
		}
		k.PassphraseFile, k.PassphraseEnv = p.passphrase(path, "key_passphrase", r.KeyPassphraseFile, r.KeyPassphraseEnv)
		t.Keys = []Key{k}
	}
	return t
}

// notFor records a field set for an upstream kind it does not apply to.
func (p *parser) notFor(path, kind string) {
	p.fail(path, "does not apply to a %s upstream; remove it", kind)
}

// keys checks a tenant's key list: 1-16 keys, each with a state, exactly one
// active. A retired key is not loaded, so its file is not checked.
func (p *parser) keys(path string, raw []rawKey) []Key {
	switch {
	case len(raw) == 0:
		p.fail(path, "at least one key is required")
		return nil
	case len(raw) > maxKeys:
		p.fail(path, "at most %d keys, got %d: remove retired keys", maxKeys, len(raw))
		return nil
	}
	keys := make([]Key, len(raw))
	active, bad := 0, false
	for i, r := range raw {
		kp := fmt.Sprintf("%s[%d]", path, i)
		if p.bad[kp] { // already a problem
			bad = true
			continue
		}
		k := &keys[i]
		k.AllowGroupReadable, k.Field = r.AllowGroupReadable, kp+"."
		switch {
		case r.State == nil:
			p.fail(kp+".state", "required: next, active or retired")
			bad = true
		case *r.State == string(KeyNext), *r.State == string(KeyActive), *r.State == string(KeyRetired):
			k.State = KeyState(*r.State)
		default:
			p.fail(kp+".state", "unknown state %s, want next, active or retired", quote(*r.State))
			bad = true
		}
		if k.State == KeyActive {
			active++
		}
		if r.KeyID != nil {
			k.KeyID = *r.KeyID
			p.keyID(kp+".key_id", k.KeyID)
		}
		k.PassphraseFile, k.PassphraseEnv = p.passphrase(kp, "passphrase", r.PassphraseFile, r.PassphraseEnv)
		retired := k.State == KeyRetired
		switch {
		case r.File != nil && r.PKCS11 != nil:
			p.fail(kp+".pkcs11", "cannot be set with file: a key is either a file or in a PKCS#11 token")
		case r.File != nil && retired:
			k.File = p.resolve(*r.File) // gone: need not exist any more
		case r.File != nil:
			k.File = p.file(kp+".file", *r.File)
		case r.PKCS11 != nil:
			k.PKCS11 = p.pkcs11(kp+".pkcs11", r.PKCS11, retired)
			if r.PassphraseFile != nil || r.PassphraseEnv != nil {
				p.fail(kp+".pkcs11", "a PKCS#11 key has no passphrase: its token takes the PIN in pin_file")
			}
			if r.AllowGroupReadable {
				p.fail(kp+".allow_group_readable", "applies to key files only, not to a PKCS#11 key")
			}
		case !retired:
			p.fail(kp, "needs file or pkcs11")
		}
	}
	if active != 1 && !bad {
		p.fail(path, "exactly one key must be active, found %d", active)
	}
	return keys
}

// pkcs11 checks a PKCS#11 key reference: the URI's form and size here, its
// attributes when the key is opened; the module and PIN file must exist
// unless the key is retired.
func (p *parser) pkcs11(path string, r *rawPKCS11, retired bool) *PKCS11 {
	k := &PKCS11{URI: r.URI}
	switch {
	case r.URI == "":
		p.fail(path+".uri", "required: an RFC 7512 URI such as pkcs11:token=broker;object=tenant-key")
	case len(r.URI) > maxPKCS11URI:
		p.fail(path+".uri", "at most %d bytes, got %d", maxPKCS11URI, len(r.URI))
	case !strings.HasPrefix(r.URI, "pkcs11:"):
		p.fail(path+".uri", "must be an RFC 7512 URI beginning with pkcs11:")
	}
	if retired {
		k.Module, k.PINFile = p.resolve(r.Module), p.resolve(r.PINFile)
		return k
	}
	k.Module = p.file(path+".module", r.Module)
	k.PINFile = p.file(path+".pin_file", r.PINFile)
	return k
}

// keyID checks the kid to take from a JWK Set: 1-256 printable ASCII.
func (p *parser) keyID(path, s string) { p.printable(path, s, maxKeyID) }

// alg checks a tenant's algorithm; a pismo_oidc tenant must sign with
// RS256, the only one Pismo verifies. Whether it fits the key is checked
// when the key is loaded.
func (p *parser) alg(path, s, kind string) string {
	switch s {
	case algRS256, algPS256, algES256:
	default:
		p.fail(path, "unknown alg %s, want %s, %s or %s", quote(s), algRS256, algPS256, algES256)
		return ""
	}
	if s != algRS256 && kind == KindPismoOIDC {
		p.fail(path, "must be %s for a %s upstream (Pismo verifies %s assertions only), got %s", algRS256, KindPismoOIDC, algRS256, s)
		return ""
	}
	return s
}

// passphrase checks where an encrypted key's passphrase comes from: a file
// or an environment variable, at most one, never the config itself.
func (p *parser) passphrase(path, prefix string, file, env *string) (string, string) {
	return p.secretSource(path, prefix, "passphrase", "; leave the field out for a key file that is not encrypted", file, env)
}

// secretSource checks where a secret comes from: the fields prefix_file or
// prefix_env under path, at most one, never the config itself. Its problems
// do not repeat the values: either may be the secret, pasted by mistake.
func (p *parser) secretSource(path, prefix, what, emptyHint string, file, env *string) (string, string) {
	var f, e string
	if file != nil {
		if *file == "" {
			p.fail(path+"."+prefix+"_file", "must name a file%s", emptyHint)
		} else {
			f = p.checkFile(path+"."+prefix+"_file", *file, false)
		}
	}
	if env != nil {
		e = *env
		switch {
		case !envName(e):
			p.fail(path+"."+prefix+"_env", "must be the name of an environment variable, [A-Z_][A-Z0-9_]* "+
				"(the value is not shown: it may be the %s itself)", what)
		case file != nil:
			p.fail(path+"."+prefix+"_env", "cannot be set with %s_file: the %s comes from one of them", prefix, what)
		}
	}
	return f, e
}

// envName reports whether s is an environment variable name: [A-Z_][A-Z0-9_]*.
func envName(s string) bool {
	for i := range len(s) {
		b := s[i]
		if !(b >= 'A' && b <= 'Z' || b == '_' || i > 0 && b >= '0' && b <= '9') {
			return false
		}
	}
	return s != ""
}

func (p *parser) upstream(path string, r *rawUpstream) Upstream {
	if r == nil {
		p.fail(path, "required")
		return Upstream{}
	}
	u := Upstream{Kind: r.Kind, Timeout: p.duration(path+".timeout", r.Timeout, defaultTimeout, false, maxTimeout)}
	switch {
	case r.Kind == "":
		p.fail(path+".kind", "required: one of %s", strings.Join(kinds, ", "))
		return u
	case !slices.Contains(kinds, r.Kind):
		p.fail(path+".kind", "unknown kind %s, want one of %s", quote(r.Kind), strings.Join(kinds, ", "))
		return u
	}
	pismo := r.Kind == KindPismoOIDC || r.Kind == KindPismoOAuth2
	switch {
	case r.TokenURL != nil && r.Issuer != nil:
		p.fail(path+".issuer", "cannot be set with token_url: give the token endpoint, or the issuer to discover it from")
	case r.Issuer != nil && pismo:
		p.fail(path+".issuer", "does not apply to a %s upstream: give its token_url", r.Kind)
	case r.Issuer != nil:
		u.Issuer = p.url(path+".issuer", *r.Issuer, false)
	case r.TokenURL != nil:
		u.TokenURL = p.url(path+".token_url", *r.TokenURL, true)
	case pismo:
		p.fail(path+".token_url", "required")
	default:
		p.fail(path+".token_url", "required, or issuer to discover it from")
	}

	switch {
	case r.ClientID != nil && r.Kind == KindPismoOIDC:
		p.notFor(path+".client_id", r.Kind)
	case r.ClientID != nil:
		u.ClientID = *r.ClientID
		p.printable(path+".client_id", u.ClientID, maxClientID)
	case r.Kind != KindPismoOIDC && r.Kind != KindJWTBearer:
		p.fail(path+".client_id", "required")
	}

	switch {
	case r.AssertionAudience != nil && r.Kind != KindPrivateKeyJWT:
		p.notFor(path+".assertion_audience", r.Kind)
	case r.AssertionAudience == nil && r.Kind == KindPrivateKeyJWT:
		u.AssertionAudience = AudienceTokenEndpoint
	case r.AssertionAudience != nil:
		switch a := *r.AssertionAudience; a {
		case AudienceIssuer:
			u.AssertionAudience = a
			if r.Issuer == nil {
				p.fail(path+".assertion_audience", "issuer needs upstream.issuer (discovery) to know the issuer; with token_url, use token_endpoint")
			}
		case AudienceTokenEndpoint:
			u.AssertionAudience = a
		default:
			p.fail(path+".assertion_audience", "unknown assertion_audience %s, want %s or %s", quote(a), AudienceTokenEndpoint, AudienceIssuer)
		}
	}

	if u.SignsAssertions() {
		for name, v := range map[string]*string{"client_secret_file": r.ClientSecretFile, "client_secret_env": r.ClientSecretEnv} {
			if v != nil {
				p.fail(path+"."+name, "does not apply to a %s upstream: it signs with the tenant's key; remove it", r.Kind)
			}
		}
		return u
	}
	u.ClientSecretFile, u.ClientSecretEnv = p.secretSource(path, "client_secret", "client secret", "", r.ClientSecretFile, r.ClientSecretEnv)
	if r.ClientSecretFile == nil && r.ClientSecretEnv == nil {
		p.fail(path+".client_secret_file", "required, or client_secret_env: the secret itself never goes in the config")
	}
	return u
}

// printable checks a value of 1-max printable ASCII characters.
func (p *parser) printable(path, s string, max int) {
	ok := s != "" && len(s) <= max
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] >= 0x20 && s[i] <= 0x7e
	}
	if !ok {
		p.fail(path, "must be 1-%d printable ASCII characters, got %s", max, quote(s))
	}
}

func (p *parser) grant(path string, r rawGrant, tenants map[string]tenantRef) Grant {
	ref, ok := tenants[r.Tenant]
	switch {
	case r.Tenant == "":
		p.fail(path+".tenant", "required")
	case !ok:
		p.fail(path+".tenant", "unknown tenant %s", quote(r.Tenant))
	}
	// What the tenant's upstream can carry: account ids for Pismo and the
	// JWT-bearer grant (as the assertion's sub), custom claims for Pismo's
	// OpenID endpoint only.
	switch ref.kind {
	case KindPrivateKeyJWT, KindClientSecretPost, KindClientSecretBasic:
		if r.AccountTokens {
			p.fail(path+".account_tokens", "tenant %s's upstream (%s) issues client tokens only; account tokens do not apply", quote(r.Tenant), ref.kind)
		}
	}
	if ref.kind != "" && ref.kind != KindPismoOIDC && len(r.CustomClaims) > 0 {
		p.fail(path+".custom_claims", "tenant %s's upstream (%s) takes no custom claims; only %s does", quote(r.Tenant), ref.kind, KindPismoOIDC)
	}
	if len(r.Groups) == 0 {
		p.fail(path+".groups", "at least one group is required")
	}
	for k, g := range r.Groups {
		if msg := groupProblem(g); msg != "" {
			p.fail(fmt.Sprintf("%s.groups[%d]", path, k), "%s, got %s", msg, quote(g))
		}
	}
	g := Grant{
		Tenant:        r.Tenant,
		Groups:        r.Groups,
		AccountTokens: r.AccountTokens,
		CustomClaims:  r.CustomClaims,
		MaxMinTTL:     p.duration(path+".max_min_ttl", r.MaxMinTTL, 0, false, maxMaxMinTTL),
	}
	if r.UIDPattern != nil {
		g.UIDPattern = *r.UIDPattern
		p.uidPattern(path+".uid_pattern", g.UIDPattern, r.AccountTokens)
	}
	for k, key := range r.CustomClaims {
		p.claimKey(fmt.Sprintf("%s.custom_claims[%d]", path, k), key)
	}
	return g
}

// uidPattern checks a grant's uid_pattern: a Go regular expression that
// must still compile when anchored at both ends, as the policy uses it.
func (p *parser) uidPattern(path, s string, accountTokens bool) {
	switch {
	case !accountTokens:
		p.fail(path, "needs account_tokens: true: without it the grant allows no account id to match")
	case s == "":
		p.fail(path, "must not be empty; leave the field out to allow any account id")
	case len(s) > maxUIDPattern:
		p.fail(path, "must be at most %d bytes, got %d", maxUIDPattern, len(s))
	default:
		_, err := regexp.Compile(s)
		if err == nil {
			_, err = regexp.Compile(`^(?:` + s + `)$`)
		}
		if err != nil {
			var se *syntax.Error
			if errors.As(err, &se) {
				p.fail(path, "invalid regular expression: %s in %s", se.Code, quote(se.Expr))
			} else {
				p.fail(path, "invalid regular expression: %v", err)
			}
		}
	}
}

// claimKey checks a custom claim key: 1-64 of [A-Za-z0-9_].
func (p *parser) claimKey(path, s string) {
	ok := s != "" && len(s) <= maxClaimKey
	for i := 0; ok && i < len(s); i++ {
		b := s[i]
		ok = b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_'
	}
	if !ok {
		p.fail(path, "must be 1-%d of A-Z a-z 0-9 _, got %s", maxClaimKey, quote(s))
	}
}

// mode checks a caller's mode; absent, the allowlist is enforced.
func (p *parser) mode(path string, s *string) CallerMode {
	if s == nil {
		return ModeEnforce
	}
	switch m := CallerMode(*s); m {
	case ModeEnforce, ModeAudit:
		return m
	}
	p.fail(path, "unknown mode %s, want %s or %s", quote(*s), ModeEnforce, ModeAudit)
	return ""
}

// tlsIdentity checks the identity a caller's certificate must name: a URI
// SAN, such as a SPIFFE ID, or a CN. The server compares it with the
// certificate's as a string, so a URI must be written as Go prints it.
func (p *parser) tlsIdentity(path, s string) bool {
	if strings.Contains(s, "://") {
		if len(s) > maxURIIdentity {
			p.fail(path, "must be at most %d bytes, got %d", maxURIIdentity, len(s))
			return false
		}
		u, err := url.Parse(s)
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URI, quoted below
		}
		switch {
		case err != nil:
			p.fail(path, "invalid URI %s: %v", quote(s), err)
		case u.Scheme == "" || u.Host == "":
			p.fail(path, "must be an absolute URI with a host, such as spiffe://trust-domain/path, got %s", quote(s))
		case u.String() != s:
			p.fail(path, "must be written %s: certificates are matched by the URI as Go prints it", quote(u.String()))
		default:
			return true
		}
		return false
	}
	ok := s != "" && len(s) <= maxCN
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] >= 0x20 && s[i] <= 0x7e
	}
	switch {
	case !ok:
		p.fail(path, "must be a URI such as spiffe://trust-domain/path, or a certificate CN of 1-%d printable ASCII characters, got %s", maxCN, quote(s))
	case s[0] == ' ' || s[len(s)-1] == ' ':
		p.fail(path, "must not begin or end with a space, got %s", quote(s))
	default:
		return true
	}
	return false
}

// tls checks the optional tls block.
func (p *parser) tls(path string, r *rawTLS) *TLS {
	if r == nil {
		return nil
	}
	t := &TLS{
		CertFile: p.file(path+".cert_file", r.CertFile),
		KeyFile:  p.file(path+".key_file", r.KeyFile),
	}
	if r.ClientCAFile != nil {
		if *r.ClientCAFile == "" {
			p.fail(path+".client_ca_file", "must name a file; leave the field out to serve callers without client certificates")
		} else {
			t.ClientCAFile = p.file(path+".client_ca_file", *r.ClientCAFile)
		}
	}
	return t
}

// audit checks the optional audit block.
func (p *parser) audit(path string, r *rawAudit) *Audit {
	if r == nil {
		return nil
	}
	a := &Audit{File: p.auditFile(path+".file", r.File), FailClosed: r.FailClosed, Queue: defaultQueue}
	if r.Queue != nil {
		a.Queue = *r.Queue
		if a.Queue < 1 || a.Queue > maxQueue {
			p.fail(path+".queue", "must be from 1 to %d, got %d", maxQueue, a.Queue)
		}
	}
	return a
}

// cache checks the cache block; every field is optional.
func (p *parser) cache(path string, r rawCache) Cache {
	c := Cache{
		Skew:            p.duration(path+".skew", r.Skew, defaultSkew, true, maxSkew),
		RefreshFraction: defaultRefreshFraction,
		MaxEntries:      defaultMaxEntries,
		NegativeTTL:     p.duration(path+".negative_ttl", r.NegativeTTL, defaultNegativeTTL, true, maxNegativeTTL),
	}
	if f := r.RefreshFraction; f != nil {
		if !(*f >= 0 && *f <= maxRefreshFraction) { // refuses NaN too
			p.fail(path+".refresh_fraction", "must be from 0 (no refresh-ahead) to %s, got %s",
				strconv.FormatFloat(maxRefreshFraction, 'f', -1, 64), strconv.FormatFloat(*f, 'f', -1, 64))
		}
		c.RefreshFraction = *f
	}
	if n := r.MaxEntries; n != nil {
		if *n < 1 || *n > maxMaxEntries {
			p.fail(path+".max_entries", "must be from 1 to %d, got %d", maxMaxEntries, *n)
		}
		c.MaxEntries = *n
	}
	c.Shared = p.shared(path+".shared", r.Shared)
	return c
}

// shared checks the optional cache.shared block. Its files are resolved,
// never opened: the caller reads them and checks their permissions. Its
// problems do not repeat the file paths: a key or a password may be pasted
// in their place by mistake.
func (p *parser) shared(path string, r *rawShared) *SharedCache {
	if r == nil {
		return nil
	}
	s := &SharedCache{}
	if r.Redis == nil {
		p.fail(path+".redis", "required")
	} else {
		s.Redis = p.redis(path+".redis", r.Redis)
	}
	if r.EncryptionKeyFile == "" {
		p.fail(path+".encryption_key_file", "required: a file holding 32 random bytes in base64 (openssl rand -base64 32)")
	} else {
		s.EncryptionKeyFile = p.resolve(r.EncryptionKeyFile)
	}
	prev := path + ".previous_encryption_key_files"
	if n := len(r.PreviousEncryptionKeyFiles); n > maxPreviousSealKeys {
		p.fail(prev, "at most %d files, got %d: remove the keys nothing is sealed under any more", maxPreviousSealKeys, n)
		return s
	}
	seen := map[string]string{} // resolved file → path of its field
	for i, f := range r.PreviousEncryptionKeyFiles {
		fp := fmt.Sprintf("%s[%d]", prev, i)
		if f == "" {
			p.fail(fp, "must name a file")
			continue
		}
		f = p.resolve(f)
		s.PreviousEncryptionKeyFiles = append(s.PreviousEncryptionKeyFiles, f)
		switch first, dup := seen[f]; {
		case f == s.EncryptionKeyFile:
			p.fail(fp, "same file as %s.encryption_key_file: list here only the keys being rotated out", path)
		case dup:
			p.fail(fp, "same file as %s: list each key once", first)
		default:
			seen[f] = fp
		}
	}
	return s
}

// The examples of addresses that messages give.
const (
	redisAddrExample    = "redis:6379"
	sentinelAddrExample = "sentinel-0:26379"
)

// redis checks where the shared cache's Redis is, at addr or through its
// sentinels, and how to talk to it.
func (p *parser) redis(path string, r *rawRedis) Redis {
	var rd Redis
	addrSet := r.Addr != nil && *r.Addr != ""
	if addrSet {
		rd.Addr = p.redisAddr(path+".addr", *r.Addr, redisAddrExample)
	}
	switch {
	case r.Sentinel != nil:
		rd.Sentinel = p.sentinel(path+".sentinel", r.Sentinel)
		if r.Addr != nil {
			p.fail(path+".sentinel", "cannot be set with addr: give the master's address in addr, or the sentinels that know it in sentinel, not both")
		}
	case !addrSet:
		p.fail(path+".addr", "required: addr (host:port) or sentinel")
	}
	if r.Username != nil {
		if *r.Username == "" {
			p.fail(path+".username", "must not be empty; leave the field out for Redis's default user")
		}
		rd.Username = *r.Username
	}
	rd.PasswordFile = p.optionalFile(path+".password_file", r.PasswordFile, "; leave the field out for a Redis without a password")
	if r.DB != nil {
		if *r.DB < 0 || *r.DB > maxRedisDB {
			p.fail(path+".db", "must be from 0 to %d, got %d", maxRedisDB, *r.DB)
		}
		rd.DB = *r.DB
	}
	rd.Timeout = p.durationFrom(path+".timeout", r.Timeout, DefaultRedisTimeout, minRedisTimeout, maxRedisTimeout)
	if r.TLS != nil {
		rd.TLS = p.redisTLS(path+".tls", r.TLS)
	}
	return rd
}

// sentinel checks the sentinel block of the shared cache's Redis: the
// master's name, the sentinels' addresses and the sentinels' own
// credentials.
func (p *parser) sentinel(path string, r *rawSentinel) *RedisSentinel {
	s := &RedisSentinel{}
	if r.Master == nil || *r.Master == "" {
		p.fail(path+".master", "required: the name the sentinels monitor the master under (sentinel monitor NAME ...)")
	} else {
		s.Master = *r.Master
	}
	ap := path + ".addrs"
	switch n := len(r.Addrs); {
	case n == 0:
		p.fail(ap, "required: 1-%d sentinel addresses (host:port), such as [%s]", maxSentinels, sentinelAddrExample)
	case n > maxSentinels:
		p.fail(ap, "at most %d sentinels, got %d", maxSentinels, n)
	default:
		seen := map[string]string{} // lowercased address → path of its item
		for i, a := range r.Addrs {
			ip := fmt.Sprintf("%s[%d]", ap, i)
			if a = p.redisAddr(ip, a, sentinelAddrExample); a == "" {
				continue
			}
			s.Addrs = append(s.Addrs, a)
			if first, dup := seen[strings.ToLower(a)]; dup {
				p.fail(ip, "same address as %s: list each sentinel once", first)
			} else {
				seen[strings.ToLower(a)] = ip
			}
		}
	}
	if r.Username != nil {
		if *r.Username == "" {
			p.fail(path+".username", "must not be empty; leave the field out for the sentinels' default user")
		}
		s.Username = *r.Username
	}
	s.PasswordFile = p.optionalFile(path+".password_file", r.PasswordFile, "; leave the field out for sentinels without a password")
	return s
}

// redisTLS checks the optional tls block of the shared cache's Redis: every
// field is optional, but a client certificate comes with its key.
func (p *parser) redisTLS(path string, r *rawRedisTLS) *RedisTLS {
	t := &RedisTLS{
		CAFile:   p.optionalFile(path+".ca_file", r.CAFile, "; leave the field out to trust the system's roots"),
		CertFile: p.optionalFile(path+".cert_file", r.CertFile, "; leave cert_file and key_file out to present no client certificate"),
		KeyFile:  p.optionalFile(path+".key_file", r.KeyFile, "; leave cert_file and key_file out to present no client certificate"),
	}
	switch {
	case r.CertFile != nil && r.KeyFile == nil:
		p.fail(path+".cert_file", "needs key_file: a client certificate is presented with its private key")
	case r.KeyFile != nil && r.CertFile == nil:
		p.fail(path+".key_file", "needs cert_file: the certificate the private key belongs to")
	}
	if r.ServerName != nil {
		if *r.ServerName == "" {
			p.fail(path+".server_name", "must not be empty; leave the field out to check the host of addr")
		}
		t.ServerName = *r.ServerName
	}
	return t
}

// optionalFile resolves an optional file that is not looked at here; an
// empty one is refused with hint, which says what leaving it out does.
func (p *parser) optionalFile(path string, s *string, hint string) string {
	switch {
	case s == nil:
		return ""
	case *s == "":
		p.fail(path, "must name a file%s", hint)
		return ""
	}
	return p.resolve(*s)
}

// redisAddr checks the address of a Redis server or of a sentinel:
// host:port with a host and a port from 1 to 65535; messages give example
// as one. A value with a scheme or a user is not repeated: it may hold the
// password.
func (p *parser) redisAddr(path, s, example string) string {
	if s == "" {
		p.fail(path, "required: host:port, such as %s", example)
		return ""
	}
	if strings.Contains(s, "://") || strings.Contains(s, "@") {
		p.fail(path, "must be host:port, such as %s, not a URL (the value is not shown: it may hold the password); "+
			"the user goes in username and the password in password_file", example)
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		p.fail(path, "must be host:port, such as %s, got %s", example, quote(s))
		return ""
	}
	if host == "" {
		p.fail(path, "must name a host, such as %s, got %s", example, quote(s))
		return ""
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		p.fail(path, "port must be a number from 1 to 65535, got %s", quote(port))
		return ""
	}
	return s
}

// rateLimit checks a rate_limit block: both fields are required.
func (p *parser) rateLimit(path string, r *rawRateLimit) *RateLimit {
	if r == nil {
		return nil
	}
	rl := &RateLimit{}
	switch {
	case r.Rate == nil:
		p.fail(path+".rate", "required")
	case !(*r.Rate > 0 && *r.Rate <= maxRate): // refuses NaN too
		p.fail(path+".rate", "must be more than 0 and at most %d (calls a second), got %s",
			maxRate, strconv.FormatFloat(*r.Rate, 'f', -1, 64))
	default:
		rl.Rate = *r.Rate
	}
	switch {
	case r.Burst == nil:
		p.fail(path+".burst", "required")
	case *r.Burst < 1 || *r.Burst > maxBurst:
		p.fail(path+".burst", "must be from 1 to %d, got %d", maxBurst, *r.Burst)
	default:
		rl.Burst = *r.Burst
	}
	return rl
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
// loopback IP literal or localhost: gRPC is plaintext without TLS.
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
	if loopbackOnly && !IsLoopback(host) {
		p.fail(path, "must be a loopback address (127.0.0.1, [::1] or localhost), got host %s: "+
			"without a tls block gRPC is served in plaintext, which is allowed only on loopback", quote(host))
		return ""
	}
	return *s
}

// IsLoopback reports whether host is "localhost" or a loopback IP literal:
// where the config allows what it refuses elsewhere (plaintext gRPC, http
// token URLs), and where cmd need not warn of plaintext Redis.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// tokenURL parses an absolute https URL, or http on loopback. The URL is
// never echoed: it might carry a password.
func (p *parser) url(path, s string, queryOK bool) *url.URL {
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
	case u.Scheme == "http" && !IsLoopback(u.Hostname()):
		p.fail(path, "must be an https URL: http is allowed only on loopback (127.0.0.1, [::1] or localhost)")
	case u.User != nil:
		p.fail(path, "must not contain a user name or password")
	case strings.Contains(s, "#"):
		p.fail(path, "must not have a fragment")
	case !queryOK && strings.Contains(s, "?"):
		p.fail(path, "must not have a query")
	default:
		return u
	}
	return nil
}

// resolve makes a path absolute against the base directory, and clean.
func (p *parser) resolve(s string) string {
	if !filepath.IsAbs(s) {
		s = filepath.Join(p.baseDir, s)
	}
	return filepath.Clean(s)
}

// file resolves a key or certificate file against the base directory and
// checks that it is a readable regular file; reading it is the keystore's
// or the server's work.
func (p *parser) file(path, s string) string {
	if s == "" {
		p.fail(path, "required")
		return ""
	}
	return p.checkFile(path, s, true)
}

// checkFile is file for a non-empty s. Without show its problems say "the
// file" instead of its path, for a field whose value may be a secret.
func (p *parser) checkFile(path, s string, show bool) string {
	f := p.resolve(s)
	name := "the file"
	if show {
		name = quote(f)
	}
	fi, err := os.Stat(f)
	if err == nil && !fi.Mode().IsRegular() {
		p.fail(path, "%s is not a regular file", name)
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
		p.fail(path, "%s does not exist", name)
	case errors.As(err, &pe):
		p.fail(path, "cannot read %s: %v", name, pe.Err)
	case err != nil && show:
		p.fail(path, "cannot read %s: %v", name, err)
	case err != nil:
		p.fail(path, "cannot read the file")
	}
	return f
}

// duration parses an optional duration: absent gives def; it must be at
// most max, and more than zero unless zeroOK.
func (p *parser) duration(path string, s *string, def time.Duration, zeroOK bool, max time.Duration) time.Duration {
	if s == nil {
		return def
	}
	d, ok := p.parseDuration(path, *s)
	switch {
	case !ok:
	case zeroOK && (d < 0 || d > max):
		p.fail(path, "must be from 0s to %s, got %s", short(max), quote(*s))
	case !zeroOK && (d <= 0 || d > max):
		p.fail(path, "must be more than 0s and at most %s, got %s", short(max), quote(*s))
	}
	return d
}

// durationFrom is [parser.duration] for a range with a lower bound: absent
// gives def; it must be from min to max.
func (p *parser) durationFrom(path string, s *string, def, min, max time.Duration) time.Duration {
	if s == nil {
		return def
	}
	d, ok := p.parseDuration(path, *s)
	if ok && (d < min || d > max) {
		p.fail(path, "must be from %s to %s, got %s", short(min), short(max), quote(*s))
	}
	return d
}

// parseDuration parses a Go duration, recording a problem (and returning 0
// and false) when s is not one.
func (p *parser) parseDuration(path, s string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	if err != nil {
		// time's errors repeat the value: keep only what they add.
		detail := strings.TrimPrefix(err.Error(), "time: ")
		detail = strings.TrimSuffix(detail, " in duration "+strconv.Quote(s))
		if detail == "invalid duration "+strconv.Quote(s) || len(detail) > 100 {
			detail = ""
		} else {
			detail = ": " + detail
		}
		p.fail(path, "invalid duration %s%s, want a Go duration such as \"10s\" or \"1h30m\"", quote(s), detail)
		return 0, false
	}
	return d, true
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

// auditFile resolves the audit trail's path, or keeps "-" for standard
// output. The trail creates its file, so only the directory must exist; a
// file already there must be a regular file.
func (p *parser) auditFile(path, s string) string {
	switch s {
	case "":
		p.fail(path, `required: a file, or "-" for standard output`)
		return ""
	case "-":
		return s
	}
	f := p.resolve(s)
	fi, err := os.Stat(f)
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(f)
		if fi, err = os.Stat(dir); err == nil && !fi.IsDir() {
			p.fail(path, "%s is not a directory", quote(dir))
			return f
		}
		if errors.Is(err, fs.ErrNotExist) {
			p.fail(path, "directory %s does not exist", quote(dir))
			return f
		}
	} else if err == nil && !fi.Mode().IsRegular() {
		p.fail(path, "%s is not a regular file", quote(f))
		return f
	}
	var pe *fs.PathError
	switch {
	case errors.As(err, &pe):
		p.fail(path, "cannot use %s: %v", quote(f), pe.Err)
	case err != nil:
		p.fail(path, "cannot use %s: %v", quote(f), err)
	}
	return f
}
