package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenbroker/tokenbroker/broker"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// DefaultMinTTL is the life a token has left when the caller does not say.
const DefaultMinTTL = 60 * time.Second

type service struct {
	tokenbrokerv1.UnimplementedTokenBrokerServiceServer
	tokens  TokenSource
	callers Authenticator
	log     *slog.Logger
	metrics *Metrics
	auditor Auditor // nil: no audit trail
	now     func() time.Time
	// stopping is closed when the server begins to shut down: watchers
	// end their streams.
	stopping chan struct{}
}

var cacheStatus = map[broker.Status]tokenbrokerv1.CacheStatus{
	broker.StatusHit:    tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT,
	broker.StatusMiss:   tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS,
	broker.StatusShared: tokenbrokerv1.CacheStatus_CACHE_STATUS_SHARED,
	broker.StatusRemote: tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT, // the replicas' shared cache is the broker's cache
}

// GetAccessToken validates, authorizes, then asks the broker.
func (s *service) GetAccessToken(ctx context.Context, req *tokenbrokerv1.GetAccessTokenRequest) (*tokenbrokerv1.GetAccessTokenResponse, error) {
	id, ok := callerFrom(ctx)
	if !ok { // the auth interceptor guarantees a caller; never serve without one
		return nil, status.Error(codes.Unauthenticated, "missing caller credentials")
	}
	if err := validate(req); err != nil {
		return nil, err
	}
	callFrom(ctx).target = req
	minTTL := minTTLOf(req)
	if err := s.authorize(ctx, id, req, minTTL); err != nil {
		return nil, err
	}
	tok, st, err := s.token(ctx, req, minTTL)
	if err != nil {
		return nil, s.statusOf(ctx, err)
	}
	r := &reply{expiry: timestamppb.Timestamp{Seconds: tok.Expiry.Unix(), Nanos: int32(tok.Expiry.Nanosecond())}}
	r.resp.AccessToken, r.resp.TokenType, r.resp.CacheStatus = tok.AccessToken, tok.TokenType, cacheStatus[st]
	r.resp.ExpireTime = &r.expiry
	return &r.resp, nil
}

// reply is a GetAccessToken response and its expiry, allocated together:
// one allocation per cache hit instead of two. Neither is ever copied.
type reply struct {
	resp   tokenbrokerv1.GetAccessTokenResponse
	expiry timestamppb.Timestamp
}

// minTTLOf is the request's min_ttl, or [DefaultMinTTL].
func minTTLOf(req *tokenbrokerv1.GetAccessTokenRequest) time.Duration {
	if req.GetMinTtl() != nil {
		return req.GetMinTtl().AsDuration()
	}
	return DefaultMinTTL
}

// authorize checks the request against the caller's allowlist. A caller in
// audit mode is served what enforce mode would deny, and the call says so.
func (s *service) authorize(ctx context.Context, id policy.Identity, req *tokenbrokerv1.GetAccessTokenRequest, minTTL time.Duration) error {
	claimKeys := make([]string, 0, len(req.GetCustomClaims()))
	for k := range req.GetCustomClaims() {
		claimKeys = append(claimKeys, k)
	}
	slices.Sort(claimKeys) // so the first refused key is the same every time
	err := id.Allow(policy.Request{
		Tenant:            req.GetTenant(),
		UID:               req.GetUid(),
		ExternalAccountID: req.GetExternalAccountId(),
		Groups:            req.GetGroups(),
		CustomClaimKeys:   claimKeys,
		MinTTL:            minTTL,
	})
	if err == nil {
		return nil
	}
	var denied *policy.DeniedError
	if id.Mode() != policy.Audit || !errors.As(err, &denied) {
		if errors.As(err, &denied) {
			callFrom(ctx).reason = denied.What
		}
		return s.statusOf(ctx, err)
	}
	c := callFrom(ctx)
	c.wouldDeny, c.reason = true, denied.What
	s.metrics.wouldDeny(id.Name())
	return nil
}

// token asks the broker, and notes the result on the call. Its error is
// the broker's, for statusOf.
func (s *service) token(ctx context.Context, req *tokenbrokerv1.GetAccessTokenRequest, minTTL time.Duration) (broker.Token, broker.Status, error) {
	tok, st, err := s.tokens.Token(ctx, broker.Request{
		Tenant:            req.GetTenant(),
		UID:               req.GetUid(),
		ExternalAccountID: req.GetExternalAccountId(),
		Groups:            req.GetGroups(),
		CustomClaims:      req.GetCustomClaims(),
	}, broker.Options{MinTTL: minTTL, RejectedToken: req.GetRejectedToken()})
	if err != nil {
		return broker.Token{}, 0, err
	}
	c := callFrom(ctx)
	c.cache, c.tokenFP = st.String(), tok.Fingerprint()
	return tok, st, nil
}

// accountKind says which kind of account was asked for, without the id.
func accountKind(req auditTarget) string {
	switch {
	case req.GetUid() != "":
		return "uid"
	case req.GetExternalAccountId() != "":
		return "external"
	}
	return "none"
}
