package shared

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

func TestTryLeaseOneWinner(t *testing.T) {
	r := redistest.Start(t)
	stores := []*Store{newStore(t, r.Addr(), nil), newStore(t, r.Addr(), nil), newStore(t, r.Addr(), nil)}
	ctx := t.Context()
	var (
		wg    sync.WaitGroup
		wins  atomic.Int32
		start = make(chan struct{})
	)
	for i := range 60 {
		wg.Go(func() {
			<-start
			_, won, err := stores[i%len(stores)].TryLease(ctx, "n")
			if err != nil {
				t.Errorf("TryLease: %v", err)
			}
			if won {
				wins.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := wins.Load(); got != 1 {
		t.Fatalf("%d winners, want 1", got)
	}
	pttl, err := direct(t, r.Addr()).PTTL(ctx, DefaultPrefix+"l:n").Result()
	if err != nil || pttl <= 0 || pttl > DefaultLeaseTTL {
		t.Fatalf("lease PTTL = %s, %v; want (0, %s]", pttl, err, DefaultLeaseTTL)
	}
}

func TestReleaseOnlyOwnLease(t *testing.T) {
	r := redistest.Start(t)
	a := newStore(t, r.Addr(), nil)
	b := newStore(t, r.Addr(), nil)
	c := direct(t, r.Addr())
	ctx := t.Context()

	if err := (Lease{}).Release(ctx); err != nil {
		t.Fatalf("Release of the zero Lease: %v", err)
	}
	la, won, err := a.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("a.TryLease = %v, %v; want true, nil", won, err)
	}
	if _, won, _ := b.TryLease(ctx, "n"); won {
		t.Fatal("b took a lease a holds")
	}
	// a's lease expires (deleted here rather than waited for) and b takes it.
	if err := c.Del(ctx, DefaultPrefix+"l:n").Err(); err != nil {
		t.Fatal(err)
	}
	lb, won, err := b.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("b.TryLease after expiry = %v, %v; want true, nil", won, err)
	}
	if err := la.Release(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's Release of a lease b holds: %v, want ErrLeaseLost", err)
	}
	if _, won, _ := a.TryLease(ctx, "n"); won {
		t.Fatal("a's Release deleted b's lease")
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatalf("b's Release: %v", err)
	}
	if n, _ := c.Exists(ctx, DefaultPrefix+"l:n").Result(); n != 0 {
		t.Fatal("the lease survived its holder's Release")
	}
	if err := lb.Release(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a second Release: %v, want ErrLeaseLost", err)
	}
}

func TestWaitGetsTheHoldersValue(t *testing.T) {
	r := redistest.Start(t)
	holder := newStore(t, r.Addr(), nil)
	// Waiters that never poll in this test's lifetime: only the
	// notification can wake them.
	waiting := newStore(t, r.Addr(), func(c *Config) { c.PollInterval = time.Hour })
	ctx := t.Context()
	subscribed(t, waiting)

	lease, won, err := holder.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("TryLease = %v, %v", won, err)
	}
	const n = 25
	type result struct {
		v   []byte
		ok  bool
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			v, ok, err := waiting.Wait(ctx, "n")
			results <- result{v, ok, err}
		}()
	}
	testkit.WaitFor(t, func() bool { return waiters(waiting, "n") == n })
	// One subscription per Store, however many waiters.
	c := direct(t, r.Addr())
	if got := numsub(t, c, DefaultPrefix+"set"); got != 2 {
		t.Fatalf("%d subscribers of the set channel, want 2 (one per Store)", got)
	}

	if err := holder.Set(ctx, "n", []byte("sealed"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for range n {
		res := <-results
		if res.err != nil || !res.ok || string(res.v) != "sealed" {
			t.Fatalf("Wait = %q, %v, %v; want sealed, true, nil", res.v, res.ok, res.err)
		}
	}
	if got := waiters(waiting, "n"); got != 0 {
		t.Fatalf("%d waiters left registered", got)
	}
}

func TestWaitPollsWithoutNotification(t *testing.T) {
	r := redistest.Start(t)
	holder := newStore(t, r.Addr(), nil)
	waiting := newStore(t, r.Addr(), func(c *Config) { c.PollInterval = 20 * time.Millisecond })
	ctx := t.Context()
	if _, won, err := holder.TryLease(ctx, "n"); err != nil || !won {
		t.Fatalf("TryLease = %v, %v", won, err)
	}
	done := make(chan []byte)
	go func() {
		v, _, err := waiting.Wait(ctx, "n")
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		done <- v
	}()
	testkit.WaitFor(t, func() bool { return waiters(waiting, "n") == 1 })
	// Stored behind the Store's back: no notification.
	if err := direct(t, r.Addr()).Set(ctx, DefaultPrefix+"v:n", "sealed", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if v := <-done; string(v) != "sealed" {
		t.Fatalf("Wait = %q, want sealed", v)
	}
}

func TestWaitGivesUpWhenTheLeaseExpires(t *testing.T) {
	r := redistest.Start(t)
	const leaseTTL = 200 * time.Millisecond
	holder := newStore(t, r.Addr(), func(c *Config) { c.LeaseTTL = leaseTTL })
	waiting := newStore(t, r.Addr(), func(c *Config) { c.PollInterval = 20 * time.Millisecond })
	ctx := t.Context()
	if _, won, err := holder.TryLease(ctx, "n"); err != nil || !won {
		t.Fatalf("TryLease = %v, %v", won, err)
	}
	// The holder dies: it never stores nor releases. Redis expires the
	// lease after leaseTTL, which is what Wait waits out.
	v, ok, err := waiting.Wait(ctx, "n")
	if err != nil || ok || v != nil {
		t.Fatalf("Wait = %q, %v, %v; want nil, false, nil", v, ok, err)
	}
	if _, won, err := waiting.TryLease(ctx, "n"); err != nil || !won {
		t.Fatalf("TryLease after the holder's lease expired = %v, %v; want true, nil", won, err)
	}
}

func TestWaitWithoutLease(t *testing.T) {
	r := redistest.Start(t)
	s := newStore(t, r.Addr(), func(c *Config) { c.PollInterval = time.Hour })
	ctx := t.Context()
	// No lease, no value: nobody is exchanging, so there is nothing to wait for.
	if v, ok, err := s.Wait(ctx, "n"); err != nil || ok || v != nil {
		t.Fatalf("Wait = %q, %v, %v; want nil, false, nil", v, ok, err)
	}
	// A value already there is returned at once, lease or not.
	if err := s.Set(ctx, "n", []byte("sealed"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Wait(ctx, "n"); err != nil || !ok || string(v) != "sealed" {
		t.Fatalf("Wait = %q, %v, %v; want sealed, true, nil", v, ok, err)
	}
}

func TestWaitEndsWithContextAndClose(t *testing.T) {
	r := redistest.Start(t)
	m := &metrics{}
	holder := newStore(t, r.Addr(), nil)
	s := newStore(t, r.Addr(), func(c *Config) { c.PollInterval = time.Hour; c.Metrics = m })
	if _, won, err := holder.TryLease(t.Context(), "n"); err != nil || !won {
		t.Fatalf("TryLease = %v, %v", won, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error)
	go func() { _, _, err := s.Wait(ctx, "n"); errc <- err }()
	testkit.WaitFor(t, func() bool { return waiters(s, "n") == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v, want context.Canceled", err)
	}
	if !s.Healthy() || len(m.Episodes()) != 0 {
		t.Fatal("a caller giving up started an episode")
	}

	go func() { _, _, err := s.Wait(t.Context(), "n"); errc <- err }()
	testkit.WaitFor(t, func() bool { return waiters(s, "n") == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close: %v, want ErrClosed", err)
	}
}

func TestExtendKeepsTheLease(t *testing.T) {
	r := redistest.Start(t)
	// Long enough that a renewal delayed by a loaded machine (-race) is
	// still in time: what matters is that renewals outlast the TTL.
	const leaseTTL = time.Second
	a := newStore(t, r.Addr(), func(c *Config) { c.LeaseTTL = leaseTTL })
	b := newStore(t, r.Addr(), nil)
	c := direct(t, r.Addr())
	ctx := t.Context()
	if got := a.LeaseTTL(); got != leaseTTL {
		t.Fatalf("LeaseTTL = %s, want %s", got, leaseTTL)
	}
	if got := b.LeaseTTL(); got != DefaultLeaseTTL {
		t.Fatalf("LeaseTTL of a default Store = %s, want %s", got, DefaultLeaseTTL)
	}
	if err := (Lease{}).Extend(ctx); err != nil {
		t.Fatalf("Extend of the zero Lease: %v", err)
	}

	l, won, err := a.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("TryLease = %v, %v; want true, nil", won, err)
	}
	// Held for two TTLs, renewed every third of one: nobody else gets it.
	deadline := time.Now().Add(2 * leaseTTL)
	for time.Now().Before(deadline) {
		time.Sleep(leaseTTL / 3)
		if err := l.Extend(ctx); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		if _, won, err := b.TryLease(ctx, "n"); err != nil || won {
			t.Fatalf("b.TryLease while a renews = %v, %v; want false, nil", won, err)
		}
	}
	// Each Extend resets the expiry to the full TTL.
	if err := l.Extend(ctx); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	pttl, err := c.PTTL(ctx, DefaultPrefix+"l:n").Result()
	if err != nil || pttl <= leaseTTL/2 || pttl > leaseTTL {
		t.Fatalf("lease PTTL after Extend = %s, %v; want just under %s", pttl, err, leaseTTL)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release after renewals: %v", err)
	}
	if _, won, err := b.TryLease(ctx, "n"); err != nil || !won {
		t.Fatalf("b.TryLease after Release = %v, %v; want true, nil", won, err)
	}
}

func TestExtendOnlyOwnLease(t *testing.T) {
	r := redistest.Start(t)
	const leaseTTL = 100 * time.Millisecond
	a := newStore(t, r.Addr(), func(c *Config) { c.LeaseTTL = leaseTTL })
	b := newStore(t, r.Addr(), nil)
	c := direct(t, r.Addr())
	ctx := t.Context()

	la, won, err := a.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("a.TryLease = %v, %v; want true, nil", won, err)
	}
	// a stops renewing; Redis expires its lease, and then it is gone even
	// to a's Extend.
	testkit.WaitFor(t, func() bool { n, _ := c.Exists(ctx, DefaultPrefix+"l:n").Result(); return n == 0 })
	if err := la.Extend(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Extend of an expired lease: %v, want ErrLeaseLost", err)
	}
	if n, _ := c.Exists(ctx, DefaultPrefix+"l:n").Result(); n != 0 {
		t.Fatal("Extend of an expired lease recreated it")
	}
	// b takes it (with the default, much longer, TTL); a's Extend leaves
	// it alone: same token, same expiry.
	lb, won, err := b.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("b.TryLease after expiry = %v, %v; want true, nil", won, err)
	}
	before, err := c.Get(ctx, DefaultPrefix+"l:n").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := la.Extend(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's Extend of a lease b holds: %v, want ErrLeaseLost", err)
	}
	if after, _ := c.Get(ctx, DefaultPrefix+"l:n").Result(); after != before {
		t.Fatal("a's Extend changed b's lease")
	}
	if pttl, _ := c.PTTL(ctx, DefaultPrefix+"l:n").Result(); pttl <= leaseTTL {
		t.Fatalf("lease PTTL after a's Extend = %s: a reset b's lease to its own TTL", pttl)
	}
	if err := lb.Extend(ctx); err != nil {
		t.Fatalf("b's Extend: %v", err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatalf("b's Release: %v", err)
	}
}

// WaitFor waits past a value it does not accept (the token a refresh
// replaces) for the holder's new one, and gives up when the lease ends with
// only the old one there.
func TestWaitForSkipsRefusedValues(t *testing.T) {
	r := redistest.Start(t)
	holder := newStore(t, r.Addr(), nil)
	waiting := newStore(t, r.Addr(), func(c *Config) { c.PollInterval = time.Hour })
	subscribed(t, waiting)
	ctx := t.Context()
	notOld := func(v []byte) bool { return string(v) != "old" }
	if err := holder.Set(ctx, "n", []byte("old"), time.Minute); err != nil {
		t.Fatal(err)
	}
	l, won, err := holder.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("TryLease = %v, %v", won, err)
	}
	got := make(chan string, 1)
	go func() {
		v, ok, err := waiting.WaitFor(ctx, "n", notOld)
		if err != nil || !ok {
			t.Errorf("WaitFor = %v, %v", ok, err)
		}
		got <- string(v)
	}()
	testkit.WaitFor(t, func() bool { return waiters(waiting, "n") == 1 })
	if err := holder.Set(ctx, "n", []byte("new"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "new" {
		t.Errorf("WaitFor returned %q, want the holder's new value", v)
	}
	l.Release(ctx)

	// The lease ends with only a refused value there: false, at once.
	if err := holder.Set(ctx, "n", []byte("old"), time.Minute); err != nil {
		t.Fatal(err)
	}
	l, _, _ = holder.TryLease(ctx, "n")
	done := make(chan bool, 1)
	go func() {
		_, ok, _ := waiting.WaitFor(ctx, "n", notOld)
		done <- ok
	}()
	testkit.WaitFor(t, func() bool { return waiters(waiting, "n") == 1 })
	l.Release(ctx)
	select {
	case ok := <-done:
		if ok {
			t.Error("WaitFor took a refused value")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitFor did not return when the lease ended (only a poll would find it: the release must wake it)")
	}
}
