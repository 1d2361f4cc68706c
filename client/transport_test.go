package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/client"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// upstream is an httptest API that refuses the tokens in refuse with 401
// and answers any other with 200 and the request body.
type upstream struct {
	*httptest.Server
	mu     sync.Mutex
	refuse map[string]bool
	seen   []string // "<authorization> <body>" of every request
}

func newUpstream(t *testing.T, refuse ...string) *upstream {
	u := &upstream{refuse: make(map[string]bool)}
	for _, tok := range refuse {
		u.refuse["Bearer "+tok] = true
	}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		u.mu.Lock()
		u.seen = append(u.seen, strings.TrimSpace(auth+" "+string(body)))
		refused := u.refuse[auth]
		u.mu.Unlock()
		if refused {
			http.Error(w, "token refused", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// events is a RoundTripper over http.DefaultTransport that records each
// request sent and each response body closed, in order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, s)
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.log, ", ")
}

func (e *events) RoundTrip(req *http.Request) (*http.Response, error) {
	auth := req.Header.Get("Authorization")
	e.add("send " + auth)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		resp.Body = &closeRecorder{ReadCloser: resp.Body, done: func() { e.add("close " + auth) }}
	}
	return resp, err
}

type closeRecorder struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (c *closeRecorder) Close() error {
	c.once.Do(c.done)
	return c.ReadCloser.Close()
}

// transportRig is a TokenSource watching token A, whose broker replaces A by
// B when it is rejected, and an http.Client using it.
type transportRig struct {
	*rig
	ts     *client.TokenSource
	events *events
	http   *http.Client
}

func newTransportRig(t *testing.T) *transportRig {
	r := newRig(t)
	r.f.get = func(_ context.Context, req *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
		if req.GetRejectedToken() != "A" {
			return nil, status.Error(codes.Internal, "the test expected a rejection of A")
		}
		return &tokenbrokerv1.GetAccessTokenResponse{AccessToken: "B", TokenType: "Bearer", ExpireTime: timestampIn(r.clock, time.Hour)}, nil
	}
	ts := r.source(t, testRequest)
	r.nextWatch().send(t, "A", r.clock.Now().Add(time.Hour))
	ev := &events{}
	return &transportRig{rig: r, ts: ts, events: ev, http: &http.Client{Transport: &client.Transport{Source: ts, Base: ev}}}
}

// do sends req and returns the response's status and body.
func (tr *transportRig) do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := tr.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestTransportReplacesRefusedToken(t *testing.T) {
	tr := newTransportRig(t)
	up := newUpstream(t, "A")

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, up.URL, strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Caller", "kept")
	if code, body := tr.do(t, req); code != http.StatusOK || body != "payload" {
		t.Fatalf("response = %d %q, want 200 payload", code, body)
	}
	gets := tr.f.gets()
	if len(gets) != 1 || gets[0].GetRejectedToken() != "A" || gets[0].GetTenant() != "tn-a" {
		t.Fatalf("broker calls = %v, want one rejecting A", gets)
	}
	if got, want := strings.Join(up.requests(), " | "), "Bearer A payload | Bearer B payload"; got != want {
		t.Errorf("upstream saw %q, want %q", got, want)
	}
	if got, want := tr.events.String(), "send Bearer A, close Bearer A, send Bearer B, close Bearer B"; got != want {
		t.Errorf("events = %q, want %q", got, want)
	}
	if got := req.Header.Get("Authorization"); got != "" || req.Header.Get("X-Caller") != "kept" || len(req.Header) != 1 {
		t.Errorf("the caller's request was changed: %v", req.Header)
	}

	// The replacement is cached: the next request goes out with B at once.
	req2, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, up.URL, nil)
	if code, _ := tr.do(t, req2); code != http.StatusOK {
		t.Fatalf("status = %d, want 200", code)
	}
	if got := up.requests(); got[len(got)-1] != "Bearer B" {
		t.Errorf("second request sent %q, want Bearer B", got[len(got)-1])
	}
	if n := len(tr.f.gets()); n != 1 {
		t.Errorf("%d broker calls, want 1", n)
	}
}

func TestTransportRetriesOnce(t *testing.T) {
	tr := newTransportRig(t)
	up := newUpstream(t, "A", "B")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, up.URL, nil)
	if code, body := tr.do(t, req); code != http.StatusUnauthorized || !strings.Contains(body, "token refused") {
		t.Fatalf("response = %d %q, want the second 401", code, body)
	}
	if got := up.requests(); len(got) != 2 {
		t.Errorf("upstream saw %q, want two requests", got)
	}
	if n := len(tr.f.gets()); n != 1 {
		t.Errorf("%d broker calls, want 1", n)
	}
}

func TestTransportDoesNotReplayBody(t *testing.T) {
	tr := newTransportRig(t)
	up := newUpstream(t, "A")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, up.URL, nil)
	req.Body = io.NopCloser(strings.NewReader("once")) // no GetBody: cannot be sent again
	if code, body := tr.do(t, req); code != http.StatusUnauthorized || !strings.Contains(body, "token refused") {
		t.Fatalf("response = %d %q, want the 401", code, body)
	}
	if got := up.requests(); len(got) != 1 || got[0] != "Bearer A once" {
		t.Errorf("upstream saw %q, want one request", got)
	}
	if n := len(tr.f.gets()); n != 0 {
		t.Errorf("%d broker calls, want 0", n)
	}
}

// When the broker cannot replace the token, the upstream's 401 stands.
func TestTransportBrokerCannotReplace(t *testing.T) {
	tr := newTransportRig(t)
	tr.f.get = func(context.Context, *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
		return nil, status.Error(codes.Unavailable, "upstream unavailable")
	}
	up := newUpstream(t, "A")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, up.URL, nil)
	if code, body := tr.do(t, req); code != http.StatusUnauthorized || !strings.Contains(body, "token refused") {
		t.Fatalf("response = %d %q, want the 401", code, body)
	}
	if got := up.requests(); len(got) != 1 {
		t.Errorf("upstream saw %q, want one request", got)
	}
}

// Without a token, the request is not sent, and its body is closed.
func TestTransportNoToken(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	r.nextWatch().finish(t, status.Error(codes.PermissionDenied, "tenant not allowed"))
	up := newUpstream(t)
	closed := false
	body := &closeRecorder{ReadCloser: io.NopCloser(strings.NewReader("x")), done: func() { closed = true }}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, up.URL, body)
	_, err := (&http.Client{Transport: &client.Transport{Source: ts}}).Do(req)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("error = %v, want PERMISSION_DENIED", err)
	}
	if !closed {
		t.Error("the request body was not closed")
	}
	if got := up.requests(); len(got) != 0 {
		t.Errorf("upstream saw %q", got)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Errorf("error %T is not the http.Client's *url.Error", err)
	}
}
