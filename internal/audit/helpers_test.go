package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// suffixLen is the length of `,"hash":"<hex>"}`, the part of a line its hash
// does not cover.
const suffixLen = len(`,"hash":"`) + 64 + len(`"}`)

// rehash recomputes a line's hash by the rule the package doc states, on its
// own: the SHA-256 of everything before the last 75 bytes.
func rehash(line string) string {
	body := line[:len(line)-suffixLen]
	sum := sha256.Sum256([]byte(body))
	return body + `,"hash":"` + hex.EncodeToString(sum[:]) + `"}`
}

// hashOf and prevOf read the chain members of a line by position.
func hashOf(line string) string { return line[len(line)-66 : len(line)-2] }
func prevOf(line string) string { return line[len(line)-suffixLen-65 : len(line)-suffixLen-1] }

// startSink opens cfg and runs it until the test ends; stop cancels Run and
// returns its result.
func startSink(t testing.TB, cfg audit.Config) (s *audit.Sink, stop func() error) {
	t.Helper()
	s, err := audit.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, runSink(t, s)
}

// runSink runs s until the test ends; stop cancels Run and returns its
// result.
func runSink(t testing.TB, s *audit.Sink) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// writeTrail writes n records to a new file and returns its path.
func writeTrail(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := audit.Open(audit.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rec := audit.Record{
			Time: time.Date(2026, 3, 1, 12, 0, i, 0, time.UTC), Caller: "payments-api", Peer: "127.0.0.1:4000",
			Tenant: "tn-a", UID: "acct-" + string(rune('a'+i%26)), Groups: []string{"pismo-v1:cards:r"},
			Decision: audit.Allowed, Cache: "miss", TokenFP: "0123456789ab", Latency: time.Duration(i) * time.Millisecond,
		}
		if err := s.Record(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// readLines returns the file's lines without their "\n"; the file must end
// in one.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return splitLines(t, b)
}

func splitLines(t *testing.T, b []byte) []string {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("trail does not end in a newline: %q", b[max(0, len(b)-80):])
	}
	return strings.Split(string(b[:len(b)-1]), "\n")
}

// verifyFile runs Verify over a file and fails the test unless it is intact
// with want lines.
func verifyFile(t *testing.T, path string, want int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := audit.Verify(f); err != nil || got != want {
		t.Fatalf("Verify(%s) = %d, %v; want %d, nil", path, got, err, want)
	}
}

// errorLog collects what a sink reports to OnError.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) onError(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

// matching returns the reported errors whose text contains substr.
func (l *errorLog) matching(substr string) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []error
	for _, err := range l.errs {
		if strings.Contains(err.Error(), substr) {
			out = append(out, err)
		}
	}
	return out
}

// eventually polls cond every millisecond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockingWriter is a stdout whose writes wait until release is closed.
// entered receives once for each write that starts, if there is room.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newBlockingWriter() *blockingWriter {
	return &blockingWriter{entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// flakyWriter is a stdout that fails while failing is set, after writing
// half of what it was given if partial is set.
type flakyWriter struct {
	mu      sync.Mutex
	failing bool
	partial bool
	buf     bytes.Buffer
}

var errFlaky = errors.New("disk on fire")

func (w *flakyWriter) set(failing bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failing = failing
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.failing {
		return w.buf.Write(p)
	}
	if w.partial {
		n, _ := w.buf.Write(p[:len(p)/2])
		return n, errFlaky
	}
	return 0, errFlaky
}

func (w *flakyWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}
