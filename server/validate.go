package server

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// The request limits; the proto's field comments state the same.
const (
	maxTenantLen        = 128
	maxAccountLen       = 128
	maxGroups           = 32
	maxGroupLen         = 256
	maxCustomClaims     = 16
	maxClaimKeyLen      = 64
	maxClaimValueLen    = 256
	maxMinTTL           = 55 * time.Minute
	maxRejectedTokenLen = 16 << 10
)

// validate checks every field of req and reports all violations at once as
// INVALID_ARGUMENT with google.rpc.BadRequest details. Descriptions state the
// rule, never the value sent.
func validate(req *tokenbrokerv1.GetAccessTokenRequest) error {
	var v []*errdetails.BadRequest_FieldViolation
	bad := func(field, format string, args ...any) {
		v = append(v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
	}

	switch t := req.GetTenant(); {
	case t == "":
		bad("tenant", "required")
	case len(t) > maxTenantLen || !allBytes(t, isTenantByte):
		bad("tenant", "must be 1-%d characters of [A-Za-z0-9._-]", maxTenantLen)
	}
	for _, f := range []struct{ name, val string }{{"uid", req.GetUid()}, {"external_account_id", req.GetExternalAccountId()}} {
		if f.val != "" && (len(f.val) > maxAccountLen || !allBytes(f.val, isVisibleASCII)) {
			bad(f.name, "must be 1-%d printable ASCII characters without spaces", maxAccountLen)
		}
	}
	if req.GetUid() != "" && req.GetExternalAccountId() != "" {
		bad("external_account_id", "give uid or external_account_id, not both")
	}

	groups := req.GetGroups()
	switch {
	case len(groups) == 0:
		bad("groups", "at least one group is required")
	case len(groups) > maxGroups:
		bad("groups", "at most %d groups", maxGroups)
	default:
		for i, g := range groups {
			if g == "" || len(g) > maxGroupLen || !allBytes(g, isVisibleASCII) || strings.Contains(g, ",") {
				bad(fmt.Sprintf("groups[%d]", i), "must be 1-%d printable ASCII characters without spaces or commas", maxGroupLen)
			}
		}
	}

	claims := req.GetCustomClaims()
	if len(claims) > maxCustomClaims {
		bad("custom_claims", "at most %d entries", maxCustomClaims)
	} else {
		for k, val := range claims {
			if k == "" || len(k) > maxClaimKeyLen || !allBytes(k, isClaimKeyByte) {
				// The key is named only when it is safe to repeat.
				bad("custom_claims", "keys must be 1-%d characters of [A-Za-z0-9_]", maxClaimKeyLen)
				continue
			}
			// UTF-8 is enforced by the protobuf runtime before we see the request.
			if len(val) > maxClaimValueLen {
				bad("custom_claims["+k+"]", "value must be at most %d bytes", maxClaimValueLen)
			}
		}
	}

	if d := req.GetMinTtl(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > maxMinTTL {
			bad("min_ttl", "must be between 0 and %s", maxMinTTL)
		}
	}
	if len(req.GetRejectedToken()) > maxRejectedTokenLen {
		bad("rejected_token", "at most %d bytes", maxRejectedTokenLen)
	}

	if len(v) == 0 {
		return nil
	}
	st, err := status.New(codes.InvalidArgument, fmt.Sprintf("invalid request: %s: %s", v[0].Field, v[0].Description)).
		WithDetails(&errdetails.BadRequest{FieldViolations: v})
	if err != nil { // only if the details cannot be marshalled
		return status.Error(codes.InvalidArgument, "invalid request")
	}
	return st.Err()
}

func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isTenantByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func isClaimKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// isVisibleASCII is printable ASCII without the space.
func isVisibleASCII(c byte) bool { return c > ' ' && c < 0x7f }
