package broker

import (
	"context"
	"errors"
	"hash/maphash"
	"sync/atomic"
	"testing"
	"time"
)

// A caller whose lookup missed just before another flight stored a refusal,
// and whose own flight starts just after that one ended, gets the
// remembered refusal: the upstream is not asked again (a crowd of callers
// with a broken configuration makes one call, not two).
func TestFlightStartSeesRefusalStoredSinceLookup(t *testing.T) {
	var calls atomic.Int64
	refusal := &ExchangeError{Reason: ReasonRefused, Upstream: "tn", Err: errors.New("invalid_client")}
	b := New(Config{NegativeTTL: time.Minute, Exchanger: ExchangerFunc(func(context.Context, Request) (Token, error) {
		calls.Add(1)
		return Token{}, refusal
	})})
	defer b.Close()
	req := Request{Tenant: "tn", Groups: []string{"g"}}
	if _, _, err := b.Token(t.Context(), req, Options{}); !errors.Is(err, refusal) {
		t.Fatalf("first call: %v, want the refusal", err)
	}

	// The late caller: past its lookup, into a flight of its own.
	key := string(appendKey(nil, &req, normalizeGroups(nil, req.Groups), nil))
	sh := &b.shards[maphash.Bytes(b.seed, []byte(key))&b.mask]
	if _, _, err := b.miss(t.Context(), sh, key, req, Options{}, false); !errors.Is(err, refusal) {
		t.Fatalf("late caller: %v, want the remembered refusal", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the upstream was asked %d times, want 1", n)
	}
}
