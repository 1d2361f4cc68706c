package sharedtoken

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/seal"
	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

func TestNewValidates(t *testing.T) {
	r := redistest.Start(t)
	s := newStore(t, r.Addr(), nil)
	sealer := testSealer(t, "a")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no store", Config{Sealer: sealer}, "store is required"},
		{"no sealer", Config{Store: s}, "sealer is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	// Scope, Now and Metrics default: scope "", the system clock, none.
	tier, err := New(Config{Store: s, Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tier.ID("t", cacheKey), sealer.Name(append([]byte{0}, cacheKey...)); got != want {
		t.Fatalf("ID with no Scope = %s, want the name of uvarint(0) | key, %s", got, want)
	}
	ctx := t.Context()
	if err := tier.Put(ctx, "t", cacheKey, token("tok", time.Minute), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := tier.Get(ctx, "t", cacheKey); err != nil || !ok {
		t.Fatalf("Get with defaults = %v, %v; want a hit", ok, err)
	}
}

func TestPutGet(t *testing.T) {
	r := redistest.Start(t)
	a := newReplica(t, r.Addr(), nil, "a")
	b := newReplica(t, r.Addr(), nil, "a") // another replica, same key and scope
	c := direct(t, r.Addr())
	ctx := t.Context()

	if _, ok, err := a.Get(ctx, "tenant-1", cacheKey); err != nil || ok {
		t.Fatalf("Get before Put = %v, %v; want a miss", ok, err)
	}
	want := token("tok-1", time.Hour)
	want.TokenType = "DPoP"
	const ttl = 50 * time.Minute
	if err := a.Put(ctx, "tenant-1", cacheKey, want, ttl); err != nil {
		t.Fatalf("Put: %v", err)
	}
	for _, rep := range []*replica{a, b} {
		got, ok, err := rep.Get(ctx, "tenant-1", cacheKey)
		if err != nil || !ok || !sameToken(got, want) {
			t.Fatalf("Get = %v (obtained %s), %v, %v; want %v (obtained %s)", got, got.Obtained, ok, err, want, want.Obtained)
		}
	}
	if a.ID("tenant-1", cacheKey) != b.ID("tenant-1", cacheKey) {
		t.Fatal("two replicas with the same key and scope name an entry differently")
	}
	// Stored under the ID, with the TTL given.
	pttl, err := c.PTTL(ctx, valueKey(a.ID("tenant-1", cacheKey))).Result()
	if err != nil || pttl <= ttl-time.Minute || pttl > ttl {
		t.Fatalf("PTTL = %s, %v; want just under %s", pttl, err, ttl)
	}
	// Another key, another tenant: misses.
	if _, ok, _ := b.Get(ctx, "tenant-2", cacheKey); ok {
		t.Fatal("another tenant's Get found the token")
	}
	if _, ok, _ := b.Get(ctx, "tenant-1", append(bytes.Clone(cacheKey), 'x')); ok {
		t.Fatal("another key's Get found the token")
	}
	if u, o := b.metrics.counts(); u+o != 0 {
		t.Fatalf("Unreadable(true) %d, Unreadable(false) %d times; want none", u, o)
	}
}

func TestScopeSeparates(t *testing.T) {
	r := redistest.Start(t)
	old := newReplica(t, r.Addr(), nil, "a")
	reloaded := newReplica(t, r.Addr(), func(c *Config) {
		c.Scope = func(tenant string) string { return "new-upstream-of-" + tenant }
	}, "a")
	ctx := t.Context()
	if err := old.Put(ctx, "tenant-1", cacheKey, token("tok-1", time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	if old.ID("tenant-1", cacheKey) == reloaded.ID("tenant-1", cacheKey) {
		t.Fatal("the same ID under two scopes")
	}
	if _, ok, err := reloaded.Get(ctx, "tenant-1", cacheKey); err != nil || ok {
		t.Fatalf("Get under another scope = %v, %v; want a miss", ok, err)
	}
	if u, o := reloaded.metrics.counts(); u+o != 0 {
		t.Fatal("a miss under another scope counted as unreadable: it should not even be found")
	}
	// A scope that shifts a byte into the key is another scope still: the
	// length prefix keeps "ab"|"c" apart from "a"|"bc".
	x := newReplica(t, r.Addr(), func(c *Config) { c.Scope = func(string) string { return "ab" } }, "a")
	y := newReplica(t, r.Addr(), func(c *Config) { c.Scope = func(string) string { return "a" } }, "a")
	if x.ID("t", []byte("c")) == y.ID("t", []byte("bc")) {
		t.Fatal("scope and key are not length-separated")
	}
}

func TestSealedExpiryWins(t *testing.T) {
	r := redistest.Start(t)
	w := newReplica(t, r.Addr(), nil, "a")
	later := time.Now().Add(2 * time.Minute)
	rd := newReplica(t, r.Addr(), func(c *Config) { c.Now = func() time.Time { return later } }, "a")
	ctx := t.Context()
	// The token expires in a minute, but Redis is told to keep it for an
	// hour (as an attacker with write access could make it).
	tok := token("tok-1", time.Minute)
	if err := w.Put(ctx, "tenant-1", cacheKey, tok, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := w.Get(ctx, "tenant-1", cacheKey); err != nil || !ok {
		t.Fatalf("Get now = %v, %v; want a hit", ok, err)
	}
	if _, ok, err := rd.Get(ctx, "tenant-1", cacheKey); err != nil || ok {
		t.Fatalf("Get after the sealed expiry = %v, %v; want a miss", ok, err)
	}
	if _, ok, err := rd.Wait(ctx, "tenant-1", cacheKey, nil); err != nil || ok {
		t.Fatalf("Wait after the sealed expiry = %v, %v; want false, nil", ok, err)
	}
	// At the expiry itself, it has expired.
	at := newReplica(t, r.Addr(), func(c *Config) { c.Now = func() time.Time { return tok.Expiry } }, "a")
	if _, ok, _ := at.Get(ctx, "tenant-1", cacheKey); ok {
		t.Fatal("Get at the sealed expiry found the token")
	}
	if u, o := rd.metrics.counts(); u+o != 0 {
		t.Fatal("an expired value counted as unreadable")
	}
}

func TestTamperedIsAMiss(t *testing.T) {
	r := redistest.Start(t)
	a := newReplica(t, r.Addr(), nil, "a")
	b := newReplica(t, r.Addr(), nil, "a")
	c := direct(t, r.Addr())
	ctx := t.Context()
	if err := a.Put(ctx, "tenant-1", cacheKey, token("tok-1", time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	key := valueKey(a.ID("tenant-1", cacheKey))
	raw, err := c.Get(ctx, key).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-20] ^= 1
	// The value of another entry, moved here, does not open either.
	if err := a.Put(ctx, "tenant-2", cacheKey, token("tok-2", time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	moved, err := c.Get(ctx, valueKey(a.ID("tenant-2", cacheKey))).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for i, bad := range [][]byte{flipped, raw[:len(raw)-1], []byte("garbage"), moved} {
		if err := c.Set(ctx, key, bad, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := b.Get(ctx, "tenant-1", cacheKey); err != nil || ok {
			t.Fatalf("Get of tampered value %d = %v, %v; want a miss", i, ok, err)
		}
		if _, ok, err := b.Wait(ctx, "tenant-1", cacheKey, nil); err != nil || ok {
			t.Fatalf("Wait for tampered value %d = %v, %v; want false, nil", i, ok, err)
		}
		if err := b.Evict(ctx, "tenant-1", cacheKey, "tok-1"); err != nil {
			t.Fatal(err)
		}
		if n, _ := c.Exists(ctx, key).Result(); n != 1 {
			t.Fatalf("Evict removed tampered value %d", i)
		}
	}
	if u, o := b.metrics.counts(); u != 0 || o != 12 {
		t.Fatalf("Unreadable(true) %d, Unreadable(false) %d times; want 0, 12 (4 values read 3 times)", u, o)
	}
}

func TestForeignKeyIsAMiss(t *testing.T) {
	r := redistest.Start(t)
	foreign := newReplica(t, r.Addr(), nil, "b")
	rd := newReplica(t, r.Addr(), nil, "a")
	c := direct(t, r.Addr())
	ctx := t.Context()
	if err := foreign.Put(ctx, "tenant-1", cacheKey, token("tok-1", time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	// Under its own name the reader would not even find it; copied there,
	// it is found and does not open, for want of the key.
	raw, err := c.Get(ctx, valueKey(foreign.ID("tenant-1", cacheKey))).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, valueKey(rd.ID("tenant-1", cacheKey)), raw, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := rd.Get(ctx, "tenant-1", cacheKey); err != nil || ok {
		t.Fatalf("Get of a value under a foreign key = %v, %v; want a miss", ok, err)
	}
	if u, o := rd.metrics.counts(); u != 1 || o != 0 {
		t.Fatalf("Unreadable(true) %d, Unreadable(false) %d times; want 1, 0", u, o)
	}
}

func TestRotation(t *testing.T) {
	r := redistest.Start(t)
	before := newReplica(t, r.Addr(), nil, "a")      // not rotated yet
	during := newReplica(t, r.Addr(), nil, "b", "a") // the new key current, the old one older
	after := newReplica(t, r.Addr(), nil, "b")       // the old key dropped
	primed := newReplica(t, r.Addr(), nil, "a", "b") // the new key configured as older first
	c := direct(t, r.Addr())
	ctx := t.Context()

	old := token("tok-old", time.Hour)
	if err := before.Put(ctx, "tenant-1", cacheKey, old, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := during.Get(ctx, "tenant-1", cacheKey); err != nil || !ok || !sameToken(got, old) {
		t.Fatalf("rotating reader's Get = %v, %v, %v; want the old key's token", got, ok, err)
	}
	if _, ok, _ := after.Get(ctx, "tenant-1", cacheKey); ok {
		t.Fatal("a reader without the old key found its value")
	}
	// The rotating replica writes under the new key's name; the new value
	// wins over the old one, and a replica primed with the new key reads it.
	if during.ID("tenant-1", cacheKey) == before.ID("tenant-1", cacheKey) {
		t.Fatal("the ID did not change with the current key")
	}
	fresh := token("tok-new", time.Hour)
	if err := during.Put(ctx, "tenant-1", cacheKey, fresh, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, rep := range []*replica{during, after} {
		if got, ok, err := rep.Get(ctx, "tenant-1", cacheKey); err != nil || !ok || !sameToken(got, fresh) {
			t.Fatalf("Get = %v, %v, %v; want the new key's token", got, ok, err)
		}
	}
	if got, ok, err := primed.Get(ctx, "tenant-1", cacheKey); err != nil || !ok || !sameToken(got, old) {
		t.Fatalf("primed replica's Get = %v, %v, %v; want its current key's (old) token first", got, ok, err)
	}
	// Evict looks under every name: the old value goes, the new one stays.
	if err := during.Evict(ctx, "tenant-1", cacheKey, "tok-old"); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, valueKey(before.ID("tenant-1", cacheKey))).Result(); n != 0 {
		t.Fatal("Evict left the rejected token under the old key's name")
	}
	if got, ok, _ := during.Get(ctx, "tenant-1", cacheKey); !ok || !sameToken(got, fresh) {
		t.Fatalf("after evicting the old token, Get = %v, %v; want the new one", got, ok)
	}
	for _, rep := range []*replica{before, during, after, primed} {
		if u, o := rep.metrics.counts(); u+o != 0 {
			t.Fatalf("Unreadable(true) %d, Unreadable(false) %d times; want none", u, o)
		}
	}
}

func TestPutErrors(t *testing.T) {
	r := redistest.Start(t)
	a := newReplica(t, r.Addr(), nil, "a")
	ctx := t.Context()
	huge := token("tok-SECRET-"+strings.Repeat("x", seal.MaxPlaintextSize), time.Hour)
	err := a.Put(ctx, "tenant-secret-name", cacheKey, huge, time.Hour)
	if !errors.Is(err, seal.ErrTooLarge) {
		t.Fatalf("Put of a huge token: %v, want ErrTooLarge", err)
	}
	if err := a.Put(ctx, "tenant-secret-name", cacheKey, token("", time.Hour), time.Hour); err == nil {
		t.Fatal("Put of an empty access token succeeded")
	}
	for _, word := range []string{"SECRET", "tenant-secret-name", "tenant-1"} {
		if strings.Contains(err.Error(), word) {
			t.Fatalf("Put's error %q shows %q", err, word)
		}
	}
	// A TTL of zero or less stores nothing.
	if err := a.Put(ctx, "tenant-1", cacheKey, token("tok", time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := a.Get(ctx, "tenant-1", cacheKey); ok {
		t.Fatal("a Put with ttl 0 stored the token")
	}
}

func TestRedisDown(t *testing.T) {
	r := redistest.Start(t)
	a := newReplica(t, r.Addr(), nil, "a")
	ctx := t.Context()
	r.Stop()
	if _, _, err := a.Get(ctx, "tenant-1", cacheKey); !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("Get with Redis down: %v, want ErrUnavailable", err)
	}
	release, won, err := a.Lease(ctx, "tenant-1", cacheKey)
	if !errors.Is(err, shared.ErrUnavailable) || won {
		t.Fatalf("Lease with Redis down = %v, %v; want false, ErrUnavailable", won, err)
	}
	release() // harmless
	if _, _, err := a.Wait(ctx, "tenant-1", cacheKey, nil); !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("Wait with Redis down: %v, want ErrUnavailable", err)
	}
	if err := a.Put(ctx, "tenant-1", cacheKey, token("tok", time.Hour), time.Hour); !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("Put with Redis down: %v, want ErrUnavailable", err)
	}
	if err := a.Evict(ctx, "tenant-1", cacheKey, "tok"); !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("Evict with Redis down: %v, want ErrUnavailable", err)
	}
}

func TestEvict(t *testing.T) {
	r := redistest.Start(t)
	a := newReplica(t, r.Addr(), nil, "a")
	b := newReplica(t, r.Addr(), nil, "a")
	c := direct(t, r.Addr())
	ctx := t.Context()
	bInv := b.Invalidations(ctx)
	subscribed(t, c, 2)

	tok := token("tok-1", time.Hour)
	if err := b.Put(ctx, "tenant-1", cacheKey, tok, time.Hour); err != nil {
		t.Fatal(err)
	}
	// Another token, a prefix of it, or nothing: the value stays.
	for _, rejected := range []string{"tok-2", "tok-", "tok-1x", ""} {
		if err := a.Evict(ctx, "tenant-1", cacheKey, rejected); err != nil {
			t.Fatalf("Evict(%q): %v", rejected, err)
		}
		if got, ok, _ := b.Get(ctx, "tenant-1", cacheKey); !ok || !sameToken(got, tok) {
			t.Fatalf("after Evict(%q), Get = %v, %v; want the token still there", rejected, got, ok)
		}
	}
	// Evicting in a tenant or key it is not stored under leaves it too.
	if err := a.Evict(ctx, "tenant-2", cacheKey, "tok-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Get(ctx, "tenant-1", cacheKey); !ok {
		t.Fatal("an Evict for another tenant removed the token")
	}
	// The token itself goes, and the other replica hears of it.
	if err := a.Evict(ctx, "tenant-1", cacheKey, "tok-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Get(ctx, "tenant-1", cacheKey); ok {
		t.Fatal("Evict of the stored token left it")
	}
	if n, _ := c.Exists(ctx, valueKey(a.ID("tenant-1", cacheKey))).Result(); n != 0 {
		t.Fatal("the value is still in Redis")
	}
	select {
	case id := <-bInv:
		if want := b.ID("tenant-1", cacheKey); id != want {
			t.Fatalf("b received %q, want its ID %q", id, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b received no invalidation")
	}
	// Messages on a channel arrive in order: had the mismatches published
	// anything, b would have received it first. Nothing more comes.
	select {
	case id := <-bInv:
		t.Fatalf("b received a second invalidation %q", id)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestWaitReceivesPut(t *testing.T) {
	r := redistest.Start(t)
	holder := newReplica(t, r.Addr(), nil, "a")
	// A waiter that never polls in this test's lifetime: only the
	// notification of the holder's Put can wake it.
	waiting := newReplicaOn(t, newStore(t, r.Addr(), func(c *shared.Config) { c.PollInterval = time.Hour }), nil, "a")
	c := direct(t, r.Addr())
	ctx := t.Context()
	subscribed(t, c, 2)

	release, won, err := holder.Lease(ctx, "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("holder's Lease = %v, %v; want won", won, err)
	}
	defer release()
	if _, won, err := waiting.Lease(ctx, "tenant-1", cacheKey); err != nil || won {
		t.Fatalf("waiter's Lease = %v, %v; want lost", won, err)
	}
	type result struct {
		ok  bool
		err error
		tok string
	}
	done := make(chan result, 1)
	go func() {
		tok, ok, err := waiting.Wait(ctx, "tenant-1", cacheKey, nil)
		done <- result{ok, err, tok.AccessToken}
	}()
	// Put once the waiter has most likely made its first look and parked,
	// so that the notification delivers the token. Were the Put to land
	// before that look, the look would find it: correct either way.
	time.Sleep(50 * time.Millisecond)
	want := token("tok-1", time.Hour)
	if err := holder.Put(ctx, "tenant-1", cacheKey, want, time.Hour); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res.err != nil || !res.ok || res.tok != "tok-1" {
		t.Fatalf("Wait = %q, %v, %v; want tok-1, true, nil", res.tok, res.ok, res.err)
	}
}

func TestWaitHolderGaveUp(t *testing.T) {
	r := redistest.Start(t)
	holder := newReplica(t, r.Addr(), nil, "a")
	waiting := newReplicaOn(t, newStore(t, r.Addr(), func(c *shared.Config) { c.PollInterval = 20 * time.Millisecond }), nil, "a")
	ctx := t.Context()
	release, won, err := holder.Lease(ctx, "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("Lease = %v, %v; want won", won, err)
	}
	done := make(chan bool, 1)
	go func() {
		_, ok, err := waiting.Wait(ctx, "tenant-1", cacheKey, nil)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		done <- ok
	}()
	time.Sleep(50 * time.Millisecond)
	release() // the exchange failed: nothing stored
	if ok := <-done; ok {
		t.Fatal("Wait found a token the holder never stored")
	}
	rel, won, err := waiting.Lease(ctx, "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("Lease after the holder gave up = %v, %v; want won", won, err)
	}
	rel()
}
