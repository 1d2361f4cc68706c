package shared

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease is the right, for a while, to exchange the token of one name on
// behalf of all replicas. It expires [Config].LeaseTTL after it was taken or
// last extended ([Lease.Extend]), unless released first. The zero Lease
// holds nothing.
type Lease struct {
	s     *Store
	name  string
	key   string
	token string // random, so that only this holder can release it
}

// TryLease tries to take the lease on name (SET NX with the lease TTL and a
// random token). It reports whether it did; if not, another replica holds it
// and the caller should [Store.Wait] for its value.
//
// A caller that wins should look for the value again before exchanging: the
// previous holder may have stored it and released between the caller's miss
// and its TryLease.
func (s *Store) TryLease(ctx context.Context, name string) (Lease, bool, error) {
	l := Lease{s: s, name: name, key: s.leaseKey(name), token: rand.Text()}
	var won bool
	err := s.do(ctx, "lease", func(ctx context.Context) error {
		var err error
		won, err = s.rdb.SetNX(ctx, l.key, l.token, s.cfg.LeaseTTL).Result()
		return err
	})
	if err != nil || !won {
		return Lease{}, false, err
	}
	return l, true, nil
}

// Release gives the lease up, so that waiters that find no value stop waiting
// at once instead of at its expiry: the script that deletes it also wakes
// them, as a Set does. It deletes the lease only if it is still
// this holder's (a compare-and-delete of the token in one script), and
// returns [ErrLeaseLost] if it was not: it had expired, perhaps to be taken
// by another replica, which is left alone. Releasing the zero Lease does
// nothing.
//
// Release after storing the value: a waiter that sees the lease gone looks
// for the value once more and then gives up.
func (l Lease) Release(ctx context.Context) error {
	if l.s == nil {
		return nil
	}
	var released bool
	err := l.s.do(ctx, "release", func(ctx context.Context) error {
		n, err := compareAndDelete.Run(ctx, l.s.rdb, []string{l.key}, l.token, l.s.setChannel, l.s.message(l.name)).Int()
		released = n == 1
		return err
	})
	if err != nil {
		return err
	}
	if !released {
		return ErrLeaseLost
	}
	return nil
}

// Extend renews the lease for a full [Config].LeaseTTL from now, if it is
// still this holder's (a compare-and-expire of the token in one script). It
// returns [ErrLeaseLost] if it was not: it had expired, perhaps to be taken
// by another replica, which is left alone; the holder should then stop
// renewing. A holder calls Extend at intervals well under the lease TTL
// (a third, say) for as long as it exchanges, so that a slow exchange keeps
// its lease while a holder that dies loses it within one TTL. Extending the
// zero Lease does nothing.
func (l Lease) Extend(ctx context.Context) error {
	if l.s == nil {
		return nil
	}
	var extended bool
	err := l.s.do(ctx, "extend", func(ctx context.Context) error {
		n, err := extendLease.Run(ctx, l.s.rdb, []string{l.key}, l.token, l.s.cfg.LeaseTTL.Milliseconds()).Int()
		extended = n == 1
		return err
	})
	if err != nil {
		return err
	}
	if !extended {
		return ErrLeaseLost
	}
	return nil
}

// LeaseTTL is the lease TTL the Store was configured with, after defaults:
// how long a lease lasts unless released or extended. Holders that renew
// their leases pace their [Lease.Extend] calls by it.
func (s *Store) LeaseTTL() time.Duration { return s.cfg.LeaseTTL }

// Wait waits for a value to appear under name while another replica holds
// its lease. It returns the value when one appears; false (and no error)
// when the lease is gone with no value (the holder released it after a
// failed exchange, or died and the lease expired), so that the caller may try
// to take the lease itself; or an error when Redis fails or ctx ends.
//
// Wait is woken by the notification that [Store.Set] publishes, through the
// Store's single subscription shared by all its waiters, and looks at Redis
// every [Config].PollInterval (jittered) in case a notification is missed.
// Each look is one round trip, under the usual timeout and health rules.
func (s *Store) Wait(ctx context.Context, name string) ([]byte, bool, error) {
	return s.WaitFor(ctx, name, nil)
}

// WaitFor is [Store.Wait] for a value that accept takes: one it refuses,
// such as the token a refresh is replacing, is waited past as if there were
// none, and if the lease ends with only such a value there, WaitFor
// returns false. A nil accept takes any value.
func (s *Store) WaitFor(ctx context.Context, name string, accept func([]byte) bool) ([]byte, bool, error) {
	w := s.addWaiter(name) // before the first look, so no notification is missed
	defer s.removeWaiter(name, w)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		v, found, leased, err := s.look(ctx, name)
		switch {
		case err != nil:
			return nil, false, err
		case found && (accept == nil || accept(v)):
			return v, true, nil
		case !leased:
			return nil, false, nil
		}
		pause := s.cfg.PollInterval/2 + randv2.N(s.cfg.PollInterval/2)
		if timer == nil {
			timer = time.NewTimer(pause)
		} else {
			timer.Reset(pause)
		}
		select {
		case <-w.ch:
		case <-timer.C:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("shared: wait: %w", ctx.Err())
		case <-s.done:
			return nil, false, ErrClosed
		}
	}
}

// look reads, in one round trip, whether name's lease exists and then its
// value. The order matters: a holder stores before it releases, so a lease
// seen gone means a value stored under it is visible to the GET after.
func (s *Store) look(ctx context.Context, name string) (v []byte, found, leased bool, err error) {
	err = s.do(ctx, "wait", func(ctx context.Context) error {
		var (
			exists *redis.IntCmd
			get    *redis.StringCmd
		)
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			exists = p.Exists(ctx, s.leaseKey(name))
			get = p.Get(ctx, s.valueKey(name))
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		n, err := exists.Result()
		if err != nil {
			return err
		}
		leased = n == 1
		b, err := get.Bytes()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		v, found = b, err == nil
		return err
	})
	if err != nil {
		return nil, false, false, err
	}
	return v, found, leased, nil
}
