package client

import (
	"io"
	"net/http"

	"golang.org/x/oauth2"
)

// maxDrain is how much of a refused response's body is read before it is
// closed, so that its connection can be reused.
const maxDrain = 4 << 10

// Transport is an [http.RoundTripper] that sets `Authorization: Bearer
// <token>` on each request from a [TokenSource]. When the upstream API
// answers 401 Unauthorized, it has the broker replace that token
// ([TokenSource.Reject]) and sends the request once more with the new one.
// A request whose body cannot be sent again (Body set, GetBody nil) is not
// retried: its 401 is returned. If the broker cannot replace the token, or
// replaces it with the same one, the 401 is returned too.
//
// It never changes the caller's request; it sends a clone.
type Transport struct {
	// Source hands out the tokens. Required.
	Source *TokenSource
	// Base sends the requests; nil means [http.DefaultTransport].
	Base http.RoundTripper
}

// RoundTrip implements [http.RoundTripper].
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A RoundTripper must close the request body, even on errors; once a
	// clone is handed to the base, the base does.
	bodyClosed := false
	if req.Body != nil {
		defer func() {
			if !bodyClosed {
				req.Body.Close()
			}
		}()
	}
	ctx := req.Context()
	tok, err := t.Source.TokenContext(ctx)
	if err != nil {
		return nil, err
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil

	first := withToken(req, tok)
	bodyClosed = true
	resp, err := t.base().RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replayable {
		return resp, err
	}

	again, err := t.Source.Reject(ctx, tok.AccessToken)
	if err != nil || again.AccessToken == tok.AccessToken {
		return resp, nil // the upstream's answer stands
	}
	retry := withToken(req, again)
	if req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		retry.Body = body
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
	return t.base().RoundTrip(retry)
}

// withToken clones req with tok in its Authorization header.
func withToken(req *http.Request, tok *oauth2.Token) *http.Request {
	r := req.Clone(req.Context())
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	r.Header.Set("Authorization", tok.Type()+" "+tok.AccessToken)
	return r
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}
