package redistest_test

import (
	"net"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

func TestStartStopRestart(t *testing.T) {
	s := redistest.Start(t)
	if got := s.Do("PING"); got != "PONG" {
		t.Fatalf("PING = %q, want PONG", got)
	}
	if got := s.Do("SET", "k", "v"); got != "OK" {
		t.Fatalf("SET = %q, want OK", got)
	}
	if got := s.Do("GET", "k"); got != "v" {
		t.Fatalf("GET = %q, want v", got)
	}

	s.Stop()
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Fatalf("dial %s after Stop succeeded, want refused", s.Addr())
	}
	s.Stop() // idempotent

	addr := s.Addr()
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Addr after Restart = %s, want %s", s.Addr(), addr)
	}
	if got := s.Do("GET", "k"); got != "(nil)" {
		t.Fatalf("GET after Restart = %q, want (nil): the server persists nothing", got)
	}
}

func TestTwoServers(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers on %s", a.Addr())
	}
	a.Do("SET", "k", "a")
	if got := b.Do("GET", "k"); got != "(nil)" {
		t.Fatalf("GET on the other server = %q, want (nil)", got)
	}
}

func TestPassword(t *testing.T) {
	s := redistest.Start(t, "--requirepass", "secret")
	if got := s.Do("PING"); got != "PONG" {
		t.Fatalf("PING with the password = %q, want PONG", got)
	}
}
