package sharedtoken

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/shared"
)

// releaseTimeout bounds the release of a lease, on a context of its own:
// the caller's may have ended by then. The Store bounds the round trip more
// tightly still.
const releaseTimeout = time.Second

// Lease takes key's lease under its ID. When won, one goroutine renews it
// every third of the Store's lease TTL until release is called, or until
// the lease turns out lost (it expired, perhaps to be taken by another
// replica: both then exchange, and the later Put wins). release is
// idempotent: it stops and waits for that goroutine, then releases the lease
// if it is still this holder's. When not won, release does nothing.
func (t *Tier) Lease(ctx context.Context, tenant string, key []byte) (release func(), won bool, err error) {
	r, won, err := t.lease(ctx, tenant, key)
	if err != nil || !won {
		return func() {}, false, err
	}
	return r.release, true, nil
}

func (t *Tier) lease(ctx context.Context, tenant string, key []byte) (*renewal, bool, error) {
	l, won, err := t.store.TryLease(ctx, t.ID(tenant, key))
	if err != nil || !won {
		return nil, false, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &renewal{lease: l, cancel: cancel, done: make(chan struct{})}
	go r.renew(rctx, t.store.LeaseTTL()/3)
	return r, true, nil
}

// renewal keeps one won lease alive until it is released.
type renewal struct {
	lease  shared.Lease
	cancel context.CancelFunc // stops renew
	done   chan struct{}      // closed when renew has returned
	once   sync.Once
}

// renew extends the lease every interval until ctx ends, the lease is lost
// or the Store is closed. A failed extension (Redis unavailable) is tried
// again at the next tick: by then the lease may be lost.
func (r *renewal) renew(ctx context.Context, every time.Duration) {
	defer close(r.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := r.lease.Extend(ctx)
		if errors.Is(err, shared.ErrLeaseLost) || errors.Is(err, shared.ErrClosed) {
			return
		}
	}
}

// release stops the renewal, waits for it to end and releases the lease.
// A lease already lost is left alone, and any other failure leaves the
// lease to expire on its own: there is no one to report it to.
func (r *renewal) release() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		_ = r.lease.Release(ctx)
	})
}
