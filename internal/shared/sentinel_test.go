package shared

import (
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

// sentinelStore returns a Store that finds its master through sen, closed
// when the test ends, edited like [newStore].
func sentinelStore(t *testing.T, sen *redistest.Sentinel, edit func(*Config)) *Store {
	t.Helper()
	return newStore(t, "", func(c *Config) {
		c.SentinelMaster = sen.Name()
		c.SentinelAddrs = []string{sen.Addr()}
		if edit != nil {
			edit(c)
		}
	})
}

// The failover client gets every setting of the single-address one: each
// field set in options has its namesake in failoverOptions, with the same
// value, but the address (the sentinels find it) and the maintenance
// notifications (go-redis turns them off for a failover client itself).
func TestFailoverOptionsCarrySettings(t *testing.T) {
	cfg, err := Config{SentinelMaster: "m", SentinelAddrs: []string{"s:26379"}, SentinelUsername: "su", SentinelPassword: "sp",
		Username: "u", Password: "p", DB: 3, Timeout: 75 * time.Millisecond, TLS: &tls.Config{ServerName: "redis.internal"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	o := options(cfg)
	fo := failoverOptions(o, cfg)
	ov, fv := reflect.ValueOf(o).Elem(), reflect.ValueOf(fo).Elem()
	for i := range ov.NumField() {
		f := ov.Type().Field(i)
		if ov.Field(i).IsZero() || f.Name == "Addr" || f.Name == "MaintNotificationsConfig" {
			continue
		}
		got := fv.FieldByName(f.Name)
		if !got.IsValid() {
			t.Errorf("FailoverOptions has no %s", f.Name)
			continue
		}
		if !reflect.DeepEqual(got.Interface(), ov.Field(i).Interface()) {
			t.Errorf("FailoverOptions.%s = %v, want %v", f.Name, got, ov.Field(i))
		}
	}
	if fo.MasterName != "m" || !slices.Equal(fo.SentinelAddrs, []string{"s:26379"}) || fo.SentinelUsername != "su" || fo.SentinelPassword != "sp" {
		t.Errorf("sentinel fields = %q %q %q %q", fo.MasterName, fo.SentinelAddrs, fo.SentinelUsername, fo.SentinelPassword)
	}
}

// Through a sentinel the Store finds the master, and every operation works
// on it: values, leases, and the notifications that wake a waiter.
func TestSentinelFindsMaster(t *testing.T) {
	master := redistest.Start(t)
	sen := redistest.StartSentinel(t, master, "mymaster")
	a := sentinelStore(t, sen, nil)
	b := sentinelStore(t, sen, nil)
	ctx := t.Context()

	if err := a.Set(ctx, "x", []byte("v1"), time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if v, ok, err := b.Get(ctx, "x"); err != nil || !ok || string(v) != "v1" {
		t.Fatalf("Get = %q, %v, %v; want v1", v, ok, err)
	}
	if got := master.Do("GET", DefaultPrefix+"v:x"); got != "v1" {
		t.Fatalf("the master holds %q, want v1", got)
	}

	subscribed(t, b)
	l, won, err := a.TryLease(ctx, "y")
	if err != nil || !won {
		t.Fatalf("a.TryLease = %v, %v; want true, nil", won, err)
	}
	if _, won, err := b.TryLease(ctx, "y"); err != nil || won {
		t.Fatalf("b.TryLease while a holds the lease = %v, %v; want false, nil", won, err)
	}
	type result struct {
		v   []byte
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, ok, err := b.Wait(ctx, "y")
		done <- result{v, ok, err}
	}()
	testkit.WaitFor(t, func() bool { return waiters(b, "y") == 1 })
	if err := a.Set(ctx, "y", []byte("v2"), time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if r := <-done; r.err != nil || !r.ok || string(r.v) != "v2" {
		t.Fatalf("Wait = %q, %v, %v; want v2", r.v, r.ok, r.err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if got := master.Do("EXISTS", DefaultPrefix+"l:y"); got != "0" {
		t.Fatalf("the lease is still on the master after Release (EXISTS = %s)", got)
	}
	if !a.Healthy() || !b.Healthy() {
		t.Fatal("a Store is not Healthy")
	}
}

// When the master a sentinel names is gone, when the sentinels are, and
// when a sentinel accepts connections but never answers, calls fail with
// ErrUnavailable within the timeout and start an episode: nothing hangs.
func TestSentinelOutage(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// Slack for a loaded machine (-race): go-redis returns when the
	// call's context ends. The bound only has to stay below what a call
	// without the timeout would take: go-redis's own defaults, a 5-s dial
	// and a 3-s read.
	const slack = 2 * time.Second
	check := func(t *testing.T, s *Store, m *metrics) {
		t.Helper()
		start := time.Now()
		_, _, err := s.Get(t.Context(), "x")
		if took := time.Since(start); took > timeout+slack {
			t.Errorf("Get took %v, want at most the timeout %v", took, timeout)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get: %v, want ErrUnavailable", err)
		}
		if s.Healthy() || !slices.Equal(m.Episodes(), []bool{true}) {
			t.Fatalf("Healthy %v, episodes %v; want false, [true]", s.Healthy(), m.Episodes())
		}
		// The episode's fast path: no network at all.
		if _, _, err := s.TryLease(t.Context(), "x"); err != ErrUnavailable {
			t.Fatalf("TryLease during the episode: %v, want ErrUnavailable at once", err)
		}
	}

	t.Run("master stopped", func(t *testing.T) {
		master := redistest.Start(t)
		sen := redistest.StartSentinel(t, master, "mymaster")
		m := &metrics{}
		s := sentinelStore(t, sen, func(c *Config) { c.Timeout, c.Metrics = timeout, m })
		master.Stop()
		check(t, s, m)
		if sen.MasterAddr() != master.Addr() {
			t.Fatalf("the sentinel names %q, want the stopped master %s (no replica to promote)", sen.MasterAddr(), master.Addr())
		}
	})
	t.Run("sentinel stopped", func(t *testing.T) {
		master := redistest.Start(t)
		sen := redistest.StartSentinel(t, master, "mymaster")
		m := &metrics{}
		s := sentinelStore(t, sen, func(c *Config) { c.Timeout, c.Metrics = timeout, m })
		sen.Stop()
		check(t, s, m)
	})
	t.Run("sentinel silent", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conns := make(chan net.Conn, 16)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					close(conns)
					return
				}
				conns <- c // held open, never answered
			}
		}()
		t.Cleanup(func() {
			l.Close()
			for c := range conns {
				c.Close()
			}
		})
		m := &metrics{}
		s := newStore(t, "", func(c *Config) {
			c.SentinelMaster, c.SentinelAddrs = "mymaster", []string{l.Addr().String()}
			c.Timeout, c.Metrics = timeout, m
		})
		check(t, s, m)
	})
}

// A failover: the master stops, the sentinel promotes its replica, and the
// Store finds the new master by itself, with the value the replica had
// copied. It takes about 3 s: 1 s before the sentinel counts the master
// down, then the promotion.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a failover takes seconds")
	}
	master := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	host, port, _ := net.SplitHostPort(master.Addr())
	replica := redistest.Start(t, "--replicaof", host, port)
	testkit.WaitFor(t, func() bool { return strings.Contains(replica.Do("INFO", "replication"), "master_link_status:up") })
	// Started after the replica attached, the sentinel learns of it from
	// its first look at the master; it can promote it once it has looked
	// at the replica too.
	sen := redistest.StartSentinel(t, master, "mymaster")
	testkit.WaitFor(t, func() bool {
		r := sen.Do("SENTINEL", "replicas", "mymaster")
		return strings.Contains(r, "flags slave ") && strings.Contains(r, "master-link-status ok")
	})

	m := &metrics{}
	s := sentinelStore(t, sen, func(c *Config) {
		c.Metrics = m
		c.ProbeInterval = 200 * time.Millisecond
	})
	ctx := t.Context()
	if err := s.Set(ctx, "x", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	testkit.WaitFor(t, func() bool { return replica.Do("GET", DefaultPrefix+"v:x") == "v" })
	subscribed(t, s)

	start := time.Now()
	master.Stop()
	deadline := start.Add(15 * time.Second)
	for {
		v, ok, err := s.Get(ctx, "x")
		if err == nil && ok && string(v) == "v" {
			break
		}
		if err != nil && !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get during the failover: %v, want ErrUnavailable", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from a new master 15s after the old one stopped (last: %q, %v, %v); the sentinel names %q",
				v, ok, err, sen.MasterAddr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the Store was back %v after the master stopped", time.Since(start).Round(10*time.Millisecond))
	if got := sen.MasterAddr(); got != replica.Addr() {
		t.Fatalf("the sentinel names %s, want the promoted replica %s", got, replica.Addr())
	}
	// One episode, as a rule. The subscription (its own pool) may find the
	// new master and end it just before a call meets a connection pool
	// whose dial circuit breaker is still open (go-redis: after PoolSize
	// failed dials, dials fail with the last error until a background dial,
	// once a second, succeeds), which starts a second, short one.
	if got := m.Episodes(); len(got) < 2 || !got[0] || got[len(got)-1] {
		t.Fatalf("episodes %v, want down first and up last", got)
	} else if len(got) > 2 {
		t.Logf("episodes %v", got)
	}

	// Everything works on the new master, notifications included.
	subscribed(t, s)
	if err := s.Set(ctx, "y", []byte("w"), time.Minute); err != nil {
		t.Fatalf("Set on the new master: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	defer c.Close()
	if got, err := c.Get(ctx, DefaultPrefix+"v:y").Result(); err != nil || got != "w" {
		t.Fatalf("the new master holds %q, %v; want w", got, err)
	}
}
