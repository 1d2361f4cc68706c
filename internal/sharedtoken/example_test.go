package sharedtoken_test

import (
	"context"
	"log"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/seal"
	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/sharedtoken"
)

// Wiring a replica's broker to the tier it shares with the others: one
// Store, one Sealer (the same key file on every replica), and a scope per
// tenant naming where and as whom its tokens are obtained.
func Example() {
	store, err := shared.New(shared.Config{Addr: "127.0.0.1:6379"})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	key, err := seal.LoadKeyFile("/etc/tokenbroker/seal.key")
	if err != nil {
		log.Fatal(err)
	}
	sealer, err := seal.NewSealer(key)
	if err != nil {
		log.Fatal(err)
	}
	upstreams := map[string]string{"tenant-a": "https://idp.example/token client-a"}
	tier, err := sharedtoken.New(sharedtoken.Config{
		Store:  store,
		Sealer: sealer,
		Scope:  func(tenant string) string { return upstreams[tenant] },
	})
	if err != nil {
		log.Fatal(err)
	}

	b := broker.New(broker.Config{
		Exchanger: broker.ExchangerFunc(func(ctx context.Context, req broker.Request) (broker.Token, error) {
			return broker.Token{}, broker.ErrUnknownTenant // the upstream exchange
		}),
		Shared: tier,
	})
	defer b.Close()
	_, _, _ = b.Token(context.Background(), broker.Request{Tenant: "tenant-a"}, broker.Options{})
}
