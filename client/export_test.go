package client

// Changed returns a channel closed at the source's next change of state (a
// token cached or dropped, the watch up or down, Close), so that tests wait
// on events instead of sleeping.
func (s *TokenSource) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Held is the access token the source holds, usable or not; "" if none.
func (s *TokenSource) Held() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == nil {
		return ""
	}
	return s.tok.AccessToken
}

// Watching reports whether the watch is open and has sent a token.
func (s *TokenSource) Watching() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == up
}
