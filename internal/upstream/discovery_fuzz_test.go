package upstream

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzParseDiscovery feeds arbitrary documents to the discovery parser: it
// must never panic, its errors must stay short and printable, and a document
// it accepts must really name the issuer, a usable token endpoint and the
// method. Seeds are in testdata/fuzz/FuzzParseDiscovery.
func FuzzParseDiscovery(f *testing.F) {
	const issuer = "https://idp.example/realms/tn-1"
	methods := []string{"", KindPrivateKeyJWT, KindClientSecretPost, KindClientSecretBasic}
	f.Add([]byte(`{"issuer":"https://idp.example/realms/tn-1","token_endpoint":"https://idp.example/token"}`), uint8(3))
	f.Add([]byte(`{"issuer":"https://idp.example/realms/tn-1","token_endpoint":"http://127.0.0.1:8080/t","token_endpoint_auth_methods_supported":["private_key_jwt"]}`), uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, m uint8) {
		method := methods[int(m)%len(methods)]
		u, err := parseDiscovery(body, issuer, method)
		if err != nil {
			if u != nil {
				t.Fatalf("returned both %v and %v", u, err)
			}
			msg := err.Error()
			if len(msg) > 1024 || !utf8.ValidString(msg) {
				t.Fatalf("error too long or not UTF-8: %q", msg)
			}
			for _, r := range msg {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("error has a control character: %q", msg)
				}
			}
			return
		}
		if p := urlProblem(u); p != "" {
			t.Fatalf("accepted a token endpoint that %s: %v", p, u)
		}
		// An independent reading, with exact keys as the specification
		// wants (encoding/json's struct decoding would match "ISSUER").
		var doc map[string]any
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("accepted a document encoding/json refuses: %v", err)
		}
		if doc["issuer"] != issuer {
			t.Fatalf("accepted issuer %v", doc["issuer"])
		}
		te, _ := doc["token_endpoint"].(string)
		if want, err := url.Parse(te); err != nil || want.String() != u.String() {
			t.Fatalf("token endpoint %v, the document says %q", u, te)
		}
		list, listed := doc["token_endpoint_auth_methods_supported"].([]any)
		switch {
		case method == "":
		case !listed:
			if method != KindClientSecretBasic {
				t.Fatalf("accepted %s without a methods list", method)
			}
		case !slices.Contains(list, any(method)):
			t.Fatalf("accepted %s, not in %v", method, list)
		}
	})
}
