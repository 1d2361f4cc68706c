package sharedtoken

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

// leakForms is s as it could leak: itself, in hex and in each base64
// alphabet, padded or not.
func leakForms(s string) []string {
	b := []byte(s)
	return []string{
		s,
		strings.ToLower(s),
		hex.EncodeToString(b),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
	}
}

// TestRedisSeesNothing stores, leases, waits for and evicts a token, and
// then looks at everything in Redis and on its channels: no tenant, account
// id, group or token, in any encoding.
func TestRedisSeesNothing(t *testing.T) {
	r := redistest.Start(t)
	a := newReplica(t, r.Addr(), func(c *Config) {
		c.Scope = func(tenant string) string { return "https://idp.example/token as svc-acct-1234 for " + tenant }
	}, "a")
	b := newReplica(t, r.Addr(), func(c *Config) {
		c.Scope = func(tenant string) string { return "https://idp.example/token as svc-acct-1234 for " + tenant }
	}, "a")
	c := direct(t, r.Addr())
	ctx := t.Context()

	// Everything published, on any channel, from here on.
	ps := c.PSubscribe(ctx, "*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	subscribed(t, c, 2)
	var messages []*redis.Message
	collect := func(want int) {
		t.Helper()
		for len(messages) < want {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			msg, err := ps.ReceiveMessage(rctx)
			cancel()
			if err != nil {
				t.Fatalf("received %d messages, want %d: %v", len(messages), want, err)
			}
			messages = append(messages, msg)
		}
	}

	const (
		tenant = "tenant-secret-name"
		secret = "tok-SECRET-VALUE"
	)
	key := []byte("\x12tenant-secret-nameu\x09acct-1234\x01\x0bgroup-admin\x00")
	secrets := []string{tenant, "acct-1234", "group-admin", secret, string(key)}

	release, won, err := a.Lease(ctx, tenant, key)
	if err != nil || !won {
		t.Fatalf("Lease = %v, %v", won, err)
	}
	tok := broker.SharedToken{
		Token:    broker.Token{AccessToken: secret, TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)},
		Obtained: time.Now(),
	}
	if err := a.Put(ctx, tenant, key, tok, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := b.Wait(ctx, tenant, key, nil); err != nil || !ok || got.AccessToken != secret {
		t.Fatalf("Wait = %v, %v, %v", got, ok, err)
	}
	collect(1) // the Put's notification

	// Everything in Redis now: the value and, still held, the lease.
	dump := func() []string {
		t.Helper()
		var seen []string
		iter := c.Scan(ctx, 0, "*", 100).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			seen = append(seen, "key "+k)
			typ, err := c.Type(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if typ != "string" {
				t.Fatalf("key %q is a %s; every key should be a string", k, typ)
			}
			v, err := c.Get(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, "value "+v)
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		channels, err := c.PubSubChannels(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range channels {
			seen = append(seen, "channel "+ch)
		}
		return seen
	}
	seen := dump()
	if len(seen) < 4 { // the value and the lease, keys and values
		t.Fatalf("Redis holds %q; want at least the value and the lease", seen)
	}

	release()
	if err := b.Evict(ctx, tenant, key, secret); err != nil {
		t.Fatal(err)
	}
	collect(2) // and the eviction's invalidation
	seen = append(seen, dump()...)
	for _, m := range messages {
		seen = append(seen, "channel "+m.Channel, "message "+m.Payload)
	}
	if n, _ := c.Exists(ctx, shared.DefaultPrefix+"v:"+a.ID(tenant, key)).Result(); n != 0 {
		t.Fatal("the value survived Evict")
	}

	for _, s := range seen {
		lower := strings.ToLower(s)
		for _, sec := range secrets {
			for _, form := range leakForms(sec) {
				if strings.Contains(s, form) || strings.Contains(lower, strings.ToLower(form)) {
					t.Errorf("Redis shows %q in %q", sec, s)
				}
			}
		}
	}
}
