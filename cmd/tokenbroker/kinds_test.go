package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/testkit"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// The standard kinds and Pismo's client-credentials endpoint, through the
// whole broker: config, secrets from a file and the environment, a Google
// service-account key whose client_email is the default client id, the
// exchange and the answer. The upstream records what each tenant sent.
func TestStandardKindsThroughTheBroker(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	sent := map[string]url.Values{} // by client id, or assertion iss for jwt_bearer
	var basic [2]string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		who := r.PostForm.Get("client_id")
		if u, p, ok := r.BasicAuth(); ok {
			who, _ = url.QueryUnescape(u) // RFC 6749 §2.3.1
			mu.Lock()
			basic = [2]string{u, p}
			mu.Unlock()
		}
		if a := r.PostForm.Get("assertion"); a != "" {
			tok, err := jwt.ParseSigned(a, []jose.SignatureAlgorithm{jose.RS256})
			var c jwt.Claims
			if err != nil || tok.UnsafeClaimsWithoutVerification(&c) != nil {
				http.Error(w, `{"error":"invalid_grant"}`, 400)
				return
			}
			who = c.Issuer
		}
		mu.Lock()
		sent[who] = r.PostForm
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%s","token_type":"Bearer","expires_in":3600}`, who)
	}))
	t.Cleanup(upstream.Close)

	writeFile := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	saKey, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := json.Marshal(map[string]string{"type": "service_account", "private_key_id": "sa-kid-1",
		"private_key": string(saKey.PrivatePEM()), "client_email": "broker@proj.iam.gserviceaccount.com"})
	saFile := writeFile("sa.json", string(sa))
	pismoSecret := writeFile("pismo.secret", "pismo-s3cret\n")
	t.Setenv("TB_BASIC_SECRET", "basic:s3cret%")

	const callerKey = "tbk_kinds-test-caller"
	cfgPath := writeFile("broker.yaml", fmt.Sprintf(`listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
tenants:
  - {id: pa, upstream: {kind: pismo_oauth2, token_url: %[1]q, client_id: pismo-client, client_secret_file: %[2]s}}
  - {id: cb, upstream: {kind: client_secret_basic, token_url: %[1]q, client_id: "basic:client", client_secret_env: TB_BASIC_SECRET}}
  - {id: jb, upstream: {kind: jwt_bearer, token_url: %[1]q}, key_file: %[3]s}
callers:
  - name: svc
    api_key_sha256: %[4]s
    allow:
      - {tenant: pa, groups: ["pismo-v1:*"], account_tokens: true}
      - {tenant: cb, groups: ["*"]}
      - {tenant: jb, groups: ["*"], account_tokens: true}
`, upstream.URL+"/token", pismoSecret, saFile, hashKey(callerKey)))

	cfg, keys, err := loadAll(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	a, err := newApp(cfgPath, cfg, keys, logging{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, lis, nil, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := tokenbrokerv1.NewTokenBrokerServiceClient(conn)
	get := func(req *tokenbrokerv1.GetAccessTokenRequest) string {
		t.Helper()
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+callerKey)
		resp, err := client.GetAccessToken(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", req.GetTenant(), err)
		}
		return resp.GetAccessToken()
	}

	if got := get(&tokenbrokerv1.GetAccessTokenRequest{Tenant: "pa", Uid: "acct-7", Groups: []string{"pismo-v1:b:r", "pismo-v1:a:r"}}); got != "at-pismo-client" {
		t.Errorf("pa token %q", got)
	}
	if got := get(&tokenbrokerv1.GetAccessTokenRequest{Tenant: "cb", Groups: []string{"read"}}); got != "at-basic:client" {
		t.Errorf("cb token %q", got)
	}
	if got := get(&tokenbrokerv1.GetAccessTokenRequest{Tenant: "jb", Uid: "admin@corp.example", Groups: []string{"https://www.googleapis.com/auth/cloud-platform"}}); got != "at-broker@proj.iam.gserviceaccount.com" {
		t.Errorf("jb token %q", got)
	}

	mu.Lock()
	defer mu.Unlock()
	want := map[string]map[string]string{
		"pismo-client": {"grant_type": "client_credentials", "client_id": "pismo-client", "client_secret": "pismo-s3cret",
			"scope": "pismo-v1:a:r pismo-v1:b:r", "uid": "acct-7"},
		"basic:client": {"grant_type": "client_credentials", "scope": "read"},
		"broker@proj.iam.gserviceaccount.com": {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
			"scope": "https://www.googleapis.com/auth/cloud-platform"},
	}
	for who, fields := range want {
		form := sent[who]
		for k, v := range fields {
			if got := form.Get(k); got != v {
				t.Errorf("%s sent %s=%q, want %q", who, k, got, v)
			}
		}
	}
	if got := sent["basic:client"].Get("client_secret"); got != "" {
		t.Errorf("client_secret_basic put the secret in the form")
	}
	if basic != [2]string{url.QueryEscape("basic:client"), url.QueryEscape("basic:s3cret%")} {
		t.Errorf("Basic credentials %q, want each form-encoded", basic)
	}
	for _, secret := range []string{"pismo-s3cret", "basic:s3cret%", "at-"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds %q:\n%s", secret, logs)
		}
	}
}

// Secrets and defaults the standard kinds need, checked at start.
func TestCheckConfigStandardKinds(t *testing.T) {
	dir := t.TempDir()
	key, err := keystore.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "k.pem")
	if err := keystore.WriteFileExclusive(keyFile, key.PrivatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	secretOpen := filepath.Join(dir, "open.secret")
	if err := os.WriteFile(secretOpen, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(tenant string) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "broker.yaml")
		doc := fmt.Sprintf("tenants:\n  - %s\ncallers:\n  - {name: c, api_key_sha256: %s, allow: [{tenant: t, groups: [a]}]}\n", tenant, hashKey("k"))
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("TB_EMPTY_SECRET", "")
	checkConfigFails(t, write(`{id: t, upstream: {kind: client_secret_post, token_url: "https://idp.example/t", client_id: c, client_secret_file: `+secretOpen+`}}`),
		"tenants[0].upstream.client_secret_file", "group or others")
	checkConfigFails(t, write(`{id: t, upstream: {kind: client_secret_post, token_url: "https://idp.example/t", client_id: c, client_secret_env: TB_EMPTY_SECRET}}`),
		"tenants[0].upstream.client_secret_env", "TB_EMPTY_SECRET is not set")
	checkConfigFails(t, write(`{id: t, upstream: {kind: jwt_bearer, token_url: "https://idp.example/t"}, key_file: `+keyFile+`}`),
		"tenants[0].upstream.client_id", "not a Google service-account key")
	checkConfigOK(t, write(`{id: t, upstream: {kind: jwt_bearer, token_url: "https://idp.example/t", client_id: svc@example}, key_file: `+keyFile+`}`))
	checkConfigOK(t, write(`{id: t, upstream: {kind: private_key_jwt, issuer: "https://idp.example", client_id: c}, key_file: `+keyFile+`, alg: PS256}`))
}
