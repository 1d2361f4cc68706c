package policy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Mode says what happens to a request the caller's allowlist refuses.
type Mode uint8

// The modes.
const (
	// Enforce refuses what the allowlist does not allow; the default.
	Enforce Mode = iota
	// Audit serves it, and the server audits it as would_deny: for rolling
	// out an allowlist.
	Audit
)

// String returns "enforce" or "audit", as the config spells them.
func (m Mode) String() string {
	switch m {
	case Enforce:
		return "enforce"
	case Audit:
		return "audit"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// RateLimit is a token bucket: Rate calls a second, up to Burst at once.
type RateLimit struct {
	Rate  float64
	Burst int
}

// Caller is a client service, how it authenticates and what it may ask for.
// It has a bearer key, a TLS identity, or both; with both, a call must
// present both.
type Caller struct {
	// Name identifies the caller in logs and metrics.
	Name string
	// APIKeySHA256 is the SHA-256 of the caller's bearer key; the zero value
	// unless HasAPIKey.
	APIKeySHA256 [32]byte
	// HasAPIKey says the caller may authenticate with a bearer key.
	HasAPIKey bool
	// TLSIdentity is the identity the caller's verified client certificate
	// names (its URI SAN, else its CN); "" when the caller is not matched
	// by certificate.
	TLSIdentity string
	// Mode says whether the allowlist is enforced or only audited.
	Mode Mode
	// RateLimit is the caller's bucket; nil: unlimited. The server applies
	// the config's default before building the policy.
	RateLimit *RateLimit
	// Allow lists the grants; a request must fit one grant entirely.
	Allow []Grant
}

// Grant lets a caller have tokens of one tenant.
type Grant struct {
	Tenant string
	// Groups are exact names, or patterns whose last ":"-separated segment
	// is "*" (or "*" alone), matching any group with that prefix.
	Groups []string
	// AccountTokens lets the caller ask for a uid or external account id.
	AccountTokens bool
	// UIDPattern, when set, must match the whole account id asked for (uid
	// or external account id); nil: any account id. The caller of [New]
	// anchors it (the config compiles "^(?:p)$"), and New anchors it again
	// so that an unanchored pattern cannot match a part of an id. Only with
	// AccountTokens.
	UIDPattern *regexp.Regexp
	// CustomClaims are the custom claim keys the caller may set; none when
	// empty.
	CustomClaims []string
	// MaxMinTTL is the largest min_ttl the caller may ask for; 0: no limit
	// of the grant's own.
	MaxMinTTL time.Duration
}

// Credentials are what a call presented; "" for what it did not.
type Credentials struct {
	// BearerKey is the key of "authorization: Bearer <key>".
	BearerKey string
	// TLSIdentity is the identity the call's verified client certificate
	// names.
	TLSIdentity string
}

// The reasons [Policy.Authenticate] refuses a call. They are for the log: a
// caller should learn only that it is unauthenticated.
var (
	// ErrNoCredentials: the call presented neither a key nor a certificate.
	ErrNoCredentials = errors.New("policy: no credentials: neither a bearer key nor a client certificate")
	// ErrUnknownKey: no caller has the key presented. A wrong key is never
	// ignored, whatever certificate came with it.
	ErrUnknownKey = errors.New("policy: unknown bearer key")
	// ErrUnknownIdentity: no caller has the certificate identity presented,
	// and no key came with it.
	ErrUnknownIdentity = errors.New("policy: unknown certificate identity")
	// ErrCredentialMismatch: the caller needs both a key and a certificate
	// and one is missing, or they name different callers.
	ErrCredentialMismatch = errors.New("policy: credential mismatch")
)

// Request is what a caller asks for, as the policy sees it.
type Request struct {
	Tenant string
	// UID or ExternalAccountID asks for an account token; "" for neither.
	UID, ExternalAccountID string
	Groups                 []string
	// CustomClaimKeys are the keys of the custom claims asked for, in the
	// order the first refused one should be named (the server sorts them).
	CustomClaimKeys []string
	// MinTTL is the life the token must have left.
	MinTTL time.Duration
}

// DeniedError names the first item of a request the caller may not have.
// Its message is meant for the caller: it repeats only what they sent.
type DeniedError struct {
	Caller string
	What   string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("caller %q may not have %s", e.Caller, e.What)
}

// Policy is an immutable table of callers. It is safe for concurrent use.
type Policy struct {
	byHash     map[[32]byte]*caller
	byIdentity map[string]*caller
}

type caller struct {
	name      string
	hasKey    bool
	identity  string
	mode      Mode
	rateLimit *RateLimit
	grants    map[string][]grant // by tenant
}

type grant struct {
	exact     map[string]bool
	prefixes  []string // a pattern "p:*" is stored as "p:"; "*" as ""
	accounts  bool
	uid       *regexp.Regexp // anchored; nil: any account id
	claims    map[string]bool
	maxMinTTL time.Duration // 0: none
}

// New builds the table. Names, key hashes and TLS identities must be
// unique; each caller needs a key or an identity (or both); a UIDPattern
// needs AccountTokens. New copies what it keeps: changing callers afterwards
// does not change the policy.
func New(callers []Caller) (*Policy, error) {
	p := &Policy{byHash: make(map[[32]byte]*caller, len(callers)), byIdentity: map[string]*caller{}}
	names := map[string]bool{}
	for _, c := range callers {
		if c.Name == "" {
			return nil, errors.New("policy: a caller has no name")
		}
		if names[c.Name] {
			return nil, fmt.Errorf("policy: caller %q is listed twice", c.Name)
		}
		names[c.Name] = true
		cc := &caller{name: c.Name, hasKey: c.HasAPIKey, identity: c.TLSIdentity, mode: c.Mode, grants: map[string][]grant{}}
		switch {
		case !c.HasAPIKey && c.TLSIdentity == "":
			return nil, fmt.Errorf("policy: caller %q has neither a key nor a TLS identity", c.Name)
		case !c.HasAPIKey && c.APIKeySHA256 != [32]byte{}:
			return nil, fmt.Errorf("policy: caller %q has a key hash but HasAPIKey is false", c.Name)
		case c.Mode != Enforce && c.Mode != Audit:
			return nil, fmt.Errorf("policy: caller %q: unknown mode %v", c.Name, c.Mode)
		}
		if rl := c.RateLimit; rl != nil {
			if !(rl.Rate > 0 && rl.Rate <= math.MaxFloat64) || rl.Burst < 1 {
				return nil, fmt.Errorf("policy: caller %q: rate limit %v/s, burst %d: want a rate above 0 and a burst of at least 1", c.Name, rl.Rate, rl.Burst)
			}
			cc.rateLimit = &RateLimit{Rate: rl.Rate, Burst: rl.Burst}
		}
		if c.HasAPIKey {
			if _, dup := p.byHash[c.APIKeySHA256]; dup {
				return nil, fmt.Errorf("policy: caller %q has the same key hash as another caller", c.Name)
			}
			p.byHash[c.APIKeySHA256] = cc
		}
		if c.TLSIdentity != "" {
			if other, dup := p.byIdentity[c.TLSIdentity]; dup {
				return nil, fmt.Errorf("policy: callers %q and %q have the same TLS identity %q", other.name, c.Name, c.TLSIdentity)
			}
			p.byIdentity[c.TLSIdentity] = cc
		}
		for _, a := range c.Allow {
			g, err := newGrant(a)
			if err != nil {
				return nil, fmt.Errorf("policy: caller %q: tenant %q: %w", c.Name, a.Tenant, err)
			}
			cc.grants[a.Tenant] = append(cc.grants[a.Tenant], g)
		}
	}
	return p, nil
}

func newGrant(a Grant) (grant, error) {
	g := grant{exact: map[string]bool{}, accounts: a.AccountTokens, maxMinTTL: a.MaxMinTTL}
	for _, pat := range a.Groups {
		switch {
		case pat == "*":
			g.prefixes = append(g.prefixes, "")
		case strings.HasSuffix(pat, ":*") && !strings.Contains(strings.TrimSuffix(pat, "*"), "*"):
			g.prefixes = append(g.prefixes, strings.TrimSuffix(pat, "*"))
		case strings.Contains(pat, "*"):
			return grant{}, fmt.Errorf("group pattern %q: \"*\" may only be the whole last segment", pat)
		default:
			g.exact[pat] = true
		}
	}
	if a.UIDPattern != nil {
		if !a.AccountTokens {
			return grant{}, errors.New("a uid pattern without account tokens")
		}
		re, err := regexp.Compile(`^(?:` + a.UIDPattern.String() + `)$`)
		if err != nil {
			return grant{}, fmt.Errorf("uid pattern: %w", err)
		}
		g.uid = re
	}
	if a.MaxMinTTL < 0 {
		return grant{}, fmt.Errorf("max min_ttl %v is negative", a.MaxMinTTL)
	}
	if len(a.CustomClaims) > 0 {
		g.claims = make(map[string]bool, len(a.CustomClaims))
		for _, k := range a.CustomClaims {
			g.claims[k] = true
		}
	}
	return g, nil
}

// Identity is an authenticated caller. The zero Identity is no caller and is
// allowed nothing.
type Identity struct{ c *caller }

// Name is the caller's configured name; "" for the zero Identity.
func (id Identity) Name() string {
	if id.c == nil {
		return ""
	}
	return id.c.name
}

// Mode says whether the caller's allowlist is enforced or only audited.
func (id Identity) Mode() Mode {
	if id.c == nil {
		return Enforce
	}
	return id.c.mode
}

// RateLimit is the caller's rate limit, or nil when it has none. It is
// shared: do not modify it.
func (id Identity) RateLimit() *RateLimit {
	if id.c == nil {
		return nil
	}
	return id.c.rateLimit
}

// Authenticate names the caller of a call from the credentials it
// presented, or returns an error wrapping one of [ErrNoCredentials],
// [ErrUnknownKey], [ErrUnknownIdentity] and [ErrCredentialMismatch], with
// details for the log (never the key).
//
// A key is looked up first, and a key no caller has is refused whatever
// else came with it. A caller found by its key that has no TLS identity is
// authenticated whatever certificate came with the key; one that has an
// identity needs the certificate naming it. Without a key, the certificate
// names the caller, which must then have no key of its own.
func (p *Policy) Authenticate(c Credentials) (Identity, error) {
	if c.BearerKey == "" && c.TLSIdentity == "" {
		return Identity{}, ErrNoCredentials
	}
	if c.BearerKey != "" {
		cc := p.byHash[sha256.Sum256([]byte(c.BearerKey))]
		switch {
		case cc == nil:
			return Identity{}, ErrUnknownKey
		case cc.identity == c.TLSIdentity:
			return Identity{cc}, nil
		case cc.identity == "":
			// A key-only caller may come over mTLS with any certificate,
			// but not with another caller's: two credentials naming two
			// callers say nothing reliable about who calls.
			if other := p.byIdentity[c.TLSIdentity]; other != nil && other != cc {
				return Identity{}, fmt.Errorf("%w: the key is caller %q's, but the client certificate is caller %q's", ErrCredentialMismatch, cc.name, other.name)
			}
			return Identity{cc}, nil
		case c.TLSIdentity == "":
			return Identity{}, fmt.Errorf("%w: the key is caller %q's, which must also present its client certificate", ErrCredentialMismatch, cc.name)
		default:
			return Identity{}, fmt.Errorf("%w: the key is caller %q's, but the client certificate names %q", ErrCredentialMismatch, cc.name, c.TLSIdentity)
		}
	}
	cc := p.byIdentity[c.TLSIdentity]
	switch {
	case cc == nil:
		return Identity{}, fmt.Errorf("%w %q", ErrUnknownIdentity, c.TLSIdentity)
	case cc.hasKey:
		return Identity{}, fmt.Errorf("%w: the client certificate names caller %q, which must also present its key", ErrCredentialMismatch, cc.name)
	}
	return Identity{cc}, nil
}

// Allow reports whether the caller may have req, or a *DeniedError naming
// the first item refused, in this order: the tenant, account tokens, the
// account id, each group, each custom claim key, min_ttl. A request must
// fit one grant entirely. A tenant the caller has no grant for is refused
// the same way whether or not it exists.
func (id Identity) Allow(req Request) error {
	if id.c == nil {
		return &DeniedError{"", fmt.Sprintf("tenant %q", req.Tenant)}
	}
	grants := id.c.grants[req.Tenant]
	if len(grants) == 0 {
		return &DeniedError{id.c.name, fmt.Sprintf("tenant %q", req.Tenant)}
	}
	for _, g := range grants {
		if g.covers(req) {
			return nil
		}
	}
	// Name the first thing no grant of the tenant allows.
	deny := func(what string) error {
		return &DeniedError{id.c.name, fmt.Sprintf("%s of tenant %q", what, req.Tenant)}
	}
	if account(req) && !anyGrant(grants, func(g grant) bool { return g.accounts }) {
		return deny("account tokens")
	}
	for _, a := range accountIDs(req) {
		if !anyGrant(grants, func(g grant) bool { return g.accounts && g.accountID(a.id) }) {
			return deny(fmt.Sprintf("%s %q", a.field, a.id))
		}
	}
	for _, group := range req.Groups {
		if !anyGrant(grants, func(g grant) bool { return g.matches(group) }) {
			return deny(fmt.Sprintf("group %q", group))
		}
	}
	for _, k := range req.CustomClaimKeys {
		if !anyGrant(grants, func(g grant) bool { return g.claims[k] }) {
			return deny(fmt.Sprintf("custom claim %q", k))
		}
	}
	if !anyGrant(grants, func(g grant) bool { return g.ttl(req.MinTTL) }) {
		var most time.Duration // every grant has a limit here
		for _, g := range grants {
			most = max(most, g.maxMinTTL)
		}
		return deny(fmt.Sprintf("min_ttl %v (at most %v)", req.MinTTL, most))
	}
	return &DeniedError{id.c.name, fmt.Sprintf("this combination of account, groups, custom claims and min_ttl of tenant %q (no single grant covers it)", req.Tenant)}
}

// account reports whether req asks for an account token.
func account(req Request) bool { return req.UID != "" || req.ExternalAccountID != "" }

// accountIDs lists the account ids of req with their request fields: the
// uid first. The server sends at most one; if both came, both are checked.
func accountIDs(req Request) []struct{ field, id string } {
	var ids []struct{ field, id string }
	if req.UID != "" {
		ids = append(ids, struct{ field, id string }{"uid", req.UID})
	}
	if req.ExternalAccountID != "" {
		ids = append(ids, struct{ field, id string }{"external_account_id", req.ExternalAccountID})
	}
	return ids
}

func (g grant) covers(req Request) bool {
	if account(req) && (!g.accounts || !g.accountID(req.UID) || !g.accountID(req.ExternalAccountID)) {
		return false
	}
	for _, group := range req.Groups {
		if !g.matches(group) {
			return false
		}
	}
	for _, k := range req.CustomClaimKeys {
		if !g.claims[k] {
			return false
		}
	}
	return g.ttl(req.MinTTL)
}

// accountID reports whether the grant's pattern allows the account id; ""
// (not asked for) always is.
func (g grant) accountID(id string) bool {
	return id == "" || g.uid == nil || g.uid.MatchString(id)
}

// ttl reports whether the grant allows asking for minTTL.
func (g grant) ttl(minTTL time.Duration) bool {
	return g.maxMinTTL == 0 || minTTL <= g.maxMinTTL
}

func (g grant) matches(group string) bool {
	if g.exact[group] {
		return true
	}
	for _, p := range g.prefixes {
		if len(group) > len(p) && strings.HasPrefix(group, p) {
			return true
		}
	}
	return false
}

func anyGrant(grants []grant, f func(grant) bool) bool {
	for _, g := range grants {
		if f(g) {
			return true
		}
	}
	return false
}
