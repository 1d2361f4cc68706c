package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokenbroker/tokenbroker/broker"
	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/server"
)

func okReq(groups ...string) *tokenbrokerv1.GetAccessTokenRequest {
	if len(groups) == 0 {
		groups = []string{"pismo-v1:accounts:rw"}
	}
	return &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA, Groups: groups}
}

func TestGetAccessTokenEndToEnd(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	req := &tokenbrokerv1.GetAccessTokenRequest{
		Tenant: tenantA, Uid: "account-42", Groups: []string{"pismo-v1:cards:r", "pismo-v1:accounts:rw"},
		CustomClaims: map[string]string{"channel": "app"},
	}
	first, err := h.get(ctx, keyFull, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS || first.GetTokenType() != "Bearer" {
		t.Errorf("first call: status %v type %q, want MISS Bearer", first.GetCacheStatus(), first.GetTokenType())
	}
	if left := time.Until(first.GetExpireTime().AsTime()); left < 59*time.Minute || left > time.Hour {
		t.Errorf("token expires in %s, want about an hour", left)
	}

	// The access token is the emulator's, for this tenant, account and groups.
	parsed, err := jwt.ParseSigned(first.GetAccessToken(), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		TenantID string   `json:"tenant_id"`
		UID      string   `json:"uid"`
		Groups   []string `json:"groups"`
	}
	if err := parsed.Claims(h.emu.PublicKeys(), &claims); err != nil {
		t.Fatalf("access token does not verify with the emulator's key: %v", err)
	}
	if claims.TenantID != tenantA || claims.UID != "account-42" || strings.Join(claims.Groups, ",") != "pismo-v1:accounts:rw,pismo-v1:cards:r" {
		t.Errorf("access token claims = %+v", claims)
	}

	// The assertion the emulator accepted carries exactly the Pismo claim set.
	hdr, sent, ok := h.emu.LastAssertion(tenantA)
	if !ok {
		t.Fatal("the emulator recorded no assertion")
	}
	if hdr["alg"] != "RS256" || hdr["typ"] != "JWT" || hdr["kid"] != tenantKey().ID() {
		t.Errorf("assertion header = %v, want RS256, JWT and the key's kid", hdr)
	}
	var names []string
	for k := range sent {
		names = append(names, k)
	}
	sort.Strings(names)
	if got, want := strings.Join(names, " "), "aud customClaims exp iat iss pismo sub tenant_id uid"; got != want {
		t.Errorf("assertion claims = %s, want %s", got, want)
	}
	if sent["aud"] != "aud-"+tenantA || sent["uid"] != "account-42" ||
		fmt.Sprint(sent["pismo"]) != "map[group:pismo-v1:accounts:rw,pismo-v1:cards:r]" ||
		fmt.Sprint(sent["customClaims"]) != "map[channel:app]" {
		t.Errorf("assertion claims = %v", sent)
	}
	if life := sent["exp"].(float64) - sent["iat"].(float64); life <= 0 || life > 3600 {
		t.Errorf("assertion lifetime = %v s, want within (0, 3600]", life)
	}

	// Asked again, in another group order: served from cache.
	req.Groups = []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r", "pismo-v1:accounts:rw"}
	second, err := h.get(ctx, keyFull, req)
	if err != nil {
		t.Fatal(err)
	}
	if second.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT || second.GetAccessToken() != first.GetAccessToken() {
		t.Errorf("second call: status %v, same token %v; want a HIT of the same token", second.GetCacheStatus(), second.GetAccessToken() == first.GetAccessToken())
	}
	if n := h.emu.Exchanges(); n != 1 {
		t.Errorf("exchanges = %d, want 1", n)
	}
}

func TestConcurrentIdenticalRequestsShareOneExchange(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	const n = 500
	var wg sync.WaitGroup
	var mu sync.Mutex
	tokens := map[string]int{}
	for i := range n {
		groups := []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"}
		if i%2 == 1 { // half ask in the other order
			groups[0], groups[1] = groups[1], groups[0]
		}
		wg.Go(func() {
			resp, err := h.get(ctx, keyFull, okReq(groups...))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			tokens[resp.GetAccessToken()]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if got := h.emu.Exchanges(); got != 1 {
		t.Errorf("exchanges after %d concurrent identical requests = %d, want 1", n, got)
	}
	if len(tokens) != 1 {
		t.Errorf("callers got %d distinct tokens, want 1", len(tokens))
	}

	// A different uid or group set is a different token.
	for _, req := range []*tokenbrokerv1.GetAccessTokenRequest{
		{Tenant: tenantA, Uid: "1", Groups: []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"}},
		{Tenant: tenantA, Uid: "2", Groups: []string{"pismo-v1:accounts:rw", "pismo-v1:cards:r"}},
		{Tenant: tenantA, Groups: []string{"pismo-v1:accounts:rw"}},
	} {
		before := h.emu.Exchanges()
		resp, err := h.get(ctx, keyFull, req)
		if err != nil {
			t.Fatal(err)
		}
		if h.emu.Exchanges() != before+1 || resp.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS {
			t.Errorf("%v: want its own exchange, got status %v", req, resp.GetCacheStatus())
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	long := strings.Repeat("a", 300)
	manyGroups := make([]string, 33)
	for i := range manyGroups {
		manyGroups[i] = fmt.Sprintf("g%d", i)
	}
	manyClaims := map[string]string{}
	for i := range 17 {
		manyClaims[fmt.Sprintf("k%d", i)] = "v"
	}
	base := func(mod func(*tokenbrokerv1.GetAccessTokenRequest)) *tokenbrokerv1.GetAccessTokenRequest {
		r := okReq()
		mod(r)
		return r
	}
	tests := []struct {
		name  string
		req   *tokenbrokerv1.GetAccessTokenRequest
		field string
	}{
		{"no tenant", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Tenant = "" }), "tenant"},
		{"tenant with a slash", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Tenant = "tn/a" }), "tenant"},
		{"tenant too long", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Tenant = long }), "tenant"},
		{"uid with a space", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Uid = "a b" }), "uid"},
		{"uid too long", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Uid = long }), "uid"},
		{"uid not ASCII", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Uid = "conta-ção" }), "uid"},
		{"uid and external id", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Uid = "1"; r.ExternalAccountId = "2" }), "external_account_id"},
		{"external id with a control byte", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.ExternalAccountId = "a\x01" }), "external_account_id"},
		{"no groups", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Groups = nil }), "groups"},
		{"too many groups", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Groups = manyGroups }), "groups"},
		{"empty group", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Groups = []string{"a", ""} }), "groups[1]"},
		{"group with a comma", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Groups = []string{"a,b"} }), "groups[0]"},
		{"group with a space", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Groups = []string{"a b"} }), "groups[0]"},
		{"group too long", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.Groups = []string{long} }), "groups[0]"},
		{"too many claims", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.CustomClaims = manyClaims }), "custom_claims"},
		{"claim key with a dash", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.CustomClaims = map[string]string{"a-b": "v"} }), "custom_claims"},
		{"claim value too long", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.CustomClaims = map[string]string{"k": long} }), "custom_claims[k]"},
		{"negative min_ttl", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.MinTtl = durationpb.New(-time.Second) }), "min_ttl"},
		{"min_ttl over 55 minutes", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.MinTtl = durationpb.New(56 * time.Minute) }), "min_ttl"},
		{"rejected token too long", base(func(r *tokenbrokerv1.GetAccessTokenRequest) { r.RejectedToken = strings.Repeat("x", 16<<10+1) }), "rejected_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.get(context.Background(), keyFull, tt.req)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code = %v (%s), want InvalidArgument", st.Code(), st.Message())
			}
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if len(fields) == 0 || fields[0] != tt.field {
				t.Errorf("field violations = %v, want %q first", fields, tt.field)
			}
		})
	}
	if n := h.emu.Exchanges(); n != 0 {
		t.Errorf("invalid requests caused %d exchanges, want 0", n)
	}
}

// rawCodec sends bytes as they are, to put on the wire what no generated
// client would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

func TestInvalidUTF8IsRefusedBeforeAnyWork(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	var msg []byte
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, tenantA)
	msg = protowire.AppendTag(msg, 3, protowire.BytesType)
	msg = protowire.AppendString(msg, "pismo-v1:cards:r")
	var entry []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, "k")
	entry = protowire.AppendTag(entry, 2, protowire.BytesType)
	entry = protowire.AppendBytes(entry, []byte{0xff, 0xfe})
	msg = protowire.AppendTag(msg, 4, protowire.BytesType)
	msg = protowire.AppendBytes(msg, entry)

	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keyFull)
	var out []byte
	err := h.conn.Invoke(ctx, tokenbrokerv1.TokenBrokerService_GetAccessToken_FullMethodName, &msg, &out, grpc.ForceCodec(rawCodec{}))
	// grpc-go reports a request the protobuf runtime cannot decode as
	// INTERNAL; what matters is that it is refused before any work.
	if st := status.Convert(err); st.Code() == codes.OK || !strings.Contains(st.Message(), "UTF-8") {
		t.Errorf("got %v %q, want a refusal naming UTF-8", st.Code(), st.Message())
	}
	if n := h.emu.Exchanges(); n != 0 {
		t.Errorf("exchanges = %d, want 0", n)
	}
}

func TestUnauthenticated(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for name, key := range map[string]string{"no key": "", "unknown key": "tbk_nobody"} {
		t.Run(name, func(t *testing.T) {
			_, err := h.get(context.Background(), key, okReq())
			if got := status.Code(err); got != codes.Unauthenticated {
				t.Errorf("code = %v, want Unauthenticated", got)
			}
		})
	}
	if !strings.Contains(h.logs.String(), broker.Fingerprint("tbk_nobody")) {
		t.Error("the log does not carry the unknown key's fingerprint")
	}
}

func TestPermissionDenied(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name, key string
		req       *tokenbrokerv1.GetAccessTokenRequest
		want      string
	}{
		{"group outside the allowlist", keyFull, okReq("pismo-v1:cards:rw"), `group "pismo-v1:cards:rw"`},
		{"tenant not granted", keyFull, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantB, Groups: []string{"pismo-v1:cards:r"}}, `tenant "tn-b"`},
		{"unknown tenant looks the same", keyFull, &tokenbrokerv1.GetAccessTokenRequest{Tenant: "tn-none", Groups: []string{"pismo-v1:cards:r"}}, `tenant "tn-none"`},
		{"account token not granted", keyReader, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA, Uid: "7", Groups: []string{"pismo-v1:cards:r"}}, "account tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.get(context.Background(), tt.key, tt.req)
			st := status.Convert(err)
			if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), tt.want) {
				t.Errorf("got %v %q, want PermissionDenied naming %s", st.Code(), st.Message(), tt.want)
			}
		})
	}
	if n := h.emu.Exchanges(); n != 0 {
		t.Errorf("denied requests caused %d exchanges, want 0", n)
	}
}

func TestUpstreamFailures(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		status   int
		wantCode codes.Code
		wantMsg  string
	}{
		{http.StatusServiceUnavailable, codes.Unavailable, "temporarily_unavailable"},
		{http.StatusInternalServerError, codes.Unavailable, "server_error"},
		{http.StatusUnauthorized, codes.FailedPrecondition, "invalid_client"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			h.emu.FailNext(1, tt.status)
			req := okReq()
			req.Uid = fmt.Sprint("acct-", i) // a key of its own
			_, err := h.get(context.Background(), keyFull, req)
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Errorf("got %v %q, want %v mentioning %s", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
		})
	}
	// Outages are not remembered: the next call for that key exchanges and
	// succeeds.
	req := okReq()
	req.Uid = "acct-0"
	if _, err := h.get(context.Background(), keyFull, req); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	// A refusal is, for a few seconds: the same answer, no upstream call.
	before := h.emu.Exchanges() + h.emu.Refusals()
	req.Uid = "acct-2"
	_, err := h.get(context.Background(), keyFull, req)
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "invalid_client") {
		t.Errorf("the refused key again: %v %q, want the remembered refusal", st.Code(), st.Message())
	}
	if after := h.emu.Exchanges() + h.emu.Refusals(); after != before {
		t.Errorf("the remembered refusal cost %d upstream calls, want 0", after-before)
	}
}

func TestUpstreamRefusesABadAssertion(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// Re-register tn-a with a different key: the broker's signature no
	// longer verifies, as when an operator uploaded the wrong public key.
	other, err := keystoreGenerate()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.emu.Register(emulatorTenant(tenantA, other)); err != nil {
		t.Fatal(err)
	}
	_, err = h.get(context.Background(), keyFull, okReq())
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "invalid_client") || !strings.Contains(st.Message(), "HTTP 401") {
		t.Errorf("got %v %q, want FailedPrecondition with invalid_client and HTTP 401", st.Code(), st.Message())
	}
}

func TestCompareAndEvictOverGRPC(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	first, err := h.get(ctx, keyFull, okReq())
	if err != nil {
		t.Fatal(err)
	}
	req := okReq()
	req.RejectedToken = first.GetAccessToken()
	second, err := h.get(ctx, keyFull, req)
	if err != nil {
		t.Fatal(err)
	}
	if second.GetAccessToken() == first.GetAccessToken() || second.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_MISS {
		t.Errorf("rejecting the held token: status %v, new token %v; want a MISS with a new token",
			second.GetCacheStatus(), second.GetAccessToken() != first.GetAccessToken())
	}
	// Rejecting the old one again returns the newer one without an exchange.
	third, err := h.get(ctx, keyFull, req)
	if err != nil {
		t.Fatal(err)
	}
	if third.GetAccessToken() != second.GetAccessToken() || third.GetCacheStatus() != tokenbrokerv1.CacheStatus_CACHE_STATUS_HIT {
		t.Errorf("rejecting a stale token: status %v; want a HIT of the newer token", third.GetCacheStatus())
	}
}

func TestHealthAndReflectionNeedNoKey(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	for _, svc := range []string{"", tokenbrokerv1.TokenBrokerService_ServiceDesc.ServiceName} {
		resp, err := healthpb.NewHealthClient(h.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "tokenbroker.v1.TokenBrokerService") {
		t.Errorf("reflection lists %v, want tokenbroker.v1.TokenBrokerService", names)
	}
	stream.CloseSend()
}

func TestHTTPEndpoints(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	if _, err := h.get(context.Background(), keyFull, okReq()); err != nil {
		t.Fatal(err)
	}
	get := func(path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, h.httpURL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	if resp, body := get("/healthz"); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", resp.StatusCode, body)
	}
	if resp, _ := get("/readyz"); resp.StatusCode != 200 {
		t.Errorf("/readyz = %d, want 200 while serving", resp.StatusCode)
	}

	resp, body := get("/.well-known/jwks.json")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jwk-set+json" || resp.Header.Get("ETag") == "" {
		t.Fatalf("/.well-known/jwks.json = %d %s etag %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("ETag"))
	}
	var set jose.JSONWebKeySet
	if err := jsonUnmarshal(body, &set); err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID != tenantKey().ID() || !set.Keys[0].IsPublic() {
		t.Errorf("JWKS = %s (%v), want the tenant's public key", body, err)
	}
	etag := resp.Header.Get("ETag")
	for _, tc := range []struct {
		path, inm string
		status    int
	}{
		{"/.well-known/jwks.json", etag, http.StatusNotModified},
		{"/.well-known/jwks.json", `W/"other", ` + etag, http.StatusNotModified},
		{"/.well-known/jwks.json", "*", http.StatusNotModified},
		{"/.well-known/jwks.json", `"other"`, http.StatusOK},
		{"/tenants/" + tenantA + "/jwks.json", "", http.StatusOK},
		{"/tenants/" + tenantB + "/jwks.json", etag, http.StatusNotModified}, // the same key: the same set
		{"/tenants/nope/jwks.json", "", http.StatusNotFound},
		{"/tenants//jwks.json", "", http.StatusNotFound},
		{"/tenants/" + tenantA + "/jwks.json/x", "", http.StatusNotFound},
	} {
		var hdr []string
		if tc.inm != "" {
			hdr = []string{"If-None-Match", tc.inm}
		}
		resp, body := get(tc.path, hdr...)
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s (If-None-Match %s) = %d, want %d", tc.path, tc.inm, resp.StatusCode, tc.status)
			continue
		}
		if tc.status == http.StatusNotFound {
			continue
		}
		if got := resp.Header.Get("Cache-Control"); got != "public, max-age=300" || resp.Header.Get("ETag") != etag {
			t.Errorf("GET %s: Cache-Control %q, ETag %q; want public, max-age=300 and %s", tc.path, got, resp.Header.Get("ETag"), etag)
		}
		if tc.status == http.StatusOK {
			var set jose.JSONWebKeySet
			if err := jsonUnmarshal(body, &set); err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID != tenantKey().ID() {
				t.Errorf("GET %s = %s (%v), want the tenant's public key", tc.path, body, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/jwk-set+json" {
				t.Errorf("GET %s: Content-Type %q", tc.path, ct)
			}
		}
	}

	_, metrics := get("/metrics")
	for _, want := range []string{
		`tokenbroker_cache_lookups_total{result="miss"} 1`,
		`tokenbroker_exchanges_total{tenant="tn-a"} 1`,
		`tokenbroker_exchange_duration_seconds_count{tenant="tn-a"} 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="GetAccessToken"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	h.emu.FailNext(1, 503)
	if _, err := h.get(context.Background(), keyFull, okReq("pismo-v1:cards:r")); err == nil {
		t.Fatal("want the injected failure")
	}
	if _, metrics := get("/metrics"); !strings.Contains(metrics, `tokenbroker_exchange_errors_total{reason="unavailable",tenant="tn-a"} 1`) {
		t.Error("/metrics lacks the exchange error by reason")
	}
}

func TestGracefulShutdownLetsInFlightCallsFinish(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	h := newHarness(t, harnessOptions{grace: 10 * time.Second, wrapper: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-release
			next.ServeHTTP(w, r)
		})
	}})
	done := make(chan error, 1)
	go func() {
		_, err := h.get(context.Background(), keyFull, okReq())
		done <- err
	}()
	<-arrived
	h.stop() // SIGTERM, in effect
	// New calls are refused while the in-flight one is still running.
	testkit.WaitFor(t, func() bool {
		resp, err := http.Get(h.httpURL + "/readyz")
		if err != nil {
			return true // the HTTP listener closes once draining starts
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the in-flight call failed during shutdown: %v", err)
	}
	if err := <-h.served; err != nil {
		t.Fatalf("Serve returned %v, want nil", err)
	}
	h.served <- nil // for the harness cleanup
}

func TestShutdownGraceCutsStragglers(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{}, 1)
	h := newHarness(t, harnessOptions{grace: 50 * time.Millisecond, wrapper: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
	}})
	done := make(chan error, 1)
	go func() {
		_, err := h.get(context.Background(), keyFull, okReq())
		done <- err
	}()
	<-arrived
	h.stop()
	if err := <-h.served; err != nil {
		t.Fatalf("Serve returned %v, want nil", err)
	}
	h.served <- nil
	if code := status.Code(<-done); code != codes.Unavailable {
		t.Errorf("straggler got %v, want Unavailable once the grace ran out", code)
	}
}

// panicker is a TokenSource that panics, to prove the recovery interceptor.
type panicker struct{}

func (panicker) Token(context.Context, broker.Request, broker.Options) (broker.Token, broker.Status, error) {
	panic("secret-panic-detail")
}

func TestPanicsBecomeInternalWithoutDetail(t *testing.T) {
	h := newHarness(t, harnessOptions{tokens: panicker{}})
	_, err := h.get(context.Background(), keyFull, okReq())
	st := status.Convert(err)
	if st.Code() != codes.Internal || strings.Contains(st.Message(), "secret-panic-detail") {
		t.Errorf("got %v %q, want Internal without the panic value", st.Code(), st.Message())
	}
	if !strings.Contains(h.logs.String(), "secret-panic-detail") {
		t.Error("the panic is not in the log")
	}
}

// publicAddr makes a listener claim a non-loopback address.
type publicAddr struct{ net.Listener }

func (publicAddr) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 7443} }

func TestPlaintextOnlyOnLoopback(t *testing.T) {
	srv, err := server.New(server.Config{Tokens: panicker{}, Callers: nilCallers{}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	err = srv.Serve(context.Background(), publicAddr{lis}, nil)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("Serve on a public address = %v, want a refusal naming loopback", err)
	}
}

// scrape returns the broker's /metrics text.
func scrape(t *testing.T, h *harness) string {
	t.Helper()
	resp, err := http.Get(h.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// failing is a token source that fails every call with err.
type failing struct{ err error }

func (f failing) Token(context.Context, broker.Request, broker.Options) (broker.Token, broker.Status, error) {
	return broker.Token{}, broker.StatusMiss, f.err
}

// A request the tenant's upstream cannot carry is the caller's to fix:
// INVALID_ARGUMENT, saying what and why.
func TestNotSupportedIsInvalidArgument(t *testing.T) {
	err := fmt.Errorf("%w: tenant %s's upstream issues client tokens only; uid is not supported", broker.ErrNotSupported, tenantA)
	h := newHarness(t, harnessOptions{tokens: failing{err}})
	_, got := h.get(context.Background(), keyFull, okReq())
	st := status.Convert(got)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "uid is not supported") || strings.HasPrefix(st.Message(), "broker:") {
		t.Errorf("got %v %q, want InvalidArgument saying uid is not supported", st.Code(), st.Message())
	}
}

// /readyz lists each upstream's breaker under its verdict, and stays ready
// while one is open.
func TestReadyzListsBreakers(t *testing.T) {
	retryAt := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	h := newHarness(t, harnessOptions{upstreams: func() []server.UpstreamState {
		return []server.UpstreamState{{Name: "zz.example", State: "closed"}, {Name: "idp.example", State: "open", RetryAt: retryAt}}
	}})
	resp, err := http.Get(h.httpURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := "ready\nupstream idp.example: open, next attempt at 2026-11-23T10:00:00Z\nupstream zz.example: closed\n"
	if resp.StatusCode != http.StatusOK || string(body) != want {
		t.Errorf("/readyz = %d %q, want 200 %q", resp.StatusCode, body, want)
	}
}
