// Command bareserver is the load harness's baseline: the tokenbroker gRPC
// API with nothing behind it. Its GetAccessToken answers every call with the
// same response, a token of -token-bytes bytes, as large as the broker's. It
// has no interceptors, no authentication, no broker, no logging and no
// metrics: it accepts the authorization metadata the broker's callers send
// and ignores it. Measured against it, the broker's figures say what the
// broker adds to a gRPC call; see bench/load.
//
// It is a separate program so that nothing of it ships in bin/tokenbroker:
//
//	go build -o bin/bareserver ./bench/bareserver
//	bin/bareserver -listen 127.0.0.1:0 -token-bytes 843
//
// Once it listens it prints "listening on ADDR" on stdout. It stops on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "the gRPC listen address")
	size := flag.Int("token-bytes", 1024, "the length of the access token it answers")
	flag.Parse()
	if *size < 1 {
		fmt.Fprintln(os.Stderr, "bareserver: -token-bytes must be positive")
		os.Exit(2)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	tokenbrokerv1.RegisterTokenBrokerServiceServer(srv, &bare{resp: &tokenbrokerv1.GetAccessTokenResponse{
		AccessToken: token(*size),
		TokenType:   "Bearer",
		ExpireTime:  timestamppb.New(time.Now().Add(time.Hour)),
		CacheStatus: tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT,
	}})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	fmt.Printf("listening on %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
}

// bare answers GetAccessToken with a constant response.
type bare struct {
	tokenbrokerv1.UnimplementedTokenBrokerServiceServer
	resp *tokenbrokerv1.GetAccessTokenResponse
}

func (b *bare) GetAccessToken(context.Context, *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	return b.resp, nil
}

// token is a JWT-shaped string of n bytes: base64url characters with two
// dots. Its content is irrelevant; its size is what costs.
func token(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[b[i]&63]
	}
	if n > 40 {
		b[n/8], b[n*3/4] = '.', '.'
	}
	return string(b)
}
