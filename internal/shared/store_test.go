package shared

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no addr", Config{}, "addr is required"},
		{"negative db", Config{Addr: "x:1", DB: -1}, "db -1"},
		{"negative timeout", Config{Addr: "x:1", Timeout: -time.Second}, "timeout -1s"},
		{"negative lease", Config{Addr: "x:1", LeaseTTL: -time.Second}, "lease ttl -1s"},
		{"sub-millisecond lease", Config{Addr: "x:1", LeaseTTL: time.Microsecond}, "1ms resolution"},
		{"negative probe", Config{Addr: "x:1", ProbeInterval: -time.Second}, "probe interval"},
		{"tiny poll", Config{Addr: "x:1", PollInterval: time.Millisecond}, "poll interval"},
		// Sentinel
		{"addr and sentinel", Config{Addr: "x:1", SentinelMaster: "m", SentinelAddrs: []string{"s:26379"}}, "addr and sentinel are both set"},
		{"addr and sentinel addrs", Config{Addr: "x:1", SentinelAddrs: []string{"s:26379"}}, "both set"},
		{"addr and sentinel password", Config{Addr: "x:1", SentinelPassword: "pw"}, "both set"},
		{"master without addrs", Config{SentinelMaster: "m"}, "sentinel addrs are required"},
		{"addrs without master", Config{SentinelAddrs: []string{"s:26379"}}, "sentinel master name is required"},
		{"username without master", Config{SentinelUsername: "u"}, "sentinel master name is required"},
		{"empty sentinel addr", Config{SentinelMaster: "m", SentinelAddrs: []string{"s:26379", ""}}, "a sentinel addr is empty"},
		{"neither", Config{Username: "u"}, "addr is required, or a sentinel master and addrs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Config{Addr: "x:1"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Timeout != DefaultTimeout || cfg.LeaseTTL != DefaultLeaseTTL || cfg.Prefix != DefaultPrefix ||
		cfg.ProbeInterval != DefaultProbeInterval || cfg.PollInterval != DefaultPollInterval {
		t.Fatalf("defaults = %+v", cfg)
	}
}

func TestGetSet(t *testing.T) {
	r := redistest.Start(t)
	s := newStore(t, r.Addr(), nil)
	c := direct(t, r.Addr())
	ctx := t.Context()

	if v, ok, err := s.Get(ctx, "a"); err != nil || ok || v != nil {
		t.Fatalf("Get of a missing name = %q, %v, %v; want nil, false, nil", v, ok, err)
	}
	const ttl = time.Hour
	if err := s.Set(ctx, "a", []byte("sealed-1"), ttl); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if v, ok, err := s.Get(ctx, "a"); err != nil || !ok || string(v) != "sealed-1" {
		t.Fatalf("Get = %q, %v, %v; want sealed-1, true, nil", v, ok, err)
	}
	// The entry expires with the TTL given: Redis holds it with that PTTL.
	pttl, err := c.PTTL(ctx, DefaultPrefix+"v:a").Result()
	if err != nil {
		t.Fatal(err)
	}
	if pttl <= ttl-time.Minute || pttl > ttl {
		t.Fatalf("PTTL = %s, want just under %s", pttl, ttl)
	}

	// Set replaces, with the new TTL.
	if err := s.Set(ctx, "a", []byte("sealed-2"), 1500*time.Millisecond); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if v, _, _ := s.Get(ctx, "a"); string(v) != "sealed-2" {
		t.Fatalf("Get after a second Set = %q, want sealed-2", v)
	}
	if pttl, _ := c.PTTL(ctx, DefaultPrefix+"v:a").Result(); pttl <= 0 || pttl > 1500*time.Millisecond {
		t.Fatalf("PTTL after a second Set = %s, want (0, 1.5s]", pttl)
	}

	// A value need not be text, and may be empty.
	bin := []byte{0, 0xff, '\r', '\n', ' '}
	for _, v := range [][]byte{bin, {}} {
		if err := s.Set(ctx, "b", v, time.Minute); err != nil {
			t.Fatalf("Set: %v", err)
		}
		if got, ok, err := s.Get(ctx, "b"); err != nil || !ok || !bytes.Equal(got, v) {
			t.Fatalf("Get = %q, %v, %v; want %q, true, nil", got, ok, err, v)
		}
	}

	// A TTL of zero or less stores nothing.
	for _, ttl := range []time.Duration{0, -time.Second} {
		if err := s.Set(ctx, "c", []byte("x"), ttl); err != nil {
			t.Fatalf("Set with ttl %s: %v", ttl, err)
		}
		if n, _ := c.Exists(ctx, DefaultPrefix+"v:c").Result(); n != 0 {
			t.Fatalf("Set with ttl %s stored the value", ttl)
		}
	}
}

func TestPrefixAndDB(t *testing.T) {
	r := redistest.Start(t)
	a := newStore(t, r.Addr(), func(c *Config) { c.Prefix = "one:"; c.DB = 3 })
	b := newStore(t, r.Addr(), func(c *Config) { c.Prefix = "two:"; c.DB = 3 })
	ctx := t.Context()
	if err := a.Set(ctx, "n", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Get(ctx, "n"); ok {
		t.Fatal("a Store with another prefix sees the value")
	}
	if n, _ := direct(t, r.Addr()).Exists(ctx, "one:v:n").Result(); n != 0 {
		t.Fatal("the value is in DB 0, want DB 3")
	}
	db3 := redis.NewClient(&redis.Options{Addr: r.Addr(), DB: 3})
	defer db3.Close()
	if n, _ := db3.Exists(ctx, "one:v:n").Result(); n != 1 {
		t.Fatal("the value is not in DB 3 under one:v:n")
	}
}

func TestCompareAndDelete(t *testing.T) {
	r := redistest.Start(t)
	a := newStore(t, r.Addr(), nil)
	b := newStore(t, r.Addr(), nil)
	ctx := t.Context()
	aInv, bInv := a.Invalidations(ctx), b.Invalidations(ctx)
	subscribed(t, a)
	subscribed(t, b)

	if err := a.Set(ctx, "x", []byte("old"), time.Minute); err != nil {
		t.Fatal(err)
	}
	// A different value is left alone, and nothing is published.
	if ok, err := a.CompareAndDelete(ctx, "x", []byte("other")); err != nil || ok {
		t.Fatalf("CompareAndDelete(other) = %v, %v; want false, nil", ok, err)
	}
	if v, ok, _ := a.Get(ctx, "x"); !ok || string(v) != "old" {
		t.Fatalf("after a mismatched CompareAndDelete, Get = %q, %v; want old, true", v, ok)
	}
	// So is a missing one.
	if ok, err := a.CompareAndDelete(ctx, "missing", []byte("old")); err != nil || ok {
		t.Fatalf("CompareAndDelete(missing) = %v, %v; want false, nil", ok, err)
	}
	// The matching value is deleted and the name published.
	if ok, err := a.CompareAndDelete(ctx, "x", []byte("old")); err != nil || !ok {
		t.Fatalf("CompareAndDelete(old) = %v, %v; want true, nil", ok, err)
	}
	if _, ok, _ := a.Get(ctx, "x"); ok {
		t.Fatal("the value is still there")
	}
	// Then b invalidates y. Messages on a channel arrive in order, so had a
	// received its own invalidation, or b a message for the mismatches,
	// it would come first.
	if err := b.Set(ctx, "y", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.CompareAndDelete(ctx, "y", []byte("v")); err != nil || !ok {
		t.Fatalf("b.CompareAndDelete = %v, %v; want true, nil", ok, err)
	}
	if got := <-bInv; got != "x" {
		t.Fatalf("b received %q first, want x", got)
	}
	if got := <-aInv; got != "y" {
		t.Fatalf("a received %q first, want y (not its own x)", got)
	}
	select {
	case got := <-bInv:
		t.Fatalf("b received its own invalidation %q", got)
	default:
	}
}

func TestInvalidationsClose(t *testing.T) {
	r := redistest.Start(t)
	s := newStore(t, r.Addr(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	ch := s.Invalidations(ctx)
	kept := s.Invalidations(t.Context())
	cancel()
	for range ch { // closed when its context ends
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range kept { // and the others when the Store closes
	}
	if _, ok := <-s.Invalidations(t.Context()); ok {
		t.Fatal("Invalidations after Close returned an open channel")
	}
}

func TestInvalidationsDropWhenFull(t *testing.T) {
	r := redistest.Start(t)
	m := &metrics{}
	a := newStore(t, r.Addr(), func(c *Config) { c.Metrics = m })
	b := newStore(t, r.Addr(), nil)
	ctx := t.Context()
	full := a.Invalidations(ctx) // never read until the end
	subscribed(t, a)
	const n = invalidationBuffer + 3
	for i := range n {
		if err := b.Set(ctx, "k", []byte{byte(i)}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if ok, err := b.CompareAndDelete(ctx, "k", []byte{byte(i)}); err != nil || !ok {
			t.Fatalf("CompareAndDelete = %v, %v", ok, err)
		}
	}
	dropped := func() int { m.mu.Lock(); defer m.mu.Unlock(); return m.dropped }
	testkit.WaitFor(t, func() bool { return len(full)+dropped() == n })
	if got := dropped(); got != 3 {
		t.Fatalf("dropped %d, want 3", got)
	}
}

func TestClosed(t *testing.T) {
	r := redistest.Start(t)
	s := newStore(t, r.Addr(), nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := t.Context()
	if _, _, err := s.Get(ctx, "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := s.Set(ctx, "a", []byte("v"), time.Minute); !errors.Is(err, ErrClosed) {
		t.Fatalf("Set after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.TryLease(ctx, "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("TryLease after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.Wait(ctx, "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close: %v, want ErrClosed", err)
	}
	if !s.Healthy() {
		t.Fatal("a closed Store reports itself down")
	}
}

func TestCallerGivingUpIsNotAnEpisode(t *testing.T) {
	r := redistest.Start(t)
	m := &metrics{}
	s := newStore(t, r.Addr(), func(c *Config) { c.Metrics = m })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := s.Get(ctx, "a"); !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with a canceled context: %v, want context.Canceled only", err)
	}
	if !s.Healthy() || len(m.Episodes()) != 0 {
		t.Fatalf("Healthy = %v, episodes %v; want true, none", s.Healthy(), m.Episodes())
	}
}

func TestAuthentication(t *testing.T) {
	r := redistest.Start(t, "--requirepass", "secret")
	ctx := t.Context()
	good := newStore(t, r.Addr(), func(c *Config) { c.Password = "secret" })
	if err := good.Ping(ctx); err != nil {
		t.Fatalf("Ping with the password: %v", err)
	}
	acl := newStore(t, r.Addr(), func(c *Config) { c.Username = "default"; c.Password = "secret" })
	if err := acl.Ping(ctx); err != nil {
		t.Fatalf("Ping as user default: %v", err)
	}
	m := &metrics{}
	bad := newStore(t, r.Addr(), func(c *Config) { c.Password = "wrong"; c.Metrics = m })
	err := bad.Ping(ctx)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping with a wrong password: %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("the error shows the password: %v", err)
	}
	if len(m.Episodes()) != 1 {
		t.Fatalf("episodes %v, want [true]", m.Episodes())
	}
}
