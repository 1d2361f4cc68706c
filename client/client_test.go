package client_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/client"
)

func TestNewPanicsWithoutConn(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without a Conn did not panic")
		}
	}()
	client.New(client.Config{})
}

func TestClientToken(t *testing.T) {
	clock := newClock()
	f := &fakeBroker{key: testKey, now: clock.Now}
	conn, stop := serveBroker(f)
	t.Cleanup(stop)
	c := client.New(client.Config{Conn: conn, Key: testKey})

	tok, err := c.Token(t.Context(), client.Request{
		Tenant: "tn-a", ExternalAccountID: "ext-1", Groups: []string{"g"},
		CustomClaims: map[string]string{"k": "v"}, MinTTL: 5 * time.Minute,
	})
	checkToken(t, tok, err, "at-1", clock.Now().Add(time.Hour))
	gets := f.gets()
	if len(gets) != 1 {
		t.Fatalf("%d calls, want 1", len(gets))
	}
	if g := gets[0]; g.GetTenant() != "tn-a" || g.GetExternalAccountId() != "ext-1" || g.GetUid() != "" || len(g.GetGroups()) != 1 ||
		g.GetCustomClaims()["k"] != "v" || g.GetMinTtl().AsDuration() != 5*time.Minute || g.GetRejectedToken() != "" {
		t.Errorf("request = %v", g)
	}
	if got := f.auths(); len(got) != 1 || got[0] != "Bearer "+testKey {
		t.Error("the call did not carry the bearer key")
	}
}

// Without a key (the connection names the caller by certificate) no
// authorization metadata is sent.
func TestClientWithoutKey(t *testing.T) {
	clock := newClock()
	f := &fakeBroker{now: clock.Now}
	conn, stop := serveBroker(f)
	t.Cleanup(stop)
	c := client.New(client.Config{Conn: conn})
	if _, err := c.Token(t.Context(), testRequest); err != nil {
		t.Fatal(err)
	}
	ts := c.TokenSource(testRequest)
	defer ts.Close()
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	if got := f.auths(); len(got) != 2 || got[0] != "" || got[1] != "" {
		t.Errorf("authorization metadata = %q, want none", got)
	}
}

func TestClientBadResponse(t *testing.T) {
	r := newRig(t)
	ts := r.source(t, testRequest)
	w := r.nextWatch()
	w.send(t, "", r.clock.Now().Add(time.Hour)) // no token: the watch is dropped
	w2 := r.nextWatch()
	if held := ts.Held(); held != "" {
		t.Errorf("source holds %q", held)
	}
	w2.send(t, "A", r.clock.Now().Add(time.Hour))
	waitFor(ts, ts.Watching)
}

// The bearer key never shows: not when the Client or a TokenSource is
// printed, not in an error.
func TestKeyNeverShown(t *testing.T) {
	const secret = "tbk_SECRET-never-printed-7c1d"
	f := &fakeBroker{key: testKey, now: time.Now, watches: make(chan *fakeWatch)}
	conn, stop := serveBroker(f)
	t.Cleanup(stop)

	check := func(what, s string) {
		t.Helper()
		if strings.Contains(s, secret) || strings.Contains(s, "SECRET") {
			t.Errorf("%s shows the key: %s", what, s)
		}
	}
	for _, key := range []string{secret, secret + "\n", "Bearer " + secret} {
		c := client.New(client.Config{Conn: conn, Key: key})
		ts := c.TokenSource(testRequest)
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%T"} {
			check("Client "+verb, fmt.Sprintf(verb, c))
			check("*Client "+verb, fmt.Sprintf(verb, *c))
			check("TokenSource "+verb, fmt.Sprintf(verb, ts))
			check("PerRPCCredentials "+verb, fmt.Sprintf(verb, client.PerRPCCredentials{Source: ts}))
			check("Transport "+verb, fmt.Sprintf(verb, &client.Transport{Source: ts}))
		}

		invalid := strings.ContainsAny(key, " \n")
		_, err := c.Token(t.Context(), testRequest)
		_, err2 := ts.Token()
		for _, err := range []error{err, err2} {
			if err == nil {
				t.Fatal("a wrong key was accepted")
			}
			check("error", err.Error())
			check("error %+v", fmt.Sprintf("%+v", err))
			if invalid && !errors.Is(err, client.ErrInvalidKey) {
				t.Errorf("error = %v, want ErrInvalidKey", err)
			}
			if !invalid && status.Code(err) != codes.Unauthenticated {
				t.Errorf("error = %v, want UNAUTHENTICATED", err)
			}
		}
		ts.Close()
	}
}
