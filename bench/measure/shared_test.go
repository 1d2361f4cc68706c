package measure_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/seal"
	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/sharedtoken"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

// sharedKeys is how many keys replica A stores in Redis for the shared
// benchmarks; replica B serves them in turn.
const sharedKeys = 1000

// sharedTokenBytes is the size of the tokens stored: the emulator's, as
// `make load` reports it.
const sharedTokenBytes = 746

// sharedScope stands for a tenant's scope as serve builds it (its upstream
// and verifier values), which every Redis name and sealed value is bound to.
const sharedScope = "pismo_oidc https://pismo.example/passport/v1/oauth2/token iss-bench sub-bench aud-bench"

// sharedRig is one real Redis and the seal key the replicas share; each
// tier it makes is a replica's, with a Store (connection pool and
// subscription) of its own.
type sharedRig struct {
	addr   string
	sealer *seal.Sealer
}

func newSharedRig(b *testing.B) *sharedRig {
	b.Helper()
	r := redistest.Start(b) // skips without redis-server
	raw := make([]byte, 32)
	rand.Read(raw)
	k, err := seal.NewKey(raw)
	if err != nil {
		b.Fatal(err)
	}
	s, err := seal.NewSealer(k)
	if err != nil {
		b.Fatal(err)
	}
	return &sharedRig{addr: r.Addr(), sealer: s}
}

// tier is a replica's shared tier, as serve wires it except for the
// timeout: a generous one, so that a stall of this shared machine does not
// start an outage episode (which would turn a timed call into an
// exchange). A round trip that succeeds costs the same either way.
func (r *sharedRig) tier(b *testing.B) broker.Shared {
	b.Helper()
	store, err := shared.New(shared.Config{Addr: r.addr, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	t, err := sharedtoken.New(sharedtoken.Config{Store: store, Sealer: r.sealer, Scope: func(string) string { return sharedScope }})
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// errNoExchange is replica B's exchanger: B must find every token in
// Redis or in its own cache.
var errNoExchange = broker.ExchangerFunc(func(context.Context, broker.Request) (broker.Token, error) {
	return broker.Token{}, errors.New("replica B exchanged: every token should come from Redis or its own cache")
})

// putShared has replica A (its own tier, an exchanger that returns a
// distinct JWT-shaped token per uid, valid for an hour) exchange for every
// uid, which stores each token in Redis.
func putShared(b *testing.B, rig *sharedRig, uids []string) {
	b.Helper()
	expiry := time.Now().Add(time.Hour)
	a := broker.New(broker.Config{Shared: rig.tier(b), Exchanger: broker.ExchangerFunc(func(_ context.Context, req broker.Request) (broker.Token, error) {
		return broker.Token{AccessToken: jwtShaped(sharedTokenBytes, req.UID), TokenType: "Bearer", Expiry: expiry}, nil
	})})
	defer a.Close()
	for _, uid := range uids {
		if _, st, err := a.Token(context.Background(), request(uid), broker.Options{}); err != nil || st != broker.StatusMiss {
			b.Fatalf("replica A, %s: status %v, err %v; want a miss", uid, st, err)
		}
	}
}

func sharedUIDs() []string {
	uids := make([]string, sharedKeys)
	for i := range uids {
		uids[i] = fmt.Sprintf("shared-%06d", i)
	}
	return uids
}

// BenchmarkSharedRemoteHit is a call that misses the replica's own cache
// and finds its token in Redis (broker.StatusRemote): replica A has stored
// sharedKeys tokens there; replica B, with a tier (and Store) of its own,
// serves key i mod sharedKeys, and is replaced by a fresh broker on the
// same tier (outside the timing) once it has served every key, so that
// every timed call is a local miss. One call: the lookup in B's cache, the
// flight, a GET round trip to Redis over loopback, opening the sealed
// value, and storing the token in B's cache. Compare with
// BenchmarkSharedLocalHit, measured in the same run.
func BenchmarkSharedRemoteHit(b *testing.B) {
	rig := newSharedRig(b)
	uids := sharedUIDs()
	putShared(b, rig, uids)
	tierB := rig.tier(b)
	newB := func() *broker.Broker { return broker.New(broker.Config{Shared: tierB, Exchanger: errNoExchange}) }
	br := newB()
	defer func() { br.Close() }()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%len(uids) == 0 {
			b.StopTimer()
			br.Close()
			br = newB()
			b.StartTimer()
		}
		if _, st, err := br.Token(ctx, request(uids[i%len(uids)]), broker.Options{}); err != nil || st != broker.StatusRemote {
			b.Fatalf("call %d: status %v, err %v; want %v", i, st, err, broker.StatusRemote)
		}
	}
}

// BenchmarkSharedLocalHit is BenchmarkSharedRemoteHit's baseline: the same
// replica B (the same tier) serving the same keys, every one already in its
// own cache (broker.StatusHit), so Redis is not asked.
func BenchmarkSharedLocalHit(b *testing.B) {
	rig := newSharedRig(b)
	uids := sharedUIDs()
	putShared(b, rig, uids)
	br := broker.New(broker.Config{Shared: rig.tier(b), Exchanger: errNoExchange})
	defer br.Close()
	ctx := context.Background()
	for _, uid := range uids {
		if _, st, err := br.Token(ctx, request(uid), broker.Options{}); err != nil || st != broker.StatusRemote {
			b.Fatalf("warming %s: status %v, err %v; want %v", uid, st, err, broker.StatusRemote)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, st, err := br.Token(ctx, request(uids[i%len(uids)]), broker.Options{}); err != nil || st != broker.StatusHit {
			b.Fatalf("call %d: status %v, err %v; want %v", i, st, err, broker.StatusHit)
		}
	}
}
