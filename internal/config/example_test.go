package config_test

import (
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/internal/config"
)

// A config with mistakes gets one problem per line, each naming the field
// and its line.
func ExampleParse() {
	_, err := config.Parse([]byte(`
listen:
  grpc: 0.0.0.0:7443
cache:
  skew: 10 seconds
  refresh_ahead: 0.2
tenants:
  - id: tn-example
    upstream:
      kind: pismo_oidc
      token_url: http://sandbox.example/passport/v1/oauth2/token
    issuer: verifier-issuer
    subject: verifier-subject
    audience: verifier-audience
    key_file: keys/tn-example.pem
callers:
  - name: payments-api
    api_key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    allow:
      - tenant: tn-exmaple
        groups: ["pismo-v1:accounts:*"]
`), "testdata")
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Printf("%d problems:\n%v\n", len(ce.Problems), err)
	}
	// Output:
	// 5 problems:
	// listen.grpc: must be a loopback address (127.0.0.1, [::1] or localhost), got host "0.0.0.0": without a tls block gRPC is served in plaintext, which is allowed only on loopback (line 3)
	// cache.skew: invalid duration "10 seconds": unknown unit " seconds", want a Go duration such as "10s" or "1h30m" (line 5)
	// cache.refresh_ahead: unknown field (line 6)
	// tenants[0].upstream.token_url: must be an https URL: http is allowed only on loopback (127.0.0.1, [::1] or localhost) (line 11)
	// callers[0].allow[0].tenant: unknown tenant "tn-exmaple" (line 20)
}
