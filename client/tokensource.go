package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrClosed is returned by a [TokenSource] after [TokenSource.Close].
var ErrClosed = errors.New("client: token source closed")

// maxRetryInfoDelay caps how long a broker's google.rpc.RetryInfo can hold
// off re-opening a watch.
const maxRetryInfoDelay = 5 * time.Minute

// errWatchEnded is a watch the broker ended without an error status.
var errWatchEnded = errors.New("the broker ended the watch")

// watchState is where the background watch is.
type watchState int

const (
	connecting watchState = iota // opening the first watch; it has sent no token yet
	up                           // a watch is open and has sent a token
	down                         // the watch ended or could not be opened; re-opening it
)

// TokenSource hands out one kind of token ([Request]) and keeps it fresh. It
// implements [oauth2.TokenSource] and is safe for concurrent use. Make one
// with [Client.TokenSource] and [TokenSource.Close] it when done.
//
// A goroutine watches the token (WatchAccessToken) and caches each token the
// broker sends, so that once the first has arrived Token answers from memory.
// A cached token is handed out only while it has more than the request's
// MinTTL left. Without one, Token waits for the first watch's first token;
// once that watch has sent one or failed, Token asks the broker directly
// (GetAccessToken; concurrent callers share one call, and its token is
// cached too) while the watch is re-opened with backoff. Against a broker
// without WatchAccessToken (UNIMPLEMENTED), a TokenSource works as a plain
// caching one.
//
// A watch ended by UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT or
// FAILED_PRECONDITION (a revoked grant, a bad request, a broker that cannot
// get tokens for it) drops the cached token: Token returns that error, with
// no call to the broker, until a re-opened watch says otherwise.
type TokenSource struct {
	c      *Client
	req    Request
	minTTL time.Duration

	// ctx ends on Close: the watch and the calls in flight stop. wg counts
	// their goroutines; closed (under mu) stops new ones from starting.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	tok      *oauth2.Token // the newest token; may be too old to hand out
	rejected string        // the last token a downstream API refused: never cached again
	state    watchState
	err      error         // the permanent error that ended the last watch
	changed  chan struct{} // closed and replaced on every change above
	flights  map[string]*flight
	latest   *flight // the flight started last, while in flight
}

// flight is one GetAccessToken call that callers share.
type flight struct {
	done chan struct{} // closed when tok or err is set
	tok  *oauth2.Token
	err  error
}

// TokenSource starts watching the token req names and returns its source.
// It does not wait for the first token: the first [TokenSource.Token] does.
// The caller must call [TokenSource.Close] to stop the watch.
func (c *Client) TokenSource(req Request) *TokenSource {
	ctx, cancel := context.WithCancel(context.Background())
	s := &TokenSource{
		c:       c,
		req:     req.clone(),
		minTTL:  req.minTTL(),
		ctx:     ctx,
		cancel:  cancel,
		changed: make(chan struct{}),
		flights: make(map[string]*flight),
	}
	if c.keyErr != nil {
		s.state, s.err = down, c.keyErr
		return s
	}
	s.wg.Go(s.watch)
	return s
}

// String names the source's tenant; it never shows a token.
func (s *TokenSource) String() string {
	return fmt.Sprintf("client.TokenSource{tenant: %q}", s.req.Tenant)
}

// GoString is String, so that %#v shows no token either.
func (s *TokenSource) GoString() string { return s.String() }

// Token returns a token with more than the request's MinTTL left. It
// implements [oauth2.TokenSource]; a call that must reach the broker is
// bounded by [Config.Timeout]. Prefer [TokenSource.TokenContext] where a
// context is at hand.
func (s *TokenSource) Token() (*oauth2.Token, error) {
	if tok := s.cached(); tok != nil {
		return tok, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.c.timeout)
	defer cancel()
	return s.TokenContext(ctx)
}

// TokenContext is [TokenSource.Token] bounded by ctx instead of
// [Config.Timeout].
func (s *TokenSource) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, ErrClosed
		case s.usable(s.tok):
			tok := copyToken(s.tok)
			s.mu.Unlock()
			return tok, nil
		case s.err != nil:
			err := s.err
			s.mu.Unlock()
			return nil, err
		case s.state != connecting:
			s.mu.Unlock()
			return s.fetch(ctx, "")
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("client: wait for the first token: %w", ctx.Err())
		}
	}
}

// Reject tells the broker that a downstream API refused token, and returns
// its replacement (GetAccessToken with rejected_token: the broker drops
// exactly that token, or hands out the newer one it already holds). When
// the source already holds another token with enough life left, that is
// returned without a call; concurrent rejections of one token make one call.
// The replacement is cached (unless the watch has ended with a permanent
// error), and token is never cached again.
func (s *TokenSource) Reject(ctx context.Context, token string) (*oauth2.Token, error) {
	if token == "" {
		return s.TokenContext(ctx)
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case s.tok != nil && s.tok.AccessToken != token && s.usable(s.tok):
		tok := copyToken(s.tok)
		s.mu.Unlock()
		return tok, nil
	}
	s.rejected = token
	if s.tok != nil && s.tok.AccessToken == token {
		s.tok = nil
	}
	s.mu.Unlock()
	return s.fetch(ctx, token)
}

// Close stops the watch and the calls in flight, and waits for their
// goroutines to end. Calls after it, and calls waiting, return [ErrClosed].
// It always returns nil.
func (s *TokenSource) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.tok = nil
		s.broadcastLocked()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// cached returns the cached token if it can be handed out, else nil.
func (s *TokenSource) cached() *oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.usable(s.tok) {
		return nil
	}
	return copyToken(s.tok)
}

// usable reports whether tok has more than minTTL left.
func (s *TokenSource) usable(tok *oauth2.Token) bool {
	return tok != nil && s.c.now().Add(s.minTTL).Before(tok.Expiry)
}

// copyToken returns a copy the caller may change.
func copyToken(tok *oauth2.Token) *oauth2.Token {
	return &oauth2.Token{AccessToken: tok.AccessToken, TokenType: tok.TokenType, Expiry: tok.Expiry}
}

// broadcastLocked wakes everyone waiting for a change. s.mu must be held.
func (s *TokenSource) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// fetch calls GetAccessToken, sharing the call: a rejection joins the call
// rejecting the same token; a plain fetch joins any call in flight, whose
// answer is as fresh as its own would be. The call runs on the source's
// context bounded by Config.Timeout, so that a caller giving up fails no
// one else; each caller waits on its own ctx.
func (s *TokenSource) fetch(ctx context.Context, rejected string) (*oauth2.Token, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	f := s.flights[rejected]
	if rejected == "" && s.latest != nil {
		f = s.latest
	}
	if f == nil {
		f = &flight{done: make(chan struct{})}
		s.flights[rejected] = f
		s.latest = f
		s.wg.Go(func() { s.fly(f, rejected) })
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		return copyToken(f.tok), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("client: get access token: %w", ctx.Err())
	}
}

// fly makes the call of f and caches its token.
func (s *TokenSource) fly(f *flight, rejected string) {
	ctx, cancel := context.WithTimeout(s.ctx, s.c.timeout)
	defer cancel()
	tok, err := s.c.get(ctx, s.req.getRequest(rejected))

	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.flights, rejected)
	if s.latest == f {
		s.latest = nil
	}
	switch {
	case s.closed:
		tok, err = nil, ErrClosed
	case err == nil && s.err == nil:
		// While the watch says the grant is gone, nothing is cached: this
		// answer may predate the revocation.
		s.storeLocked(tok, rejected != "")
		s.broadcastLocked()
	}
	f.tok, f.err = tok, err
	close(f.done)
}

// storeLocked caches a token from GetAccessToken: a replacement always, any
// other only if it lives at least as long as the one held, which may have
// come from the watch meanwhile. s.mu must be held.
func (s *TokenSource) storeLocked(tok *oauth2.Token, replacement bool) {
	switch {
	case tok.AccessToken == s.rejected:
	case replacement, !s.usable(s.tok), !tok.Expiry.Before(s.tok.Expiry):
		s.tok = tok
	}
}

// watch keeps a WatchAccessToken stream open until Close, re-opening it
// with backoff when it cannot be opened or ends.
func (s *TokenSource) watch() {
	for failures := 0; ; {
		got, err := s.watchOnce()
		if s.ctx.Err() != nil {
			return
		}
		if got {
			failures = 0
		}
		s.ended(err)
		wait := max(backoff(s.c.reconnectDelay, s.c.maxReconnectDelay, failures), retryDelay(err))
		failures++
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchOnce opens one stream and caches what it sends until it ends. got
// reports whether it sent any token.
func (s *TokenSource) watchOnce() (got bool, err error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	ctx, err = s.c.outgoing(ctx)
	if err != nil {
		return false, err
	}
	stream, err := s.c.rpc.WatchAccessToken(ctx, s.req.watchRequest())
	if err != nil {
		return false, err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, errWatchEnded
		}
		if err != nil {
			return got, err
		}
		tok, err := toToken(m.GetAccessToken(), m.GetTokenType(), m.GetExpireTime())
		if err != nil {
			return got, err
		}
		got = true
		s.received(tok)
	}
}

// received caches a token the watch sent.
func (s *TokenSource) received(tok *oauth2.Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok.AccessToken != s.rejected {
		s.tok = tok
	}
	s.state, s.err = up, nil
	s.broadcastLocked()
}

// ended records why the watch ended: a permanent error drops the cached
// token and is returned to callers until the next watch's outcome; any
// other lets callers fall back to GetAccessToken.
func (s *TokenSource) ended(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.err = down, nil
	if permanent(err) {
		s.err = fmt.Errorf("client: watch access token: %w", err)
		s.tok = nil
	}
	s.broadcastLocked()
}

// permanent reports whether err says the request cannot succeed as it
// stands: asking again, or GetAccessToken, would get the same answer.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition:
		return true
	}
	return false
}

// backoff is the wait before the next attempt after failures failed ones:
// base doubled per failure, capped at maxDelay, jittered to between half and
// all of it so that clients a broker restart cut off do not return together.
func backoff(base, maxDelay time.Duration, failures int) time.Duration {
	d := base
	for i := 0; i < failures && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	half := d / 2
	return half + rand.N(d-half+1)
}

// retryDelay is the wait a broker asked for with google.rpc.RetryInfo, at
// most maxRetryInfoDelay; 0 if none.
func retryDelay(err error) time.Duration {
	st, ok := status.FromError(err)
	if !ok {
		return 0
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return min(max(ri.GetRetryDelay().AsDuration(), 0), maxRetryInfoDelay)
		}
	}
	return 0
}
