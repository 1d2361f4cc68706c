package redistest_test

import (
	"net"
	"strings"
	"testing"
	"time"

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

func TestSentinel(t *testing.T) {
	m := redistest.Start(t)
	s := redistest.StartSentinel(t, m, "mymaster")
	if s.Addr() == m.Addr() {
		t.Fatalf("sentinel and master both on %s", s.Addr())
	}
	if got := s.MasterAddr(); got != m.Addr() {
		t.Fatalf("MasterAddr = %q, want %s", got, m.Addr())
	}
	host, port, _ := net.SplitHostPort(m.Addr())
	if got, want := s.Do("SENTINEL", "get-master-addr-by-name", "mymaster"), host+" "+port; got != want {
		t.Fatalf("get-master-addr-by-name = %q, want %q", got, want)
	}
	if got := s.Do("SENTINEL", "get-master-addr-by-name", "other"); got != "(nil)" {
		t.Fatalf("get-master-addr-by-name of an unknown name = %q, want (nil)", got)
	}
	if got := s.Name(); got != "mymaster" {
		t.Fatalf("Name = %q, want mymaster", got)
	}

	s.Stop()
	if got := s.MasterAddr(); got != "" {
		t.Fatalf("MasterAddr of a stopped sentinel = %q, want empty", got)
	}
	s.Restart()
	if got := s.MasterAddr(); got != m.Addr() {
		t.Fatalf("MasterAddr after Restart = %q, want %s", got, m.Addr())
	}
}

// A sentinel monitoring a master with a password authenticates to it.
func TestSentinelPassword(t *testing.T) {
	m := redistest.Start(t, "--requirepass", "secret")
	s := redistest.StartSentinel(t, m, "mymaster")
	// The sentinel reports the master down (flags s_down) if it cannot
	// authenticate; give it a few pings' time to say either way.
	time.Sleep(1500 * time.Millisecond)
	if flags := s.Do("SENTINEL", "master", "mymaster"); !strings.Contains(flags, "flags master ") {
		t.Fatalf("SENTINEL MASTER = %q, want flags master alone", flags)
	}
}
