package server

import (
	"testing"
	"time"
)

// TestLookAgainIn: a tenth of the time until the token can no longer meet
// min_ttl, within [minWatchLook, maxWatchLook], as README says.
func TestLookAgainIn(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		left, minTTL, want time.Duration
	}{
		{10 * time.Minute, time.Minute, maxWatchLook}, // 54 s: capped
		{time.Hour, time.Minute, maxWatchLook},        // capped
		{2 * time.Minute, time.Minute, 6 * time.Second},
		{time.Minute + 500*time.Millisecond, time.Minute, minWatchLook}, // 50 ms: the floor
		{time.Minute, time.Minute, minWatchLook},                        // no longer meets it
		{-time.Second, time.Minute, minWatchLook},                       // expired
	} {
		got := lookAgainIn(now, now.Add(tc.left), tc.minTTL)
		if got != tc.want {
			t.Errorf("%s left, min_ttl %s: %s, want %s", tc.left, tc.minTTL, got, tc.want)
		}
		if got < minWatchLook || got > maxWatchLook {
			t.Errorf("%s left, min_ttl %s: %s is outside [%s, %s]", tc.left, tc.minTTL, got, minWatchLook, maxWatchLook)
		}
	}
}
