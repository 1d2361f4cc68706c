package server

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// How often a watch looks at the cache: a tenth of the time its token has
// left before it can no longer meet min_ttl, within these bounds. A look is
// a cache hit, and a hit past a token's refresh point is what starts its
// background refresh: the watch picks the renewed token up from the cache
// long before the old one runs out.
const (
	minWatchLook = 100 * time.Millisecond
	maxWatchLook = 30 * time.Second
)

// WatchAccessToken streams the token GetAccessToken would return, then each
// renewal. Before every look at the cache it authenticates the caller's
// credentials again and checks the allowlist, so that a reload that revokes
// them ends the stream. Every token sent, and every refusal, is audited.
func (s *service) WatchAccessToken(req *tokenbrokerv1.WatchAccessTokenRequest, stream grpc.ServerStreamingServer[tokenbrokerv1.WatchAccessTokenResponse]) error {
	ctx := stream.Context()
	creds, ok := credsFrom(ctx)
	if !ok { // the auth interceptor guarantees credentials; never serve without them
		return status.Error(codes.Unauthenticated, "missing caller credentials")
	}
	get := &tokenbrokerv1.GetAccessTokenRequest{
		Tenant: req.GetTenant(), Uid: req.GetUid(), Groups: req.GetGroups(), CustomClaims: req.GetCustomClaims(),
		MinTtl: req.GetMinTtl(), ExternalAccountId: req.GetExternalAccountId(),
	}
	if err := validate(get); err != nil {
		return err
	}
	outer := callFrom(ctx)
	outer.target = get
	minTTL := minTTLOf(get)
	var last string
	for sent := 0; ; {
		resp, expiry, err := s.look(ctx, creds, get, minTTL, last)
		if err != nil {
			if ctx.Err() != nil {
				return nil // the caller went away
			}
			return err
		}
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return nil // the caller went away
			}
			last = resp.GetAccessToken()
			sent++
			outer.sent = sent
		}
		timer := time.NewTimer(lookAgainIn(s.now(), expiry, minTTL))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-s.stopping:
			timer.Stop()
			return status.Error(codes.Unavailable, "the broker is shutting down; reconnect")
		case <-timer.C:
		}
	}
}

// look checks the caller again and asks the broker. It returns the
// response to send, or nil when the token is still last, with the token's
// expiry. A token handed out and a refusal each get an audit record. The
// renewal comes in time because the broker refreshes a token ahead of what
// the asking caller's min_ttl needs, and a look is such an ask.
func (s *service) look(ctx context.Context, creds policy.Credentials, get *tokenbrokerv1.GetAccessTokenRequest, minTTL time.Duration, last string) (*tokenbrokerv1.WatchAccessTokenResponse, time.Time, error) {
	stream, c := callFrom(ctx), &call{}
	defer func() {
		if c.cause != "" {
			stream.cause = c.cause // the stream's line shows the last failure's detail
		}
	}()
	ctx = context.WithValue(ctx, callKey{}, c)
	start := time.Now()
	id, err := s.callers.Authenticate(creds)
	if err != nil {
		c.reason = "unauthenticated: " + err.Error()
		err = errUnauthenticated
	} else {
		c.caller = id.Name()
		err = s.authorize(ctx, id, get, minTTL)
	}
	var resp *tokenbrokerv1.WatchAccessTokenResponse
	var expiry time.Time
	if err == nil {
		tok, st, terr := s.token(ctx, get, minTTL)
		switch {
		case terr != nil:
			err = s.statusOf(ctx, terr)
		case tok.AccessToken == last:
			return nil, tok.Expiry, nil // nothing new handed out: nothing to record
		default:
			expiry = tok.Expiry
			resp = &tokenbrokerv1.WatchAccessTokenResponse{
				AccessToken: tok.AccessToken,
				TokenType:   tok.TokenType,
				ExpireTime:  timestamppb.New(tok.Expiry),
				CacheStatus: cacheStatus[st],
			}
		}
	}
	if ctx.Err() != nil && err != nil {
		return nil, expiry, err // the caller went away: not a decision
	}
	if aerr := record(ctx, s.auditor, s.log, get, c, start, err); aerr != nil {
		return nil, expiry, aerr
	}
	return resp, expiry, err
}

// lookAgainIn is the wait before a watch's next look: a tenth of the time
// until its token can no longer meet min_ttl, within [minWatchLook,
// maxWatchLook].
func lookAgainIn(now, expiry time.Time, minTTL time.Duration) time.Duration {
	return min(max((expiry.Sub(now)-minTTL)/10, minWatchLook), maxWatchLook)
}
