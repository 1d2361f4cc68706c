package shared_test

import (
	"context"
	"errors"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/shared"
)

// exchange stands for the upstream exchange and the sealing of its result.
func exchange(context.Context) (sealed []byte, ttl time.Duration, err error) {
	return []byte("sealed token"), 50 * time.Minute, nil
}

// The flow of a local miss: look in Redis, else take the lease and exchange,
// else wait for the replica that holds it. On any error (errors.Is
// ErrUnavailable) the broker exchanges alone, as without Redis.
func Example() {
	s, err := shared.New(shared.Config{Addr: "127.0.0.1:6379"})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	lookup := func(ctx context.Context, name string) ([]byte, error) {
		for {
			if v, ok, err := s.Get(ctx, name); err != nil || ok {
				return v, err
			}
			lease, won, err := s.TryLease(ctx, name)
			if err != nil {
				return nil, err
			}
			if !won {
				v, ok, err := s.Wait(ctx, name)
				if err != nil || ok {
					return v, err
				}
				continue // the holder gave up: try the lease ourselves
			}
			// Release on a context of its own, so that it happens even if
			// ctx has ended; it is bounded by the Store's timeout.
			defer lease.Release(context.WithoutCancel(ctx))
			if v, ok, err := s.Get(ctx, name); err != nil || ok { // stored meanwhile?
				return v, err
			}
			v, ttl, err := exchange(ctx)
			if err != nil {
				return nil, err
			}
			if err := s.Set(ctx, name, v, ttl); err != nil && !errors.Is(err, shared.ErrUnavailable) {
				return nil, err
			}
			return v, nil
		}
	}
	_, _ = lookup(context.Background(), "hmac-of-the-request")
}
