package resilience_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

func ExampleUpstream_Wrap() {
	// One guard per token endpoint, shared by every tenant that posts there.
	idp := resilience.NewUpstream(resilience.Config{
		Name:   "idp.example",
		Policy: resilience.Policy{MaxAttempts: 1, FailureThreshold: 2},
	})
	down := broker.ExchangerFunc(func(context.Context, broker.Request) (broker.Token, error) {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonUnavailable, Upstream: "idp.example", HTTPStatus: 503}
	})
	tenantA, tenantB := idp.Wrap(down), idp.Wrap(down)

	for _, x := range []broker.Exchanger{tenantA, tenantA, tenantB} {
		_, err := x.Exchange(context.Background(), broker.Request{Tenant: "t", Groups: []string{"g"}})
		fmt.Println(err, errors.Is(err, resilience.ErrCircuitOpen))
	}
	state, _ := idp.State()
	fmt.Println(idp.Name(), state)
	// Output:
	// upstream idp.example: unavailable (HTTP 503) false
	// upstream idp.example: unavailable (HTTP 503) false
	// upstream idp.example: unavailable true
	// idp.example open
}
