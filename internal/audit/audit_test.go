package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

func TestRecordsReadBack(t *testing.T) {
	stamp := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	paris := time.FixedZone("CEST", 2*3600)
	tests := []struct {
		name string
		rec  audit.Record
		want string // the line up to, not including, `,"prev"`
	}{
		{
			name: "every field",
			rec: audit.Record{
				Time: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC), Caller: "payments-api", Peer: "10.1.2.3:5555",
				Tenant: "tn-a", UID: "1234", ExternalAccountID: "ext-9", Groups: []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"},
				Decision: audit.Allowed, Cache: "shared", TokenFP: "9f86d081884c", Latency: 1234567 * time.Nanosecond,
			},
			want: `{"time":"2026-01-02T03:04:05.123456789Z","caller":"payments-api","peer":"10.1.2.3:5555","tenant":"tn-a",` +
				`"uid":"1234","external_account_id":"ext-9","groups":["pismo-v1:accounts:rw","pismo-v1:cards:r"],` +
				`"decision":"allowed","cache":"shared","token_fp":"9f86d081884c","latency_ms":1.235`,
		},
		{
			name: "unauthenticated, nothing optional",
			rec:  audit.Record{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Peer: "[::1]:1", Decision: audit.Denied, Reason: "no credentials"},
			want: `{"time":"2026-01-02T03:04:05.000000000Z","caller":"","peer":"[::1]:1","tenant":"","groups":[],` +
				`"decision":"denied","reason":"no credentials","latency_ms":0.000`,
		},
		{
			name: "time in another zone is written in UTC",
			rec:  audit.Record{Time: time.Date(2026, 7, 1, 0, 30, 0, 1, paris), Caller: "c", Tenant: "t", Groups: []string{"g"}, Decision: audit.WouldDeny, Reason: `group "g"`, Latency: 2 * time.Second},
			want: `{"time":"2026-06-30T22:30:00.000000001Z","caller":"c","peer":"","tenant":"t","groups":["g"],` +
				`"decision":"would_deny","reason":"group \"g\"","latency_ms":2000.000`,
		},
		{
			name: "error with its code name",
			rec:  audit.Record{Time: stamp, Caller: "c", Tenant: "t", Groups: []string{"g"}, Decision: audit.Error, Reason: "Unavailable", Cache: "miss", Latency: 1500 * time.Microsecond},
			want: `{"time":"2026-05-06T07:08:09.000000000Z","caller":"c","peer":"","tenant":"t","groups":["g"],` +
				`"decision":"error","reason":"Unavailable","cache":"miss","latency_ms":1.500`,
		},
		{
			name: "zero time is stamped by the clock",
			rec:  audit.Record{Caller: "c", Tenant: "t", Decision: audit.Allowed, Latency: 499 * time.Nanosecond},
			want: `{"time":"2026-05-06T07:08:09.000000000Z","caller":"c","peer":"","tenant":"t","groups":[],` +
				`"decision":"allowed","latency_ms":0.000`,
		},
		{
			name: "strings are escaped and stay on one line",
			rec: audit.Record{Time: stamp, Caller: "c\"\n\\", Tenant: "t", Groups: []string{"<a&b>", "é\u2028"},
				Decision: audit.Denied, Reason: "line1\nline2\t\x00", Latency: 999999 * time.Microsecond},
			want: `{"time":"2026-05-06T07:08:09.000000000Z","caller":"c\"\n\\","peer":"","tenant":"t","groups":["<a&b>","é\u2028"],` +
				`"decision":"denied","reason":"line1\nline2\t\u0000","latency_ms":999.999`,
		},
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, stop := startSink(t, audit.Config{Path: path, Clock: func() time.Time { return stamp }})
	for _, tt := range tests {
		if err := s.Record(context.Background(), tt.rec); err != nil {
			t.Fatalf("%s: Record: %v", tt.name, err)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	lines := readLines(t, path)
	if got, want := len(lines), len(tests); got != want {
		t.Fatalf("got %d lines, want %d:\n%s", got, want, strings.Join(lines, "\n"))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := lines[i]
			got, _, ok := strings.Cut(line, `,"prev":"`)
			if !ok {
				t.Fatalf("no prev in %s", line)
			}
			if got != tt.want {
				t.Errorf("line\n got %s\nwant %s", got, tt.want)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("line is not JSON: %v", err)
			}
			if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
				t.Errorf("time: %v", err)
			}
		})
	}
	if got, want := s.Stats(), (audit.Stats{Written: uint64(len(tests))}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	verifyFile(t, path, len(tests))
}

// TestDocumentedRule checks a trail by the package doc's recipe, without
// Verify: each line's hash is the SHA-256 of all but its last 75 bytes, and
// its prev is the hash of the line before.
func TestDocumentedRule(t *testing.T) {
	lines := readLines(t, writeTrail(t, 5))
	prev := strings.Repeat("0", 64)
	for i, line := range lines {
		if got, want := line, rehash(line); got != want {
			t.Errorf("line %d\n got %s\nwant %s", i+1, got, want)
		}
		if got, want := prevOf(line), prev; got != want {
			t.Errorf("line %d: prev %s, want %s", i+1, got, want)
		}
		prev = hashOf(line)
	}
}

func TestChainContinuesAcrossOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	long := make([]string, 32)
	for i := range long {
		long[i] = fmt.Sprintf("group-%02d-%s", i, strings.Repeat("x", 240))
	}
	// Each session writes its records; the last record of the second is
	// longer than the first chunk Open reads from the end.
	sessions := [][]audit.Record{
		{{Caller: "a"}, {Caller: "b"}, {Caller: "c"}},
		{{Caller: "d"}, {Caller: "e", Groups: long}},
		nil,
		{{Caller: "f"}},
	}
	total := 0
	for i, recs := range sessions {
		s, err := audit.Open(audit.Config{Path: path})
		if err != nil {
			t.Fatalf("session %d: Open: %v", i, err)
		}
		for _, r := range recs {
			r.Decision = audit.Allowed
			if err := s.Record(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatalf("session %d: Close: %v", i, err)
		}
		total += len(recs)
	}
	lines := readLines(t, path)
	if got, want := len(lines), total; got != want {
		t.Fatalf("got %d lines, want %d", got, want)
	}
	for _, n := range []int{4, 6} { // the first line of each later session
		if got, want := prevOf(lines[n-1]), hashOf(lines[n-2]); got != want {
			t.Errorf("line %d: prev %s, want line %d's hash %s", n, got, n-1, want)
		}
	}
	verifyFile(t, path, total)
}

func TestOpenRefusesBrokenLastLine(t *testing.T) {
	good := readLines(t, writeTrail(t, 3))
	last := good[2]
	tests := []struct {
		name   string
		last   string // replaces the last line, "\n" included
		reason string
	}{
		{"garbage", "garbage\n", "not valid JSON"},
		{"torn write", last[:len(last)-20], "no newline"},
		{"hash cut short", last[:len(last)-20] + "\n", "not valid JSON"},
		{"content changed", strings.Replace(last, "payments-api", "payments-apx", 1) + "\n", "hash does not match"},
		{"no hash member", `{"time":"x","prev":"` + strings.Repeat("0", 64) + `"}` + "\n", `no "hash" member`},
		{"blank last line", last + "\n\n", "not valid JSON"},
		{"a JSON array", "[1,2]\n", "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			content := good[0] + "\n" + good[1] + "\n" + tt.last
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := audit.Open(audit.Config{Path: path})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted a broken trail")
			}
			for _, want := range []string{path, tt.reason, "broken chain"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Error("Open changed the file it refused")
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  audit.Config
		want string
	}{
		{"no path", audit.Config{}, "no path"},
		{"negative queue", audit.Config{Path: "-", QueueSize: -1}, "negative"},
		{"missing directory", audit.Config{Path: filepath.Join(dir, "nope", "audit.jsonl")}, filepath.Join(dir, "nope")},
		{"a directory", audit.Config{Path: dir}, dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := audit.Open(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.HasPrefix(err.Error(), "audit: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want an audit: error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := audit.Open(audit.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("mode %v, want %v", got, want)
	}
}

func TestConcurrentRecords(t *testing.T) {
	const goroutines, each = 64, 200
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, stop := startSink(t, audit.Config{Path: path})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r := audit.Record{Caller: fmt.Sprintf("c%02d", g), UID: fmt.Sprint(i), Tenant: "t", Groups: []string{"g"}, Decision: audit.Allowed}
				if err := s.Record(context.Background(), r); err != nil {
					t.Errorf("Record: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	seen := map[string]int{}
	for _, line := range readLines(t, path) {
		var r struct{ Caller, UID string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		seen[r.Caller+"/"+r.UID]++
	}
	for g := range goroutines {
		for i := range each {
			if got, key := seen[fmt.Sprintf("c%02d/%d", g, i)], fmt.Sprintf("c%02d/%d", g, i); got != 1 {
				t.Errorf("%s appears %d times, want 1", key, got)
			}
		}
	}
	if got, want := len(seen), goroutines*each; got != want {
		t.Errorf("%d distinct records, want %d", got, want)
	}
	if got, want := s.Stats(), (audit.Stats{Written: goroutines * each}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	verifyFile(t, path, goroutines*each)
}

// TestCloseWhileRecording closes the sink under load: every record Record
// accepted is in the file, and every later one got ErrClosed.
func TestCloseWhileRecording(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, stop := startSink(t, audit.Config{Path: path, QueueSize: 8})
	var accepted sync.Map
	var wg sync.WaitGroup
	started := make(chan struct{}, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := s.Record(context.Background(), audit.Record{Caller: fmt.Sprintf("c%d-%d", g, i), Decision: audit.Allowed})
				if errors.Is(err, audit.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Record: %v", err)
					return
				}
				accepted.Store(fmt.Sprintf("c%d-%d", g, i), true)
				if i == 10 {
					started <- struct{}{}
				}
			}
		})
	}
	for range 16 {
		<-started
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	wg.Wait()
	want := 0
	accepted.Range(func(any, any) bool { want++; return true })
	lines := readLines(t, path)
	if got := len(lines); got != want {
		t.Fatalf("%d lines, want the %d accepted records", got, want)
	}
	for _, line := range lines {
		var r struct{ Caller string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if _, ok := accepted.Load(r.Caller); !ok {
			t.Errorf("record %s is in the file but was not accepted", r.Caller)
		}
	}
	verifyFile(t, path, want)
}

func TestQueueFull(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		t.Run(fmt.Sprintf("FailClosed=%v", failClosed), func(t *testing.T) {
			w := newBlockingWriter()
			var log errorLog
			s, stop := startSink(t, audit.Config{Path: "-", Stdout: w, QueueSize: 4, FailClosed: failClosed, OnError: log.onError})
			rec := func(ctx context.Context, i int) error {
				return s.Record(ctx, audit.Record{Caller: fmt.Sprint(i), Decision: audit.Allowed})
			}
			if err := rec(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			<-w.entered // the writer holds record 1 and waits
			for i := 2; i <= 5; i++ {
				if err := rec(context.Background(), i); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			err := rec(ctx, 6)
			st := s.Stats()
			if failClosed {
				if !errors.Is(err, audit.ErrUnavailable) {
					t.Errorf("Record on a full queue = %v, want ErrUnavailable", err)
				}
				if got, want := st.Refused, uint64(1); got != want {
					t.Errorf("Refused = %d, want %d", got, want)
				}
				if got := log.matching("refused"); len(got) != 1 {
					t.Errorf("OnError got %d refusal reports, want 1", len(got))
				}
			} else {
				if err != nil {
					t.Errorf("Record on a full queue = %v, want nil", err)
				}
				if got, want := st.Lost, uint64(1); got != want {
					t.Errorf("Lost = %d, want %d", got, want)
				}
				lost := log.matching("RECORD LOST")
				if len(lost) != 1 || !strings.Contains(lost[0].Error(), `"caller":"6"`) {
					t.Errorf("OnError got %v, want one loss report naming the record", lost)
				}
			}
			close(w.release)
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			lines := splitLines(t, w.buf.Bytes())
			for i, line := range lines {
				if want := fmt.Sprintf(`"caller":"%d"`, i+1); !strings.Contains(line, want) {
					t.Errorf("line %d: %s, want %s", i+1, line, want)
				}
			}
			if n, err := audit.Verify(bytes.NewReader(w.buf.Bytes())); n != 5 || err != nil {
				t.Errorf("Verify = %d, %v; want 5, nil", n, err)
			}
		})
	}
}

func TestFailingSink(t *testing.T) {
	tests := []struct {
		name       string
		partial    bool
		failClosed bool
	}{
		{"nothing written, fail closed", false, true},
		{"half written, fail closed", true, true},
		{"half written, fail open", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &flakyWriter{failing: true, partial: tt.partial}
			var log errorLog
			s, err := audit.Open(audit.Config{Path: "-", Stdout: w, FailClosed: tt.failClosed, OnError: log.onError})
			if err != nil {
				t.Fatal(err)
			}
			// Queued before Run starts, and so before the sink fails.
			for i := 1; i <= 3; i++ {
				if err := s.Record(context.Background(), audit.Record{Caller: fmt.Sprint(i), Decision: audit.Allowed}); err != nil {
					t.Fatal(err)
				}
			}
			stop := runSink(t, s)
			eventually(t, "the sink fails", func() bool { return s.Stats().Failing })
			eventually(t, "OnError is told of the failed write", func() bool { return len(log.matching(errFlaky.Error())) > 0 })
			err = s.Record(context.Background(), audit.Record{Caller: "4", Decision: audit.Allowed})
			switch {
			case tt.failClosed && !errors.Is(err, audit.ErrUnavailable):
				t.Errorf("Record while failing = %v, want ErrUnavailable", err)
			case !tt.failClosed && err != nil:
				t.Errorf("Record while failing = %v, want nil (queued)", err)
			}
			w.set(false)
			wantCallers := []string{"1", "2", "3"}
			if !tt.failClosed {
				wantCallers = append(wantCallers, "4")
			}
			eventually(t, "the pending lines are written", func() bool {
				st := s.Stats()
				return !st.Failing && st.Written == uint64(len(wantCallers))
			})
			if err := s.Record(context.Background(), audit.Record{Caller: "5", Decision: audit.Allowed}); err != nil {
				t.Fatalf("Record after recovery: %v", err)
			}
			wantCallers = append(wantCallers, "5")
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			out := w.bytes()
			lines := splitLines(t, out)
			if got, want := len(lines), len(wantCallers); got != want {
				t.Fatalf("%d lines, want %d:\n%s", got, want, out)
			}
			for i, line := range lines {
				if want := fmt.Sprintf(`"caller":"%s"`, wantCallers[i]); !strings.Contains(line, want) {
					t.Errorf("line %d: %s, want %s", i+1, line, want)
				}
			}
			if n, err := audit.Verify(bytes.NewReader(out)); n != len(wantCallers) || err != nil {
				t.Errorf("Verify = %d, %v; want %d, nil", n, err, len(wantCallers))
			}
			st := s.Stats()
			if st.Lost != 0 || st.WriteErrors == 0 || st.Failing {
				t.Errorf("Stats() = %+v, want no loss, some write errors, not failing", st)
			}
		})
	}
}

// TestFailingAtClose: what cannot be written when the sink stops is counted
// as lost, reported, and returned.
func TestFailingAtClose(t *testing.T) {
	w := &flakyWriter{failing: true}
	var log errorLog
	s, stop := startSink(t, audit.Config{Path: "-", Stdout: w, OnError: log.onError})
	for i := range 3 {
		if err := s.Record(context.Background(), audit.Record{Caller: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the sink fails", func() bool { return s.Stats().Failing })
	err := stop()
	if !errors.Is(err, errFlaky) || !strings.Contains(err.Error(), "RECORDS LOST: 3 records") {
		t.Errorf("Run = %v, want the write error and the loss of 3 records", err)
	}
	if got, want := s.Stats().Lost, uint64(3); got != want {
		t.Errorf("Lost = %d, want %d", got, want)
	}
	if got := log.matching("RECORDS LOST"); len(got) != 1 {
		t.Errorf("OnError got %d loss reports, want 1", len(got))
	}
}

func TestTokenNeverRecorded(t *testing.T) {
	// Review guard: Record has no field that could hold a token.
	for f := range reflect.TypeFor[audit.Record]().Fields() {
		if strings.Contains(strings.ToLower(f.Name), "token") && f.Name != "TokenFP" {
			t.Errorf("Record has a field %s", f.Name)
		}
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := audit.Open(audit.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Record(context.Background(), audit.Record{Caller: "c", Decision: audit.Allowed, TokenFP: "9f86d081884c"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if got, want := m["token_fp"], "9f86d081884c"; got != want {
		t.Errorf("token_fp = %v, want %v", got, want)
	}
	allowed := map[string]bool{"time": true, "caller": true, "peer": true, "tenant": true, "groups": true,
		"decision": true, "token_fp": true, "latency_ms": true, "prev": true, "hash": true}
	for k := range m {
		if !allowed[k] {
			t.Errorf("line has a member %q", k)
		}
	}
}

func TestLifecycle(t *testing.T) {
	t.Run("record before Run is written by Run", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		s, err := audit.Open(audit.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Record(context.Background(), audit.Record{Caller: "early"}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		eventually(t, "the record reaches the file without a close", func() bool {
			b, _ := os.ReadFile(path)
			return bytes.Count(b, []byte("\n")) == 1
		})
		if err := s.Record(context.Background(), audit.Record{Caller: "later"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the second record reaches the file", func() bool {
			b, _ := os.ReadFile(path)
			return bytes.Count(b, []byte("\n")) == 2
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if err := s.Record(context.Background(), audit.Record{}); !errors.Is(err, audit.ErrClosed) {
			t.Errorf("Record after Run returned = %v, want ErrClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close after Run returned = %v", err)
		}
		verifyFile(t, path, 2)
	})
	t.Run("Close stops Run and is idempotent", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		s, err := audit.Open(audit.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()
		if err := s.Record(context.Background(), audit.Record{Caller: "c"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Run writes", func() bool { return s.Stats().Written == 1 })
		for range 2 {
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if err := s.Run(context.Background()); !errors.Is(err, audit.ErrClosed) {
			t.Errorf("Run after Close = %v, want ErrClosed", err)
		}
		if err := s.Record(context.Background(), audit.Record{}); !errors.Is(err, audit.ErrClosed) {
			t.Errorf("Record after Close = %v, want ErrClosed", err)
		}
		verifyFile(t, path, 1)
	})
	t.Run("Run twice", func(t *testing.T) {
		s, _ := startSink(t, audit.Config{Path: "-", Stdout: &bytes.Buffer{}})
		if err := s.Record(context.Background(), audit.Record{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Run writes", func() bool { return s.Stats().Written == 1 })
		if err := s.Run(context.Background()); err == nil || errors.Is(err, audit.ErrClosed) {
			t.Errorf("second Run = %v, want an error", err)
		}
	})
	t.Run("Record keeps no reference to the groups", func(t *testing.T) {
		var out bytes.Buffer
		s, err := audit.Open(audit.Config{Path: "-", Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		groups := []string{"original"}
		if err := s.Record(context.Background(), audit.Record{Groups: groups}); err != nil {
			t.Fatal(err)
		}
		groups[0] = "changed"
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if got, want := out.String(), `"groups":["original"]`; !strings.Contains(got, want) {
			t.Errorf("line %s, want %s", got, want)
		}
	})
}
