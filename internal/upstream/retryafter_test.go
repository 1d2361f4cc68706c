package upstream

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

var retryAfterNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestParseRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name, v string
		want    time.Duration
	}{
		{"empty", "", 0},
		{"blank", "   ", 0},
		{"zero seconds", "0", 0},
		{"seconds", "120", 120 * time.Second},
		{"seconds with spaces", " 7 ", 7 * time.Second},
		{"leading zeros", "007", 7 * time.Second},
		{"exactly the cap", "300", MaxRetryAfter},
		{"over the cap", "301", MaxRetryAfter},
		{"beyond uint64", "99999999999999999999999", MaxRetryAfter},
		{"negative", "-5", 0},
		{"plus sign", "+5", 0},
		{"fraction", "1.5", 0},
		{"unit", "5s", 0},
		{"garbage", "soon", 0},
		{"two values", "5, 6", 0},
		{"IMF-fixdate", "Wed, 04 Mar 2026 05:06:37 GMT", 30 * time.Second},
		{"RFC 850 date", "Wednesday, 04-Mar-26 05:07:07 GMT", time.Minute},
		{"asctime date", "Wed Mar  4 05:08:07 2026", 2 * time.Minute},
		{"date now", "Wed, 04 Mar 2026 05:06:07 GMT", 0},
		{"date in the past", "Wed, 04 Mar 2026 05:00:00 GMT", 0},
		{"date far ahead", "Thu, 05 Mar 2026 05:06:07 GMT", MaxRetryAfter},
		{"date not GMT", "Wed, 04 Mar 2026 05:06:37 +0100", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.v, retryAfterNow); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

// FuzzParseRetryAfter: any header value yields a wait in [0, MaxRetryAfter].
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "-1", "1e3", "99999999999999999999", "Wed, 04 Mar 2026 05:06:37 GMT", "Wed Mar  4 05:08:07 2026"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, retryAfterNow); d < 0 || d > MaxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v, outside [0, %v]", v, d, MaxRetryAfter)
		}
	})
}

// TestPostRetryAfter checks which answers carry Retry-After into the
// ExchangeError: 429 and 503 do, other failures do not.
func TestPostRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		header     string
		wantReason broker.Reason
		want       time.Duration
	}{
		{"429 seconds", http.StatusTooManyRequests, "3", broker.ReasonUnavailable, 3 * time.Second},
		{"503 date", http.StatusServiceUnavailable, "Wed, 04 Mar 2026 05:06:17 GMT", broker.ReasonUnavailable, 10 * time.Second},
		{"503 capped", http.StatusServiceUnavailable, "86400", broker.ReasonUnavailable, MaxRetryAfter},
		{"503 garbage", http.StatusServiceUnavailable, "later", broker.ReasonUnavailable, 0},
		{"503 without header", http.StatusServiceUnavailable, "", broker.ReasonUnavailable, 0},
		{"500 ignores it", http.StatusInternalServerError, "3", broker.ReasonUnavailable, 0},
		{"502 ignores it", http.StatusBadGateway, "3", broker.ReasonUnavailable, 0},
		{"400 ignores it", http.StatusBadRequest, "3", broker.ReasonRefused, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tc.header != "" {
					w.Header().Set("Retry-After", tc.header)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, `{"error":"temporarily_unavailable"}`)
			}))
			defer srv.Close()
			req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = post(srv.Client(), req, "idp.test", func() time.Time { return retryAfterNow }, http.StatusOK)
			var xe *broker.ExchangeError
			if !errors.As(err, &xe) {
				t.Fatalf("err = %v, want an *ExchangeError", err)
			}
			if xe.Reason != tc.wantReason || xe.HTTPStatus != tc.status || xe.RetryAfter != tc.want {
				t.Errorf("got reason %s, status %d, RetryAfter %v; want %s, %d, %v",
					xe.Reason, xe.HTTPStatus, xe.RetryAfter, tc.wantReason, tc.status, tc.want)
			}
		})
	}
}
