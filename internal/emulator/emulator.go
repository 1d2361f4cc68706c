package emulator

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TokenPath is the path of Pismo's OpenID token endpoint, relative to the
// environment's base URL.
const TokenPath = "/passport/v1/oauth2/token"

// JWKSPath is where the emulator publishes the public half of its issuing key
// as a JWK Set.
const JWKSPath = "/.well-known/jwks.json"

// DefaultIssuer is the iss of the access tokens the emulator issues when
// Config.Issuer is empty.
const DefaultIssuer = "urn:tokenbroker:emulator"

// defaultTokenLifetime is the life of the access tokens the emulator issues
// when Config.TokenLifetime is zero: Pismo's one hour.
const defaultTokenLifetime = time.Hour

// maxAssertionLifetime is the longest exp − iat Pismo accepts in an assertion.
const maxAssertionLifetime = 3600 * time.Second

// maxIssuedAtSkew is how far in the future an assertion's iat may lie.
const maxIssuedAtSkew = 60 * time.Second

// MaxBodyBytes caps the body of a token request: larger bodies are refused
// with 413.
const MaxBodyBytes = 64 << 10

// minRSABits is the smallest RSA modulus accepted for a tenant key: Pismo
// asks for 2048-bit keys.
const minRSABits = 2048

// issuingKeyBits is the size of the emulator's own signing key.
const issuingKeyBits = 2048

// Tenant is one tenant's OpenID configuration as Pismo's Control Center holds
// it: the tenant id, the verifier issuer, subject and audience the assertion
// must carry, and the public keys its signature may verify with.
type Tenant struct {
	// ID is the tenant id, matched against the assertion's tenant_id.
	ID string
	// Issuer is the verifier issuer expected in iss.
	Issuer string
	// Subject is the verifier subject expected in sub.
	Subject string
	// Audience is the verifier audience expected in aud.
	Audience string
	// Keys are the tenant's RSA public keys. A key without KeyID gets its
	// RFC 7638 SHA-256 thumbprint (base64url, no padding) as kid.
	Keys []jose.JSONWebKey
}

// Config configures an Emulator. The zero value is ready to use.
type Config struct {
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// TokenLifetime is the life of the access tokens issued, in whole
	// seconds; zero means one hour, as Pismo's.
	TokenLifetime time.Duration
	// Issuer is the iss of the access tokens issued; empty means
	// DefaultIssuer.
	Issuer string
}

// Emulator is a Pismo-compatible OpenID token endpoint. It is an
// http.Handler; all its methods are safe for concurrent use.
type Emulator struct {
	clock    func() time.Time
	lifetime time.Duration
	issuer   string
	signer   jose.Signer
	public   jose.JSONWebKey

	mu      sync.RWMutex
	tenants map[string]*registration

	statsMu sync.Mutex
	stats   map[string]*tenantStats

	exchanges atomic.Int64
	refusals  atomic.Int64

	failMu     sync.Mutex
	failLeft   int
	failStatus int
}

// registration is a validated Tenant, ready for lookups.
type registration struct {
	tenant Tenant
	keys   map[string]*rsa.PublicKey // by kid
	only   *rsa.PublicKey            // the key when there is exactly one
}

// tenantStats is what the emulator remembers about a tenant's exchanges. It
// outlives re-registration of the tenant.
type tenantStats struct {
	exchanges int64
	header    []byte // raw JSON of the last accepted assertion's header
	claims    []byte // raw JSON of its claims
}

// New returns an Emulator with a freshly generated 2048-bit RSA issuing key
// and no tenants.
func New(cfg Config) (*Emulator, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = defaultTokenLifetime
	}
	if cfg.TokenLifetime < time.Second {
		return nil, fmt.Errorf("emulator: token lifetime %s is not a positive whole number of seconds", cfg.TokenLifetime)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	priv, err := rsa.GenerateKey(rand.Reader, issuingKeyBits)
	if err != nil {
		return nil, fmt.Errorf("emulator: generate issuing key: %w", err)
	}
	kid, err := thumbprint(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("emulator: issuing key: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(jose.RS256)}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("emulator: issuing signer: %w", err)
	}
	return &Emulator{
		clock:    cfg.Clock,
		lifetime: cfg.TokenLifetime.Truncate(time.Second),
		issuer:   cfg.Issuer,
		signer:   signer,
		public: jose.JSONWebKey{
			Key: &priv.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig",
		},
		tenants: make(map[string]*registration),
		stats:   make(map[string]*tenantStats),
	}, nil
}

// Register adds a tenant, or replaces the registration of a tenant with the
// same ID. ID, Issuer, Subject and Audience must be non-empty and there must
// be at least one RSA public key of at least 2048 bits; key ids must be
// unique within the tenant. It is safe to call while the emulator serves.
func (e *Emulator) Register(t Tenant) error {
	if t.ID == "" {
		return errors.New("emulator: tenant id is empty")
	}
	for _, f := range []struct{ name, value string }{
		{"issuer", t.Issuer}, {"subject", t.Subject}, {"audience", t.Audience},
	} {
		if f.value == "" {
			return fmt.Errorf("emulator: tenant %q: %s is empty", t.ID, f.name)
		}
	}
	if len(t.Keys) == 0 {
		return fmt.Errorf("emulator: tenant %q: no public key", t.ID)
	}
	reg := &registration{tenant: t, keys: make(map[string]*rsa.PublicKey, len(t.Keys))}
	reg.tenant.Keys = make([]jose.JSONWebKey, len(t.Keys))
	for i, k := range t.Keys {
		pub, err := checkPublicJWK(&k)
		if err != nil {
			return fmt.Errorf("emulator: tenant %q: key %d: %w", t.ID, i, err)
		}
		if k.KeyID == "" {
			if k.KeyID, err = thumbprint(pub); err != nil {
				return fmt.Errorf("emulator: tenant %q: key %d: %w", t.ID, i, err)
			}
		}
		if _, dup := reg.keys[k.KeyID]; dup {
			return fmt.Errorf("emulator: tenant %q: key %d: kid %q is used twice", t.ID, i, k.KeyID)
		}
		reg.keys[k.KeyID] = pub
		reg.tenant.Keys[i] = k
	}
	if len(t.Keys) == 1 {
		for _, pub := range reg.keys {
			reg.only = pub
		}
	}
	e.mu.Lock()
	e.tenants[t.ID] = reg
	e.mu.Unlock()
	return nil
}

// checkPublicJWK returns the RSA public key of a JWK that may verify RS256
// signatures, or why not.
func checkPublicJWK(k *jose.JSONWebKey) (*rsa.PublicKey, error) {
	var pub *rsa.PublicKey
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		pub = key
	case *rsa.PrivateKey:
		return nil, errors.New("is a private key; give the public key only")
	default:
		return nil, fmt.Errorf("is %s; only RSA keys are supported", keyKind(k.Key))
	}
	if pub == nil || pub.N == nil || pub.E == 0 {
		return nil, errors.New("is an incomplete RSA public key")
	}
	if bits := pub.N.BitLen(); bits < minRSABits {
		return nil, fmt.Errorf("is a %d-bit RSA key; at least %d bits are required", bits, minRSABits)
	}
	if k.Use != "" && k.Use != "sig" {
		return nil, fmt.Errorf("has use %q; a signature key has use \"sig\" or none", k.Use)
	}
	if k.Algorithm != "" && k.Algorithm != string(jose.RS256) {
		return nil, fmt.Errorf("has alg %q; only RS256 is accepted", k.Algorithm)
	}
	return pub, nil
}

// thumbprint returns the RFC 7638 SHA-256 thumbprint of an RSA public key,
// base64url without padding.
func thumbprint(pub *rsa.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// lookup returns a tenant's registration, or nil.
func (e *Emulator) lookup(id string) *registration {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.tenants[id]
}

// Exchanges returns the number of successful token exchanges, all tenants.
func (e *Emulator) Exchanges() int64 { return e.exchanges.Load() }

// ExchangesFor returns the number of successful token exchanges of one tenant.
func (e *Emulator) ExchangesFor(tenant string) int64 {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	if s := e.stats[tenant]; s != nil {
		return s.exchanges
	}
	return 0
}

// Refusals returns the number of token requests the emulator refused. Answers
// forced by FailNext are not refusals.
func (e *Emulator) Refusals() int64 { return e.refusals.Load() }

// LastAssertion returns the JOSE header and the claims, decoded from JSON
// (numbers are float64), of the last assertion the emulator accepted for a
// tenant. ok is false if it accepted none. The maps are the caller's own.
func (e *Emulator) LastAssertion(tenant string) (header, claims map[string]any, ok bool) {
	e.statsMu.Lock()
	s := e.stats[tenant]
	var rawHeader, rawClaims []byte
	if s != nil {
		rawHeader, rawClaims = s.header, s.claims
	}
	e.statsMu.Unlock()
	if rawHeader == nil {
		return nil, nil, false
	}
	// Both were decoded the same way when the assertion was accepted.
	if json.Unmarshal(rawHeader, &header) != nil || json.Unmarshal(rawClaims, &claims) != nil {
		return nil, nil, false
	}
	return header, claims, true
}

// record counts an accepted assertion and keeps its header and claims.
func (e *Emulator) record(tenant string, header, claims []byte) {
	e.statsMu.Lock()
	s := e.stats[tenant]
	if s == nil {
		s = &tenantStats{}
		e.stats[tenant] = s
	}
	s.exchanges++
	s.header, s.claims = header, claims
	e.statsMu.Unlock()
	e.exchanges.Add(1)
}

// PublicKeys returns the public half of the emulator's issuing key as a JWK
// Set, to verify the access tokens it issues.
func (e *Emulator) PublicKeys() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{e.public}}
}

// FailNext makes the next n token requests (POSTs to TokenPath) fail with the
// HTTP status given, whatever they carry, with an OAuth error body: temporarily_unavailable for
// 503, server_error for any other 5xx, invalid_client for 401 and
// invalid_request otherwise. They count neither as exchanges nor as
// refusals. n <= 0 cancels pending failures. It panics if n > 0 and status is
// not a 4xx or 5xx status, a mistake in the calling test.
func (e *Emulator) FailNext(n int, status int) {
	if n > 0 && (status < 400 || status > 599) {
		panic(fmt.Sprintf("emulator: FailNext: status %d is not an HTTP error status", status))
	}
	e.failMu.Lock()
	defer e.failMu.Unlock()
	e.failLeft, e.failStatus = max(n, 0), status
}

// takeFailure consumes one forced failure, if any is pending.
func (e *Emulator) takeFailure() (status int, ok bool) {
	e.failMu.Lock()
	defer e.failMu.Unlock()
	if e.failLeft == 0 {
		return 0, false
	}
	e.failLeft--
	return e.failStatus, true
}

// forcedError is the OAuth error code of a failure forced by FailNext.
func forcedError(status int) string {
	switch {
	case status == http.StatusServiceUnavailable:
		return "temporarily_unavailable"
	case status >= 500:
		return "server_error"
	case status == http.StatusUnauthorized:
		return "invalid_client"
	default:
		return "invalid_request"
	}
}

// ServeHTTP serves POST TokenPath and GET JWKSPath; any other path is 404
// and any other method 405.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case TokenPath:
		e.serveToken(w, r)
	case JWKSPath:
		e.serveJWKS(w, r)
	default:
		writeError(w, http.StatusNotFound, "invalid_request", "no such endpoint")
	}
}

// serveJWKS publishes the issuing key.
func (e *Emulator) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
		return
	}
	body, err := json.Marshal(e.PublicKeys())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "cannot encode the key set")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// tokenResponse is the body of a successful exchange, as Pismo's reference
// shows it: expires_in is a string.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    string `json:"expires_in"`
}

// serveToken answers a token request.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.refuse(w, &refusal{http.StatusMethodNotAllowed, "invalid_request", "method not allowed; use POST"})
		return
	}
	if status, ok := e.takeFailure(); ok {
		writeError(w, status, forcedError(status), "failure injected by the emulator")
		return
	}
	now := e.clock()
	a, ref := e.check(w, r, now)
	if ref != nil {
		e.refuse(w, ref)
		return
	}
	access, err := e.issue(a, now)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "cannot issue the access token")
		return
	}
	body, err := json.Marshal(tokenResponse{
		AccessToken:  access,
		RefreshToken: randomToken(32),
		ExpiresIn:    strconv.FormatInt(int64(e.lifetime/time.Second), 10),
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "cannot encode the response")
		return
	}
	e.record(a.tenant, a.rawHeader, a.rawClaims)
	writeJSON(w, http.StatusCreated, body)
}

// issue signs the access token for an accepted assertion.
func (e *Emulator) issue(a *assertion, now time.Time) (string, error) {
	sub := a.tenant
	switch {
	case a.uid != "":
		sub = a.uid
	case a.externalAccountID != "":
		sub = a.externalAccountID
	}
	claims := map[string]any{
		"iss":       e.issuer,
		"sub":       sub,
		"tenant_id": a.tenant,
		"groups":    a.groups,
		"iat":       now.Unix(),
		"exp":       now.Add(e.lifetime).Unix(),
		"jti":       randomHex(16),
	}
	if a.uid != "" {
		claims["uid"] = a.uid
	}
	if a.externalAccountID != "" {
		claims["external_account_id"] = a.externalAccountID
	}
	if a.customClaims != nil {
		claims["customClaims"] = a.customClaims
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := e.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// refuse counts and writes a refusal.
func (e *Emulator) refuse(w http.ResponseWriter, ref *refusal) {
	e.refusals.Add(1)
	writeError(w, ref.status, ref.code, ref.description)
}

// oauthError is an RFC 6749 §5.2 error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeError writes an OAuth error body.
func writeError(w http.ResponseWriter, status int, code, description string) {
	body, _ := json.Marshal(oauthError{Error: code, Description: description})
	writeJSON(w, status, body)
}

// writeJSON writes a JSON body that no cache may keep.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// randomToken returns n random bytes, base64url-encoded without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails
	return base64.RawURLEncoding.EncodeToString(b)
}
