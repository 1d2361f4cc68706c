package server

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// The request limits as README's API section and the proto document them,
// written out here rather than taken from validate.go, so that the code and
// the documentation cannot drift apart unnoticed.
const (
	docTenantMax       = 128
	docAccountMax      = 128
	docGroupsMax       = 32
	docGroupMax        = 256
	docClaimsMax       = 16
	docClaimKeyMax     = 64
	docClaimValueMax   = 256
	docMinTTLMax       = 55 * time.Minute
	docRejectedMax     = 16 << 10
	maxDurationSeconds = 315576000000 // google.protobuf.Duration's range, ±10000 years
)

// docDescriptions is every description a violation may carry: each states a
// rule, none repeats a value sent (validate's promise).
var docDescriptions = []string{
	"required",
	fmt.Sprintf("must be 1-%d characters of [A-Za-z0-9._-]", docTenantMax),
	fmt.Sprintf("must be 1-%d printable ASCII characters without spaces", docAccountMax),
	"give uid or external_account_id, not both",
	"at least one group is required",
	fmt.Sprintf("at most %d groups", docGroupsMax),
	fmt.Sprintf("must be 1-%d printable ASCII characters without spaces or commas", docGroupMax),
	fmt.Sprintf("at most %d entries", docClaimsMax),
	fmt.Sprintf("keys must be 1-%d characters of [A-Za-z0-9_]", docClaimKeyMax),
	fmt.Sprintf("value must be at most %d bytes", docClaimValueMax),
	fmt.Sprintf("must be between 0 and %s", docMinTTLMax),
	fmt.Sprintf("at most %d bytes", docRejectedMax),
}

// secretMin is the length from which a rejected_token or a custom claim
// value must never appear in a refusal. Shorter strings can occur in the
// fixed text by chance.
const secretMin = 8

// fuzzSep separates the groups, the claim keys and the claim values in the
// fuzzer's strings.
const fuzzSep = "\n"

// FuzzValidateRequest builds GetAccessTokenRequests from fuzzed fields and
// checks validate against the documented limits: it never panics; it accepts
// exactly the requests that respect every limit (an oracle written from the
// documentation); a refusal is INVALID_ARGUMENT whose google.rpc.BadRequest
// names exactly the fields that break a limit, with fixed descriptions, and
// whose message is the first violation; no refusal contains the
// rejected_token or a custom claim value.
//
// Requests that can cross the wire are validated as the server receives
// them, after a protobuf round trip. Those that cannot (invalid UTF-8 in a
// string field: the protobuf runtime refuses them before the handler runs,
// which validate relies on for claim values) are validated as they are,
// with the UTF-8 rule left out of the oracle.
func FuzzValidateRequest(f *testing.F) {
	f.Add("tn-example", "", "", "pismo-v1:accounts:rw", "", "", false, int64(0), int32(0), "")
	f.Add("tn-example", "1234", "", "pismo-v1:accounts:rw\npismo-v1:cards:r", "channel", "web", true, int64(300), int32(0), "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
	f.Fuzz(func(t *testing.T, tenant, uid, ext, groups, claimKeys, claimValues string, setTTL bool, ttlSeconds int64, ttlNanos int32, rejected string) {
		req := &tokenbrokerv1.GetAccessTokenRequest{
			Tenant: tenant, Uid: uid, ExternalAccountId: ext, RejectedToken: rejected,
			Groups: splitFuzz(groups), CustomClaims: pairFuzz(claimKeys, claimValues),
		}
		if setTTL {
			req.MinTtl = &durationpb.Duration{Seconds: ttlSeconds, Nanos: ttlNanos}
		}
		onWire := req
		if wire, err := proto.Marshal(req); err == nil {
			onWire = &tokenbrokerv1.GetAccessTokenRequest{}
			if err := proto.Unmarshal(wire, onWire); err != nil {
				t.Fatalf("a request that marshals does not unmarshal: %v", err)
			}
		}
		want := docViolations(onWire, onWire != req)
		err := validate(onWire)

		if len(want) == 0 {
			if err != nil {
				t.Fatalf("validate refused a request within every documented limit: %v", err)
			}
			return
		}
		if err == nil {
			t.Fatalf("validate accepted a request that breaks %q", want)
		}
		st, ok := status.FromError(err)
		if !ok || st.Code() != codes.InvalidArgument {
			t.Fatalf("refusal %v is not an INVALID_ARGUMENT status", err)
		}
		var br *errdetails.BadRequest
		for _, d := range st.Details() {
			if b, ok := d.(*errdetails.BadRequest); ok && br == nil {
				br = b
			} else {
				t.Fatalf("unexpected status detail %T %v", d, d)
			}
		}
		if br == nil || len(br.GetFieldViolations()) == 0 {
			t.Fatalf("refusal %q carries no google.rpc.BadRequest violations", st.Message())
		}
		v := br.GetFieldViolations()
		if got, want := st.Message(), "invalid request: "+v[0].GetField()+": "+v[0].GetDescription(); got != want {
			t.Fatalf("message %q, want the first violation %q", got, want)
		}
		var fields []string
		for _, fv := range v {
			fields = append(fields, fv.GetField())
			if !slices.Contains(docDescriptions, fv.GetDescription()) {
				t.Fatalf("violation %s: description %q is not one of the fixed rules", fv.GetField(), fv.GetDescription())
			}
		}
		if got := uniqueSorted(fields); !slices.Equal(got, want) {
			t.Fatalf("violations name %q, want %q", got, want)
		}

		// No secret comes back. A claim key may be named (it was checked to
		// be [A-Za-z0-9_] first), so a secret that happens to lie inside a
		// named field or a fixed description is not an echo.
		safe := strings.Join(append(fields, docDescriptions...), "\x00")
		texts := []string{st.Message()}
		for _, fv := range v {
			texts = append(texts, fv.GetField(), fv.GetDescription())
		}
		secrets := map[string]string{"rejected_token": onWire.GetRejectedToken()}
		for k, val := range onWire.GetCustomClaims() {
			secrets["custom_claims value of "+k] = val
		}
		for what, s := range secrets {
			if len(s) < secretMin || strings.Contains(safe, s) {
				continue
			}
			for _, text := range texts {
				if strings.Contains(text, s) {
					t.Fatalf("refusal %q repeats the %s", text, what)
				}
			}
		}
	})
}

// splitFuzz turns a fuzzed string into a list: empty is no entries.
func splitFuzz(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, fuzzSep)
}

// pairFuzz turns fuzzed keys and values into a map, pairing them in order; a
// key without a value gets "", and a repeated key keeps its last value.
func pairFuzz(keys, values string) map[string]string {
	ks, vs := splitFuzz(keys), splitFuzz(values)
	if len(ks) == 0 {
		return nil
	}
	m := make(map[string]string, len(ks))
	for i, k := range ks {
		v := ""
		if i < len(vs) {
			v = vs[i]
		}
		m[k] = v
	}
	return m
}

// docViolations is the oracle: the sorted fields of req that break a
// documented limit, named as validate names them. onWire says req came
// through a protobuf round trip, so its strings are valid UTF-8.
func docViolations(req *tokenbrokerv1.GetAccessTokenRequest, onWire bool) []string {
	var bad []string
	if t := req.GetTenant(); t == "" || len(t) > docTenantMax || !everyByte(t, tenantChar) {
		bad = append(bad, "tenant")
	}
	if u := req.GetUid(); u != "" && (len(u) > docAccountMax || !everyByte(u, visible)) {
		bad = append(bad, "uid")
	}
	e := req.GetExternalAccountId()
	if (e != "" && (len(e) > docAccountMax || !everyByte(e, visible))) || (e != "" && req.GetUid() != "") {
		bad = append(bad, "external_account_id")
	}
	switch g := req.GetGroups(); {
	case len(g) == 0 || len(g) > docGroupsMax:
		bad = append(bad, "groups")
	default:
		for i, s := range g {
			if s == "" || len(s) > docGroupMax || !everyByte(s, func(c byte) bool { return visible(c) && c != ',' }) {
				bad = append(bad, fmt.Sprintf("groups[%d]", i))
			}
		}
	}
	if c := req.GetCustomClaims(); len(c) > docClaimsMax {
		bad = append(bad, "custom_claims")
	} else {
		for k, v := range c {
			switch {
			case k == "" || len(k) > docClaimKeyMax || !everyByte(k, claimKeyChar):
				bad = append(bad, "custom_claims")
			case len(v) > docClaimValueMax || (onWire && !utf8.ValidString(v)):
				bad = append(bad, "custom_claims["+k+"]")
			}
		}
	}
	if d := req.GetMinTtl(); d != nil && !minTTLOK(d.GetSeconds(), d.GetNanos()) {
		bad = append(bad, "min_ttl")
	}
	if len(req.GetRejectedToken()) > docRejectedMax {
		bad = append(bad, "rejected_token")
	}
	return uniqueSorted(bad)
}

// minTTLOK is the documented range, 0 to 55 minutes, of a well-formed
// google.protobuf.Duration, computed without converting to time.Duration.
func minTTLOK(sec int64, nanos int32) bool {
	wellFormed := sec >= -maxDurationSeconds && sec <= maxDurationSeconds &&
		nanos > -1e9 && nanos < 1e9 && !(sec > 0 && nanos < 0) && !(sec < 0 && nanos > 0)
	limit := int64(docMinTTLMax / time.Second)
	return wellFormed && sec >= 0 && nanos >= 0 && (sec < limit || sec == limit && nanos == 0)
}

func everyByte(s string, ok func(byte) bool) bool {
	for i := range len(s) {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func tenantChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-", c) >= 0
}

func claimKeyChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

// visible is printable ASCII other than the space.
func visible(c byte) bool { return '!' <= c && c <= '~' }

func uniqueSorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
