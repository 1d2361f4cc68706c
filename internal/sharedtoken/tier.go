package sharedtoken

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/seal"
	"github.com/tokenbroker/tokenbroker/internal/shared"
)

// Config is what [New] needs. Store and Sealer are required; the other
// fields' zero values mean their defaults.
type Config struct {
	// Store is the Redis store the tokens are kept in. The Tier does not
	// close it.
	Store *shared.Store
	// Sealer seals values and names them; its older keys are read too,
	// during a rotation.
	Sealer *seal.Sealer
	// Scope returns the tenant's identity (where and as whom its tokens are
	// obtained); tokens are shared only between replicas where it is equal,
	// so a reload that changes a tenant's upstream stops reading the old
	// entries. nil means "". It is called on every method, concurrently,
	// so it must be cheap and safe for concurrent use.
	Scope func(tenant string) string
	// Now tells the time, for checking sealed expiries; nil means time.Now.
	Now func() time.Time
	// Metrics receives events; nil none.
	Metrics Metrics
}

// Metrics receives a [Tier]'s events. Implementations must be cheap and safe
// for concurrent use.
type Metrics interface {
	// Unreadable is called for each value in Redis that did not open or
	// decode (tampered with, sealed under a foreign key, corrupt), which
	// the Tier treats as a miss. unknownKey is true when it was sealed
	// under a key the Tier does not have ([seal.ErrUnknownKey]): a replica
	// ahead or behind in a key rotation, or a key dropped too soon.
	Unreadable(unknownKey bool)
}

type noMetrics struct{}

func (noMetrics) Unreadable(bool) {}

// Tier is the shared cache tier of the broker ([broker.Shared]) over a
// [shared.Store], with values sealed and names keyed by a [seal.Sealer]. It
// is safe for concurrent use.
type Tier struct {
	store   *shared.Store
	sealer  *seal.Sealer
	scope   func(string) string
	now     func() time.Time
	metrics Metrics
}

var _ broker.Shared = (*Tier)(nil)

// New returns a Tier over cfg's Store and Sealer.
func New(cfg Config) (*Tier, error) {
	if cfg.Store == nil {
		return nil, errors.New("sharedtoken: config: store is required")
	}
	if cfg.Sealer == nil {
		return nil, errors.New("sharedtoken: config: sealer is required")
	}
	t := &Tier{store: cfg.Store, sealer: cfg.Sealer, scope: cfg.Scope, now: cfg.Now, metrics: cfg.Metrics}
	if t.scope == nil {
		t.scope = func(string) string { return "" }
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.metrics == nil {
		t.metrics = noMetrics{}
	}
	return t, nil
}

// full is the cache key as this package seals and names it: the tenant's
// scope, length-prefixed, then the broker's key (which starts with the
// tenant).
func (t *Tier) full(tenant string, key []byte) []byte {
	scope := t.scope(tenant)
	b := make([]byte, 0, binary.MaxVarintLen64+len(scope)+len(key))
	b = binary.AppendUvarint(b, uint64(len(scope)))
	b = append(b, scope...)
	return append(b, key...)
}

// ID is the name of key's entry under the current sealing key: what Put
// writes under, what Lease and Wait use, and what Invalidations reports.
func (t *Tier) ID(tenant string, key []byte) string {
	return t.sealer.Name(t.full(tenant, key))
}

// Get returns the token stored for key under the first of the Sealer's
// names (the current key's, then the older keys') that holds a readable
// value that has not expired by the sealed expiry, whatever Redis's TTL.
// Values that do not open or decode are counted and skipped. Its errors are
// the Store's.
func (t *Tier) Get(ctx context.Context, tenant string, key []byte) (broker.SharedToken, bool, error) {
	full := t.full(tenant, key)
	for _, name := range t.sealer.Names(full) {
		raw, found, err := t.store.Get(ctx, name)
		if err != nil {
			return broker.SharedToken{}, false, err
		}
		if !found {
			continue
		}
		if tok, ok := t.open(full, raw); ok && t.fresh(tok) {
			return tok, true, nil
		}
	}
	return broker.SharedToken{}, false, nil
}

// Wait waits, while another replica holds key's lease, for the value it
// stores under the current name. A value that does not open, or has
// expired, ends the wait as no value: the broker then tries the lease again.
func (t *Tier) Wait(ctx context.Context, tenant string, key []byte, accept func(broker.Token) bool) (broker.SharedToken, bool, error) {
	full := t.full(tenant, key)
	var got broker.SharedToken
	_, found, err := t.store.WaitFor(ctx, t.sealer.Name(full), func(raw []byte) bool {
		tok, ok := t.open(full, raw)
		if !ok || !t.fresh(tok) || accept != nil && !accept(tok.Token) {
			return false
		}
		got = tok
		return true
	})
	if err != nil || !found {
		return broker.SharedToken{}, false, err
	}
	return got, true, nil
}

// Put seals tok, bound to key, and stores it under the current name for ttl
// (nothing for a ttl of zero or less), waking the replicas that wait for it.
// A token too large to seal is [seal.ErrTooLarge], wrapped.
func (t *Tier) Put(ctx context.Context, tenant string, key []byte, tok broker.SharedToken, ttl time.Duration) error {
	if tok.AccessToken == "" {
		return errors.New("sharedtoken: put: empty access token")
	}
	full := t.full(tenant, key)
	p := encode(tok)
	sealed, err := t.sealer.Seal(full, p)
	clear(p)
	if err != nil {
		return fmt.Errorf("sharedtoken: put: %w", err)
	}
	return t.store.Set(ctx, t.sealer.Name(full), sealed, ttl)
}

// Evict removes, under each of the Sealer's names, a value that opens to
// exactly rejected: compare-and-delete of the bytes as read, so that a
// token stored meanwhile by another replica is left alone. The Store
// publishes each deletion's name to the other replicas' Invalidations.
func (t *Tier) Evict(ctx context.Context, tenant string, key []byte, rejected string) error {
	full := t.full(tenant, key)
	for _, name := range t.sealer.Names(full) {
		raw, found, err := t.store.Get(ctx, name)
		if err != nil {
			return err
		}
		if !found {
			continue
		}
		tok, ok := t.open(full, raw)
		if !ok || subtle.ConstantTimeCompare([]byte(tok.AccessToken), []byte(rejected)) != 1 {
			continue
		}
		if _, err := t.store.CompareAndDelete(ctx, name, raw); err != nil {
			return err
		}
	}
	return nil
}

// Invalidations delivers the IDs of entries that other replicas evicted,
// until ctx ends; see [shared.Store.Invalidations].
func (t *Tier) Invalidations(ctx context.Context) <-chan string {
	return t.store.Invalidations(ctx)
}

// open opens and decodes a value read for full; one that does not is
// counted and reported as not ok.
func (t *Tier) open(full, raw []byte) (broker.SharedToken, bool) {
	p, err := t.sealer.Open(full, raw)
	if err != nil {
		t.metrics.Unreadable(errors.Is(err, seal.ErrUnknownKey))
		return broker.SharedToken{}, false
	}
	tok, err := decode(p)
	clear(p)
	if err != nil {
		t.metrics.Unreadable(false)
		return broker.SharedToken{}, false
	}
	return tok, true
}

// fresh reports whether tok's sealed expiry is still ahead.
func (t *Tier) fresh(tok broker.SharedToken) bool {
	return t.now().Before(tok.Expiry)
}
