package shared

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// invalidationBuffer is the capacity of each [Store.Invalidations] channel.
const invalidationBuffer = 1024

// subscriptionPing is how long the subscription may be silent before the
// reader pings Redis; a second silence with the ping unanswered means the
// connection is dead and the reader replaces it.
const subscriptionPing = 30 * time.Second

// waiter is one Wait call, woken when a Set of its name is announced.
type waiter struct{ ch chan struct{} }

// invSub is one Invalidations channel.
type invSub struct {
	ch   chan string
	stop func() bool // stops the context.AfterFunc that unregisters it
}

// Invalidations returns a channel of the names that other replicas have
// invalidated with [Store.CompareAndDelete]; the caller drops its local
// copies of them. The Store's own invalidations are not on it. The channel
// is closed when ctx ends or the Store is closed.
//
// Delivery is best effort: the caller must receive promptly (a full channel
// drops names, counted by [Metrics].InvalidationDropped), and names
// published while the subscription is down (Redis down or reconnecting) are
// lost. Local copies must therefore expire on their own, as they do.
func (s *Store) Invalidations(ctx context.Context) <-chan string {
	sub := &invSub{ch: make(chan string, invalidationBuffer)}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.closed.Load() {
		close(sub.ch)
		return sub.ch
	}
	s.invSubs[sub] = struct{}{}
	sub.stop = context.AfterFunc(ctx, func() {
		s.subMu.Lock()
		defer s.subMu.Unlock()
		if _, ok := s.invSubs[sub]; ok {
			delete(s.invSubs, sub)
			close(sub.ch)
		}
	})
	return sub.ch
}

func (s *Store) addWaiter(name string) *waiter {
	w := &waiter{ch: make(chan struct{}, 1)}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	ws := s.waiters[name]
	if ws == nil {
		ws = make(map[*waiter]struct{})
		s.waiters[name] = ws
	}
	ws[w] = struct{}{}
	return w
}

func (s *Store) removeWaiter(name string, w *waiter) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	ws := s.waiters[name]
	delete(ws, w)
	if len(ws) == 0 {
		delete(s.waiters, name)
	}
}

// subscribe is the subscription reader, the Store's only goroutine. It keeps
// one connection subscribed to the Store's two channels, fans their messages
// out to waiters and Invalidations channels, and replaces the connection,
// after [Config].ProbeInterval, whenever it fails. It returns when the Store
// is closed.
func (s *Store) subscribe(ctx context.Context) {
	defer close(s.readerDone)
	for {
		ps := s.rdb.Subscribe(ctx) // no channels yet: no I/O
		s.psMu.Lock()
		if s.closed.Load() {
			s.psMu.Unlock()
			_ = ps.Close()
			return
		}
		s.ps = ps
		s.psMu.Unlock()

		s.receive(ctx, ps)
		s.subscribed.Store(false)
		s.psMu.Lock()
		s.ps = nil
		s.psMu.Unlock()
		_ = ps.Close()

		t := time.NewTimer(s.cfg.ProbeInterval)
		select {
		case <-s.done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// receive subscribes ps and dispatches its messages until it fails or is
// closed.
func (s *Store) receive(ctx context.Context, ps *redis.PubSub) {
	if err := ps.Subscribe(ctx, s.setChannel, s.invChannel); err != nil {
		return
	}
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, subscriptionPing)
		if err != nil {
			var ne net.Error
			if s.closed.Load() || !errors.As(err, &ne) || !ne.Timeout() || pinged {
				return
			}
			if ps.Ping(ctx) != nil {
				return
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Count == 2 {
				s.subscribed.Store(true)
				s.subscriptionUp()
			}
		case *redis.Message:
			s.dispatch(m.Channel, m.Payload)
		}
	}
}

// dispatch delivers one notification to the waiters of its name (any
// replica's Set, this one's included) or to the Invalidations channels
// (other replicas' only).
func (s *Store) dispatch(channel, payload string) {
	id, name, ok := strings.Cut(payload, " ")
	if !ok {
		return
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	switch channel {
	case s.setChannel:
		for w := range s.waiters[name] {
			select {
			case w.ch <- struct{}{}:
			default: // already woken
			}
		}
	case s.invChannel:
		if id == s.id {
			return
		}
		for sub := range s.invSubs {
			select {
			case sub.ch <- name:
			default:
				s.cfg.Metrics.InvalidationDropped()
			}
		}
	}
}

// subscriptionUp ends a down episode when the subscription has connected:
// Redis answers again, and a replica whose calls are all local hits would
// otherwise not find out until its next miss.
func (s *Store) subscriptionUp() {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.down.Load() && !s.probing {
		s.down.Store(false)
		s.cfg.Metrics.Episode(false, nil)
	}
}
