package upstream

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/broker"
)

// The exchanger kinds, as the config's upstream.kind names them.
const (
	// KindPismoOIDC is Pismo's OpenID endpoint: a signed assertion as JSON
	// ([Pismo]).
	KindPismoOIDC = "pismo_oidc"
	// KindPismoOAuth2 is Pismo's client-credentials endpoint
	// ({base}/passport/v2/oauth/token): client id and secret in the form,
	// an optional uid.
	KindPismoOAuth2 = "pismo_oauth2"
	// KindPrivateKeyJWT is the client-credentials grant, the client
	// authenticated by a signed assertion (RFC 7523 §2.2, OIDC Core §9).
	KindPrivateKeyJWT = "private_key_jwt"
	// KindClientSecretPost is the client-credentials grant, the client
	// secret in the form (RFC 6749 §2.3.1).
	KindClientSecretPost = "client_secret_post"
	// KindClientSecretBasic is the client-credentials grant, the client
	// secret in HTTP Basic authentication (RFC 6749 §2.3.1).
	KindClientSecretBasic = "client_secret_basic"
	// KindJWTBearer is the JWT bearer grant (RFC 7523 §2.1), as Google
	// service accounts use it: the signed assertion is the grant.
	KindJWTBearer = "jwt_bearer"
)

// The values of [OAuthConfig.AssertionAudience].
const (
	AudienceTokenEndpoint = "token_endpoint" // aud = the token endpoint URL (the default)
	AudienceIssuer        = "issuer"         // aud = the issuer
)

// Lifetime limits of the assertions [OAuth] signs.
const (
	// MaxClientAssertionLifetime bounds exp − iat of a private_key_jwt
	// client assertion: it is used once, at once, so a short life limits
	// what a leaked one is worth.
	MaxClientAssertionLifetime = 5 * time.Minute
	// MaxJWTBearerLifetime bounds exp − iat of a jwt_bearer assertion:
	// Google refuses anything longer than an hour.
	MaxJWTBearerLifetime = time.Hour
)

// The form values the standard grants send.
const (
	grantClientCredentials = "client_credentials"
	grantJWTBearer         = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	clientAssertionTypeJWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	formContentType        = "application/x-www-form-urlencoded"
	redacted               = "[redacted]"
	jtiBytes               = 16 // 128 bits of randomness
)

// Secret is a client secret. Every fmt verb, String, GoString, LogValue and
// MarshalText show only "[redacted]", so a Secret, or a struct that holds it
// in an exported field, cannot be printed, logged or marshalled by accident.
// A []byte is assignable to it.
type Secret []byte

// String returns "[redacted]".
func (Secret) String() string { return redacted }

// GoString returns "[redacted]", so %#v cannot print the secret either.
func (Secret) GoString() string { return redacted }

// Format implements [fmt.Formatter]: every verb (%x and %d included, which
// would otherwise print the bytes) writes "[redacted]".
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue renders the secret for slog as "[redacted]".
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "[redacted]", so JSON and YAML encoders cannot write
// the secret.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// OAuthConfig configures one tenant's standard OAuth 2.0 exchange, or
// Pismo's client-credentials one. It holds its client secret as a [Secret],
// so printing it shows no secret; its Signer is held by pointer.
type OAuthConfig struct {
	// TenantID is the tenant the exchanger serves.
	TenantID string
	// Kind is one of [KindPrivateKeyJWT], [KindClientSecretPost],
	// [KindClientSecretBasic], [KindJWTBearer] and [KindPismoOAuth2].
	Kind string
	// Endpoint resolves the token endpoint: [StaticEndpoint] for a
	// configured token_url, [NewDiscovery] for an issuer.
	Endpoint Endpoint
	// ClientID is the client id; for jwt_bearer, the assertion's iss (a
	// Google service account's client_email).
	ClientID string
	// Secret is the client secret of client_secret_post,
	// client_secret_basic and pismo_oauth2; the other kinds refuse one.
	// NewOAuth copies it, so the caller may wipe its own copy.
	Secret Secret
	// Signer signs the assertion of private_key_jwt and jwt_bearer (a
	// keystore key's Signer: its header carries alg, kid and typ JWT); the
	// other kinds refuse one.
	Signer jose.Signer
	// AssertionAudience is the assertion's aud: [AudienceTokenEndpoint]
	// (the default) or [AudienceIssuer], which needs an endpoint that knows
	// its issuer. Kinds that sign nothing ignore it.
	AssertionAudience string
	// AssertionLifetime is the assertion's exp − iat: default 5 minutes; at
	// most [MaxClientAssertionLifetime] for private_key_jwt and
	// [MaxJWTBearerLifetime] for jwt_bearer. Kinds that sign nothing ignore
	// it.
	AssertionLifetime time.Duration
	// Subject is jwt_bearer's default sub (the account to act as, with
	// domain-wide delegation) when a request names no uid; "" leaves sub
	// out. The other kinds refuse one.
	Subject string
	// Client sends the request; nil uses [NewHTTPClient].
	Client *http.Client
	// Timeout bounds one exchange, endpoint resolution included; default
	// 10 s.
	Timeout time.Duration
	// Clock defaults to time.Now.
	Clock func() time.Time
}

// OAuth exchanges client credentials, or a JWT bearer assertion, for an
// access token at a standard OAuth 2.0 token endpoint (RFC 6749 §4.4, RFC
// 7523), or at Pismo's client-credentials endpoint. It is safe for
// concurrent use. It prints (with any fmt verb, and through slog) as its
// tenant, kind and client id only.
type OAuth struct {
	tenant, kind, clientID string
	endpoint               Endpoint
	secret                 Secret
	signer                 jose.Signer
	audience               string
	lifetime               time.Duration
	subject                string
	client                 *http.Client
	timeout                time.Duration
	clock                  func() time.Time
	okStatus               []int
}

// NewOAuth checks cfg and returns the exchanger. Its error lists every
// problem and never contains the secret.
func NewOAuth(cfg OAuthConfig) (*OAuth, error) {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if cfg.TenantID == "" {
		fail("tenant id is empty")
	}
	var signs, usesSecret bool
	maxLifetime, maxName := MaxClientAssertionLifetime, "5m"
	switch cfg.Kind {
	case KindPrivateKeyJWT:
		signs = true
	case KindJWTBearer:
		signs, maxLifetime, maxName = true, MaxJWTBearerLifetime, "1h"
	case KindClientSecretPost, KindClientSecretBasic, KindPismoOAuth2:
		usesSecret = true
	case KindPismoOIDC:
		fail("kind %s is served by NewPismo, not NewOAuth", KindPismoOIDC)
	default:
		fail("unknown kind %q; use %s, %s, %s, %s or %s", sanitize(cfg.Kind, 32),
			KindPrivateKeyJWT, KindClientSecretPost, KindClientSecretBasic, KindJWTBearer, KindPismoOAuth2)
	}
	if cfg.Endpoint == nil {
		fail("no token endpoint")
	} else if s, ok := cfg.Endpoint.(*staticEndpoint); ok {
		if p := urlProblem(s.tokenURL); p != "" {
			fail("token URL %s", p)
		}
	}
	if cfg.ClientID == "" {
		fail("client id is empty")
	}
	switch {
	case usesSecret && len(cfg.Secret) == 0:
		fail("kind %s needs a client secret", cfg.Kind)
	case signs && len(cfg.Secret) > 0:
		fail("kind %s authenticates with a key, not a client secret; remove the secret", cfg.Kind)
	}
	switch {
	case signs && cfg.Signer == nil:
		fail("kind %s needs a signing key", cfg.Kind)
	case usesSecret && cfg.Signer != nil:
		fail("kind %s signs nothing; remove the key", cfg.Kind)
	}
	if cfg.Subject != "" && cfg.Kind != KindJWTBearer {
		fail("only %s takes a subject", KindJWTBearer)
	}
	if signs {
		switch cfg.AssertionAudience {
		case "":
			cfg.AssertionAudience = AudienceTokenEndpoint
		case AudienceTokenEndpoint:
		case AudienceIssuer:
			if s, ok := cfg.Endpoint.(*staticEndpoint); ok && s.issuer == "" {
				fail("assertion audience %s needs the issuer, but the endpoint has none", AudienceIssuer)
			}
		default:
			fail("unknown assertion audience %q; use %s or %s", sanitize(cfg.AssertionAudience, 32), AudienceTokenEndpoint, AudienceIssuer)
		}
		if cfg.AssertionLifetime == 0 {
			cfg.AssertionLifetime = DefaultAssertionLifetime
		}
		if cfg.AssertionLifetime < time.Second || cfg.AssertionLifetime > maxLifetime {
			fail("assertion lifetime %s is outside 1s..%s for %s", cfg.AssertionLifetime, maxName, cfg.Kind)
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("upstream: %s tenant %q: %s", sanitize(cfg.Kind, 32), cfg.TenantID, strings.Join(problems, "; "))
	}
	o := &OAuth{
		tenant: cfg.TenantID, kind: cfg.Kind, clientID: cfg.ClientID, endpoint: cfg.Endpoint,
		subject: cfg.Subject, client: cfg.Client, timeout: cfg.Timeout, clock: cfg.Clock,
		okStatus: []int{http.StatusOK},
	}
	if usesSecret {
		o.secret = Secret(append([]byte(nil), cfg.Secret...))
	}
	if signs {
		o.signer, o.audience, o.lifetime = cfg.Signer, cfg.AssertionAudience, cfg.AssertionLifetime
	}
	if cfg.Kind == KindPismoOAuth2 {
		o.okStatus = []int{http.StatusOK, http.StatusCreated}
	}
	if o.client == nil {
		o.client = NewHTTPClient()
	}
	if o.timeout <= 0 {
		o.timeout = DefaultTimeout
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	return o, nil
}

// String describes the exchanger without its credentials.
func (o *OAuth) String() string {
	if o == nil {
		return "<nil>"
	}
	return fmt.Sprintf("upstream.OAuth(tenant=%s kind=%s client_id=%s)", o.tenant, o.kind, o.clientID)
}

// GoString is [OAuth.String], so %#v cannot print the secret.
func (o *OAuth) GoString() string { return o.String() }

// Format implements [fmt.Formatter]: every verb writes [OAuth.String], so
// no verb (%+v, %x and %d included) reaches the fields.
func (o *OAuth) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = io.WriteString(f, strconv.Quote(o.String()))
		return
	}
	_, _ = io.WriteString(f, o.String())
}

// LogValue renders the exchanger for slog as [OAuth.String].
func (o *OAuth) LogValue() slog.Value { return slog.StringValue(o.String()) }

// Exchange obtains a token for req. req.Groups, sorted and unique as the
// broker passes them, become the space-separated scope. A request the kind
// cannot carry fails with an error wrapping [broker.ErrNotSupported]; every
// other failure is an [*broker.ExchangeError]. When the upstream refuses or
// is unavailable, the endpoint is told ([Endpoint.Failed]).
func (o *OAuth) Exchange(ctx context.Context, req broker.Request) (broker.Token, error) {
	if req.Tenant != o.tenant {
		return broker.Token{}, broker.ErrUnknownTenant
	}
	if err := o.supports(req); err != nil {
		return broker.Token{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	tokenURL, issuer, err := o.endpoint.Resolve(ctx)
	if err != nil {
		var xe *broker.ExchangeError
		if errors.As(err, &xe) {
			return broker.Token{}, err
		}
		reason := broker.ReasonUnavailable
		if errors.Is(err, context.DeadlineExceeded) {
			reason = broker.ReasonTimeout
		}
		return broker.Token{}, &broker.ExchangeError{Reason: reason, Upstream: o.tenant,
			Err: fmt.Errorf("upstream: resolve the token endpoint: %w", err)}
	}
	host := tokenURL.Host
	form, err := o.form(req, tokenURL, issuer)
	if err != nil {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonSigning, Upstream: host, Err: err}
	}
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonInternal, Upstream: host,
			Err: errors.New("upstream: cannot build the token request")} // its error would name the URL only, but keep it plain
	}
	httpReq.Header.Set("Content-Type", formContentType)
	httpReq.Header.Set("Accept", "application/json")
	if o.kind == KindClientSecretBasic {
		// RFC 6749 §2.3.1: each is form-urlencoded before it is joined with
		// ":" and base64-encoded, so a ':' or '%' in either survives.
		httpReq.SetBasicAuth(url.QueryEscape(o.clientID), url.QueryEscape(string(o.secret)))
	}
	tok, err := post(o.client, httpReq, host, o.clock, o.okStatus...)
	if err != nil {
		var xe *broker.ExchangeError
		if errors.As(err, &xe) {
			o.scrub(xe)
			switch xe.Reason {
			case broker.ReasonRefused, broker.ReasonUnavailable, broker.ReasonTimeout:
				o.endpoint.Failed()
			}
		}
		return broker.Token{}, err
	}
	return tok, nil
}

// scrub takes the client secret out of an upstream's error, in case the
// upstream echoed it: the generic redaction in parseOAuthError catches
// long tokens, not a short secret.
func (o *OAuth) scrub(xe *broker.ExchangeError) {
	if len(o.secret) == 0 {
		return
	}
	forms := []string{string(o.secret), url.QueryEscape(string(o.secret))}
	if xe.Err != nil {
		msg, changed := xe.Err.Error(), false
		for _, f := range forms {
			if strings.Contains(msg, f) {
				msg, changed = strings.ReplaceAll(msg, f, redacted), true
			}
		}
		if changed {
			xe.Err = errors.New(msg)
		}
	}
	for _, f := range forms {
		if strings.Contains(xe.Code, f) {
			xe.Code = ""
		}
	}
}

// supports refuses what the kind's grant has no way to express.
func (o *OAuth) supports(req broker.Request) error {
	switch {
	case len(req.CustomClaims) > 0:
		return fmt.Errorf("%w: tenant %s's upstream (%s) has nowhere to carry custom claims; custom_claims is not supported",
			broker.ErrNotSupported, o.tenant, o.kind)
	case req.ExternalAccountID != "":
		return fmt.Errorf("%w: tenant %s's upstream (%s) has no account-id tokens; external_account_id is not supported",
			broker.ErrNotSupported, o.tenant, o.kind)
	case req.UID != "" && o.kind != KindJWTBearer && o.kind != KindPismoOAuth2:
		return fmt.Errorf("%w: tenant %s's upstream (%s) issues client tokens only; uid is not supported",
			broker.ErrNotSupported, o.tenant, o.kind)
	}
	return nil
}

// form builds the token request's form for req, signing an assertion where
// the kind needs one. Its error names no key material.
func (o *OAuth) form(req broker.Request, tokenURL *url.URL, issuer string) (url.Values, error) {
	scope := strings.Join(req.Groups, " ")
	aud := tokenURL.String()
	if o.audience == AudienceIssuer {
		if aud = issuer; aud == "" {
			return nil, errors.New("upstream: the assertion's audience is the issuer, but the endpoint names none")
		}
	}
	f := url.Values{}
	switch o.kind {
	case KindJWTBearer:
		f.Set("grant_type", grantJWTBearer)
		assertion, err := o.sign(o.bearerClaims(req, scope, aud))
		if err != nil {
			return nil, err
		}
		f.Set("assertion", assertion)
	case KindPrivateKeyJWT:
		f.Set("grant_type", grantClientCredentials)
		f.Set("client_id", o.clientID)
		claims, err := o.clientClaims(aud)
		if err != nil {
			return nil, err
		}
		assertion, err := o.sign(claims)
		if err != nil {
			return nil, err
		}
		f.Set("client_assertion_type", clientAssertionTypeJWT)
		f.Set("client_assertion", assertion)
	case KindClientSecretPost, KindPismoOAuth2:
		f.Set("grant_type", grantClientCredentials)
		f.Set("client_id", o.clientID)
		f.Set("client_secret", string(o.secret))
		if o.kind == KindPismoOAuth2 && req.UID != "" {
			f.Set("uid", req.UID)
		}
	case KindClientSecretBasic:
		f.Set("grant_type", grantClientCredentials)
	}
	if scope != "" {
		f.Set("scope", scope)
	}
	return f, nil
}

// clientClaims is a private_key_jwt client assertion (OIDC Core §9, RFC
// 7523 §3): the client is both iss and sub, and a fresh jti lets the server
// refuse a replay.
func (o *OAuth) clientClaims(aud string) (map[string]any, error) {
	var b [jtiBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("upstream: make jti: %w", err)
	}
	now := o.clock()
	return map[string]any{
		"iss": o.clientID,
		"sub": o.clientID,
		"aud": aud,
		"jti": base64.RawURLEncoding.EncodeToString(b[:]),
		"iat": now.Unix(),
		"exp": now.Add(o.lifetime).Unix(),
	}, nil
}

// bearerClaims is a jwt_bearer grant assertion (RFC 7523 §2.1, §3) as
// Google reads it: scope as a claim, sub the account to act as.
func (o *OAuth) bearerClaims(req broker.Request, scope, aud string) map[string]any {
	now := o.clock()
	c := map[string]any{
		"iss": o.clientID,
		"aud": aud,
		"iat": now.Unix(),
		"exp": now.Add(o.lifetime).Unix(),
	}
	if scope != "" {
		c["scope"] = scope
	}
	switch {
	case req.UID != "":
		c["sub"] = req.UID
	case o.subject != "":
		c["sub"] = o.subject
	}
	return c
}

func (o *OAuth) sign(claims map[string]any) (string, error) {
	tok, err := jwt.Signed(o.signer).Claims(claims).Serialize()
	if err != nil {
		// go-jose's errors name no key material.
		return "", fmt.Errorf("upstream: sign assertion: %w", err)
	}
	return tok, nil
}
