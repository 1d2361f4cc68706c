package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// limiters holds a token bucket per caller, made on first use and remade
// when a reload changes the caller's limit.
type limiters struct {
	m sync.Map // caller name → *limiter
}

type limiter struct {
	rl  policy.RateLimit
	lim *rate.Limiter
}

// take spends one token of the caller's bucket, or says how long until one
// is there.
func (l *limiters) take(id policy.Identity, now time.Time) (time.Duration, bool) {
	rl := id.RateLimit()
	if rl == nil {
		return 0, true
	}
	v, ok := l.m.Load(id.Name())
	if !ok || v.(*limiter).rl != *rl {
		v = &limiter{rl: *rl, lim: rate.NewLimiter(rate.Limit(rl.Rate), rl.Burst)}
		l.m.Store(id.Name(), v)
	}
	r := v.(*limiter).lim.ReserveN(now, 1)
	if !r.OK() {
		return time.Second, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// overLimit takes one call from the caller's bucket, or says when to
// retry. Cache hits count too: a caller in a hot loop must not starve the
// others; opening a stream counts as one call.
func (s *Server) overLimit(ctx context.Context, id policy.Identity) error {
	wait, ok := s.limits.take(id, s.now())
	if ok {
		return nil
	}
	callFrom(ctx).reason = "rate limited"
	s.metrics.rateLimited(id.Name())
	wait = wait.Round(time.Millisecond) + time.Millisecond
	st, err := status.New(codes.ResourceExhausted, fmt.Sprintf("caller %q is over its rate limit; retry in %s", id.Name(), wait)).
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
	if err != nil {
		return status.Error(codes.ResourceExhausted, "over the rate limit")
	}
	return st.Err()
}
