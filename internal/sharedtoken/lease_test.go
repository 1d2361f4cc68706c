package sharedtoken

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

// shortLease is the lease TTL of the lease tests' holders: renewals every
// third of it, so a lease survives a renewal delayed by up to two thirds
// of it, which a loaded machine (-race) can take.
const shortLease = time.Second

func TestLeaseRenewedUntilRelease(t *testing.T) {
	r := redistest.Start(t)
	holder := newReplicaOn(t, newStore(t, r.Addr(), func(c *shared.Config) { c.LeaseTTL = shortLease }), nil, "a")
	other := newReplica(t, r.Addr(), nil, "a")
	c := direct(t, r.Addr())
	key := leaseKey(holder.ID("tenant-1", cacheKey))

	// The caller's context ends long before the lease does: the renewal
	// and the release do not depend on it.
	ctx, cancel := context.WithCancel(t.Context())
	release, won, err := holder.Lease(ctx, "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("Lease = %v, %v; want won", won, err)
	}
	cancel()
	defer release()

	// Held for two TTLs: the other replica never gets it.
	deadline := time.Now().Add(2 * shortLease)
	for time.Now().Before(deadline) {
		rel, won, err := other.Lease(t.Context(), "tenant-1", cacheKey)
		if err != nil || won {
			rel()
			t.Fatalf("other's Lease while the holder holds it = %v, %v; want lost", won, err)
		}
		rel() // a lost lease's release does nothing
		time.Sleep(shortLease / 5)
	}
	if pttl, err := c.PTTL(t.Context(), key).Result(); err != nil || pttl <= 0 || pttl > shortLease {
		t.Fatalf("lease PTTL after 2 TTLs = %s, %v; want (0, %s]", pttl, err, shortLease)
	}

	release()
	// Deleted by the release, not left to expire: it is gone at once.
	if n, _ := c.Exists(t.Context(), key).Result(); n != 0 {
		t.Fatal("the lease is still there after release")
	}
	release() // again: nothing happens
	rel, won, err := other.Lease(t.Context(), "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("other's Lease after release = %v, %v; want won", won, err)
	}
	rel()
}

func TestLeaseLostStopsRenewing(t *testing.T) {
	r := redistest.Start(t)
	holder := newReplicaOn(t, newStore(t, r.Addr(), func(c *shared.Config) { c.LeaseTTL = shortLease }), nil, "a")
	other := newReplica(t, r.Addr(), nil, "a")
	c := direct(t, r.Addr())
	ctx := t.Context()
	key := leaseKey(holder.ID("tenant-1", cacheKey))

	ren, won, err := holder.lease(ctx, "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("lease = %v, %v; want won", won, err)
	}
	defer ren.release()
	// The holder's lease is lost (expired, say, while Redis was slow) and
	// the other replica takes it.
	if err := c.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	rel, won, err := other.Lease(ctx, "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("other's Lease = %v, %v; want won", won, err)
	}
	defer rel()
	theirs, err := c.Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The holder's next renewal finds the lease lost and stops.
	select {
	case <-ren.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the renewal goes on after the lease was lost")
	}
	// Neither the failed renewal nor the release touches the other's lease.
	ren.release()
	if got, _ := c.Get(ctx, key).Result(); got != theirs {
		t.Fatal("the lost holder's release deleted or changed the other's lease")
	}
	if pttl, _ := c.PTTL(ctx, key).Result(); pttl <= shortLease {
		t.Fatalf("the other's lease PTTL = %s: the lost holder reset it to its own TTL", pttl)
	}
}

func TestReleaseAfterStoreClosed(t *testing.T) {
	r := redistest.Start(t)
	s := newStore(t, r.Addr(), func(c *shared.Config) { c.LeaseTTL = shortLease })
	holder := newReplicaOn(t, s, nil, "a")
	ren, won, err := holder.lease(t.Context(), "tenant-1", cacheKey)
	if err != nil || !won {
		t.Fatalf("lease = %v, %v; want won", won, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The renewal finds the Store closed and ends on its own.
	select {
	case <-ren.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the renewal goes on after the Store closed")
	}
	ren.release() // returns, with nothing to release through
}
