package server

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// authenticated is who a call authenticated as, and with what: a stream
// checks the credentials again before every send, since a reload may have
// revoked them. It is kept in the call's record, which the outer layer
// placed in the context: no context value of its own on the hot path.
type authenticated struct {
	ok    bool
	id    policy.Identity
	creds policy.Credentials
}

// errUnauthenticated is all a refused caller learns; the reason goes to the
// log and the audit trail. go-grpc-middleware's auth interceptor sends our
// error text word for word, so it is fixed here.
var errUnauthenticated = status.Error(codes.Unauthenticated,
	"unauthenticated: present a caller key (metadata \"authorization: Bearer <key>\") or a client certificate the broker knows")

// authenticate names the caller from its bearer key and its verified client
// certificate, as the policy's rules say.
func (s *Server) authenticate(ctx context.Context) (context.Context, error) {
	var creds policy.Credentials
	if vals := metadata.ValueFromIncomingContext(ctx, "authorization"); len(vals) > 0 {
		scheme, key, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || key == "" || len(vals) > 1 {
			return nil, s.refuse(ctx, "authorization metadata is not a single \"Bearer <key>\"")
		}
		creds.BearerKey = key
		if s.creds == nil && !fromLoopback(ctx) {
			return nil, s.refuse(ctx, "a bearer key over plaintext from a non-loopback peer")
		}
	}
	identity, err := certIdentity(ctx, s.now())
	if err != nil {
		return nil, s.refuse(ctx, err.Error())
	}
	creds.TLSIdentity = identity
	id, err := s.cfg.Callers.Authenticate(creds)
	if err != nil {
		if creds.BearerKey != "" {
			// The fingerprint lets an operator match the refusal to a key
			// they hold without the log revealing it.
			callFrom(ctx).keyFP = broker.Fingerprint(creds.BearerKey)
		}
		return nil, s.refuse(ctx, err.Error())
	}
	c := callFrom(ctx)
	c.caller = id.Name()
	c.auth = authenticated{ok: true, id: id, creds: creds}
	// The rate limit is checked here rather than in an interceptor of its
	// own: one link less in the chain of every call.
	if err := s.overLimit(ctx, id); err != nil {
		return nil, err
	}
	return ctx, nil
}

// credsFrom returns the credentials the call authenticated with.
func credsFrom(ctx context.Context) (policy.Credentials, bool) {
	a := callFrom(ctx).auth
	return a.creds, a.ok
}

// refuse records why a caller was refused and returns the fixed reply.
func (s *Server) refuse(ctx context.Context, reason string) error {
	c := callFrom(ctx)
	c.authFailure, c.reason = reason, "unauthenticated: "+reason
	return errUnauthenticated
}

func callerFrom(ctx context.Context) (policy.Identity, bool) {
	a := callFrom(ctx).auth
	return a.id, a.ok
}

// fromLoopback reports whether the call came over loopback, or over an
// in-process transport that has no network address.
func fromLoopback(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	tcp, ok := p.Addr.(*net.TCPAddr)
	return !ok || tcp.IP.IsLoopback()
}
