package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tokenbroker/tokenbroker/broker"
)

// DefaultDiscoveryRefresh is how long a discovery document is used before it
// is fetched again, when [DiscoveryConfig.Refresh] is zero.
const DefaultDiscoveryRefresh = time.Hour

// discoveryRetry is the longest a cached document is served without trying
// again after a refresh failed: long enough that an unreachable discovery
// endpoint does not add its timeout to every exchange, short enough that a
// provider that comes back is noticed soon. Refresh caps it.
const discoveryRetry = 30 * time.Second

// wellKnownPath is appended to the issuer (OIDC Discovery §4).
const wellKnownPath = "/.well-known/openid-configuration"

// DiscoveryConfig configures [NewDiscovery].
type DiscoveryConfig struct {
	// Issuer is the provider's issuer: https (or http on loopback), no
	// user name, query or fragment. The document must name exactly this
	// issuer, trailing slash and all (OIDC Discovery §4.3).
	Issuer *url.URL
	// AuthMethod is the kind of the exchanger that will use the endpoint
	// ([KindPrivateKeyJWT], [KindClientSecretPost], [KindClientSecretBasic],
	// [KindJWTBearer] or [KindPismoOAuth2]). Its client authentication
	// method (pismo_oauth2 sends client_secret_post) must be listed in the
	// document's token_endpoint_auth_methods_supported, which when absent
	// means client_secret_basic alone. jwt_bearer authenticates no client
	// (its assertion is the grant), so for it nothing is checked.
	AuthMethod string
	// Client fetches the document; nil uses [NewHTTPClient].
	Client *http.Client
	// Refresh is how long a document is used before it is fetched again;
	// default [DefaultDiscoveryRefresh].
	Refresh time.Duration
	// Timeout bounds one fetch; default 10 s.
	Timeout time.Duration
	// Clock defaults to time.Now.
	Clock func() time.Time
}

// Discovery is an [Endpoint] found through OpenID Connect Discovery: it
// fetches {issuer}/.well-known/openid-configuration, checks the document
// and takes its token_endpoint. It caches the document, fetches it again
// when it is older than the refresh interval or after [Discovery.Failed],
// and has concurrent callers share one fetch. When a refresh fails (the
// provider unreachable, or its new document unusable) it keeps serving the
// document it has, and tries again at the next Resolve at least 30 s later.
// It runs no goroutine of its own beyond the fetch in flight, and logs
// nothing. It is safe for concurrent use.
type Discovery struct {
	issuer    string // as configured; the document must match it exactly
	host      string
	wellKnown string
	method    string // the auth method to find in the document; "" checks none
	client    *http.Client
	refresh   time.Duration
	retry     time.Duration
	timeout   time.Duration
	clock     func() time.Time

	flight singleflight.Group

	mu       sync.Mutex
	tokenURL *url.URL  // nil until a fetch succeeds; never modified once stored
	fetched  time.Time // when tokenURL's document was fetched
	stale    bool      // Failed was called since
	failedAt time.Time // when the last fetch failed; zero after a success
}

// NewDiscovery checks cfg and returns the endpoint. It fetches nothing
// until the first [Discovery.Resolve].
func NewDiscovery(cfg DiscoveryConfig) (*Discovery, error) {
	var problems []string
	if p := urlProblem(cfg.Issuer); p != "" {
		problems = append(problems, "issuer "+p)
	} else if cfg.Issuer.RawQuery != "" || cfg.Issuer.ForceQuery {
		problems = append(problems, "issuer must not have a query (OIDC Discovery §3)")
	}
	method := ""
	switch cfg.AuthMethod {
	case KindPrivateKeyJWT, KindClientSecretPost, KindClientSecretBasic:
		method = cfg.AuthMethod
	case KindPismoOAuth2:
		method = KindClientSecretPost
	case KindJWTBearer:
	default:
		problems = append(problems, fmt.Sprintf("unknown auth method %q; use %s, %s, %s, %s or %s", sanitize(cfg.AuthMethod, 32),
			KindPrivateKeyJWT, KindClientSecretPost, KindClientSecretBasic, KindJWTBearer, KindPismoOAuth2))
	}
	if cfg.Refresh < 0 {
		problems = append(problems, fmt.Sprintf("refresh interval %s is negative", cfg.Refresh))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("upstream: discovery: %s", strings.Join(problems, "; "))
	}
	d := &Discovery{
		issuer: cfg.Issuer.String(), host: cfg.Issuer.Host, method: method,
		client: cfg.Client, refresh: cfg.Refresh, timeout: cfg.Timeout, clock: cfg.Clock,
	}
	wk := *cfg.Issuer
	wk.Path = strings.TrimSuffix(wk.Path, "/") + wellKnownPath
	wk.RawPath = ""
	if cfg.Issuer.RawPath != "" {
		wk.RawPath = strings.TrimSuffix(cfg.Issuer.RawPath, "/") + wellKnownPath
	}
	d.wellKnown = wk.String()
	if d.client == nil {
		d.client = NewHTTPClient()
	}
	if d.refresh == 0 {
		d.refresh = DefaultDiscoveryRefresh
	}
	d.retry = min(discoveryRetry, d.refresh)
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	if d.clock == nil {
		d.clock = time.Now
	}
	return d, nil
}

// Resolve returns the token endpoint and the configured issuer, fetching
// the document first when there is none, it is older than the refresh
// interval, or [Discovery.Failed] was called. Without a document, its
// error is an [*broker.ExchangeError]: unavailable (or timeout) when the
// provider could not be reached, bad_response when its document is
// unusable, with the detail (in Err) saying what to fix.
func (d *Discovery) Resolve(ctx context.Context) (*url.URL, string, error) {
	if u := d.cached(d.clock()); u != nil {
		return u, d.issuer, nil
	}
	// The fetch runs on its own context, which keeps the first caller's
	// values but not its cancellation, so that a caller giving up does not
	// fail the others; each caller waits on its own context.
	fetchCtx := context.WithoutCancel(ctx)
	ch := d.flight.DoChan("", func() (any, error) { return d.fetchShared(fetchCtx) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, "", r.Err
		}
		return r.Val.(*url.URL), d.issuer, nil
	case <-ctx.Done():
		reason := broker.ReasonUnavailable
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			reason = broker.ReasonTimeout
		}
		return nil, "", &broker.ExchangeError{Reason: reason, Upstream: d.host,
			Err: fmt.Errorf("upstream: discovery at %s: gave up waiting for the document: %w", d.wellKnown, ctx.Err())}
	}
}

// Failed makes the next [Discovery.Resolve] fetch the document again,
// unless a fetch failed less than 30 s (or the refresh interval, if
// shorter) ago: until then the cached document is served as it is.
func (d *Discovery) Failed() {
	d.mu.Lock()
	d.stale = true
	d.mu.Unlock()
}

// cached returns the token endpoint when no fetch is due at now, else nil.
func (d *Discovery) cached(now time.Time) *url.URL {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.tokenURL == nil:
		return nil
	case !d.stale && now.Sub(d.fetched) < d.refresh:
		return d.tokenURL
	case !d.failedAt.IsZero() && now.Sub(d.failedAt) < d.retry:
		return d.tokenURL // a refresh just failed: do not try again yet
	}
	return nil
}

// fetchShared is the one fetch in flight. It checks again whether a fetch
// is due, so a caller that arrives just after a fetch finished uses its
// result instead of starting another. When the fetch fails and a document
// is cached, it returns the cached endpoint and no error.
func (d *Discovery) fetchShared(ctx context.Context) (any, error) {
	now := d.clock()
	if u := d.cached(now); u != nil {
		return u, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	u, err := d.fetch(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.failedAt = now
		if d.tokenURL != nil {
			return d.tokenURL, nil
		}
		return nil, err
	}
	d.tokenURL, d.fetched, d.stale, d.failedAt = u, now, false, time.Time{}
	return u, nil
}

// fetch gets and checks the document.
func (d *Discovery) fetch(ctx context.Context) (*url.URL, error) {
	fail := func(reason broker.Reason, status int, format string, args ...any) error {
		return &broker.ExchangeError{Reason: reason, Upstream: d.host, HTTPStatus: status,
			Err: fmt.Errorf("upstream: discovery at %s: %s", d.wellKnown, fmt.Sprintf(format, args...))}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.wellKnown, nil)
	if err != nil {
		return nil, fail(broker.ReasonInternal, 0, "build request: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		reason := broker.ReasonUnavailable
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			reason = broker.ReasonTimeout
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the message already
		}
		return nil, fail(reason, 0, "%v", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fail(broker.ReasonUnavailable, resp.StatusCode, "HTTP %d", resp.StatusCode)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, fail(broker.ReasonBadResponse, resp.StatusCode,
			"HTTP %d: redirects are not followed; set the issuer to exactly the provider's issuer", resp.StatusCode)
	default:
		return nil, fail(broker.ReasonBadResponse, resp.StatusCode,
			"HTTP %d: no discovery document there; check the issuer (without %s)", resp.StatusCode, wellKnownPath)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, fail(broker.ReasonUnavailable, resp.StatusCode, "read the document: %v", err)
	}
	if len(body) > MaxBodyBytes {
		return nil, fail(broker.ReasonBadResponse, resp.StatusCode, "the document exceeds %d bytes", MaxBodyBytes)
	}
	u, err := parseDiscovery(body, d.issuer, d.method)
	if err != nil {
		return nil, fail(broker.ReasonBadResponse, resp.StatusCode, "%v", err)
	}
	return u, nil
}

// parseDiscovery checks an OpenID provider metadata document (OIDC
// Discovery §3, §4.3) against the configured issuer and the client
// authentication method ("" checks none), and returns its token endpoint.
// Its errors quote the document only sanitised and cut short.
func parseDiscovery(body []byte, issuer, method string) (*url.URL, error) {
	// Keys are matched exactly: encoding/json would also take "Issuer" or
	// "ISSUER" for issuer, which the specification does not allow.
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil || doc == nil {
		return nil, errors.New("the document is not a JSON object")
	}
	var docIssuer, tokenEndpoint string
	var methods []string
	if err := member(doc, "issuer", &docIssuer); err != nil {
		return nil, err
	}
	if err := member(doc, "token_endpoint", &tokenEndpoint); err != nil {
		return nil, err
	}
	if err := member(doc, "token_endpoint_auth_methods_supported", &methods); err != nil {
		return nil, err
	}
	switch {
	case docIssuer == "":
		return nil, errors.New("the document names no issuer")
	case docIssuer != issuer:
		return nil, fmt.Errorf("the document names issuer %q, not the configured %q; set the issuer to exactly the provider's, trailing slash and all (OIDC Discovery §4.3)",
			sanitize(docIssuer, 200), issuer)
	case tokenEndpoint == "":
		return nil, errors.New("the document has no token_endpoint: the provider offers no token endpoint to exchange at")
	}
	u, err := url.Parse(tokenEndpoint)
	if err != nil {
		return nil, errors.New("the document's token_endpoint is not a valid URL")
	}
	if p := urlProblem(u); p != "" {
		return nil, fmt.Errorf("the document's token_endpoint %s", p)
	}
	if method == "" {
		return u, nil
	}
	absent := methods == nil
	if absent {
		methods = []string{KindClientSecretBasic} // the default (OIDC Discovery §3)
	}
	if !slices.Contains(methods, method) {
		listed := make([]string, 0, min(len(methods), 8))
		for _, m := range methods[:min(len(methods), 8)] {
			listed = append(listed, sanitize(m, 32))
		}
		what := "lists " + strings.Join(listed, ", ")
		switch {
		case absent:
			what = "is absent, which means client_secret_basic only"
		case len(methods) == 0:
			what = "is empty"
		case len(methods) > len(listed):
			what += ", …"
		}
		return nil, fmt.Errorf("the provider does not accept %s at its token endpoint: token_endpoint_auth_methods_supported %s; choose a kind it accepts",
			method, what)
	}
	return u, nil
}

// member decodes doc[key] into v, leaving v alone when the member is absent
// or null.
func member(doc map[string]json.RawMessage, key string, v any) error {
	raw, ok := doc[key]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		what := "a string"
		if _, list := v.(*[]string); list {
			what = "a list of strings"
		}
		return fmt.Errorf("the document's %s is not %s", key, what)
	}
	return nil
}
