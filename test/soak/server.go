package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is the tokenbroker binary running `serve` as a subprocess.
type server struct {
	cmd                *exec.Cmd
	grpcAddr, httpAddr string
	log                *serverLog

	exited  chan struct{} // closed once the process has been waited for
	state   *os.ProcessState
	waitErr error
}

// startServer runs `binary serve --config cfgPath` and waits until it logs
// that it is serving, or exits, or timeout passes.
func startServer(binary, cfgPath, logLevel, logFile string, timeout time.Duration) (*server, error) {
	cmd := exec.Command(binary, "serve", "--config", cfgPath, "--log-format", "json", "--log-level", logLevel)
	cmd.Stdout = os.Stdout
	cmd.SysProcAttr = sysProcAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	l := &serverLog{serving: make(chan servingLine, 1)}
	if logFile != "" {
		if l.file, err = os.Create(logFile); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	s := &server{cmd: cmd, log: l, exited: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		l.read(stderr)
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it to the end first
		s.waitErr = cmd.Wait()
		s.state = cmd.ProcessState
		close(s.exited)
	}()

	select {
	case sl := <-l.serving:
		s.grpcAddr, s.httpAddr = sl.GRPC, sl.HTTP
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("the server exited before serving (%s); its last log lines:\n%s", s.exitStatus(), l.tailText())
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-s.exited
		return nil, fmt.Errorf("the server did not log \"serving\" within %s; its last log lines:\n%s", timeout, l.tailText())
	}
}

// Pid is the server's process id.
func (s *server) Pid() int { return s.cmd.Process.Pid }

// exitStatus describes how the process ended; call it after exited closes.
func (s *server) exitStatus() string {
	if s.state == nil {
		return fmt.Sprintf("wait: %v", s.waitErr)
	}
	return s.state.String()
}

// stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It reports how long the exit took and whether it had to kill.
func (s *server) stop(grace time.Duration) (took time.Duration, killed bool) {
	start := time.Now()
	select {
	case <-s.exited:
		return 0, false
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return time.Since(start), false
	case <-time.After(grace):
		s.cmd.Process.Kill()
		<-s.exited
		return time.Since(start), true
	}
}

// servingLine is the fields of the server's `"msg":"serving"` log line.
type servingLine struct {
	Msg  string `json:"msg"`
	GRPC string `json:"grpc"`
	HTTP string `json:"http"`
}

// serverLog reads the server's JSON log: it finds the serving line, counts
// lines by level, keeps the first warnings and errors and the last lines,
// and copies everything to a file when asked. The log holds no secrets (the
// broker logs fingerprints only), but it is large: one line per call.
type serverLog struct {
	serving chan servingLine
	file    *os.File

	mu       sync.Mutex
	lines    int64
	bytes    int64
	levels   map[string]int64
	problems map[string]int64 // WARN and ERROR lines by level, msg and cause
	others   int64            // WARN and ERROR lines beyond keepProblems kinds
	tail     []string         // the last lines, a ring
	next     int
}

const (
	keepProblems = 12 // kinds of WARN and ERROR line
	keepTail     = 20
	maxLineShown = 400
)

func (l *serverLog) read(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	sentServing := false
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if l.file != nil {
				l.file.Write(line)
			}
			line = bytes.TrimRight(line, "\r\n")
			if !sentServing && bytes.Contains(line, []byte(`"msg":"serving"`)) {
				var sl servingLine
				if json.Unmarshal(line, &sl) == nil && sl.Msg == "serving" && sl.GRPC != "" {
					l.serving <- sl
					sentServing = true
				}
			}
			l.add(line)
		}
		if err != nil {
			if l.file != nil {
				l.file.Close()
			}
			return
		}
	}
}

func (l *serverLog) add(line []byte) {
	level := "other"
	if i := bytes.Index(line, []byte(`"level":"`)); i >= 0 {
		rest := line[i+len(`"level":"`):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			level = string(rest[:j])
		}
	}
	shown := string(line)
	if len(shown) > maxLineShown {
		shown = shown[:maxLineShown] + "…"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.levels == nil {
		l.levels, l.problems = map[string]int64{}, map[string]int64{}
	}
	l.lines++
	l.bytes += int64(len(line)) + 1
	l.levels[level]++
	if level == "WARN" || level == "ERROR" {
		kind := problemKind(level, line)
		switch _, ok := l.problems[kind]; {
		case ok || len(l.problems) < keepProblems:
			l.problems[kind]++
		default:
			l.others++
		}
	}
	if len(l.tail) < keepTail {
		l.tail = append(l.tail, shown)
	} else {
		l.tail[l.next] = shown
		l.next = (l.next + 1) % keepTail
	}
}

// hostPort and duration match the addresses and durations in errors, whose
// ephemeral ports and countdowns would make every line its own kind.
var (
	hostPort = regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}:\d+\b`)
	duration = regexp.MustCompile(`\b(?:\d+(?:\.\d+)?(?:ns|µs|us|ms|h|m|s))+\b`)
)

// problemKind names a warning or error line by its level, message and cause
// (or error), so the report can count them by kind.
func problemKind(level string, line []byte) string {
	var f struct {
		Msg   string `json:"msg"`
		Cause string `json:"cause"`
		Error string `json:"error"`
	}
	json.Unmarshal(line, &f)
	kind := level + " " + f.Msg
	for _, detail := range []string{f.Cause, f.Error} {
		if detail != "" {
			kind += ": " + duration.ReplaceAllString(hostPort.ReplaceAllString(detail, "ADDR"), "DURATION")
		}
	}
	if len(kind) > maxLineShown {
		kind = kind[:maxLineShown] + "…"
	}
	return kind
}

func (l *serverLog) tailText() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for i := range l.tail {
		b.WriteString("  " + l.tail[(l.next+i)%len(l.tail)] + "\n")
	}
	return b.String()
}

// memSampler records the server's resident set size once a second.
type memSampler struct {
	mu      sync.Mutex
	samples []int64 // VmRSS in bytes, one a second
	peak    int64
	err     error
}

func (m *memSampler) run(ctx context.Context, pid int) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		m.sample(pid)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *memSampler) sample(pid int) {
	rss, _, err := readProcStatus(pid)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if m.err == nil {
			m.err = err
		}
		return
	}
	m.samples = append(m.samples, rss)
	m.peak = max(m.peak, rss)
}

func (m *memSampler) last() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) == 0 {
		return 0
	}
	return m.samples[len(m.samples)-1]
}

// fetchMetrics reads the server's Prometheus text exposition.
func fetchMetrics(httpAddr string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return string(body), nil
}

// metricWords are the resilience metrics' words, each with the name
// fragments that count as it; whichever exist are printed.
var metricWords = []struct {
	word  string
	frags []string
}{
	{"refresh", []string{"refresh"}}, {"breaker", []string{"breaker"}}, {"stale", []string{"stale"}},
	{"evict", []string{"evict"}}, {"retry", []string{"retry", "retries"}},
}

// keyMetrics picks the report's lines from an exposition: every
// tokenbroker_ sample except histogram buckets, the grpc_server_handled_total
// samples that are not zero, any sample whose name holds a metricWords
// fragment, and a few process gauges. It also names the fragments no metric
// matched.
func keyMetrics(text string) (lines []string, missing []string) {
	found := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		word := false
		for _, w := range metricWords {
			for _, frag := range w.frags {
				if strings.Contains(name, frag) {
					found[w.word], word = true, true
				}
			}
		}
		switch {
		case strings.HasSuffix(name, "_bucket"):
		case word, strings.HasPrefix(name, "tokenbroker_"),
			name == "grpc_server_handled_total" && !strings.HasSuffix(line, " 0"),
			name == "go_goroutines", name == "go_memstats_heap_inuse_bytes",
			name == "process_resident_memory_bytes", name == "process_open_fds":
			lines = append(lines, line)
		}
	}
	for _, w := range metricWords {
		if !found[w.word] {
			missing = append(missing, w.word)
		}
	}
	return lines, missing
}
