package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
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
	log     *slog.Logger
	metrics *Metrics
}

var cacheStatus = map[broker.Status]tokenbrokerv1.CacheStatus{
	broker.StatusHit:    tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT,
	broker.StatusMiss:   tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS,
	broker.StatusShared: tokenbrokerv1.CacheStatus_CACHE_STATUS_SHARED,
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
	logging.AddFields(ctx, logging.Fields{"tenant", req.GetTenant(), "groups", req.GetGroups(), "account", accountKind(req)})
	minTTL := DefaultMinTTL
	if req.GetMinTtl() != nil {
		minTTL = req.GetMinTtl().AsDuration()
	}
	claimKeys := make([]string, 0, len(req.GetCustomClaims()))
	for k := range req.GetCustomClaims() {
		claimKeys = append(claimKeys, k)
	}
	slices.Sort(claimKeys) // so the first refused key is the same every time
	if err := id.Allow(policy.Request{
		Tenant:            req.GetTenant(),
		UID:               req.GetUid(),
		ExternalAccountID: req.GetExternalAccountId(),
		Groups:            req.GetGroups(),
		CustomClaimKeys:   claimKeys,
		MinTTL:            minTTL,
	}); err != nil {
		var denied *policy.DeniedError
		if id.Mode() != policy.Audit || !errors.As(err, &denied) {
			if errors.As(err, &denied) {
				callFrom(ctx).reason = denied.What
			}
			return nil, s.statusOf(ctx, err)
		}
		// Audit mode: serve what enforce mode would deny, and say so.
		c := callFrom(ctx)
		c.wouldDeny, c.reason = true, denied.What
		s.metrics.wouldDeny(id.Name())
		logging.AddFields(ctx, logging.Fields{"would_deny", denied.What})
	}
	tok, st, err := s.tokens.Token(ctx, broker.Request{
		Tenant:            req.GetTenant(),
		UID:               req.GetUid(),
		ExternalAccountID: req.GetExternalAccountId(),
		Groups:            req.GetGroups(),
		CustomClaims:      req.GetCustomClaims(),
	}, broker.Options{MinTTL: minTTL, RejectedToken: req.GetRejectedToken()})
	if err != nil {
		return nil, s.statusOf(ctx, err)
	}
	fp := broker.Fingerprint(tok.AccessToken)
	c := callFrom(ctx)
	c.cache, c.tokenFP = st.String(), fp
	logging.AddFields(ctx, logging.Fields{"cache", st.String(), "token_fp", fp})
	return &tokenbrokerv1.GetAccessTokenResponse{
		AccessToken: tok.AccessToken,
		TokenType:   tok.TokenType,
		ExpireTime:  timestamppb.New(tok.Expiry),
		CacheStatus: cacheStatus[st],
	}, nil
}

// accountKind says which kind of account was asked for, without the id.
func accountKind(req *tokenbrokerv1.GetAccessTokenRequest) string {
	switch {
	case req.GetUid() != "":
		return "uid"
	case req.GetExternalAccountId() != "":
		return "external"
	}
	return "none"
}
