package audit_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

func TestVerifyTampering(t *testing.T) {
	good := readLines(t, writeTrail(t, 6))
	tests := []struct {
		name     string
		tamper   func(lines []string) []string
		noFinalN bool   // leave off the final newline
		wantN    int    // good lines before the break
		wantLine int    // 0: intact
		reason   string // a part of the ChainError's reason
	}{
		{name: "intact", tamper: func(l []string) []string { return l }, wantN: 6},
		{name: "empty", tamper: func([]string) []string { return nil }, wantN: 0},
		{
			name:   "one character changed in a middle line",
			tamper: func(l []string) []string { l[2] = strings.Replace(l[2], "payments-api", "payments-apj", 1); return l },
			wantN:  2, wantLine: 3, reason: "hash does not match the line's content",
		},
		{
			name: "a middle line's prev changed",
			tamper: func(l []string) []string {
				p := prevOf(l[3])
				l[3] = strings.Replace(l[3], p, p[:63]+string("10"[p[63]&1]), 1)
				return l
			},
			wantN: 3, wantLine: 4, reason: "hash does not match the line's content",
		},
		{
			name:   "line changed and its hash recomputed",
			tamper: func(l []string) []string { l[2] = rehash(strings.Replace(l[2], `"allowed"`, `"denied"`, 1)); return l },
			wantN:  3, wantLine: 4, reason: "prev does not match line 3's hash",
		},
		{
			name:   "line deleted",
			tamper: func(l []string) []string { return slices.Delete(l, 2, 3) },
			wantN:  2, wantLine: 3, reason: "prev does not match line 2's hash",
		},
		{
			name:   "first line deleted",
			tamper: func(l []string) []string { return l[1:] },
			wantN:  0, wantLine: 1, reason: "prev is not 64 zeros",
		},
		{
			name:   "two lines swapped",
			tamper: func(l []string) []string { l[3], l[4] = l[4], l[3]; return l },
			wantN:  3, wantLine: 4, reason: "prev does not match line 3's hash",
		},
		{
			name:   "a line repeated",
			tamper: func(l []string) []string { return slices.Insert(l, 3, l[2]) },
			wantN:  3, wantLine: 4, reason: "prev does not match line 3's hash",
		},
		{
			name: "forged line inserted, chained to the line before",
			tamper: func(l []string) []string {
				return slices.Insert(l, 2, rehash(l[2][:len(l[2])-suffixLen-65]+hashOf(l[1])+`"`+l[2][len(l[2])-suffixLen:]))
			},
			wantN: 3, wantLine: 4, reason: "prev does not match line 3's hash",
		},
		{
			name:   "last line's hash truncated",
			tamper: func(l []string) []string { l[5] = l[5][:len(l[5])-10]; return l },
			wantN:  5, wantLine: 6, reason: "not valid JSON",
		},
		{
			name:   "last line's hash shortened, still JSON",
			tamper: func(l []string) []string { l[5] = l[5][:len(l[5])-4] + `"}`; return l },
			wantN:  5, wantLine: 6, reason: `"hash" is not 64 lowercase hex digits`,
		},
		{
			name:   "hash in upper case",
			tamper: func(l []string) []string { l[1] = l[1][:len(l[1])-66] + strings.ToUpper(hashOf(l[1])) + `"}`; return l },
			wantN:  1, wantLine: 2, reason: `"hash" is not 64 lowercase hex digits`,
		},
		{
			name:   "garbage line inserted",
			tamper: func(l []string) []string { return slices.Insert(l, 3, "garbage") },
			wantN:  3, wantLine: 4, reason: "not valid JSON",
		},
		{
			name:   "empty line inserted",
			tamper: func(l []string) []string { return slices.Insert(l, 1, "") },
			wantN:  1, wantLine: 2, reason: "not valid JSON",
		},
		{
			name:   "CRLF line ending",
			tamper: func(l []string) []string { l[4] += "\r"; return l },
			wantN:  4, wantLine: 5, reason: `"hash" is not the last member`,
		},
		{
			name:   "member added after hash",
			tamper: func(l []string) []string { l[0] = l[0][:len(l[0])-1] + `,"x":1}`; return l },
			wantN:  0, wantLine: 1, reason: `"hash" is not the last member`,
		},
		{
			name: "prev moved to the front",
			tamper: func(l []string) []string {
				withoutPrev := l[0][:len(l[0])-suffixLen-74]
				l[0] = rehash(`{"prev":"` + prevOf(l[0]) + `",` + withoutPrev[1:] + `,"hash":"` + strings.Repeat("0", 64) + `"}`)
				return l
			},
			wantN: 0, wantLine: 1, reason: `"prev" is not the member before "hash"`,
		},
		{
			name:     "last newline missing",
			tamper:   func(l []string) []string { return l },
			noFinalN: true,
			wantN:    5, wantLine: 6, reason: "no newline",
		},
		{
			name:   "a line of 2 MiB",
			tamper: func(l []string) []string { l[2] = strings.Repeat("x", 2<<20); return l },
			wantN:  2, wantLine: 3, reason: "longer than 1 MiB",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.tamper(slices.Clone(good))
			trail := strings.Join(lines, "\n")
			if len(lines) > 0 && !tt.noFinalN {
				trail += "\n"
			}
			n, err := audit.Verify(strings.NewReader(trail))
			if n != tt.wantN {
				t.Errorf("Verify = %d good lines, want %d", n, tt.wantN)
			}
			if tt.wantLine == 0 {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			var ce *audit.ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("Verify error %v, want a *ChainError", err)
			}
			if ce.Line != tt.wantLine || !strings.Contains(ce.Reason, tt.reason) {
				t.Errorf("Verify error %q, want line %d: …%s…", err, tt.wantLine, tt.reason)
			}
		})
	}
}

func TestChainErrorMessage(t *testing.T) {
	err := &audit.ChainError{Line: 17, Reason: "prev does not match line 16's hash"}
	if got, want := err.Error(), "line 17: prev does not match line 16's hash"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestVerifyReadError(t *testing.T) {
	good := readLines(t, writeTrail(t, 2))
	r := io.MultiReader(strings.NewReader(good[0]+"\n"), iotest.ErrReader(io.ErrUnexpectedEOF))
	n, err := audit.Verify(r)
	var ce *audit.ChainError
	if n != 1 || !errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ce) {
		t.Errorf("Verify = %d, %v; want 1 and the read error, not a ChainError", n, err)
	}
}

// TestVerifySmallReads feeds Verify one byte at a time.
func TestVerifySmallReads(t *testing.T) {
	good := readLines(t, writeTrail(t, 4))
	trail := strings.Join(good, "\n") + "\n"
	if n, err := audit.Verify(iotest.OneByteReader(bytes.NewReader([]byte(trail)))); n != 4 || err != nil {
		t.Errorf("Verify = %d, %v; want 4, nil", n, err)
	}
}
