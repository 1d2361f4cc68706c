package audit_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// FuzzVerify feeds arbitrary bytes to Verify: it must never panic, it must
// count exactly the lines before the one it reports, and a trail it accepts
// must be one that Open continues and Verify still accepts.
func FuzzVerify(f *testing.F) {
	var trail bytes.Buffer
	s, err := audit.Open(audit.Config{Path: "-", Stdout: &trail})
	if err != nil {
		f.Fatal(err)
	}
	for _, d := range []audit.Decision{audit.Allowed, audit.Denied, audit.Error} {
		if err := s.Record(context.Background(), audit.Record{Time: time.Unix(1, 0), Caller: "c", Tenant: "t", Decision: d}); err != nil {
			f.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(trail.Bytes())
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := audit.Verify(bytes.NewReader(data))
		lines := bytes.Count(data, []byte("\n"))
		if err != nil {
			var ce *audit.ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("Verify error %T %v, want a *ChainError", err, err)
			}
			if ce.Line != n+1 || ce.Reason == "" {
				t.Fatalf("Verify = %d, %v: the error must name the line after the good ones", n, err)
			}
			return
		}
		if n != lines || (len(data) > 0 && data[len(data)-1] != '\n') {
			t.Fatalf("Verify accepted %d lines of %q", n, data)
		}
		if n == 0 {
			return
		}
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := audit.Open(audit.Config{Path: path})
		if err != nil {
			t.Fatalf("Open refused a trail Verify accepts: %v", err)
		}
		if err := s.Record(context.Background(), audit.Record{Caller: "next"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := audit.Verify(bytes.NewReader(b)); got != n+1 || err != nil {
			t.Fatalf("after continuing the trail, Verify = %d, %v; want %d, nil", got, err, n+1)
		}
	})
}
