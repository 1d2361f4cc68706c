package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tokenbrokerv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// Defaults for the zero values of [Config] and [Request].
const (
	// DefaultMinTTL is the life a token must have left, as the broker's own
	// default for min_ttl.
	DefaultMinTTL = 60 * time.Second
	// DefaultTimeout bounds a call to the broker that no caller's context
	// bounds.
	DefaultTimeout = 30 * time.Second
	// DefaultReconnectDelay is the first wait before a watch is re-opened.
	DefaultReconnectDelay = time.Second
	// DefaultMaxReconnectDelay caps the wait before a watch is re-opened.
	DefaultMaxReconnectDelay = 30 * time.Second
)

// maxKeyLen bounds a bearer key; the broker's keys are far shorter.
const maxKeyLen = 4096

// ErrInvalidKey is returned by every call of a [Client] whose
// [Config.Key] cannot be sent as a header value. The error never contains
// the key.
var ErrInvalidKey = errors.New("client: Config.Key is not a valid bearer key (visible ASCII, at most 4096 bytes)")

// Config is what [New] needs. Zero fields take defaults.
type Config struct {
	// Conn is the connection to the broker. Required. The caller dials it
	// and chooses its transport security.
	Conn grpc.ClientConnInterface
	// Key is the caller's bearer key, sent to the broker as the metadata
	// `authorization: Bearer <key>` on every call. Empty sends no key: for
	// a connection that authenticates the caller with a client certificate
	// (mTLS). The key travels as Conn carries it: use TLS unless the broker
	// is on loopback. It never appears in an error or when a Client is
	// printed.
	Key string
	// Timeout bounds each call to the broker that no caller's context
	// bounds: [TokenSource.Token], and a fetch shared by concurrent
	// callers. Default [DefaultTimeout].
	Timeout time.Duration
	// ReconnectDelay is the wait before a [TokenSource] re-opens a watch
	// that could not be opened or ended; it doubles with each attempt that
	// delivers no token, up to MaxReconnectDelay, and each wait is jittered
	// to between half and all of it. A broker's google.rpc.RetryInfo makes
	// it wait at least that long. Default [DefaultReconnectDelay].
	ReconnectDelay time.Duration
	// MaxReconnectDelay caps the wait before a watch is re-opened. Default
	// [DefaultMaxReconnectDelay]; never less than ReconnectDelay.
	MaxReconnectDelay time.Duration
	// Now tells the time, to judge whether a cached token still has enough
	// life left. Default time.Now.
	Now func() time.Time
}

// Client calls the broker. It is safe for concurrent use. Make one per
// broker connection with [New]; it holds no resources of its own, but each
// [TokenSource] it makes must be closed.
type Client struct {
	rpc tokenbrokerv1.TokenBrokerServiceClient
	// auth is "Bearer <key>", or nil to send none. It sits behind a pointer
	// so that printing a Client value with fmt shows an address, not it.
	auth   *string
	keyErr error

	timeout           time.Duration
	reconnectDelay    time.Duration
	maxReconnectDelay time.Duration
	now               func() time.Time
}

// New returns a Client. It panics if cfg.Conn is nil: that is a wiring bug,
// not a runtime condition. An unusable cfg.Key does not panic: every call
// then fails with [ErrInvalidKey].
func New(cfg Config) *Client {
	if cfg.Conn == nil {
		panic("client: Config.Conn is nil")
	}
	c := &Client{
		rpc:               tokenbrokerv1.NewTokenBrokerServiceClient(cfg.Conn),
		timeout:           cfg.Timeout,
		reconnectDelay:    cfg.ReconnectDelay,
		maxReconnectDelay: cfg.MaxReconnectDelay,
		now:               cfg.Now,
	}
	if cfg.Key != "" {
		if validKey(cfg.Key) {
			auth := "Bearer " + cfg.Key
			c.auth = &auth
		} else {
			c.keyErr = ErrInvalidKey
		}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.reconnectDelay <= 0 {
		c.reconnectDelay = DefaultReconnectDelay
	}
	if c.maxReconnectDelay <= 0 {
		c.maxReconnectDelay = DefaultMaxReconnectDelay
	}
	c.maxReconnectDelay = max(c.maxReconnectDelay, c.reconnectDelay)
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// validKey reports whether key can be sent in a header value: visible ASCII,
// no spaces, bounded. Checking here keeps a malformed key out of any error
// text gRPC might build from it.
func validKey(key string) bool {
	if len(key) > maxKeyLen {
		return false
	}
	for i := range len(key) {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// String describes the Client without its key.
func (c *Client) String() string {
	key := "none"
	switch {
	case c.keyErr != nil:
		key = "invalid"
	case c.auth != nil:
		key = "[redacted]"
	}
	return "client.Client{key: " + key + "}"
}

// GoString is String, so that %#v does not print the key either.
func (c *Client) GoString() string { return c.String() }

// Request names the token wanted: the fields of GetAccessTokenRequest. The
// broker validates it; see the API section of the README for the limits.
type Request struct {
	// Tenant is the tenant id as configured in the broker. Required.
	Tenant string
	// UID asks for an account-specific token (a Pismo account id).
	UID string
	// ExternalAccountID asks for an account token by an account id from the
	// customer's own system, instead of UID.
	ExternalAccountID string
	// Groups are the permission groups or scopes the token must carry.
	// Required.
	Groups []string
	// CustomClaims are sent upstream as the customClaims object.
	CustomClaims map[string]string
	// MinTTL is the life a token must have left when handed out: zero means
	// [DefaultMinTTL]; negative means none. A [TokenSource] never hands out
	// a cached token with less.
	MinTTL time.Duration
}

// minTTL is r.MinTTL with its default applied.
func (r Request) minTTL() time.Duration {
	switch {
	case r.MinTTL == 0:
		return DefaultMinTTL
	case r.MinTTL < 0:
		return 0
	}
	return r.MinTTL
}

// clone copies the slice and map, so that a caller changing them later does
// not change a running TokenSource's request.
func (r Request) clone() Request {
	r.Groups = slices.Clone(r.Groups)
	r.CustomClaims = maps.Clone(r.CustomClaims)
	return r
}

func (r Request) getRequest(rejected string) *tokenbrokerv1.GetAccessTokenRequest {
	return &tokenbrokerv1.GetAccessTokenRequest{
		Tenant:            r.Tenant,
		Uid:               r.UID,
		ExternalAccountId: r.ExternalAccountID,
		Groups:            r.Groups,
		CustomClaims:      r.CustomClaims,
		MinTtl:            durationpb.New(r.minTTL()),
		RejectedToken:     rejected,
	}
}

func (r Request) watchRequest() *tokenbrokerv1.WatchAccessTokenRequest {
	return &tokenbrokerv1.WatchAccessTokenRequest{
		Tenant:            r.Tenant,
		Uid:               r.UID,
		ExternalAccountId: r.ExternalAccountID,
		Groups:            r.Groups,
		CustomClaims:      r.CustomClaims,
		MinTtl:            durationpb.New(r.minTTL()),
	}
}

// Token asks the broker once for a token (GetAccessToken), with no caching
// of its own. Services that need a token more than once use a
// [TokenSource].
func (c *Client) Token(ctx context.Context, req Request) (*oauth2.Token, error) {
	return c.get(ctx, req.getRequest(""))
}

// get calls GetAccessToken.
func (c *Client) get(ctx context.Context, req *tokenbrokerv1.GetAccessTokenRequest) (*oauth2.Token, error) {
	ctx, err := c.outgoing(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.rpc.GetAccessToken(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("client: get access token: %w", err)
	}
	tok, err := toToken(resp.GetAccessToken(), resp.GetTokenType(), resp.GetExpireTime())
	if err != nil {
		return nil, fmt.Errorf("client: get access token: %w", err)
	}
	return tok, nil
}

// outgoing adds the caller's key to ctx's outgoing metadata.
func (c *Client) outgoing(ctx context.Context) (context.Context, error) {
	if c.keyErr != nil {
		return nil, c.keyErr
	}
	if c.auth == nil {
		return ctx, nil
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", *c.auth), nil
}

// errBadResponse is a broker answer without a token or an expiry.
var errBadResponse = errors.New("the broker sent a response without a token or an expiry")

// toToken makes an oauth2.Token of a broker response.
func toToken(access, typ string, exp *timestamppb.Timestamp) (*oauth2.Token, error) {
	if access == "" || exp == nil {
		return nil, errBadResponse
	}
	if typ == "" {
		typ = "Bearer"
	}
	return &oauth2.Token{AccessToken: access, TokenType: typ, Expiry: exp.AsTime()}, nil
}
