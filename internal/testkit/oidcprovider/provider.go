package oidcprovider

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Resource is the resource indicator (RFC 8707) of the provider's only
// resource server. It is the default resource, so requests need not name it;
// the provider refuses any other with invalid_target. It is the "aud" of the
// access tokens, whose scopes are those both requested and held by the
// client.
const Resource = "urn:tokenbroker:interop"

// RequireEnv is the environment variable that, set to "1", turns Start's skip
// into a failure, for CI jobs that must run the interop tests.
const RequireEnv = "TOKENBROKER_REQUIRE_INTEROP"

// dir is the Node side of the harness, relative to the module root.
const dir = "test/oidc-provider"

// Client is an OAuth client registered with the provider. It may use only the
// client-credentials grant.
type Client struct {
	// ID is the client_id. It is required.
	ID string
	// AuthMethod is the token_endpoint_auth_method: "client_secret_post",
	// "client_secret_basic" or "private_key_jwt". The provider accepts a
	// secret in either form from a client registered with either secret
	// method. Empty means client_secret_basic.
	AuthMethod string
	// Secret is the client_secret of the secret methods.
	Secret string
	// JWKSURI is where the provider fetches a private_key_jwt client's
	// public keys, on first use and then when its copy is stale (after 60 s,
	// or longer if the response's Cache-Control max-age says so). Exactly one
	// of JWKSURI and JWKS is set for private_key_jwt.
	JWKSURI string
	// JWKS is a private_key_jwt client's public JWK Set, inline.
	JWKS json.RawMessage
	// Scopes are the scopes the client may request. Asking for a scope that
	// another client holds is refused with invalid_scope; a scope no client
	// holds is dropped from the token without error. A client with no
	// Scopes may ask for any client's.
	Scopes []string
	// SigningAlg, when set, is the only JWS algorithm the provider accepts
	// for the client's assertions (token_endpoint_auth_signing_alg); else it
	// accepts RS256, PS256, ES256, Ed25519 and EdDSA.
	SigningAlg string
}

// metadata is a Client in the form provider.js reads: RFC 7591 names.
type metadata struct {
	ClientID   string          `json:"client_id"`
	AuthMethod string          `json:"token_endpoint_auth_method,omitempty"`
	Secret     string          `json:"client_secret,omitempty"`
	JWKSURI    string          `json:"jwks_uri,omitempty"`
	JWKS       json.RawMessage `json:"jwks,omitempty"`
	Scope      string          `json:"scope,omitempty"`
	SigningAlg string          `json:"token_endpoint_auth_signing_alg,omitempty"`
}

// Provider is a running oidc-provider.
type Provider struct {
	// Issuer is the issuer identifier, http://127.0.0.1:<port>. A client
	// assertion's "aud" may be the issuer or the token endpoint.
	Issuer string
	// TokenEndpoint is the token_endpoint of the discovery document.
	TokenEndpoint string
	// JWKSURI is the jwks_uri of the discovery document: the keys that sign
	// the access tokens.
	JWKSURI string

	log     *logBuffer    // stderr, and stdout after the ISSUER line
	done    chan struct{} // closed when the process has exited
	stdinMu sync.Mutex    // guards stdin and seq
	stdin   io.WriteCloser
	seq     int // the last SYNC asked for
}

// Start runs test/oidc-provider/provider.js with node on loopback, with these
// clients, and returns once it prints its issuer and has answered its
// discovery request. The provider stops when the test ends; its log is shown
// if the test failed.
//
// Start skips the test with a message when node or the installed package is
// missing, or fails it if RequireEnv is "1". It fails the test if the
// provider exits before printing its issuer (for instance because a client's
// metadata is invalid), with the provider's log. It has no time limit of its
// own.
func Start(t testing.TB, clients ...Client) *Provider {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "node not installed")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("oidcprovider: %v", err)
	}
	work := filepath.Join(root, filepath.FromSlash(dir))
	if _, err := os.Stat(filepath.Join(work, "node_modules", "oidc-provider", "package.json")); err != nil {
		unavailable(t, dir+"/node_modules missing: run npm ci in "+dir)
	}
	clientsFile := writeClients(t, clients)

	p := &Provider{log: newLogBuffer(), done: make(chan struct{})}
	cmd := exec.Command(node, "provider.js", clientsFile)
	cmd.Dir = work
	cmd.Stderr = p.log
	p.stdin, err = cmd.StdinPipe() // provider.js exits when it closes
	if err != nil {
		t.Fatalf("oidcprovider: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("oidcprovider: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("oidcprovider: start node: %v", err)
	}

	// The reader sends the issuer, or closes issuers if stdout ends first,
	// then waits for the process (which closes stdout) and closes done.
	issuers := make(chan string, 1)
	done := p.done
	var waitErr error
	started := false // set once Start returns; until then Start reports failures
	go func() {
		defer close(done)
		sent := false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if issuer, ok := strings.CutPrefix(sc.Text(), "ISSUER "); ok && !sent {
				issuers <- issuer
				sent = true
				continue
			}
			fmt.Fprintf(p.log, "stdout: %s\n", sc.Text())
		}
		if !sent {
			close(issuers)
		}
		_, _ = io.Copy(io.Discard, stdout)
		waitErr = cmd.Wait()
	}()
	t.Cleanup(func() {
		p.stdinMu.Lock()
		_ = p.stdin.Close()
		p.stdinMu.Unlock()
		<-done
		switch {
		case !started:
		case waitErr != nil:
			t.Errorf("oidcprovider: provider.js did not exit cleanly: %v\n%s", waitErr, p.log)
		case t.Failed():
			t.Logf("oidcprovider: provider.js log:\n%s", p.log)
		}
	})

	issuer, ok := <-issuers
	if !ok {
		<-done
		t.Fatalf("oidcprovider: provider.js exited before printing its issuer: %v\n%s", waitErr, p.log)
	}
	p.Issuer = issuer
	if err := p.discover(); err != nil {
		t.Fatalf("oidcprovider: %v\n%s", err, p.log)
	}
	started = true
	return p
}

// Events returns the provider's token-endpoint events so far, one JSON
// object a line: grant.success, grant.error (with error, error_description,
// error_detail and cause, which say why a client was refused) and
// server_error. Fields: event, client_id, grant_type, status, scope, error,
// error_description, error_detail, cause. It includes the events of every
// request answered before the call: it first waits for the provider to
// echo a marker through its log.
func (p *Provider) Events() []string {
	p.sync()
	var events []string
	for line := range strings.Lines(p.log.String()) {
		var e struct{ Event string }
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if strings.HasPrefix(e.Event, "grant.") || e.Event == "server_error" {
			events = append(events, strings.TrimSuffix(line, "\n"))
		}
	}
	return events
}

// sync waits until the log holds everything the provider wrote before now:
// it asks provider.js for a SYNC answer on stdin and waits for it on stderr,
// which comes after the events of the requests already answered. It returns
// early if the provider has stopped, whose log is then complete.
func (p *Provider) sync() {
	p.stdinMu.Lock()
	p.seq++
	n := p.seq
	_, err := fmt.Fprintf(p.stdin, "sync %d\n", n)
	p.stdinMu.Unlock()
	if err != nil {
		<-p.done
		return
	}
	for {
		synced, changed := p.log.synced()
		if synced >= n {
			return
		}
		select {
		case <-changed:
		case <-p.done:
			return
		}
	}
}

// Log returns everything the provider has written to stderr so far: the
// events and oidc-provider's own warnings.
func (p *Provider) Log() string { return p.log.String() }

// discover reads the discovery document.
func (p *Provider) discover() error {
	url := p.Issuer + "/.well-known/openid-configuration"
	resp, err := http.Get(url)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("discovery: GET %s: %s", url, resp.Status)
	}
	var doc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
		JWKSURI       string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return fmt.Errorf("discovery: decode %s: %w", url, err)
	}
	if doc.Issuer != p.Issuer || doc.TokenEndpoint == "" {
		return fmt.Errorf("discovery: %s: issuer %q, token_endpoint %q", url, doc.Issuer, doc.TokenEndpoint)
	}
	p.TokenEndpoint, p.JWKSURI = doc.TokenEndpoint, doc.JWKSURI
	return nil
}

// unavailable skips the test because the harness cannot run, or fails it if
// RequireEnv says the harness must run.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("oidcprovider: %s (and %s=1)", why, RequireEnv)
	}
	t.Skipf("oidcprovider: %s", why)
}

// moduleRoot returns the nearest directory at or above the working directory
// that holds go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod at or above %s", wd)
		}
	}
}

// writeClients writes the clients, in the form provider.js reads, to a file
// in a temporary directory and returns its path.
func writeClients(t testing.TB, clients []Client) string {
	t.Helper()
	md := make([]metadata, len(clients))
	for i, c := range clients {
		if c.ID == "" {
			t.Fatalf("oidcprovider: client %d has no ID", i)
		}
		md[i] = metadata{
			ClientID:   c.ID,
			AuthMethod: c.AuthMethod,
			Secret:     c.Secret,
			JWKSURI:    c.JWKSURI,
			JWKS:       c.JWKS,
			Scope:      strings.Join(c.Scopes, " "),
			SigningAlg: c.SigningAlg,
		}
	}
	data, err := json.Marshal(md)
	if err != nil {
		t.Fatalf("oidcprovider: encode clients: %v", err)
	}
	path := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("oidcprovider: %v", err)
	}
	return path
}

// logBuffer holds the provider's stderr. It is safe for concurrent use. It
// keeps the lines but for the "SYNC <n>" answers, of which it remembers the
// highest.
type logBuffer struct {
	mu      sync.Mutex
	lines   bytes.Buffer  // complete lines
	partial []byte        // an unfinished last line
	sync    int           // the highest SYNC answer seen
	changed chan struct{} // closed, and replaced, when sync grows
}

func newLogBuffer() *logBuffer {
	return &logBuffer{changed: make(chan struct{})}
}

// Write appends p.
func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rest := append(l.partial, p...)
	for {
		line, after, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			break
		}
		rest = after
		if num, ok := bytes.CutPrefix(line, []byte("SYNC ")); ok {
			if n, err := strconv.Atoi(string(num)); err == nil {
				if n > l.sync {
					l.sync = n
					close(l.changed)
					l.changed = make(chan struct{})
				}
				continue
			}
		}
		l.lines.Write(line)
		l.lines.WriteByte('\n')
	}
	l.partial = bytes.Clone(rest)
	return len(p), nil
}

// synced returns the highest SYNC answer seen, and a channel closed when
// there is a higher one.
func (l *logBuffer) synced() (int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sync, l.changed
}

// String returns the log so far.
func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lines.String() + string(l.partial)
}
