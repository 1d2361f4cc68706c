package upstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// ParseTokenResponse reads a token endpoint's success body: the token in
// access_token (or token, as some Pismo clients see it), expires_in as a
// number or a string, and, without expires_in, the exp of the token itself
// when it is a JWT. The error never contains the body.
func ParseTokenResponse(body []byte, now time.Time) (broker.Token, error) {
	var r struct {
		AccessToken string          `json:"access_token"`
		Token       string          `json:"token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return broker.Token{}, errors.New("upstream: token response is not a JSON object")
	}
	tok := broker.Token{AccessToken: r.AccessToken, TokenType: r.TokenType}
	if tok.AccessToken == "" {
		tok.AccessToken = r.Token
	}
	if tok.AccessToken == "" {
		return broker.Token{}, errors.New("upstream: token response has neither access_token nor token")
	}
	if tok.TokenType != "" && !strings.EqualFold(tok.TokenType, "bearer") {
		return broker.Token{}, fmt.Errorf("upstream: token_type %q is not Bearer", sanitize(tok.TokenType, 32))
	}
	tok.TokenType = "Bearer"
	if len(r.ExpiresIn) > 0 && string(r.ExpiresIn) != "null" {
		secs, err := parseExpiresIn(r.ExpiresIn)
		if err != nil {
			return broker.Token{}, err
		}
		tok.Expiry = now.Add(time.Duration(secs) * time.Second)
		return tok, nil
	}
	exp, err := jwtExpiry(tok.AccessToken)
	if err != nil {
		return broker.Token{}, fmt.Errorf("upstream: token response has no expires_in, and %w", err)
	}
	tok.Expiry = exp
	return tok, nil
}

// maxExpiresIn bounds a sane token lifetime: a year.
const maxExpiresIn = 366 * 24 * 3600

func parseExpiresIn(raw json.RawMessage) (int64, error) {
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, errors.New("upstream: expires_in is not a valid string")
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || f <= 0 || f > maxExpiresIn {
		return 0, fmt.Errorf("upstream: expires_in %q is not a positive number of seconds", sanitize(s, 32))
	}
	return int64(f), nil
}

// jwtExpiry reads the exp claim of a JWT without verifying it: the broker
// only needs to know how long to cache the token, and the upstream that
// issued it is the one that will check it.
func jwtExpiry(tok string) (time.Time, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("the token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, errors.New("the token's payload is not base64url")
	}
	var c struct {
		Exp *json.Number `json:"exp"`
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	if err := d.Decode(&c); err != nil || c.Exp == nil {
		return time.Time{}, errors.New("the token has no numeric exp claim")
	}
	f, err := c.Exp.Float64()
	if err != nil || f <= 0 || f > math.MaxInt32*4 {
		return time.Time{}, errors.New("the token's exp claim is out of range")
	}
	return time.Unix(int64(f), 0), nil
}

// oauthError is an RFC 6749 §5.2 error body, sanitised.
type oauthError struct {
	Code, Description string
}

func (e oauthError) String() string {
	switch {
	case e.Code == "":
		return "no OAuth error code"
	case e.Description == "":
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// parseOAuthError takes error and error_description from a refusal, keeping
// only what is safe to log: the code in the RFC's character set, and the
// description cut short with anything that looks like a token redacted.
func parseOAuthError(body []byte) oauthError {
	var r struct {
		Error       any `json:"error"`
		Description any `json:"error_description"`
	}
	if json.Unmarshal(body, &r) != nil {
		return oauthError{}
	}
	code, _ := r.Error.(string)
	desc, _ := r.Description.(string)
	if !oauthCode.MatchString(code) {
		code = ""
	}
	return oauthError{Code: code, Description: redactSecrets(sanitize(desc, 200))}
}

// oauthCode is the error code syntax of RFC 6749 §5.2, bounded.
var oauthCode = regexp.MustCompile(`^[\x20-\x21\x23-\x5B\x5D-\x7E]{1,64}$`)

// secretish matches JWTs and long base64 runs: an upstream that echoes the
// assertion or a token in its error text must not put it in our logs.
var secretish = regexp.MustCompile(`[A-Za-z0-9_\-+/=]{24,}(\.[A-Za-z0-9_\-+/=]*){0,2}`)

func redactSecrets(s string) string { return secretish.ReplaceAllString(s, "[redacted]") }

// sanitize keeps printable ASCII and cuts s to max bytes.
func sanitize(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("…")
			break
		}
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		}
	}
	return b.String()
}
