package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// Auditor receives one record per access decision. internal/audit's Sink
// satisfies it.
type Auditor interface {
	Record(ctx context.Context, r audit.Record) error
}

// auditTimeout bounds how long a call waits for room in a full audit queue.
const auditTimeout = 2 * time.Second

// auditTarget is what a record names of the token asked for.
type auditTarget interface {
	GetTenant() string
	GetUid() string
	GetExternalAccountId() string
	GetGroups() []string
}

// record writes the audit record of one decision that ended with err (nil:
// a token was handed out). It returns the status to end the call with when
// the auditor refuses the record (fail-closed mode), else nil.
func record(ctx context.Context, auditor Auditor, log *slog.Logger, r auditTarget, c *call, start time.Time, err error) error {
	if auditor == nil {
		return nil
	}
	rec := audit.Record{
		Time: start, Caller: c.caller, Peer: c.peerOf(ctx), Tenant: r.GetTenant(), UID: r.GetUid(),
		ExternalAccountID: r.GetExternalAccountId(), Groups: r.GetGroups(), Cache: c.cache, TokenFP: c.tokenFP,
		Latency: time.Since(start),
	}
	switch code := status.Code(err); code {
	case codes.OK:
		rec.Decision = audit.Allowed
		if c.wouldDeny {
			rec.Decision, rec.Reason = audit.WouldDeny, c.reason
		}
	case codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted:
		rec.Decision, rec.Reason = audit.Denied, c.reason
		if rec.Reason == "" {
			rec.Reason = status.Convert(err).Message()
		}
	default:
		rec.Decision, rec.Reason = audit.Error, code.String()
	}
	// A caller that hangs up must not cost the trail its record.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if aerr := auditor.Record(actx, rec); aerr != nil {
		log.ErrorContext(ctx, "audit record refused: failing closed", "error", aerr)
		return status.Error(codes.Unavailable, "the audit trail is unavailable, and the broker hands out no token it cannot record; retry later")
	}
	return nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
