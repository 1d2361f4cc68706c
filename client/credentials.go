package client

import (
	"context"
	"fmt"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// PerRPCCredentials puts the token of a [TokenSource] on outgoing gRPC calls
// as the metadata `authorization: Bearer <token>`: the upstream API's
// credentials, not the broker's key. Use it with grpc.WithPerRPCCredentials
// or grpc.PerRPCCredentials on the connection to the upstream API.
//
// Each call takes the token with [TokenSource.TokenContext] bounded by the
// call's context. An error from the broker fails the call with the broker's
// status code (PERMISSION_DENIED, UNAVAILABLE, ...), its message prefixed
// "client:".
type PerRPCCredentials struct {
	// Source hands out the tokens. Required.
	Source *TokenSource
	// InsecureAllowPlaintext lets the token travel on a connection without
	// transport security. It MUST NOT be set except for loopback
	// connections and tests: whoever reads the connection can use the
	// token until it expires.
	InsecureAllowPlaintext bool
}

var _ credentials.PerRPCCredentials = PerRPCCredentials{}

// GetRequestMetadata returns the authorization metadata for one call. It
// refuses a connection without privacy and integrity unless
// InsecureAllowPlaintext is set.
func (c PerRPCCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if !c.InsecureAllowPlaintext {
		ri, _ := credentials.RequestInfoFromContext(ctx)
		if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
			return nil, fmt.Errorf("client: refusing to send a token on this connection: %w", err)
		}
	}
	tok, err := c.Source.TokenContext(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// The call's own end: CANCELED or DEADLINE_EXCEEDED, not the
			// UNAUTHENTICATED gRPC makes of other credential errors.
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, err
	}
	return map[string]string{"authorization": tok.Type() + " " + tok.AccessToken}, nil
}

// RequireTransportSecurity reports whether the token needs a secure
// connection: true unless InsecureAllowPlaintext is set.
func (c PerRPCCredentials) RequireTransportSecurity() bool { return !c.InsecureAllowPlaintext }
