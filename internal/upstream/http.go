package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// MaxBodyBytes caps what is read of any upstream response.
const MaxBodyBytes = 1 << 20

// MaxRetryAfter caps the Retry-After an upstream may ask for: a longer wait
// is taken as this long, so one header cannot park a tenant for hours.
const MaxRetryAfter = 5 * time.Minute

// NewHTTPClient returns the client exchangers share: bounded dial, TLS and
// response-header times, keep-alive reuse, TLS 1.2 at least, and redirects
// not followed (a token endpoint that redirects is misconfigured, and
// following it would send the assertion elsewhere).
func NewHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// post sends req and turns the answer into a token or an *ExchangeError.
func post(client *http.Client, req *http.Request, host string, clock func() time.Time, okStatus ...int) (broker.Token, error) {
	resp, err := client.Do(req)
	if err != nil {
		reason := broker.ReasonUnavailable
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			reason, err = broker.ReasonTimeout, fmt.Errorf("%w: %w", errTimeout, err)
		}
		return broker.Token{}, &broker.ExchangeError{Reason: reason, Upstream: host, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonUnavailable, Upstream: host, HTTPStatus: resp.StatusCode,
			Err: fmt.Errorf("upstream: read response: %w", err)}
	}
	if len(body) > MaxBodyBytes {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonBadResponse, Upstream: host, HTTPStatus: resp.StatusCode,
			Err: fmt.Errorf("upstream: response body exceeds %d bytes", MaxBodyBytes)}
	}
	for _, s := range okStatus {
		if resp.StatusCode == s {
			tok, err := ParseTokenResponse(body, clock())
			if err != nil {
				return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonBadResponse, Upstream: host, HTTPStatus: resp.StatusCode, Err: err}
			}
			return tok, nil
		}
	}
	oe := parseOAuthError(body)
	xe := &broker.ExchangeError{Upstream: host, HTTPStatus: resp.StatusCode, Code: oe.Code,
		Err: fmt.Errorf("upstream: HTTP %d: %s", resp.StatusCode, oe)}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		xe.Reason = broker.ReasonUnavailable
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			xe.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), clock())
		}
	case resp.StatusCode >= 400:
		xe.Reason = broker.ReasonRefused
	default: // 1xx, other 2xx, 3xx (redirects are not followed)
		xe.Reason = broker.ReasonBadResponse
	}
	return broker.Token{}, xe
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3): either
// delta-seconds or an HTTP-date, which is taken relative to now. Anything
// else, a date not in the future, or a sign, yields 0 (unknown); a longer
// wait than [MaxRetryAfter] yields MaxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		// delta-seconds = 1*DIGIT: the only possible error is a value too
		// large for a uint64, which is a very long wait.
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v) // IMF-fixdate and the two obsolete formats
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, MaxRetryAfter)
}
