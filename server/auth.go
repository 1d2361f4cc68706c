package server

import (
	"context"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

type callerKey struct{}

// authenticate names the caller from its bearer key. The auth interceptor
// sends our error text to the client word for word, so it is fixed here.
func (s *Server) authenticate(ctx context.Context) (context.Context, error) {
	key, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil || key == "" {
		return nil, status.Error(codes.Unauthenticated, "missing caller credentials: send metadata \"authorization: Bearer <key>\"")
	}
	id, ok := s.cfg.Callers.Authenticate(key)
	if !ok {
		// The fingerprint lets an operator match the log to a key they
		// hold without the log revealing it.
		logging.AddFields(ctx, logging.Fields{"key_fp", broker.Fingerprint(key)})
		return nil, status.Error(codes.Unauthenticated, "unknown caller key")
	}
	logging.AddFields(ctx, logging.Fields{"caller", id.Name()})
	return context.WithValue(ctx, callerKey{}, id), nil
}

func callerFrom(ctx context.Context) (policy.Identity, bool) {
	id, ok := ctx.Value(callerKey{}).(policy.Identity)
	return id, ok
}
