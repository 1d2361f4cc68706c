package client

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestBackoff(t *testing.T) {
	const base, maxDelay = time.Second, 30 * time.Second
	for _, tc := range []struct {
		failures int
		want     time.Duration // before jitter
	}{
		{0, time.Second},
		{1, 2 * time.Second},
		{4, 16 * time.Second},
		{5, 30 * time.Second},
		{64, 30 * time.Second},
		{1 << 30, 30 * time.Second},
	} {
		t.Run(fmt.Sprint(tc.failures), func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 200 {
				got := backoff(base, maxDelay, tc.failures)
				if got < tc.want/2 || got > tc.want {
					t.Fatalf("backoff = %v, want within [%v, %v]", got, tc.want/2, tc.want)
				}
				seen[got] = true
			}
			if len(seen) < 2 {
				t.Errorf("backoff is not jittered: %v", seen)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	withInfo := func(d time.Duration) error {
		st, err := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Errorf("wrapped: %w", st.Err())
	}
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration
	}{
		{"none", status.Error(codes.Unavailable, "down"), 0},
		{"not a status", errors.New("eof"), 0},
		{"retry info", withInfo(3 * time.Second), 3 * time.Second},
		{"capped", withInfo(time.Hour), maxRetryInfoDelay},
		{"negative", withInfo(-time.Second), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryDelay(tc.err); got != tc.want {
				t.Errorf("retryDelay = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	for code := range codes.Code(17) {
		want := code == codes.Unauthenticated || code == codes.PermissionDenied || code == codes.InvalidArgument || code == codes.FailedPrecondition
		if got := permanent(fmt.Errorf("x: %w", status.Error(code, "m"))); got != want {
			t.Errorf("permanent(%v) = %v, want %v", code, got, want)
		}
	}
}
