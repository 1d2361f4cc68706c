package sharedtoken

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/seal"
	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// testTimeout replaces the Store's tight production timeout, so that a
// loaded test machine (-race) does not start down episodes.
const testTimeout = 5 * time.Second

// newStore returns a Store on addr, closed when the test ends, with the test
// timeout and whatever edit changes. Each Store stands for one replica.
func newStore(t *testing.T, addr string, edit func(*shared.Config)) *shared.Store {
	t.Helper()
	cfg := shared.Config{Addr: addr, Timeout: testTimeout}
	if edit != nil {
		edit(&cfg)
	}
	s, err := shared.New(cfg)
	if err != nil {
		t.Fatalf("shared.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// testKey returns a Key made from fixed bytes derived from label: a test
// key, never used elsewhere.
func testKey(t *testing.T, label string) seal.Key {
	t.Helper()
	raw := sha256.Sum256([]byte("sharedtoken test key " + label))
	k, err := seal.NewKey(raw[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testSealer returns a Sealer over the test keys of current and older.
func testSealer(t *testing.T, current string, older ...string) *seal.Sealer {
	t.Helper()
	ks := make([]seal.Key, len(older))
	for i, l := range older {
		ks[i] = testKey(t, l)
	}
	s, err := seal.NewSealer(testKey(t, current), ks...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// replica is one replica's Tier, with its own Store and metrics.
type replica struct {
	*Tier
	store   *shared.Store
	metrics *metrics
}

// newReplica returns a Tier with its own Store on addr, sealing under the
// test keys current and older, with scope "scope-of-<tenant>" and whatever
// edit changes.
func newReplica(t *testing.T, addr string, edit func(*Config), current string, older ...string) *replica {
	t.Helper()
	return newReplicaOn(t, newStore(t, addr, nil), edit, current, older...)
}

// newReplicaOn is newReplica over a given Store.
func newReplicaOn(t *testing.T, s *shared.Store, edit func(*Config), current string, older ...string) *replica {
	t.Helper()
	m := &metrics{}
	cfg := Config{
		Store:   s,
		Sealer:  testSealer(t, current, older...),
		Scope:   func(tenant string) string { return "scope-of-" + tenant },
		Metrics: m,
	}
	if edit != nil {
		edit(&cfg)
	}
	tier, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &replica{Tier: tier, store: s, metrics: m}
}

// direct is a plain client, for looking at Redis behind the Tier's back.
func direct(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// valueKey is the Redis key of a value named name, with the Store's default
// prefix.
func valueKey(name string) string { return shared.DefaultPrefix + "v:" + name }

// leaseKey is the Redis key of name's lease.
func leaseKey(name string) string { return shared.DefaultPrefix + "l:" + name }

// subscribed waits until n Stores' subscriptions are up on addr (each Store
// has one subscription to the invalidation channel).
func subscribed(t *testing.T, c *redis.Client, n int64) {
	t.Helper()
	channel := shared.DefaultPrefix + "inv"
	testkit.WaitFor(t, func() bool {
		m, err := c.PubSubNumSub(context.Background(), channel).Result()
		return err == nil && m[channel] >= n
	})
}

// metrics records a Tier's events.
type metrics struct {
	mu      sync.Mutex
	unknown int // Unreadable(true)
	other   int // Unreadable(false)
}

func (m *metrics) Unreadable(unknownKey bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if unknownKey {
		m.unknown++
	} else {
		m.other++
	}
}

// counts returns the Unreadable(true) and Unreadable(false) counts.
func (m *metrics) counts() (unknown, other int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unknown, m.other
}

// token returns a SharedToken with access token access that expires in life
// and was obtained a minute ago, both to the millisecond.
func token(access string, life time.Duration) broker.SharedToken {
	now := time.Now().Truncate(time.Millisecond)
	return broker.SharedToken{
		Token:    broker.Token{AccessToken: access, TokenType: "Bearer", Expiry: now.Add(life)},
		Obtained: now.Add(-time.Minute),
	}
}

// sameToken reports whether got is want, times compared as instants.
func sameToken(got, want broker.SharedToken) bool {
	return got.AccessToken == want.AccessToken && got.TokenType == want.TokenType &&
		got.Expiry.Equal(want.Expiry) && got.Obtained.Equal(want.Obtained)
}

// cacheKey stands for a broker cache key.
var cacheKey = []byte("\x08tenant-1u\x09account-1\x01\x07group-1\x00")
