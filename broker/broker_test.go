package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// upstream is an in-memory Exchanger: it issues numbered tokens that live for
// ttl, can be held at a gate, and counts exchanges per request.
type upstream struct {
	clock *fakeClock
	ttl   time.Duration
	gate  chan struct{} // when non-nil, each exchange waits for a receive
	err   error

	calls atomic.Int64
	mu    sync.Mutex
	seen  []broker.Request
}

func (u *upstream) Exchange(ctx context.Context, req broker.Request) (broker.Token, error) {
	n := u.calls.Add(1)
	u.mu.Lock()
	u.seen = append(u.seen, req)
	u.mu.Unlock()
	u.mu.Lock()
	gate := u.gate
	u.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return broker.Token{}, ctx.Err()
		}
	}
	u.mu.Lock()
	err := u.err // as set when the exchange passes the gate
	u.mu.Unlock()
	if err != nil {
		return broker.Token{}, err
	}
	return broker.Token{AccessToken: fmt.Sprintf("token-%d", n), Expiry: u.clock.Now().Add(u.ttl)}, nil
}

// setErr makes the exchanges that follow fail with err (nil: succeed).
func (u *upstream) setErr(err error) {
	u.mu.Lock()
	u.err = err
	u.mu.Unlock()
}

func newBroker(t *testing.T, up *upstream) *broker.Broker {
	t.Helper()
	return broker.New(broker.Config{Exchanger: up, Clock: up.clock})
}

func req(groups ...string) broker.Request {
	return broker.Request{Tenant: "tn-a", Groups: groups}
}

func TestCacheHitAfterMiss(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	b := newBroker(t, up)
	ctx := context.Background()

	tok1, st1, err := b.Token(ctx, req("g1"), broker.Options{MinTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tok2, st2, err := b.Token(ctx, req("g1"), broker.Options{MinTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if st1 != broker.StatusMiss || st2 != broker.StatusHit {
		t.Errorf("statuses = %v, %v; want miss, hit", st1, st2)
	}
	if tok1.AccessToken != tok2.AccessToken || tok1.TokenType != "Bearer" {
		t.Errorf("got %q (%q) then %q; want the same Bearer token", tok1.AccessToken, tok1.TokenType, tok2.AccessToken)
	}
	if got := up.calls.Load(); got != 1 {
		t.Errorf("exchanges = %d, want 1", got)
	}
}

func TestKeyIdentity(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	b := newBroker(t, up)
	ctx := context.Background()
	base := broker.Request{Tenant: "tn-a", Groups: []string{"b", "a"}}
	tests := []struct {
		name    string
		req     broker.Request
		wantNew bool
	}{
		{"first", base, true},
		{"groups reordered and repeated", broker.Request{Tenant: "tn-a", Groups: []string{"a", "b", "a"}}, false},
		{"other tenant", broker.Request{Tenant: "tn-b", Groups: []string{"a", "b"}}, true},
		{"uid", broker.Request{Tenant: "tn-a", UID: "42", Groups: []string{"a", "b"}}, true},
		{"same uid", broker.Request{Tenant: "tn-a", UID: "42", Groups: []string{"b", "a"}}, false},
		{"external id equal to the uid", broker.Request{Tenant: "tn-a", ExternalAccountID: "42", Groups: []string{"a", "b"}}, true},
		{"other uid", broker.Request{Tenant: "tn-a", UID: "43", Groups: []string{"a", "b"}}, true},
		{"subset of groups", broker.Request{Tenant: "tn-a", Groups: []string{"a"}}, true},
		{"groups that would join alike", broker.Request{Tenant: "tn-a", Groups: []string{"a,b"}}, true},
		{"custom claims", broker.Request{Tenant: "tn-a", Groups: []string{"a", "b"}, CustomClaims: map[string]string{"k": "v"}}, true},
		{"same custom claims", broker.Request{Tenant: "tn-a", Groups: []string{"a", "b"}, CustomClaims: map[string]string{"k": "v"}}, false},
		{"other claim value", broker.Request{Tenant: "tn-a", Groups: []string{"a", "b"}, CustomClaims: map[string]string{"k": "w"}}, true},
		{"empty claims map is no claims", broker.Request{Tenant: "tn-a", Groups: []string{"a", "b"}, CustomClaims: map[string]string{}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up.calls.Load()
			if _, _, err := b.Token(ctx, tt.req, broker.Options{}); err != nil {
				t.Fatal(err)
			}
			if got := up.calls.Load() - before; got != map[bool]int64{true: 1, false: 0}[tt.wantNew] {
				t.Errorf("exchanges = %d, want new exchange = %v", got, tt.wantNew)
			}
		})
	}
}

func TestExchangerSeesNormalizedGroups(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	b := newBroker(t, up)
	in := []string{"c", "a", "b", "a"}
	if _, _, err := b.Token(context.Background(), req(in...), broker.Options{}); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(up.seen[0].Groups, ","), "a,b,c"; got != want {
		t.Errorf("exchanger got groups %q, want %q", got, want)
	}
	if got, want := strings.Join(in, ","), "c,a,b,a"; got != want {
		t.Errorf("caller's slice changed to %q, want %q", got, want)
	}
}

func TestExpiryWithMinTTLAndSkew(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: time.Hour}
	// Without refresh-ahead, which would have replaced the token already.
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Skew: 10 * time.Second, RefreshFraction: -1})
	ctx := context.Background()
	opt := broker.Options{MinTTL: time.Minute}

	first, _, err := b.Token(ctx, req("g"), opt)
	if err != nil {
		t.Fatal(err)
	}
	// Left: 1h − 58m49s = 71 s > 60 s + 10 s: still served.
	clock.Advance(58*time.Minute + 49*time.Second)
	tok, st, err := b.Token(ctx, req("g"), opt)
	if err != nil || st != broker.StatusHit || tok.AccessToken != first.AccessToken {
		t.Fatalf("at 71 s left: got %v %v %v, want the cached token as a hit", tok, st, err)
	}
	// Left: 70 s = min_ttl + skew exactly: no longer fresh.
	clock.Advance(time.Second)
	tok, st, err = b.Token(ctx, req("g"), opt)
	if err != nil || st != broker.StatusMiss || tok.AccessToken == first.AccessToken {
		t.Fatalf("at 70 s left: got %v %v %v, want a new token from a miss", tok, st, err)
	}
	// A smaller min_ttl is served by the same entry a larger one refused.
	if got := up.calls.Load(); got != 2 {
		t.Errorf("exchanges = %d, want 2", got)
	}
}

func TestUnattainableMinTTL(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: 5 * time.Minute}
	b := newBroker(t, up)
	_, _, err := b.Token(context.Background(), req("g"), broker.Options{MinTTL: 10 * time.Minute})
	if !errors.Is(err, broker.ErrTTLUnattainable) {
		t.Fatalf("err = %v, want ErrTTLUnattainable", err)
	}
}

func TestConcurrentMissesShareOneExchange(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour, gate: make(chan struct{})}
	b := newBroker(t, up)
	const n = 500
	var wg sync.WaitGroup
	statuses := make(chan broker.Status, n)
	tokens := make(chan string, n)
	for range n {
		wg.Go(func() {
			tok, st, err := b.Token(context.Background(), req("g2", "g1"), broker.Options{})
			if err != nil {
				t.Error(err)
				return
			}
			statuses <- st
			tokens <- tok.AccessToken
		})
	}
	waitFor(t, func() bool { return up.calls.Load() == 1 })
	close(up.gate) // let the single exchange finish
	wg.Wait()
	close(statuses)
	close(tokens)
	count := map[broker.Status]int{}
	for st := range statuses {
		count[st]++
	}
	distinct := map[string]bool{}
	for tok := range tokens {
		distinct[tok] = true
	}
	if got := up.calls.Load(); got != 1 {
		t.Errorf("exchanges = %d, want 1", got)
	}
	if len(distinct) != 1 {
		t.Errorf("callers got %d distinct tokens, want 1", len(distinct))
	}
	// Callers that arrived after the exchange finished see hits; exactly one
	// caused the miss.
	if count[broker.StatusMiss] != 1 || count[broker.StatusMiss]+count[broker.StatusShared]+count[broker.StatusHit] != n {
		t.Errorf("statuses = %v, want exactly 1 miss among %d", count, n)
	}
}

func TestCancelledCallerDoesNotFailOthers(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour, gate: make(chan struct{})}
	b := newBroker(t, up)

	// The caller that starts the exchange gives up while it is in flight.
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, _, err := b.Token(leaderCtx, req("g"), broker.Options{})
		leaderErr <- err
	}()
	waitFor(t, func() bool { return up.calls.Load() == 1 })

	// A second caller with a short deadline joins and times out.
	shortCtx, cancelShort := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancelShort()
	if _, _, err := b.Token(shortCtx, req("g"), broker.Options{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("short-deadline caller: err = %v, want DeadlineExceeded", err)
	}

	// A patient caller joins too.
	patient := make(chan error, 1)
	var patientStatus broker.Status
	go func() {
		var err error
		_, patientStatus, err = b.Token(context.Background(), req("g"), broker.Options{})
		patient <- err
	}()

	cancelLeader()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: err = %v, want Canceled", err)
	}
	close(up.gate)
	if err := <-patient; err != nil {
		t.Fatalf("patient caller failed: %v", err)
	}
	if patientStatus != broker.StatusShared && patientStatus != broker.StatusHit {
		t.Errorf("patient status = %v, want shared (or hit if it arrived late)", patientStatus)
	}
	if got := up.calls.Load(); got != 1 {
		t.Errorf("exchanges = %d, want 1", got)
	}
	// The abandoned exchange's result was cached.
	if _, st, err := b.Token(context.Background(), req("g"), broker.Options{}); err != nil || st != broker.StatusHit {
		t.Errorf("after: status %v err %v, want a hit", st, err)
	}
}

func TestCompareAndEvict(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	b := newBroker(t, up)
	ctx := context.Background()
	first, _, err := b.Token(ctx, req("g"), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// A crowd reports the same refused token: one exchange, one new token.
	var wg sync.WaitGroup
	got := make(chan string, 50)
	for range 50 {
		wg.Go(func() {
			tok, _, err := b.Token(ctx, req("g"), broker.Options{RejectedToken: first.AccessToken})
			if err != nil {
				t.Error(err)
				return
			}
			got <- tok.AccessToken
		})
	}
	wg.Wait()
	close(got)
	for tok := range got {
		if tok == first.AccessToken {
			t.Fatalf("a caller got the rejected token back")
		}
	}
	if n := up.calls.Load(); n != 2 {
		t.Errorf("exchanges = %d, want 2 (one initial, one replacement)", n)
	}

	// Rejecting a token the broker no longer holds returns the newer one.
	tok, st, err := b.Token(ctx, req("g"), broker.Options{RejectedToken: "some-other-token"})
	if err != nil || st != broker.StatusHit || tok.AccessToken == first.AccessToken {
		t.Errorf("got %v %v %v, want the newer token as a hit", tok, st, err)
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour, err: &broker.ExchangeError{Reason: broker.ReasonUnavailable, Upstream: "up", HTTPStatus: 503}}
	b := newBroker(t, up)
	ctx := context.Background()
	_, _, err := b.Token(ctx, req("g"), broker.Options{})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonUnavailable {
		t.Fatalf("err = %v, want an unavailable ExchangeError", err)
	}
	up.err = nil
	if _, st, err := b.Token(ctx, req("g"), broker.Options{}); err != nil || st != broker.StatusMiss {
		t.Fatalf("after recovery: status %v err %v, want a miss that succeeds", st, err)
	}
}

func TestPanickingExchangerBecomesAnError(t *testing.T) {
	clock := newFakeClock()
	b := broker.New(broker.Config{Clock: clock, Exchanger: broker.ExchangerFunc(func(context.Context, broker.Request) (broker.Token, error) {
		panic("boom")
	})})
	_, _, err := b.Token(context.Background(), req("g"), broker.Options{})
	var xe *broker.ExchangeError
	if !errors.As(err, &xe) || xe.Reason != broker.ReasonInternal {
		t.Fatalf("err = %v, want an internal ExchangeError", err)
	}
}

func TestBadTokensFromExchangerAreRefused(t *testing.T) {
	clock := newFakeClock()
	for name, tok := range map[string]broker.Token{
		"empty":   {Expiry: clock.Now().Add(time.Hour)},
		"expired": {AccessToken: "x", Expiry: clock.Now().Add(-time.Second)},
	} {
		t.Run(name, func(t *testing.T) {
			b := broker.New(broker.Config{Clock: clock, Exchanger: broker.ExchangerFunc(func(context.Context, broker.Request) (broker.Token, error) {
				return tok, nil
			})})
			_, _, err := b.Token(context.Background(), req("g"), broker.Options{})
			var xe *broker.ExchangeError
			if !errors.As(err, &xe) || xe.Reason != broker.ReasonBadResponse {
				t.Fatalf("err = %v, want a bad_response ExchangeError", err)
			}
		})
	}
}

func TestExchangeTimeoutBoundsTheSharedExchange(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour, gate: make(chan struct{})} // never opened
	b := broker.New(broker.Config{Exchanger: up, Clock: up.clock, ExchangeTimeout: 20 * time.Millisecond})
	_, _, err := b.Token(context.Background(), req("g"), broker.Options{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the exchange's own DeadlineExceeded", err)
	}
}

func TestTokenNeverPrintsItsValue(t *testing.T) {
	tok := broker.Token{AccessToken: "secret-access-token-value", Expiry: time.Unix(1e9, 0)}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok)} {
		if strings.Contains(s, "secret") {
			t.Errorf("formatted token %q contains its value", s)
		}
	}
	if got := broker.Fingerprint("abc"); got != "ba7816bf8f01" {
		t.Errorf("Fingerprint(abc) = %q, want the first 12 hex digits of its SHA-256", got)
	}
}

type countingMetrics struct {
	mu                                 sync.Mutex
	lookups                            map[broker.Status]int
	exchanges                          int
	errors                             int
	refreshes, refreshFailures         int
	staleServes, negativeHits, evicted int
}

func (m *countingMetrics) RefreshStarted(string) { m.add(&m.refreshes, 1) }
func (m *countingMetrics) RefreshFailed(string)  { m.add(&m.refreshFailures, 1) }
func (m *countingMetrics) StaleServe()           { m.add(&m.staleServes, 1) }
func (m *countingMetrics) NegativeHit()          { m.add(&m.negativeHits, 1) }
func (m *countingMetrics) Evicted(n int)         { m.add(&m.evicted, n) }

func (m *countingMetrics) add(field *int, n int) {
	m.mu.Lock()
	*field += n
	m.mu.Unlock()
}

// get reads a field under the lock.
func (m *countingMetrics) get(field *int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *field
}

func (m *countingMetrics) Lookup(s broker.Status) {
	m.mu.Lock()
	m.lookups[s]++
	m.mu.Unlock()
}

func (m *countingMetrics) Exchange(_ string, _ time.Duration, err error) {
	m.mu.Lock()
	m.exchanges++
	if err != nil {
		m.errors++
	}
	m.mu.Unlock()
}

func TestMetricsHooks(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	m := &countingMetrics{lookups: map[broker.Status]int{}}
	b := broker.New(broker.Config{Exchanger: up, Clock: up.clock, Metrics: m})
	for range 3 {
		if _, _, err := b.Token(context.Background(), req("g"), broker.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if m.lookups[broker.StatusMiss] != 1 || m.lookups[broker.StatusHit] != 2 || m.exchanges != 1 || m.errors != 0 {
		t.Errorf("metrics = %+v, want 1 miss, 2 hits, 1 exchange", m)
	}
}

func TestExpiredEntriesAreDropped(t *testing.T) {
	clock := newFakeClock()
	up := &upstream{clock: clock, ttl: time.Minute}
	b := broker.New(broker.Config{Exchanger: up, Clock: clock, Skew: time.Second})
	ctx := context.Background()
	// Each batch expires before the next; storing the next batch's tokens
	// drops the expired ones from every shard it touches.
	const perBatch = 4096
	for batch := range 3 {
		for i := range perBatch {
			r := broker.Request{Tenant: "t", UID: fmt.Sprint(batch, "-", i), Groups: []string{"g"}}
			if _, _, err := b.Token(ctx, r, broker.Options{}); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(2 * time.Minute)
	}
	// 4096 keys over 256 shards touch every shard, so at most the last
	// batch is left.
	if got := b.Len(); got > perBatch {
		t.Errorf("cache holds %d entries, want at most the last batch of %d", got, perBatch)
	}
}

// waitFor polls cond; it is how tests wait for a goroutine to reach a gate
// without timing assumptions.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition not reached")
}

func TestDropTenant(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	b := newBroker(t, up)
	ctx := context.Background()
	// "tn-a" must not drop "tn-ab": the key prefix is length-framed.
	for _, r := range []broker.Request{
		{Tenant: "tn-a", Groups: []string{"g"}}, {Tenant: "tn-a", UID: "1", Groups: []string{"g"}},
		{Tenant: "tn-ab", Groups: []string{"g"}}, {Tenant: "tn-b", Groups: []string{"g"}},
	} {
		if _, _, err := b.Token(ctx, r, broker.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	b.DropTenant("tn-a")
	if got := b.Len(); got != 2 {
		t.Errorf("after DropTenant: %d entries, want 2", got)
	}
	for tenant, want := range map[string]broker.Status{"tn-a": broker.StatusMiss, "tn-ab": broker.StatusHit, "tn-b": broker.StatusHit} {
		if _, st, err := b.Token(ctx, broker.Request{Tenant: tenant, Groups: []string{"g"}}, broker.Options{}); err != nil || st != want {
			t.Errorf("%s: status %v err %v, want %v", tenant, st, err, want)
		}
	}
}
