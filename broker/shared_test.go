package broker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// memShared is an in-memory shared tier for the broker's unit tests: the
// behaviour broker.Shared promises, without Redis (internal/sharedtoken and
// cmd/tokenbroker test the real one). Each replica gets its own view.
type memShared struct {
	mu      sync.Mutex
	vals    map[string]broker.SharedToken
	leases  map[string]bool
	changed chan struct{} // closed and replaced on every change
	subs    map[chan string]int
	fail    atomic.Bool // every call fails, as when Redis is down
	puts    atomic.Int64
}

func newMemShared() *memShared {
	return &memShared{vals: map[string]broker.SharedToken{}, leases: map[string]bool{},
		changed: make(chan struct{}), subs: map[chan string]int{}}
}

var errDown = errors.New("shared tier down")

// view is one replica's handle on the tier.
type view struct {
	m       *memShared
	replica int
}

func (m *memShared) view(replica int) broker.Shared { return view{m, replica} }

// notify wakes the waiters; m.mu is held.
func (m *memShared) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (v view) ID(tenant string, key []byte) string { return tenant + "/" + string(key) }

func (v view) Get(_ context.Context, tenant string, key []byte) (broker.SharedToken, bool, error) {
	if v.m.fail.Load() {
		return broker.SharedToken{}, false, errDown
	}
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	t, ok := v.m.vals[v.ID(tenant, key)]
	return t, ok, nil
}

func (v view) Lease(_ context.Context, tenant string, key []byte) (func(), bool, error) {
	if v.m.fail.Load() {
		return nil, false, errDown
	}
	id := v.ID(tenant, key)
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if v.m.leases[id] {
		return nil, false, nil
	}
	v.m.leases[id] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			v.m.mu.Lock()
			delete(v.m.leases, id)
			v.m.notify()
			v.m.mu.Unlock()
		})
	}, true, nil
}

func (v view) Wait(ctx context.Context, tenant string, key []byte, accept func(broker.Token) bool) (broker.SharedToken, bool, error) {
	id := v.ID(tenant, key)
	for {
		if v.m.fail.Load() {
			return broker.SharedToken{}, false, errDown
		}
		v.m.mu.Lock()
		t, ok := v.m.vals[id]
		leased, changed := v.m.leases[id], v.m.changed
		v.m.mu.Unlock()
		if ok && accept(t.Token) {
			return t, true, nil
		}
		if !leased {
			return broker.SharedToken{}, false, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return broker.SharedToken{}, false, ctx.Err()
		}
	}
}

func (v view) Put(_ context.Context, tenant string, key []byte, tok broker.SharedToken, ttl time.Duration) error {
	if v.m.fail.Load() {
		return errDown
	}
	if ttl <= 0 {
		panic("Put with a TTL of zero or less")
	}
	v.m.puts.Add(1)
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	v.m.vals[v.ID(tenant, key)] = tok
	v.m.notify()
	return nil
}

func (v view) Evict(_ context.Context, tenant string, key []byte, rejected string) error {
	if v.m.fail.Load() {
		return errDown
	}
	id := v.ID(tenant, key)
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if t, ok := v.m.vals[id]; ok && t.AccessToken == rejected {
		delete(v.m.vals, id)
		for ch, r := range v.m.subs {
			if r != v.replica {
				ch <- id // buffered; the tests evict rarely
			}
		}
	}
	return nil
}

func (v view) Invalidations(ctx context.Context) <-chan string {
	ch := make(chan string, 16)
	v.m.mu.Lock()
	v.m.subs[ch] = v.replica
	v.m.mu.Unlock()
	go func() {
		<-ctx.Done()
		v.m.mu.Lock()
		delete(v.m.subs, ch)
		v.m.mu.Unlock()
		close(ch)
	}()
	return ch
}

// replicas starts n brokers on one upstream and one shared tier.
func replicas(t *testing.T, up *upstream, m *memShared, n int) []*broker.Broker {
	t.Helper()
	bs := make([]*broker.Broker, n)
	for i := range bs {
		bs[i] = broker.New(broker.Config{Exchanger: up, Clock: up.clock, Shared: m.view(i)})
		t.Cleanup(bs[i].Close)
	}
	return bs
}

func TestSharedOneExchangeAcrossReplicas(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour, gate: make(chan struct{})}
	m := newMemShared()
	bs := replicas(t, up, m, 3)

	const callers = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[broker.Status]int{}
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			tok, st, err := bs[i%len(bs)].Token(context.Background(), req("g"), broker.Options{})
			if err != nil {
				errs <- err
				return
			}
			if tok.AccessToken != "token-1" {
				errs <- errors.New("got " + tok.String())
			}
			mu.Lock()
			statuses[st]++
			mu.Unlock()
		})
	}
	waitFor(t, func() bool { return up.calls.Load() == 1 })
	time.Sleep(10 * time.Millisecond) // let the other replicas reach their waits
	close(up.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("%d callers over 3 replicas made %d exchanges, want 1", callers, n)
	}
	if statuses[broker.StatusMiss] != 1 {
		t.Errorf("statuses %v: want exactly one miss", statuses)
	}

	// A replica started afterwards serves the key without an exchange.
	late := replicas(t, up, m, 1)[0]
	if _, st, err := late.Token(context.Background(), req("g"), broker.Options{}); err != nil || st != broker.StatusRemote {
		t.Fatalf("new replica: status %v, err %v; want remote", st, err)
	}
	if _, st, _ := late.Token(context.Background(), req("g"), broker.Options{}); st != broker.StatusHit {
		t.Errorf("new replica's second call: status %v, want a local hit", st)
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("exchanges = %d after the new replica, want 1", n)
	}
}

func TestSharedRefreshAheadOnceForAll(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: 100 * time.Second}
	m := newMemShared()
	bs := replicas(t, up, m, 2)
	a, b := bs[0], bs[1]
	if _, st, _ := a.Token(context.Background(), req(), broker.Options{}); st != broker.StatusMiss {
		t.Fatalf("first call: %v", st)
	}
	if _, st, _ := b.Token(context.Background(), req(), broker.Options{}); st != broker.StatusRemote {
		t.Fatalf("other replica's first call: %v, want remote", st)
	}

	// Past both replicas' refresh points (usable life 90 s, refresh point at
	// most 22.5 s of it left), still valid.
	up.clock.Advance(75 * time.Second)
	if tok, _, _ := a.Token(context.Background(), req(), broker.Options{}); tok.AccessToken != "token-1" {
		t.Fatalf("a hit past the refresh point served %v, want the old token at once", tok)
	}
	waitFor(t, func() bool {
		tok, _, _ := a.Token(context.Background(), req(), broker.Options{})
		return tok.AccessToken == "token-2"
	})
	if _, _, err := b.Token(context.Background(), req(), broker.Options{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		tok, _, _ := b.Token(context.Background(), req(), broker.Options{})
		return tok.AccessToken == "token-2"
	})
	if n := up.calls.Load(); n != 2 {
		t.Errorf("exchanges = %d, want 2: the second replica must adopt the first one's refresh", n)
	}
}

func TestSharedRejectedTokenInvalidatesEveryReplica(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	m := newMemShared()
	bs := replicas(t, up, m, 2)
	a, b := bs[0], bs[1]
	a.Token(context.Background(), req(), broker.Options{})
	if tok, _, _ := b.Token(context.Background(), req(), broker.Options{}); tok.AccessToken != "token-1" {
		t.Fatalf("b has %v", tok)
	}

	tok, st, err := a.Token(context.Background(), req(), broker.Options{RejectedToken: "token-1"})
	if err != nil || tok.AccessToken != "token-2" || st != broker.StatusMiss {
		t.Fatalf("rejected: %v %v %v, want token-2 from an exchange", tok, st, err)
	}
	waitFor(t, func() bool { return b.Len() == 0 }) // b dropped its copy
	if tok, st, _ := b.Token(context.Background(), req(), broker.Options{}); tok.AccessToken != "token-2" || st != broker.StatusRemote {
		t.Errorf("b after the invalidation: %v %v, want token-2 from the shared tier", tok, st)
	}
	if n := up.calls.Load(); n != 2 {
		t.Errorf("exchanges = %d, want 2", n)
	}
}

func TestSharedTierDownFallsBackToLocal(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour}
	m := newMemShared()
	m.fail.Store(true)
	bs := replicas(t, up, m, 2)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			if _, _, err := bs[i%2].Token(context.Background(), req(), broker.Options{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := up.calls.Load(); n < 1 || n > 2 {
		t.Errorf("exchanges = %d with the shared tier down: want one per replica at most (local coalescing)", n)
	}
	if m.puts.Load() != 0 {
		t.Errorf("stored %d tokens in a tier that is down", m.puts.Load())
	}

	// Back up: a new replica finds nothing shared yet and exchanges; then
	// the token is shared again.
	m.fail.Store(false)
	before := up.calls.Load()
	c := replicas(t, up, m, 2)
	if _, st, _ := c[0].Token(context.Background(), req(), broker.Options{}); st != broker.StatusMiss {
		t.Errorf("first call after recovery: %v, want miss", st)
	}
	if _, st, _ := c[1].Token(context.Background(), req(), broker.Options{}); st != broker.StatusRemote {
		t.Errorf("second replica after recovery: %v, want remote", st)
	}
	if n := up.calls.Load() - before; n != 1 {
		t.Errorf("exchanges after recovery = %d, want 1", n)
	}
}

func TestSharedHolderGivesUpAnotherExchanges(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: time.Hour, gate: make(chan struct{})}
	up.setErr(&broker.ExchangeError{Reason: broker.ReasonUnavailable, Upstream: "u"})
	m := newMemShared()
	bs := replicas(t, up, m, 2)

	first := make(chan error, 1)
	go func() {
		_, _, err := bs[0].Token(context.Background(), req(), broker.Options{})
		first <- err
	}()
	waitFor(t, func() bool { return up.calls.Load() == 1 }) // bs[0] holds the lease, at the gate
	second := make(chan broker.Token, 1)
	go func() {
		tok, _, err := bs[1].Token(context.Background(), req(), broker.Options{})
		if err != nil {
			t.Error(err)
		}
		second <- tok
	}()
	time.Sleep(10 * time.Millisecond) // bs[1] waits for bs[0]
	if up.calls.Load() != 1 {
		t.Fatal("the second replica exchanged while the first held the lease")
	}
	up.gate <- struct{}{} // bs[0]'s exchange fails and it releases
	if err := <-first; err == nil {
		t.Fatal("the first replica's exchange should have failed")
	}
	waitFor(t, func() bool { return up.calls.Load() == 2 }) // bs[1] took the lease over
	up.setErr(nil)
	up.gate <- struct{}{}
	if tok := <-second; tok.AccessToken != "token-2" {
		t.Errorf("second replica got %v, want token-2 from its own exchange", tok)
	}
}

// A replica whose refresh finds another replica exchanging for the key
// waits for that replica's new token: the old token still stored is not
// what it is waiting for.
func TestSharedRefreshWaitsForTheHoldersToken(t *testing.T) {
	up := &upstream{clock: newFakeClock(), ttl: 100 * time.Second}
	m := newMemShared()
	bs := replicas(t, up, m, 2)
	a, b := bs[0], bs[1]
	a.Token(context.Background(), req(), broker.Options{})
	b.Token(context.Background(), req(), broker.Options{})

	gate := make(chan struct{})
	up.mu.Lock()
	up.gate = gate
	up.mu.Unlock()
	up.clock.Advance(75 * time.Second) // past both refresh points
	a.Token(context.Background(), req(), broker.Options{})
	waitFor(t, func() bool { return up.calls.Load() == 2 }) // a holds the lease, exchanging
	b.Token(context.Background(), req(), broker.Options{})  // b's refresh waits for a's token
	time.Sleep(20 * time.Millisecond)
	if n := up.calls.Load(); n != 2 {
		t.Fatalf("exchanges = %d while the first replica refreshed: the second must wait for it", n)
	}
	close(gate)
	waitFor(t, func() bool {
		tok, _, _ := b.Token(context.Background(), req(), broker.Options{})
		return tok.AccessToken == "token-2"
	})
	if n := up.calls.Load(); n != 2 {
		t.Errorf("exchanges = %d, want 2", n)
	}
}
