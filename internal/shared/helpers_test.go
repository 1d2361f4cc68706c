package shared

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// testTimeout replaces the tight production timeout, so that a loaded test
// machine (-race) does not start episodes of its own; the outage tests use
// refused connections and paused servers, which fail regardless.
const testTimeout = 5 * time.Second

// newStore returns a Store on addr, closed when the test ends, with the test
// timeout and whatever edit changes.
func newStore(t *testing.T, addr string, edit func(*Config)) *Store {
	t.Helper()
	cfg := Config{Addr: addr, Timeout: testTimeout}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// subscribed waits until s's subscription is confirmed on both channels.
func subscribed(t *testing.T, s *Store) {
	t.Helper()
	testkit.WaitFor(t, s.subscribed.Load)
}

// direct is a plain client, for looking at Redis behind the Store's back.
func direct(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// metrics records a Store's events.
type metrics struct {
	mu       sync.Mutex
	episodes []bool
	causes   []error
	dropped  int
}

func (m *metrics) Episode(down bool, cause error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.episodes = append(m.episodes, down)
	m.causes = append(m.causes, cause)
}

func (m *metrics) InvalidationDropped() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropped++
}

func (m *metrics) Episodes() []bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]bool(nil), m.episodes...)
}

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// waiters is how many Wait calls on s are waiting for name.
func waiters(s *Store, name string) int {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return len(s.waiters[name])
}

// numsub is the number of subscribers of channel.
func numsub(t *testing.T, c *redis.Client, channel string) int64 {
	t.Helper()
	m, err := c.PubSubNumSub(context.Background(), channel).Result()
	if err != nil {
		t.Fatalf("PUBSUB NUMSUB: %v", err)
	}
	return m[channel]
}
