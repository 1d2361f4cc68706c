package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpHandler serves the JWKS, liveness, readiness and metrics.
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", s.serveJWKS)
	mux.HandleFunc("GET /tenants/{id}/jwks.json", s.serveJWKS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		io.WriteString(w, "ready\n")
		s.writeUpstreams(w)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{ErrorLog: slogPrinter{s}}))
	return mux
}

// writeUpstreams lists each upstream endpoint's circuit breaker under
// /readyz's verdict. An open breaker does not make the broker unready: it
// still serves cached tokens and the other upstreams, and taking every
// replica out of rotation because one upstream is down would spread the
// outage.
func (s *Server) writeUpstreams(w io.Writer) {
	if s.cfg.Upstreams == nil {
		return
	}
	ups := s.cfg.Upstreams()
	slices.SortFunc(ups, func(a, b UpstreamState) int { return strings.Compare(a.Name, b.Name) })
	for _, u := range ups {
		if u.State == "closed" {
			fmt.Fprintf(w, "upstream %s: %s\n", u.Name, u.State)
			continue
		}
		fmt.Fprintf(w, "upstream %s: %s, next attempt at %s\n", u.Name, u.State, u.RetryAt.UTC().Format(time.RFC3339))
	}
}

// serveJWKS serves the published keys of the tenant named in the path, or of
// every tenant: cacheable, with an ETag so that verifiers polling it get a
// 304 until a rotation changes it.
func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("id")
	body, ok, err := []byte(`{"keys":[]}`), tenant == "", error(nil)
	if s.cfg.Keys != nil {
		body, ok, err = s.cfg.Keys.JWKS(tenant)
	}
	switch {
	case err != nil:
		s.log.ErrorContext(r.Context(), "JWKS unavailable", "tenant", tenant, "error", err)
		http.Error(w, "JWKS unavailable", http.StatusInternalServerError)
		return
	case !ok:
		http.Error(w, "unknown tenant", http.StatusNotFound)
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", jwksCacheControl)
	w.Header().Set("ETag", etag)
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(body)
}

// jwksCacheControl lets verifiers cache the JWKS for five minutes: the
// least time a new key must be published (state next) before it signs.
const jwksCacheControl = "public, max-age=300"

// etagMatch reports whether an If-None-Match header names etag: "*", or a
// comma-separated list holding it, weak or strong (RFC 9110 §13.1.2 compares
// weakly).
func etagMatch(header, etag string) bool {
	for _, tag := range strings.Split(header, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || tag == etag {
			return true
		}
	}
	return false
}

// slogPrinter lets promhttp report through the server's logger.
type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.log.Error("metrics", "error", v) }
