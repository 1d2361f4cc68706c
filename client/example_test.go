package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/client"
)

// startExampleBroker stands in for a running tokenbroker: an in-process
// fake that knows the caller key "tbk_example" and hands out the tokens
// "at-1", "at-2", ..., each valid for an hour. It returns the connection a
// service would get from grpc.NewClient.
func startExampleBroker() (*grpc.ClientConn, func()) {
	return serveBroker(&fakeBroker{key: "tbk_example", now: time.Now})
}

func ExampleClient_TokenSource() {
	// In a service: grpc.NewClient("dns:///tokenbroker:7443",
	// grpc.WithTransportCredentials(credentials.NewTLS(nil))).
	conn, stop := startExampleBroker()
	defer stop()

	// The key comes from a secret, e.g. os.Getenv("TOKENBROKER_KEY").
	c := client.New(client.Config{Conn: conn, Key: "tbk_example"})
	ts := c.TokenSource(client.Request{Tenant: "tn-example", Groups: []string{"pismo-v1:accounts:rw"}})
	defer ts.Close()

	// The first Token waits for the broker; later ones answer from memory,
	// and the watch behind them keeps the token renewed.
	tok, err := ts.Token()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Type(), "token valid for", time.Until(tok.Expiry).Round(time.Minute))
	// Output: Bearer token valid for 1h0m0s
}

func ExampleTransport() {
	conn, stop := startExampleBroker()
	defer stop()
	// The upstream API: it answers requests that carry a token.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "account %s", r.URL.Query().Get("id"))
	}))
	defer api.Close()

	c := client.New(client.Config{Conn: conn, Key: "tbk_example"})
	ts := c.TokenSource(client.Request{Tenant: "tn-example", Groups: []string{"pismo-v1:accounts:rw"}})
	defer ts.Close()

	// Every request gets the token; a 401 gets the token replaced by the
	// broker and the request sent once more.
	hc := &http.Client{Transport: &client.Transport{Source: ts}}
	resp, err := hc.Get(api.URL + "/accounts?id=42")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK account 42
}

func ExamplePerRPCCredentials() {
	conn, stop := startExampleBroker()
	defer stop()
	// The upstream gRPC API, over TLS: here a health service that records
	// the authorization it receives.
	api := serveAPI(true)
	defer api.stop()

	c := client.New(client.Config{Conn: conn, Key: "tbk_example"})
	ts := c.TokenSource(client.Request{Tenant: "tn-example", Groups: []string{"pismo-v1:accounts:rw"}})
	defer ts.Close()

	// In a service: grpc.WithTransportCredentials(credentials.NewTLS(nil)).
	apiConn, err := grpc.NewClient(api.addr,
		grpc.WithTransportCredentials(api.creds),
		grpc.WithPerRPCCredentials(client.PerRPCCredentials{Source: ts}))
	if err != nil {
		log.Fatal(err)
	}
	defer apiConn.Close()

	resp, err := healthpb.NewHealthClient(apiConn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetStatus(), "- the API received", api.auths()[0])
	// Output: SERVING - the API received Bearer at-1
}
