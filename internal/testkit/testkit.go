// Package testkit holds the small helpers the packages' tests share: a
// concurrency-safe output buffer, a bounded wait for a condition, and the
// rule for tests that need an installed component. It is imported only by
// tests.
package testkit

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent writers, for capturing logs
// and command output while servers run.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor polls cond every few milliseconds until it holds, and fails the
// test if it has not after 30 s. It is how tests wait for another goroutine
// to reach a point without assuming how long that takes.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 30s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Missing ends a test that cannot run because a component is not
// installed, or cannot do what the test needs: it skips, saying why, unless
// the environment variable require is "1" (CI sets it, having installed the
// component), when it fails.
func Missing(t testing.TB, require, why string) {
	t.Helper()
	if os.Getenv(require) == "1" {
		t.Fatalf("%s; %s=1 makes that a failure", why, require)
	}
	t.Skip(why)
}
