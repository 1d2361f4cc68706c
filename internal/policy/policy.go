package policy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
)

// Caller is an authenticated client service and what it may ask for.
type Caller struct {
	// Name identifies the caller in logs and metrics.
	Name string
	// APIKeySHA256 is the SHA-256 of the caller's bearer key.
	APIKeySHA256 [32]byte
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
}

// Request is what a caller asks for, as the policy sees it.
type Request struct {
	Tenant  string
	Account bool // a uid or an external account id was asked for
	Groups  []string
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
	byHash map[[32]byte]*caller
}

type caller struct {
	name   string
	grants map[string][]grant // by tenant
}

type grant struct {
	exact    map[string]bool
	prefixes []string // a pattern "p:*" is stored as "p:"; "*" as ""
	accounts bool
}

// New builds the table. Names and key hashes must be unique.
func New(callers []Caller) (*Policy, error) {
	p := &Policy{byHash: make(map[[32]byte]*caller, len(callers))}
	names := map[string]bool{}
	for _, c := range callers {
		if c.Name == "" {
			return nil, errors.New("policy: a caller has no name")
		}
		if names[c.Name] {
			return nil, fmt.Errorf("policy: caller %q is listed twice", c.Name)
		}
		names[c.Name] = true
		if _, dup := p.byHash[c.APIKeySHA256]; dup {
			return nil, fmt.Errorf("policy: caller %q has the same key hash as another caller", c.Name)
		}
		cc := &caller{name: c.Name, grants: map[string][]grant{}}
		for _, a := range c.Allow {
			g := grant{exact: map[string]bool{}, accounts: a.AccountTokens}
			for _, pat := range a.Groups {
				switch {
				case pat == "*":
					g.prefixes = append(g.prefixes, "")
				case strings.HasSuffix(pat, ":*") && !strings.Contains(strings.TrimSuffix(pat, "*"), "*"):
					g.prefixes = append(g.prefixes, strings.TrimSuffix(pat, "*"))
				case strings.Contains(pat, "*"):
					return nil, fmt.Errorf("policy: caller %q: group pattern %q: \"*\" may only be the whole last segment", c.Name, pat)
				default:
					g.exact[pat] = true
				}
			}
			cc.grants[a.Tenant] = append(cc.grants[a.Tenant], g)
		}
		p.byHash[c.APIKeySHA256] = cc
	}
	return p, nil
}

// Identity is an authenticated caller.
type Identity struct{ c *caller }

// Name is the caller's configured name.
func (id Identity) Name() string { return id.c.name }

// Authenticate finds the caller whose key hashes to the SHA-256 of key.
func (p *Policy) Authenticate(key string) (Identity, bool) {
	c, ok := p.byHash[sha256.Sum256([]byte(key))]
	return Identity{c}, ok
}

// Allow reports whether the caller may have req, or a *DeniedError naming
// the first item refused. A tenant the caller has no grant for is refused
// the same way whether or not it exists.
func (id Identity) Allow(req Request) error {
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
	if req.Account && !anyGrant(grants, func(g grant) bool { return g.accounts }) {
		return &DeniedError{id.c.name, fmt.Sprintf("account tokens of tenant %q", req.Tenant)}
	}
	for _, group := range req.Groups {
		if !anyGrant(grants, func(g grant) bool { return g.matches(group) }) {
			return &DeniedError{id.c.name, fmt.Sprintf("group %q of tenant %q", group, req.Tenant)}
		}
	}
	return &DeniedError{id.c.name, fmt.Sprintf("this combination of groups and account of tenant %q (no single grant covers it)", req.Tenant)}
}

func (g grant) covers(req Request) bool {
	if req.Account && !g.accounts {
		return false
	}
	for _, group := range req.Groups {
		if !g.matches(group) {
			return false
		}
	}
	return true
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
