// Package redistest runs a real redis-server on loopback for tests: one
// throwaway server per test, with no persistence, in the test's temporary
// directory, stopped when the test ends.
//
// [Start] skips the test when redis-server is not installed (Debian: apt-get
// install redis-server), unless the environment variable [RequireEnv] is "1",
// in which case it fails it. [Server.Stop] and [Server.Restart] simulate an
// outage: the server goes away and comes back on the same address, empty.
// [StartSentinel] runs the same binary as a Redis Sentinel that monitors a
// server, under the same rules.
//
// The package talks to the server with a few lines of RESP of its own, so it
// depends on no Redis client. It is imported only by tests.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv is the environment variable that, set to "1", turns Start's skip
// into a failure, for CI jobs that must run the Redis tests.
const RequireEnv = "TOKENBROKER_REQUIRE_REDIS"

// Binary is the name of the server executable looked up in $PATH.
const Binary = "redis-server"

// readyAttempts bounds the wait for a started server to answer PING; with
// readyPause between attempts that is a few seconds.
const (
	readyAttempts = 500
	readyPause    = 10 * time.Millisecond
	startAttempts = 5 // fresh ports tried when a start fails (the port was taken)
)

// Server is a running (or stopped) redis-server. Its methods may be called
// from the test's goroutine only.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	addr string
	conf string // the config file, first on the command line; "" for none
	args []string
	// password is given to AUTH before each command, when set.
	password string

	mu   sync.Mutex // guards proc, for Stop from a cleanup
	proc *process
}

type process struct {
	cmd  *exec.Cmd
	out  *buffer
	done chan struct{} // closed when the process has exited
	err  error         // the exit status, set before done is closed
}

// buffer collects the server's output for failure messages.
type buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Start runs a redis-server on a free loopback port and returns it once it
// answers PING. The server is stopped when the test ends. Start skips the test
// if redis-server is not installed, or fails it under [RequireEnv]=1.
//
// args are added to the server's command line, such as "--requirepass",
// "secret"; the readiness check then authenticates as the default user with
// the password given to --requirepass, if any.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: lookBinary(t), dir: t.TempDir(), args: args}
	for i, a := range args {
		if a == "--requirepass" && i+1 < len(args) {
			s.password = args[i+1]
		}
	}
	s.launch()
	return s
}

// lookBinary finds redis-server, or skips the test (fails it under
// RequireEnv=1).
func lookBinary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redis-server not installed (Debian: apt-get install redis-server) and %s=1", RequireEnv)
		}
		t.Skip("redis-server not installed (Debian: apt-get install redis-server); skipping")
	}
	return bin
}

// launch starts s on a free loopback port, trying a few, and stops it when
// the test ends.
func (s *Server) launch() {
	s.t.Helper()
	s.t.Cleanup(s.Stop)
	var errs []error
	for range startAttempts {
		addr, err := freeAddr()
		if err != nil {
			s.t.Fatalf("redistest: %v", err)
		}
		s.addr = addr
		if err := s.start(); err != nil {
			errs = append(errs, err)
			continue
		}
		return
	}
	s.t.Fatalf("redistest: redis-server did not start: %v", errors.Join(errs...))
}

// Addr is the server's host:port; it stays the same across Restart.
func (s *Server) Addr() string { return s.addr }

// Stop terminates the server and waits until it has exited, so that
// connections to Addr are refused. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Restart starts a stopped server again on the same address, empty, and
// returns once it answers PING. It fails the test if the server is running
// or cannot be started.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		s.t.Fatal("redistest: Restart of a running server")
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart on %s: %v", s.addr, err)
	}
}

// Do sends one command and returns the server's reply as text: a simple
// string, an error ("ERR ..."), an integer, a bulk string, "(nil)", or an
// array's elements separated by spaces. It fails the test if the server
// cannot be reached. It is for checking state from tests without a Redis
// client.
func (s *Server) Do(args ...string) string {
	s.t.Helper()
	reply, err := s.do(args...)
	if err != nil {
		s.t.Fatalf("redistest: %s: %v", strings.Join(args, " "), err)
	}
	return reply
}

func (s *Server) start() error {
	_, port, err := net.SplitHostPort(s.addr)
	if err != nil {
		return err
	}
	var args []string
	if s.conf != "" {
		args = append(args, s.conf)
	}
	args = append(append(args,
		"--port", port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
	), s.args...)
	cmd := exec.Command(s.bin, args...)
	out := &buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	for range readyAttempts {
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited (%v): %s", p.err, out.String())
		default:
		}
		if reply, err := s.do("PING"); err == nil && reply == "PONG" {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return nil
		}
		time.Sleep(readyPause)
	}
	_ = cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("redis-server on %s did not answer PING: %s", s.addr, out.String())
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// do sends one command in RESP2 on a new connection, after AUTH if the
// server has a password, and reads its reply.
func (s *Server) do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	if s.password != "" {
		if reply, err := roundTrip(conn, r, "AUTH", s.password); err != nil || reply != "OK" {
			return "", fmt.Errorf("AUTH: %q, %v", reply, err)
		}
	}
	return roundTrip(conn, r, args...)
}

func roundTrip(conn net.Conn, r *bufio.Reader, args ...string) (string, error) {
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(req.String())); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	return reply(r, line)
}

// reply reads the rest of the reply whose first line is line. An array is
// returned as its elements separated by spaces (nested ones flattened), an
// empty one as "(empty)".
func reply(r *bufio.Reader, line string) (string, error) {
	switch line[0] {
	case '+', '-', ':':
		return line[1:], nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad reply %q", line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		if n == 0 {
			return "(empty)", nil
		}
		elems := make([]string, n)
		for i := range elems {
			l, err := r.ReadString('\n')
			if err != nil {
				return "", err
			}
			if l = strings.TrimSuffix(l, "\r\n"); l == "" {
				return "", errors.New("empty reply")
			}
			if elems[i], err = reply(r, l); err != nil {
				return "", err
			}
		}
		return strings.Join(elems, " "), nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad reply %q", line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unsupported reply %q", line)
}

// Sentinel is a redis-server running as a Redis Sentinel that monitors one
// master. Its Server methods apply to it: Do sends it commands (SENTINEL
// ...), Stop and Restart stop it and start it again on the same address,
// keeping what it learnt (it rewrites its config file).
type Sentinel struct {
	*Server
	name string
}

// The sentinel's timings, short for tests: the master counts as down after
// sentinelDownAfter without an answer, and a failover that has not
// completed in sentinelFailoverTimeout is abandoned (and retried after
// twice that).
const (
	sentinelDownAfter       = 1000 * time.Millisecond
	sentinelFailoverTimeout = 3000 * time.Millisecond
)

// StartSentinel runs a Redis Sentinel on a free loopback port that monitors
// master under name, with a quorum of 1 (it alone decides a failover), and
// returns it once it names master as name's master. Replicas of master that
// are already attached are known to it at once, from its first look at the
// master. It is stopped when the test ends; like [Start], it skips the test
// if redis-server is not installed.
func StartSentinel(t testing.TB, master *Server, name string) *Sentinel {
	t.Helper()
	host, port, err := net.SplitHostPort(master.Addr())
	if err != nil {
		t.Fatalf("redistest: master address: %v", err)
	}
	s := &Sentinel{Server: &Server{t: t, bin: lookBinary(t), dir: t.TempDir(), args: []string{"--sentinel"}}, name: name}
	conf := fmt.Sprintf("sentinel monitor %s %s %s 1\n"+
		"sentinel down-after-milliseconds %[1]s %[4]d\n"+
		"sentinel failover-timeout %[1]s %[5]d\n",
		name, host, port, sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
	if master.password != "" {
		conf += fmt.Sprintf("sentinel auth-pass %s %s\n", name, master.password)
	}
	// Sentinel rewrites its config file, so it must be writable.
	s.conf = filepath.Join(s.dir, "sentinel.conf")
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s.launch()
	for range readyAttempts {
		if s.MasterAddr() == master.Addr() {
			return s
		}
		time.Sleep(readyPause)
	}
	t.Fatalf("redistest: sentinel on %s names %q as %s's master, want %s", s.Addr(), s.MasterAddr(), name, master.Addr())
	return nil
}

// Name is the master's name, as the sentinel monitors it.
func (s *Sentinel) Name() string { return s.name }

// MasterAddr is the master's host:port as the sentinel names it now, which
// changes after a failover; "" if it names none or cannot be reached.
func (s *Sentinel) MasterAddr() string {
	reply, err := s.do("SENTINEL", "get-master-addr-by-name", s.name)
	host, port, ok := strings.Cut(reply, " ")
	if err != nil || !ok {
		return ""
	}
	return net.JoinHostPort(host, port)
}
