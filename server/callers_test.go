package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

const keyBoth = "tbk_key-and-certificate-caller"

func mtlsCallers() []policy.Caller {
	grant := []policy.Grant{{Tenant: tenantA, Groups: []string{"pismo-v1:cards:r"}}}
	return []policy.Caller{
		{Name: "payments", TLSIdentity: "spiffe://corp/payments-api", Allow: grant},
		{Name: "batch", TLSIdentity: "batch-job", Allow: grant},
		{Name: "both", TLSIdentity: "spiffe://corp/both", APIKeySHA256: sha256.Sum256([]byte(keyBoth)), HasAPIKey: true, Allow: grant},
		{Name: "full", APIKeySHA256: sha256.Sum256([]byte(keyFull)), HasAPIKey: true, Allow: grant},
	}
}

func TestMutualTLS(t *testing.T) {
	pki := newPKI(t)
	other := newPKI(t) // another CA, unknown to the broker
	h := newHarness(t, harnessOptions{pki: pki, callers: mtlsCallers()})
	spiffe := pki.issue(certSpec{cn: "ignored-when-a-uri-is-present", uri: "spiffe://corp/payments-api"})
	tests := []struct {
		name       string
		cert       *tls.Certificate
		key        string
		wantCode   codes.Code
		wantReason string // in the log, never in the reply
	}{
		{"SPIFFE ID in the URI SAN", &spiffe, "", codes.OK, ""},
		{"CN when there is no URI SAN", ptr(pki.issue(certSpec{cn: "batch-job"})), "", codes.OK, ""},
		{"key and matching certificate", ptr(pki.issue(certSpec{uri: "spiffe://corp/both"})), keyBoth, codes.OK, ""},
		{"key-only caller over TLS", nil, keyFull, codes.OK, ""},
		{"key-only caller with another caller's certificate", &spiffe, keyFull, codes.Unauthenticated, "credential"},
		{"key-only caller with a certificate no caller has", ptr(pki.issue(certSpec{uri: "spiffe://corp/sidecar"})), keyFull, codes.OK, ""},
		{"certificate from another CA", ptr(other.issue(certSpec{uri: "spiffe://corp/payments-api"})), "", codes.Unauthenticated, "unknown authority"},
		{"expired certificate", ptr(pki.issue(certSpec{uri: "spiffe://corp/payments-api", notAfter: time.Now().Add(-time.Minute)})), "", codes.Unauthenticated, "expired"},
		{"identity unknown to the config", ptr(pki.issue(certSpec{uri: "spiffe://corp/stranger"})), "", codes.Unauthenticated, "identity"},
		{"no certificate and no key", nil, "", codes.Unauthenticated, "credentials"},
		{"key without the certificate its caller needs", nil, keyBoth, codes.Unauthenticated, "mismatch"},
		{"key with another caller's certificate", &spiffe, keyBoth, codes.Unauthenticated, "mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(pki.clientCreds(tt.cert)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := context.Background()
			if tt.key != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tt.key)
			}
			before := h.logs.String()
			resp, err := tokenbrokerv1.NewTokenBrokerServiceClient(conn).GetAccessToken(ctx, okReq("pismo-v1:cards:r"))
			if err == nil {
				h.remember(resp.GetAccessToken())
			}
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Fatalf("code = %v (%s), want %v", st.Code(), st.Message(), tt.wantCode)
			}
			if tt.wantReason == "" {
				return
			}
			if strings.Contains(st.Message(), tt.wantReason) {
				t.Errorf("the reply %q carries the reason", st.Message())
			}
			if logged := strings.TrimPrefix(h.logs.String(), before); !strings.Contains(strings.ToLower(logged), tt.wantReason) {
				t.Errorf("the log lacks the reason %q:\n%s", tt.wantReason, logged)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestRateLimitPerCaller(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC) // a stopped clock: no refill during the test
	callers := defaultCallers()
	callers[1].RateLimit = &policy.RateLimit{Rate: 1, Burst: 3} // reader
	h := newHarness(t, harnessOptions{callers: callers, clock: func() time.Time { return now }})
	ctx := context.Background()
	for i := range 3 {
		if _, err := h.get(ctx, keyReader, okReq("pismo-v1:cards:r")); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	_, err := h.get(ctx, keyReader, okReq("pismo-v1:cards:r"))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("beyond the burst: %v %q, want ResourceExhausted", st.Code(), st.Message())
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > time.Second+10*time.Millisecond {
		t.Errorf("RetryInfo = %v, want a delay of at most about a second", retry)
	}
	// Another caller is unaffected.
	for i := range 20 {
		if _, err := h.get(ctx, keyFull, okReq()); err != nil {
			t.Fatalf("other caller, call %d: %v", i, err)
		}
	}
}

func TestAuditModeServesWhatItWouldDeny(t *testing.T) {
	sink, path := openSink(t)
	callers := defaultCallers()
	callers[1].Mode = policy.Audit // reader
	h := newHarness(t, harnessOptions{callers: callers, auditor: sink})
	resp, err := h.get(context.Background(), keyReader, okReq("pismo-v1:accounts:rw"))
	if err != nil {
		t.Fatalf("audit mode refused a call: %v", err)
	}
	if resp.GetAccessToken() == "" {
		t.Fatal("no token")
	}
	sink.Close()
	recs := readTrail(t, path)
	if len(recs) != 1 || recs[0]["decision"] != "would_deny" || !strings.Contains(recs[0]["reason"].(string), "pismo-v1:accounts:rw") {
		t.Errorf("audit records = %v, want one would_deny naming the group", recs)
	}
	if m := scrape(t, h); !strings.Contains(m, `tokenbroker_would_deny_total{caller="reader"} 1`) {
		t.Error("would_deny is not counted")
	}
}

// TestAuditTrailRecordsEveryDecision makes one call of each outcome and
// finds each once in the trail, with no token in it.
func TestAuditTrailRecordsEveryDecision(t *testing.T) {
	sink, path := openSink(t)
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	callers := defaultCallers()
	callers[1].RateLimit = &policy.RateLimit{Rate: 1, Burst: 1}
	h := newHarness(t, harnessOptions{callers: callers, auditor: sink, clock: func() time.Time { return now }})
	ctx := context.Background()
	calls := []struct {
		key      string
		req      *tokenbrokerv1.GetAccessTokenRequest
		decision string
		reason   string
	}{
		{keyFull, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA, Uid: "77", Groups: []string{"pismo-v1:accounts:rw"}}, "allowed", ""},
		{keyFull, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA, Uid: "77", Groups: []string{"pismo-v1:accounts:rw"}}, "allowed", ""},
		{keyFull, okReq("pismo-v1:cards:rw"), "denied", "pismo-v1:cards:rw"},
		{"tbk_nobody", okReq(), "denied", "unauthenticated"},
		{keyReader, okReq("pismo-v1:cards:r"), "allowed", ""},
		{keyReader, okReq("pismo-v1:cards:r"), "denied", "rate limited"},
		{keyFull, &tokenbrokerv1.GetAccessTokenRequest{Tenant: tenantA}, "error", "InvalidArgument"},
	}
	for _, c := range calls {
		h.get(ctx, c.key, c.req)
	}
	h.emu.FailNext(1, 503)
	h.get(ctx, keyFull, okReq("pismo-v1:accounts:r"))
	sink.Close()

	recs := readTrail(t, path)
	if len(recs) != len(calls)+1 {
		t.Fatalf("%d audit records for %d calls", len(recs), len(calls)+1)
	}
	for i, c := range calls {
		r := recs[i]
		if r["decision"] != c.decision || !strings.Contains(str(r["reason"]), c.reason) {
			t.Errorf("record %d: decision %v reason %q, want %s naming %q", i, r["decision"], r["reason"], c.decision, c.reason)
		}
	}
	if recs[0]["cache"] != "miss" || recs[1]["cache"] != "hit" || recs[0]["token_fp"] == nil || recs[0]["uid"] != "77" || recs[0]["caller"] != "full" {
		t.Errorf("first records = %v / %v, want caller, uid, a miss then a hit with a token fingerprint", recs[0], recs[1])
	}
	if last := recs[len(recs)-1]; last["decision"] != "error" || last["reason"] != "Unavailable" {
		t.Errorf("upstream failure record = %v, want error Unavailable", last)
	}
	trail, _ := os.ReadFile(path)
	h.mu.Lock()
	for _, s := range h.secrets {
		if strings.Contains(string(trail), s) {
			t.Errorf("the audit trail contains a token or assertion")
		}
	}
	h.mu.Unlock()
	f, _ := os.Open(path)
	defer f.Close()
	if n, err := audit.Verify(f); err != nil || n != len(recs) {
		t.Errorf("Verify = %d, %v; want %d good lines", n, err, len(recs))
	}
}

func openSink(t *testing.T) (*audit.Sink, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	sink, err := audit.Open(audit.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sink.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return sink, path
}

func readTrail(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func str(v any) string { s, _ := v.(string); return s }
