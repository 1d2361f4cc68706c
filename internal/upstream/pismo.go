package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/broker"
)

// UIDMode says what the Pismo assertion's uid claim holds for a tenant-level
// token. Pismo's two pages disagree: one says leave it out, the older one
// says set it to the tenant id.
type UIDMode string

// The uid modes.
const (
	UIDOmit   UIDMode = "omit"   // no uid claim unless an account is asked for
	UIDTenant UIDMode = "tenant" // uid = the tenant id unless an account is asked for
)

// MaxAssertionLifetime is Pismo's limit on exp − iat.
const MaxAssertionLifetime = time.Hour

// Defaults for the zero values of [PismoConfig].
const (
	DefaultAssertionLifetime = 5 * time.Minute
	DefaultTimeout           = 10 * time.Second
)

// PismoConfig configures one tenant's Pismo OpenID exchange.
type PismoConfig struct {
	// TenantID is the tenant_id claim.
	TenantID string
	// TokenURL is the endpoint, {base}/passport/v1/oauth2/token.
	TokenURL *url.URL
	// Issuer, Subject and Audience are the verifier values Pismo's Control
	// Center gave the tenant.
	Issuer, Subject, Audience string
	// Signer signs the assertion (RS256, with the key's kid).
	Signer jose.Signer
	// AssertionLifetime is exp − iat: at most an hour; default 5 minutes.
	AssertionLifetime time.Duration
	// UIDMode defaults to [UIDOmit].
	UIDMode UIDMode
	// Client sends the request; nil uses [NewHTTPClient].
	Client *http.Client
	// Timeout bounds one exchange; default 10 s.
	Timeout time.Duration
	// Clock defaults to time.Now.
	Clock func() time.Time
}

// Pismo exchanges a signed assertion for an access token at Pismo's OpenID
// token endpoint (exchanger kind pismo_oidc).
type Pismo struct {
	cfg  PismoConfig
	host string
}

// NewPismo checks cfg and returns the exchanger.
func NewPismo(cfg PismoConfig) (*Pismo, error) {
	var problems []string
	if cfg.TenantID == "" {
		problems = append(problems, "tenant id is empty")
	}
	if cfg.TokenURL == nil || !cfg.TokenURL.IsAbs() {
		problems = append(problems, "token URL must be absolute")
	}
	if cfg.Issuer == "" || cfg.Subject == "" || cfg.Audience == "" {
		problems = append(problems, "issuer, subject and audience are required")
	}
	if cfg.Signer == nil {
		problems = append(problems, "no signer")
	}
	if cfg.AssertionLifetime == 0 {
		cfg.AssertionLifetime = DefaultAssertionLifetime
	}
	if cfg.AssertionLifetime < time.Second || cfg.AssertionLifetime > MaxAssertionLifetime {
		problems = append(problems, fmt.Sprintf("assertion lifetime %s is outside 1s..1h", cfg.AssertionLifetime))
	}
	switch cfg.UIDMode {
	case "":
		cfg.UIDMode = UIDOmit
	case UIDOmit, UIDTenant:
	default:
		problems = append(problems, fmt.Sprintf("unknown uid mode %q", cfg.UIDMode))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("upstream: pismo tenant %q: %s", cfg.TenantID, strings.Join(problems, "; "))
	}
	if cfg.Client == nil {
		cfg.Client = NewHTTPClient()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Pismo{cfg: cfg, host: cfg.TokenURL.Host}, nil
}

// Exchange signs an assertion for req and exchanges it. req.Groups must be
// sorted and unique, as the broker passes them.
func (p *Pismo) Exchange(ctx context.Context, req broker.Request) (broker.Token, error) {
	if req.Tenant != p.cfg.TenantID {
		return broker.Token{}, broker.ErrUnknownTenant
	}
	assertion, err := p.sign(req)
	if err != nil {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonSigning, Upstream: p.host, Err: err}
	}
	body, err := json.Marshal(struct {
		Token string `json:"token"`
	}{assertion})
	if err != nil {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonInternal, Upstream: p.host, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.TokenURL.String(), bytes.NewReader(body))
	if err != nil {
		return broker.Token{}, &broker.ExchangeError{Reason: broker.ReasonInternal, Upstream: p.host, Err: err}
	}
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Accept", "application/json")
	return post(p.cfg.Client, httpReq, p.host, p.cfg.Clock, http.StatusOK, http.StatusCreated)
}

// claims builds the Pismo assertion's claim set for req at now.
func (p *Pismo) claims(req broker.Request, now time.Time) map[string]any {
	c := map[string]any{
		"iss":       p.cfg.Issuer,
		"sub":       p.cfg.Subject,
		"aud":       p.cfg.Audience, // a single string: Pismo refuses an array
		"iat":       now.Unix(),
		"exp":       now.Add(p.cfg.AssertionLifetime).Unix(),
		"tenant_id": p.cfg.TenantID,
		"pismo":     map[string]string{"group": strings.Join(req.Groups, ",")},
	}
	switch {
	case req.UID != "":
		c["uid"] = req.UID
	case p.cfg.UIDMode == UIDTenant:
		c["uid"] = p.cfg.TenantID
	}
	if req.ExternalAccountID != "" {
		c["external_account_id"] = req.ExternalAccountID
	}
	if len(req.CustomClaims) > 0 {
		c["customClaims"] = req.CustomClaims
	}
	return c
}

func (p *Pismo) sign(req broker.Request) (string, error) {
	tok, err := jwt.Signed(p.cfg.Signer).Claims(p.claims(req, p.cfg.Clock())).Serialize()
	if err != nil {
		// go-jose's errors name no key material.
		return "", fmt.Errorf("upstream: sign assertion: %w", err)
	}
	return tok, nil
}

// Tenants routes each exchange to the tenant's own exchanger.
type Tenants map[string]broker.Exchanger

// Exchange calls the exchanger of req.Tenant, or fails with
// [broker.ErrUnknownTenant].
func (t Tenants) Exchange(ctx context.Context, req broker.Request) (broker.Token, error) {
	x, ok := t[req.Tenant]
	if !ok {
		return broker.Token{}, broker.ErrUnknownTenant
	}
	return x.Exchange(ctx, req)
}

// errTimeout marks an exchange that ran out of time.
var errTimeout = errors.New("upstream: exchange timed out")
