package emulator

import (
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// refusal is a token request the emulator turns down, as an OAuth error. Its
// description names a claim or a reason, never a value the client sent.
type refusal struct {
	status      int
	code        string
	description string
}

// invalidRequest refuses a request that is not a well-formed token request.
func invalidRequest(description string) *refusal {
	return &refusal{http.StatusBadRequest, "invalid_request", description}
}

// invalidClient refuses an assertion whose signer is not who it claims.
func invalidClient(description string) *refusal {
	return &refusal{http.StatusUnauthorized, "invalid_client", description}
}

// invalidGrant refuses an authentic assertion whose claims do not hold.
func invalidGrant(description string) *refusal {
	return &refusal{http.StatusBadRequest, "invalid_grant", description}
}

// assertion is what the emulator keeps of an accepted assertion.
type assertion struct {
	tenant            string
	uid               string
	externalAccountID string
	groups            []string
	customClaims      map[string]string // nil when absent
	rawHeader         []byte
	rawClaims         []byte
}

// check reads a token request and checks its assertion.
func (e *Emulator) check(w http.ResponseWriter, r *http.Request, now time.Time) (*assertion, *refusal) {
	if !isJSONContentType(r.Header.Get("Content-Type")) {
		return nil, invalidRequest("Content-Type must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, &refusal{http.StatusRequestEntityTooLarge, "invalid_request", "the request body exceeds 65536 bytes"}
		}
		return nil, invalidRequest("cannot read the request body")
	}
	token, ref := parseBody(body)
	if ref != nil {
		return nil, ref
	}
	return e.checkAssertion(token, now)
}

// isJSONContentType reports whether a Content-Type is application/json, in
// UTF-8 if it names a charset.
func isJSONContentType(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return false
	}
	return true
}

// parseBody returns the token of a body that is exactly {"token": "<non-empty string>"}.
func parseBody(body []byte) (string, *refusal) {
	obj, err := decodeObject(body)
	if err != nil {
		return "", invalidRequest("the body must be one JSON object")
	}
	raw, ok := obj["token"]
	if !ok {
		return "", invalidRequest("the body has no token")
	}
	if len(obj) != 1 {
		return "", invalidRequest("the body must hold token only")
	}
	token, ok := jsonString(raw)
	if !ok {
		return "", invalidRequest("token must be a string")
	}
	if token == "" {
		return "", invalidRequest("token is empty")
	}
	return token, nil
}

// checkAssertion checks the assertion's form, signature and claims. The
// header's alg must be RS256; typ may be absent (Pismo's own samples set
// none) but if present must be JWT; kid must name one of the tenant's keys,
// or may be absent when the tenant has exactly one. A header or claim set
// with a repeated member name is refused, so what is checked is what a
// last-wins JSON parser upstream would read.
func (e *Emulator) checkAssertion(token string, now time.Time) (*assertion, *refusal) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, invalidRequest("token is not a JWS in compact serialization")
	}
	rawHeader, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, invalidRequest("the JWT header is not base64url")
	}
	header, err := decodeObject(rawHeader)
	if err != nil {
		return nil, invalidRequest("the JWT header is not one JSON object")
	}
	alg, ok := jsonString(header["alg"])
	if !ok {
		return nil, invalidRequest("the JWT header has no alg")
	}
	if alg != string(jose.RS256) {
		return nil, invalidClient("alg is not allowed; only RS256 is accepted")
	}
	if raw, ok := header["typ"]; ok {
		if typ, ok := jsonString(raw); !ok || !strings.EqualFold(typ, "JWT") {
			return nil, invalidRequest("typ must be JWT")
		}
	}
	if _, ok := header["crit"]; ok {
		return nil, invalidRequest("crit is not supported")
	}
	kid, hasKid := "", false
	if raw, ok := header["kid"]; ok {
		if kid, hasKid = jsonString(raw); !hasKid {
			return nil, invalidRequest("kid must be a string")
		}
	}
	jws, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, invalidRequest("token is not a valid JWS")
	}
	// These are the bytes go-jose verifies: it decodes the same segment.
	rawClaims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, invalidRequest("the JWT claims are not base64url")
	}
	claims, err := decodeObject(rawClaims)
	if err != nil {
		return nil, invalidRequest("the JWT claims are not one JSON object")
	}

	// The unverified tenant_id names the keys to verify with.
	rawTenant, ok := claims["tenant_id"]
	if !ok {
		return nil, invalidGrant("claim tenant_id is missing")
	}
	tenantID, ok := jsonString(rawTenant)
	if !ok {
		return nil, invalidGrant("claim tenant_id must be a string")
	}
	reg := e.lookup(tenantID)
	if reg == nil {
		return nil, invalidClient("unknown tenant")
	}
	var key *rsa.PublicKey
	if hasKid {
		if key = reg.keys[kid]; key == nil {
			return nil, invalidClient("kid names none of the tenant's keys")
		}
	} else if key = reg.only; key == nil {
		return nil, invalidClient("kid is required: the tenant has several keys")
	}
	if err := jws.Claims(key); err != nil {
		return nil, invalidClient("the signature does not verify with the tenant's key")
	}

	a, ref := checkClaims(reg, claims, now)
	if ref != nil {
		return nil, ref
	}
	a.rawHeader, a.rawClaims = rawHeader, rawClaims
	return a, nil
}

// checkClaims checks every claim of Pismo's claim table, and its JSON type,
// against a tenant's registration. Claims it does not know are accepted.
func checkClaims(reg *registration, c map[string]json.RawMessage, now time.Time) (*assertion, *refusal) {
	for _, f := range []struct{ name, want string }{
		{"iss", reg.tenant.Issuer},
		{"sub", reg.tenant.Subject},
		{"aud", reg.tenant.Audience},
		{"tenant_id", reg.tenant.ID},
	} {
		raw, ok := c[f.name]
		if !ok {
			return nil, invalidGrant("claim " + f.name + " is missing")
		}
		got, ok := jsonString(raw)
		if !ok {
			if f.name == "aud" && jsonKind(raw) == '[' {
				return nil, invalidGrant("claim aud must be a single string, not an array")
			}
			return nil, invalidGrant("claim " + f.name + " must be a string")
		}
		if got != f.want {
			return nil, invalidClient("claim " + f.name + " does not match the tenant's registration")
		}
	}
	iat, ref := numericDate(c, "iat")
	if ref != nil {
		return nil, ref
	}
	exp, ref := numericDate(c, "exp")
	if ref != nil {
		return nil, ref
	}

	a := &assertion{tenant: reg.tenant.ID}
	if a.groups, ref = groups(c); ref != nil {
		return nil, ref
	}
	if a.uid, ref = optionalString(c, "uid"); ref != nil {
		return nil, ref
	}
	if a.externalAccountID, ref = optionalString(c, "external_account_id"); ref != nil {
		return nil, ref
	}
	if a.uid != "" && a.externalAccountID != "" {
		return nil, invalidGrant("claims uid and external_account_id exclude each other")
	}
	if a.customClaims, ref = customClaims(c); ref != nil {
		return nil, ref
	}

	nowSec := float64(now.Unix()) + float64(now.Nanosecond())/1e9
	switch {
	case exp <= nowSec:
		return nil, invalidGrant("the assertion has expired (exp)")
	case exp <= iat:
		return nil, invalidGrant("exp must be after iat")
	case exp-iat > maxAssertionLifetime.Seconds():
		return nil, invalidGrant("exp − iat exceeds 3600 seconds")
	case iat > nowSec+maxIssuedAtSkew.Seconds():
		return nil, invalidGrant("iat is in the future")
	}
	return a, nil
}

// numericDate returns a required claim that must be a JSON number.
func numericDate(c map[string]json.RawMessage, name string) (float64, *refusal) {
	raw, ok := c[name]
	if !ok {
		return 0, invalidGrant("claim " + name + " is missing")
	}
	if k := jsonKind(raw); k != '-' && (k < '0' || k > '9') {
		return 0, invalidGrant("claim " + name + " must be a number")
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, invalidGrant("claim " + name + " is out of range")
	}
	return v, nil
}

// optionalString returns a claim that, if present, must be a non-empty
// string; "" if absent.
func optionalString(c map[string]json.RawMessage, name string) (string, *refusal) {
	raw, ok := c[name]
	if !ok {
		return "", nil
	}
	s, ok := jsonString(raw)
	if !ok {
		return "", invalidGrant("claim " + name + " must be a string")
	}
	if s == "" {
		return "", invalidGrant("claim " + name + " is empty; leave it out instead")
	}
	return s, nil
}

// groups returns the items of pismo.group, a required comma-separated list.
func groups(c map[string]json.RawMessage) ([]string, *refusal) {
	raw, ok := c["pismo"]
	if !ok {
		return nil, invalidGrant("claim pismo is missing")
	}
	if jsonKind(raw) != '{' {
		return nil, invalidGrant("claim pismo must be an object")
	}
	pismo, err := decodeObject(raw)
	if err != nil {
		return nil, invalidGrant("claim pismo must be an object without repeated members")
	}
	rawGroup, ok := pismo["group"]
	if !ok {
		return nil, invalidGrant("claim pismo.group is missing")
	}
	group, ok := jsonString(rawGroup)
	if !ok {
		return nil, invalidGrant("claim pismo.group must be a string")
	}
	if group == "" {
		return nil, invalidGrant("claim pismo.group is empty")
	}
	items := strings.Split(group, ",")
	for _, g := range items {
		if g == "" || strings.TrimSpace(g) != g {
			return nil, invalidGrant("claim pismo.group has an empty or space-padded item")
		}
	}
	return items, nil
}

// customClaims returns the optional customClaims object, whose values must be
// strings; nil if absent.
func customClaims(c map[string]json.RawMessage) (map[string]string, *refusal) {
	raw, ok := c["customClaims"]
	if !ok {
		return nil, nil
	}
	if jsonKind(raw) != '{' {
		return nil, invalidGrant("claim customClaims must be an object")
	}
	obj, err := decodeObject(raw)
	if err != nil {
		return nil, invalidGrant("claim customClaims must be an object without repeated members")
	}
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		s, ok := jsonString(v)
		if !ok {
			return nil, invalidGrant("claim customClaims must have string values only")
		}
		out[k] = s
	}
	return out, nil
}

// errNotObject says a JSON value is not one object without repeated members.
var errNotObject = errors.New("not one JSON object without repeated members")

// decodeObject decodes data, which must be valid UTF-8 holding exactly one
// JSON object with no repeated member names, into its members.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(data) {
		return nil, errNotObject
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errNotObject
	}
	members := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errNotObject
		}
		name, ok := tok.(string)
		if !ok {
			return nil, errNotObject
		}
		if _, dup := members[name]; dup {
			return nil, errNotObject
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errNotObject
		}
		members[name] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, errNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errNotObject
	}
	return members, nil
}

// jsonKind returns the first byte of a JSON value: '"', '{', '[', 't', 'f',
// 'n', '-' or a digit; 0 if there is none.
func jsonKind(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// jsonString returns the value of a JSON string; ok is false for any other
// JSON value, including null, and for an absent one.
func jsonString(raw json.RawMessage) (s string, ok bool) {
	if jsonKind(raw) != '"' {
		return "", false
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}
