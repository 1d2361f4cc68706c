package resilience_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

// start is the fake clock's epoch. It lies far in the wall clock's future,
// so a context deadline set relative to it never fires by itself during a
// test: the code under test compares it with the fake clock only.
var start = time.Date(2100, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a resilience.Clock whose Sleep returns at once, advancing the
// time by the duration slept and recording it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []sleep
}

type sleep struct {
	at time.Time
	d  time.Duration
}

func newClock() *fakeClock { return &fakeClock{now: start} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, sleep{c.now, d})
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) Sleeps() []sleep {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sleep(nil), c.sleeps...)
}

// fakeMetrics records every event.
type fakeMetrics struct {
	mu         sync.Mutex
	retries    int
	states     []resilience.State
	fastFails  int
	waiting    int
	maxWaiting int
	names      map[string]bool
}

func (m *fakeMetrics) note(name string) {
	if m.names == nil {
		m.names = map[string]bool{}
	}
	m.names[name] = true
}

func (m *fakeMetrics) Retry(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.note(name)
	m.retries++
}

func (m *fakeMetrics) BreakerState(name string, s resilience.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.note(name)
	m.states = append(m.states, s)
}

func (m *fakeMetrics) FastFail(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.note(name)
	m.fastFails++
}

func (m *fakeMetrics) Waiting(name string, delta int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.note(name)
	m.waiting += delta
	m.maxWaiting = max(m.maxWaiting, m.waiting)
}

func (m *fakeMetrics) snapshot() fakeMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fakeMetrics{retries: m.retries, states: append([]resilience.State(nil), m.states...),
		fastFails: m.fastFails, waiting: m.waiting, maxWaiting: m.maxWaiting, names: m.names}
}

// script is an exchanger that answers call i with results[i] (the last one
// repeating), counting its calls. A nil result is a token.
type script struct {
	results []error
	onCall  func(n int) // optional, before answering call n (from 1)
	calls   atomic.Int64
}

func (s *script) Exchange(_ context.Context, req broker.Request) (broker.Token, error) {
	n := int(s.calls.Add(1))
	if s.onCall != nil {
		s.onCall(n)
	}
	err := s.results[min(n, len(s.results))-1]
	if err != nil {
		return broker.Token{}, err
	}
	return broker.Token{AccessToken: fmt.Sprintf("tok-%s-%d", req.Tenant, n), TokenType: "Bearer", Expiry: start.Add(time.Hour)}, nil
}

func (s *script) Calls() int { return int(s.calls.Load()) }

const host = "idp.test"

func xerr(r broker.Reason, status int) *broker.ExchangeError {
	return &broker.ExchangeError{Reason: r, Upstream: host, HTTPStatus: status, Err: fmt.Errorf("upstream: HTTP %d", status)}
}

var (
	unavailable = xerr(broker.ReasonUnavailable, 503)
	refused     = xerr(broker.ReasonRefused, 401)
	badResponse = xerr(broker.ReasonBadResponse, 200)
)

var req = broker.Request{Tenant: "tn-1", Groups: []string{"g"}}

// newUpstream returns an Upstream on a fake clock with a seeded jitter source.
func newUpstream(p resilience.Policy) (*resilience.Upstream, *fakeClock, *fakeMetrics) {
	clock, m := newClock(), &fakeMetrics{}
	u := resilience.NewUpstream(resilience.Config{Name: host, Policy: p, Clock: clock, Metrics: m, Rand: newSource()})
	return u, clock, m
}

// wantState checks u's state and, when open, its next try.
func wantState(t *testing.T, u *resilience.Upstream, want resilience.State, wantNext time.Time) {
	t.Helper()
	got, next := u.State()
	if got != want || !next.Equal(wantNext) {
		t.Fatalf("State() = %s, %v; want %s, %v", got, next, want, wantNext)
	}
}

func newSource() rand.Source { return rand.NewPCG(1, 2) }
