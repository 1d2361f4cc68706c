package server

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// call is what the layers of one call learn about it, for its audit record
// and its log line. Only the call's own goroutine touches it.
type call struct {
	auth      authenticated // set by the auth layer
	caller    string
	reason    string // why the caller was refused, or what audit mode let through
	wouldDeny bool
	cache     string
	tokenFP   string

	target      auditTarget // what was asked for, once the request is valid
	keyFP       string      // an unknown bearer key's fingerprint
	authFailure string
	cause       string // an error's detail, for the log only
	sent        int    // tokens a watch sent
	peer        string // the caller's address, once asked for (peerOf)
}

// peerOf is the call's peer address, looked up once for the audit record
// and the log line.
func (c *call) peerOf(ctx context.Context) string {
	if c.peer == "" {
		c.peer = peerAddr(ctx)
	}
	return c.peer
}

type callKey struct{}

// callContext carries a call's record: the context and the record in one
// allocation, where context.WithValue and the record would take two. Its
// Value answers callKey and defers everything else, cancellation included
// (context's own lookups go through Value), to the context it wraps.
type callContext struct {
	context.Context
	c call
}

func (x *callContext) Value(key any) any {
	if key == (callKey{}) {
		return &x.c
	}
	return x.Context.Value(key)
}

// withCall returns ctx carrying a new, empty call record, and the record.
func withCall(ctx context.Context) (context.Context, *call) {
	x := &callContext{Context: ctx}
	return x, &x.c
}

// CallLog says which calls [Server] logs.
type CallLog uint8

// The call logs.
const (
	// CallLogAll logs one line per call.
	CallLogAll CallLog = iota
	// CallLogFailures logs only calls that did not end OK, and those audit
	// mode let through: for busy brokers whose audit trail already records
	// every token handed out.
	CallLogFailures
)

// ParseCallLog reads "all" or "failures".
func ParseCallLog(s string) (CallLog, error) {
	switch s {
	case "all":
		return CallLogAll, nil
	case "failures":
		return CallLogFailures, nil
	}
	return 0, fmt.Errorf("call log %q: want all or failures", s)
}

// callFrom returns the call's record, or a throwaway one outside a call, so
// the layers need not check.
func callFrom(ctx context.Context) *call {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		return c
	}
	return &call{}
}

// unaryCall is the outer layer of every unary call: it gives the call its
// record, audits GetAccessToken however it ended (refusing the call if the
// auditor cannot take the record, in fail-closed mode), and logs one line.
//
// It replaces go-grpc-middleware's logging interceptor, whose field lists
// are copied into maps several times per call: about 50 allocations on
// every cache hit, the largest cost of the hot path (BENCHMARKS.md).
func (s *Server) unaryCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, c := withCall(ctx)
	start := time.Now()
	resp, err := handler(ctx, req)
	if r, ok := req.(*tokenbrokerv1.GetAccessTokenRequest); ok {
		if aerr := record(ctx, s.cfg.Auditor, s.log, r, c, start, err); aerr != nil {
			resp, err = nil, aerr
		}
	}
	s.logCall(ctx, info.FullMethod, "unary", c, start, err)
	return resp, err
}

// streamCall gives a streaming call its record and logs one line when it
// ends; the watch audits each token it sends itself.
func (s *Server) streamCall(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	w := middleware.WrapServerStream(ss)
	var c *call
	w.WrappedContext, c = withCall(ss.Context())
	start := time.Now()
	err := handler(srv, w)
	s.logCall(w.WrappedContext, info.FullMethod, "server_stream", c, start, err)
	return err
}

// logCall writes a call's line: "finished call", at go-grpc-middleware's
// level for its code, with the method, peer, code, duration and what the
// call's layers noted. Never a token, a key or an assertion: tokens and
// keys by fingerprint only.
func (s *Server) logCall(ctx context.Context, method, kind string, c *call, start time.Time, err error) {
	if err == nil && !c.wouldDeny && s.cfg.CallLog == CallLogFailures {
		return
	}
	code := status.Code(err)
	level := slog.Level(logging.DefaultServerCodeToLevel(code))
	if !s.callLog.Enabled(ctx, level) {
		return
	}
	service, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	var buf [20]slog.Attr
	a := append(buf[:0],
		slog.String("grpc.service", service),
		slog.String("grpc.method", name),
		slog.String("grpc.method_type", kind),
		slog.String("peer.address", c.peerOf(ctx)),
		slog.String("grpc.code", code.String()),
		// A string, as go-grpc-middleware wrote it: slog's JSON handler
		// writes a float through encoding/json, a third of the line's cost.
		slog.String("grpc.time_ms", strconv.FormatFloat(float64(time.Since(start).Microseconds())/1000, 'f', 3, 64)),
	)
	if err != nil {
		a = append(a, slog.String("grpc.error", status.Convert(err).Message()))
	}
	a = appendNonEmpty(a, "caller", c.caller)
	if t := c.target; t != nil {
		a = append(a, slog.String("tenant", t.GetTenant()), slog.String("groups", strings.Join(t.GetGroups(), ",")),
			slog.String("account", accountKind(t)))
	}
	a = appendNonEmpty(a, "cache", c.cache)
	a = appendNonEmpty(a, "token_fp", c.tokenFP)
	a = appendNonEmpty(a, "key_fp", c.keyFP)
	a = appendNonEmpty(a, "auth_failure", c.authFailure)
	a = appendNonEmpty(a, "cause", c.cause)
	if c.wouldDeny {
		a = append(a, slog.String("would_deny", c.reason))
	}
	if c.sent > 0 {
		a = append(a, slog.Int("sent", c.sent))
	}
	s.callLog.LogAttrs(ctx, level, "finished call", a...)
}

func appendNonEmpty(a []slog.Attr, key, value string) []slog.Attr {
	if value == "" {
		return a
	}
	return append(a, slog.String(key, value))
}
