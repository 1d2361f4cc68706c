package upstream

import (
	"context"
	"net/netip"
	"net/url"
	"strings"
)

// Endpoint resolves a tenant's token endpoint. Implementations must be safe
// for concurrent use.
type Endpoint interface {
	// Resolve returns the token endpoint and the issuer it belongs to ("" when
	// not known). Its error is an [*broker.ExchangeError] when the endpoint
	// cannot be found; the caller must not modify the URL.
	Resolve(ctx context.Context) (tokenURL *url.URL, issuer string, err error)
	// Failed reports that an exchange at the endpoint was refused or found
	// it unavailable: a discovered endpoint is looked up again before the
	// next exchange, in case it moved.
	Failed()
}

// StaticEndpoint is an [Endpoint] that always resolves to tokenURL and
// issuer, as configured. Its Failed does nothing.
func StaticEndpoint(tokenURL *url.URL, issuer string) Endpoint {
	return &staticEndpoint{tokenURL: tokenURL, issuer: issuer}
}

type staticEndpoint struct {
	tokenURL *url.URL
	issuer   string
}

func (s *staticEndpoint) Resolve(context.Context) (*url.URL, string, error) {
	return s.tokenURL, s.issuer, nil
}

func (s *staticEndpoint) Failed() {}

// urlProblem says what is wrong with an endpoint URL, or returns "": it must
// be absolute, https (or http on a loopback host, for development and
// tests), without a user name, password or fragment. These are the config's
// rules for token_url. The URL itself is never echoed: it might carry a
// password.
func urlProblem(u *url.URL) string {
	switch {
	case u == nil:
		return "is missing"
	case !u.IsAbs() || u.Hostname() == "":
		return "must be an absolute URL, such as https://host/path"
	case u.Scheme != "https" && u.Scheme != "http":
		return "must be an https URL, not " + sanitize(u.Scheme, 16)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return "must be an https URL: http is allowed only on loopback (127.0.0.1, [::1] or localhost)"
	case u.User != nil:
		return "must not contain a user name or password"
	case u.Fragment != "":
		return "must not have a fragment"
	}
	return ""
}

// isLoopback reports whether host is "localhost" or a loopback IP literal.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
