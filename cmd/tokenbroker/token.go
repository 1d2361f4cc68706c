package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

func cmdToken(ctx context.Context, args []string, e *env) int {
	fs := newFlags("token", e)
	addr := fs.String("addr", "127.0.0.1:7443", "the broker's gRPC address")
	key := fs.String("key", "", "the caller key (default $TOKENBROKER_KEY)")
	keyFile := fs.String("key-file", "", "read the caller key from this file instead")
	tenant := fs.String("tenant", "", "the tenant id (required)")
	uid := fs.String("uid", "", "an account id, for an account-specific token")
	ext := fs.String("external-account-id", "", "an external account id, for an account-id token")
	var groups listFlag
	fs.Var(&groups, "groups", "groups, comma-separated or repeated (required)")
	claims := mapFlag{}
	fs.Var(claims, "claim", "a custom claim key=value (repeatable)")
	minTTL := fs.Duration("min-ttl", 0, "the least life the token must have left (default: the broker's, 60s)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	asJSON := fs.Bool("json", false, "print the response as JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	secret := *key
	switch {
	case *keyFile != "":
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return e.errorf("token: %v", err)
		}
		secret = strings.TrimSpace(string(b))
	case secret == "":
		secret = e.getenv("TOKENBROKER_KEY")
	}
	if secret == "" {
		return e.errorf("token: no caller key: give --key, --key-file or $TOKENBROKER_KEY")
	}
	if *tenant == "" || len(groups) == 0 {
		return e.errorf("token: --tenant and --groups are required")
	}

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return e.errorf("token: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
	req := &tokenbrokerv1.GetAccessTokenRequest{
		Tenant: *tenant, Uid: *uid, ExternalAccountId: *ext, Groups: groups, CustomClaims: claims,
	}
	if *minTTL > 0 {
		req.MinTtl = durationpb.New(*minTTL)
	}
	resp, err := tokenbrokerv1.NewTokenBrokerServiceClient(conn).GetAccessToken(ctx, req)
	if err != nil {
		st := status.Convert(err)
		return e.errorf("token: %s: %s", st.Code(), st.Message())
	}
	exp := resp.GetExpireTime().AsTime()
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.Encode(map[string]any{
			"access_token": resp.GetAccessToken(),
			"token_type":   resp.GetTokenType(),
			"expire_time":  exp.UTC().Format(time.RFC3339),
			"cache_status": strings.TrimPrefix(resp.GetCacheStatus().String(), "CACHE_STATUS_"),
		})
		return 0
	}
	// The token alone on stdout, so $(tokenbroker token ...) is the token;
	// the rest on stderr.
	fmt.Fprintln(e.stdout, resp.GetAccessToken())
	fmt.Fprintf(e.stderr, "expires %s (in %s), cache %s\n", exp.UTC().Format(time.RFC3339),
		time.Until(exp).Round(time.Second), strings.TrimPrefix(resp.GetCacheStatus().String(), "CACHE_STATUS_"))
	return 0
}
