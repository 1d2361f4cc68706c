//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package audit_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// TestOneWriterPerFile: a second sink on the same file, as a second broker
// would open, is refused until the first closes: two writers would fork the
// chain.
func TestOneWriterPerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	first, err := audit.Open(audit.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	second, err := audit.Open(audit.Config{Path: path})
	if err == nil {
		second.Close()
		t.Fatal("a second sink opened the same file")
	}
	if !strings.Contains(err.Error(), "another process") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q, want it to name the file and say it is in use", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := audit.Open(audit.Config{Path: path})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	again.Close()
}
