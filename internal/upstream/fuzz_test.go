package upstream_test

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/upstream"
)

func base64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// FuzzParseTokenResponse feeds arbitrary upstream bodies to the parser: it
// must never panic, and a token it accepts must be usable.
func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"a","expires_in":"3600"}`))
	f.Add([]byte(`{"token":"t","expires_in":1.5e3}`))
	f.Add([]byte(`{"access_token":"` + unsignedJWT(`{"exp":1900000000}`) + `"}`))
	f.Add([]byte(`{"access_token":"a.b.c"}`))
	f.Add([]byte(`[]`))
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := upstream.ParseTokenResponse(body, now)
		if err != nil {
			return
		}
		if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
			t.Fatalf("accepted an unusable token: %+v", tok)
		}
	})
}
