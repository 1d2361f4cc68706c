// Package redistest runs a real redis-server on loopback for tests: one
// throwaway server per test, with no persistence, in the test's temporary
// directory, stopped when the test ends.
//
// [Start] skips the test when redis-server is not installed (Debian: apt-get
// install redis-server), unless the environment variable [RequireEnv] is "1",
// in which case it fails it. [Server.Stop] and [Server.Restart] simulate an
// outage: the server goes away and comes back on the same address, empty.
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
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redis-server not installed (Debian: apt-get install redis-server) and %s=1", RequireEnv)
		}
		t.Skip("redis-server not installed (Debian: apt-get install redis-server); skipping")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), args: args}
	for i, a := range args {
		if a == "--requirepass" && i+1 < len(args) {
			s.password = args[i+1]
		}
	}
	t.Cleanup(s.Stop)
	var errs []error
	for range startAttempts {
		addr, err := freeAddr()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.addr = addr
		if err := s.start(); err != nil {
			errs = append(errs, err)
			continue
		}
		return s
	}
	t.Fatalf("redistest: redis-server did not start: %v", errors.Join(errs...))
	return nil
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
// string, an error ("ERR ..."), an integer, a bulk string, or "(nil)". It
// fails the test if the server cannot be reached. It is for checking state
// from tests without a Redis client.
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
	args := append([]string{
		"--port", port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
	}, s.args...)
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
	switch line[0] {
	case '+', '-', ':':
		return line[1:], nil
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
