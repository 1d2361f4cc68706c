package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/resilience"
)

// statusOf is the one place errors become gRPC statuses. The message is
// built only from values known to be safe (reasons, sanitised OAuth codes,
// what the caller itself sent); the full cause goes to the call's log line.
func (s *service) statusOf(ctx context.Context, err error) error {
	code, msg := classify(err)
	if detail := cause(err); detail != "" {
		callFrom(ctx).cause = detail
	}
	if code == codes.Internal {
		s.log.ErrorContext(ctx, "internal error", slog.String("error", err.Error()), slog.String("cause", cause(err)))
	}
	st := status.New(code, msg)
	if d := retryAfter(err); d > 0 && code == codes.Unavailable {
		// Clients that read google.rpc.RetryInfo wait this long.
		if withInfo, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// retryAfter is how long an upstream asked to be left alone, or how long
// until its circuit breaker lets the next attempt through; 0 when unknown.
func retryAfter(err error) time.Duration {
	var xe *broker.ExchangeError
	if errors.As(err, &xe) {
		return xe.RetryAfter
	}
	return 0
}

func classify(err error) (codes.Code, string) {
	var denied *policy.DeniedError
	var xe *broker.ExchangeError
	switch {
	case errors.As(err, &denied):
		return codes.PermissionDenied, denied.Error()
	case errors.Is(err, broker.ErrUnknownTenant):
		// Same words as a policy denial: an unknown tenant looks like a
		// forbidden one.
		return codes.PermissionDenied, "the caller may not have this tenant"
	case errors.Is(err, broker.ErrNotSupported):
		return codes.InvalidArgument, strings.TrimPrefix(err.Error(), "broker: ")
	case errors.Is(err, broker.ErrTTLUnattainable):
		return codes.FailedPrecondition, "min_ttl is longer than the upstream's token lifetime allows; ask for less"
	case errors.As(err, &xe):
		switch xe.Reason {
		case broker.ReasonRefused:
			return codes.FailedPrecondition, xe.Error() + ": the upstream refused the broker's credentials; this is a configuration problem, not retryable"
		case broker.ReasonUnavailable, broker.ReasonTimeout, broker.ReasonBadResponse:
			switch d := xe.RetryAfter.Round(time.Second); {
			case errors.Is(err, resilience.ErrCircuitOpen):
				return codes.Unavailable, fmt.Sprintf("%s: circuit open after repeated failures; the broker tries the upstream again in %s", xe.Error(), max(d, time.Second))
			case d > 0:
				return codes.Unavailable, fmt.Sprintf("%s: retry in %s", xe.Error(), d)
			}
			return codes.Unavailable, xe.Error() + ": retry later"
		default:
			return codes.Internal, fmt.Sprintf("upstream %s: %s: see the broker's log", xe.Upstream, xe.Reason)
		}
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, "deadline exceeded while waiting for the upstream"
	case errors.Is(err, context.Canceled):
		return codes.Canceled, "call cancelled"
	}
	return codes.Internal, "internal error"
}

// cause is the detail behind err for the log: the exchange error's inner
// cause, which exchangers build without secrets.
func cause(err error) string {
	var xe *broker.ExchangeError
	if errors.As(err, &xe) && xe.Err != nil {
		return xe.Err.Error()
	}
	return ""
}
