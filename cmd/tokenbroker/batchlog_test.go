package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// countingWriter records each Write it receives.
type countingWriter struct {
	mu     sync.Mutex
	writes []string
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *countingWriter) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// Lines of calls that went well wait for their batch; a warning goes out at
// once with whatever waited before it; Close writes the rest; lines are
// never split.
func TestBatchedCallLog(t *testing.T) {
	out := &countingWriter{}
	bw := newBatchWriter(out, time.Hour) // no tick during the test's first part
	log := slog.New(flushAtWarn{slog.NewJSONHandler(bw, nil), bw}).With("component", "calls")
	for i := range 10 {
		log.Info("finished call", "n", i)
	}
	if got := out.get(); len(got) != 0 {
		t.Fatalf("%d writes before the batch was due, want 0", len(got))
	}
	log.Warn("finished call", "grpc.code", "Unavailable")
	got := out.get()
	if len(got) != 1 || strings.Count(got[0], "\n") != 11 || !strings.Contains(got[0], "Unavailable") {
		t.Fatalf("after a warning: writes %q, want one write of the 11 lines", got)
	}

	big := strings.Repeat("x", 1000)
	for range 40 {
		log.Info("finished call", "pad", big)
	}
	if n := len(out.get()); n < 2 {
		t.Errorf("40 KiB of lines made %d writes, want a write once 32 KiB waited", n)
	}
	log.Info("finished call", "n", "last")
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for _, w := range out.get() {
		if !strings.HasSuffix(w, "\n") {
			t.Errorf("a write ends mid-line: %q…", w[max(0, len(w)-40):])
		}
		all.WriteString(w)
	}
	if n := strings.Count(all.String(), "\n"); n != 52 {
		t.Errorf("%d lines written in all, want 52", n)
	}
	if !strings.Contains(all.String(), `"n":"last"`) {
		t.Error("Close did not write the last line")
	}
}

// A line waits at most one tick.
func TestBatchWriterTicks(t *testing.T) {
	out := &countingWriter{}
	bw := newBatchWriter(out, 10*time.Millisecond)
	defer bw.Close()
	bw.Write([]byte("one line\n"))
	testkit.WaitFor(t, func() bool { return len(out.get()) == 1 })
}
