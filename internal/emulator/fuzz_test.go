package emulator_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/emulator"
)

// FuzzTokenRequest feeds arbitrary bodies to the token endpoint: it never
// panics, never accepts one (no body the fuzzer makes carries a valid
// signature) and always answers an OAuth error in JSON.
func FuzzTokenRequest(f *testing.F) {
	e, err := emulator.New(emulator.Config{Clock: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	if err := e.Register(testTenantReg(publicJWK(tenantKey(), testKID))); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"token": ""}`))
	f.Add(tokenBody(f, unsigned(f, map[string]any{"alg": "RS256", "typ": "JWT", "kid": testKID}, goodClaims(t0), "c2ln")))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, emulator.TokenPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code < 400 || rec.Code > 499 {
			t.Fatalf("status = %d (%s), want a 4xx refusal", rec.Code, rec.Body)
		}
		if got, want := rec.Header().Get("Content-Type"), "application/json"; got != want {
			t.Fatalf("Content-Type = %q, want %q", got, want)
		}
		var oauth struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &oauth); err != nil || oauth.Error == "" || oauth.Description == "" {
			t.Fatalf("error body %q is not an OAuth error (%v)", rec.Body, err)
		}
		if n := e.Exchanges(); n != 0 {
			t.Fatalf("Exchanges() = %d, want 0", n)
		}
	})
}
