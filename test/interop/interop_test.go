package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// The broker's config: one tenant with hour-long tokens for the
// cross-language checks, one whose tokens live renewLifetime so that a watch
// sees a renewal within seconds, a caller with a bearer key and a caller
// with a client certificate.
const (
	tenant        = "tn-interop"
	renewTenant   = "tn-renew"
	group         = "pismo-v1:accounts:rw"
	keyCaller     = "interop-key"
	certCaller    = "interop-mtls"
	certIdentity  = "spiffe://interop.test/clients"
	renewLifetime = 10 * time.Second
	renewMinTTL   = "2s" // with cache.skew 1s: renewed about 7 s into a token's 10
)

// TestClients runs each example client against the broker over TLS, with the
// bearer key and with the client certificate, and with both RPCs; then all
// of them at once watching a short-lived token through a renewal. Every
// token a client reports must be in the broker's audit trail under the
// caller it authenticated as, and every client must see the same token.
func TestClients(t *testing.T) {
	b := startBroker(t, brokerBinary(t))
	tlsOnly := []string{"--addr", b.tlsAddr, "--ca", b.ca}
	bearer := slices.Concat(tlsOnly, []string{"--key", b.key})
	mtls := slices.Concat(tlsOnly, []string{"--cert", b.cert, "--client-key", b.certKey})
	ask := []string{"--tenant", tenant, "--groups", group}
	watchOne := []string{"--watch", "1"}

	var handed []handout // every token a client printed, in order
	refusals := 0
	for _, c := range clients() {
		t.Run(c.name, func(t *testing.T) {
			c.need(t)
			for _, tc := range []struct {
				name, caller string
				args         []string
			}{
				{"bearer key over TLS, GetAccessToken", keyCaller, slices.Concat(bearer, ask)},
				{"bearer key over TLS, WatchAccessToken", keyCaller, slices.Concat(bearer, ask, watchOne)},
				{"client certificate, GetAccessToken", certCaller, slices.Concat(mtls, ask)},
				{"client certificate, WatchAccessToken", certCaller, slices.Concat(mtls, ask, watchOne)},
			} {
				r := c.run(t, tc.args...)
				if r.code != 0 || len(r.tokens) != 1 {
					t.Fatalf("%s: exit %d, %d tokens; want exit 0 and one token\nstderr: %s\nbroker log:\n%s", tc.name, r.code, len(r.tokens), r.stderr, b.srv.stderr)
				}
				handed = append(handed, handout{c.name + ": " + tc.name, tc.caller, tenant, r.tokens[0]})
			}
			for _, tc := range []struct {
				name, code string
				args       []string
			}{
				{"a key no caller has", "UNAUTHENTICATED", slices.Concat(tlsOnly, []string{"--key", "tbk_not-a-caller-key"}, ask)},
				{"a key no caller has, beside a good certificate", "UNAUTHENTICATED", slices.Concat(mtls, []string{"--key", "tbk_not-a-caller-key"}, ask)},
				{"a tenant the caller may not have", "PERMISSION_DENIED", slices.Concat(mtls, []string{"--tenant", "tn-elsewhere", "--groups", group}, watchOne)},
			} {
				r := c.run(t, tc.args...)
				if r.code == 1 {
					refusals++
				}
				if r.code != 1 || len(r.tokens) != 0 || !strings.HasPrefix(r.stderr, "error code="+tc.code+" ") {
					t.Errorf("%s: exit %d, %d tokens, stderr %q; want exit 1 and error code=%s", tc.name, r.code, len(r.tokens), r.stderr, tc.code)
				}
			}
		})
	}
	if len(handed) > 0 {
		checkOneToken(t, handed)
	}

	t.Run("renewal", func(t *testing.T) {
		handed = append(handed, watchRenewal(t, b)...)
	})

	if len(handed) == 0 {
		t.Skip("no client ran")
	}
	// One upstream exchange per distinct token, however many callers got it.
	tokens := map[string]map[string]bool{tenant: {}, renewTenant: {}}
	for _, h := range handed {
		tokens[h.tenant][h.tok.fp] = true
	}
	b.checkExchanges(t, map[string]int{tenant: len(tokens[tenant]), renewTenant: len(tokens[renewTenant])})
	b.stop(t)
	b.checkAudit(t, handed, refusals)
}

// TestClientsDev runs each client with the flags `tokenbroker dev` prints
// for its own token command: plaintext on loopback, with the bearer key.
func TestClientsDev(t *testing.T) {
	bin := brokerBinary(t)
	dev := start(t, t.TempDir(), bin, "dev", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0")
	line := dev.waitLine(t, regexp.MustCompile(` token --addr `))
	_, flags, _ := strings.Cut(line, " token ")
	var got []token
	for _, c := range clients() {
		t.Run(c.name, func(t *testing.T) {
			c.need(t)
			r := c.run(t, strings.Fields(flags)...)
			if r.code != 0 || len(r.tokens) != 1 {
				t.Fatalf("exit %d, %d tokens; stderr: %s", r.code, len(r.tokens), r.stderr)
			}
			got = append(got, r.tokens[0])
		})
	}
	for i, tok := range got {
		if want := map[bool]string{true: "MISS", false: "HIT"}[i == 0]; tok.cache != want || tok.fp != got[0].fp || !tok.expires.Equal(got[0].expires) {
			t.Errorf("call %d: %+v; want the first call's token (%s), cache %s", i+1, tok, got[0].fp, want)
		}
	}
}

// handout is a token a client printed, and whom the broker gave it to.
type handout struct {
	what, caller, tenant string
	tok                  token
}

// checkOneToken checks that every client got the one token of tenant: the
// first call exchanged it, every later call was a hit on it.
func checkOneToken(t *testing.T, handed []handout) {
	t.Helper()
	first := handed[0].tok
	if first.cache != "MISS" {
		t.Errorf("%s: cache %s; the first call for %s must have caused the exchange (MISS)", handed[0].what, first.cache, tenant)
	}
	if left := time.Until(first.expires); left < 50*time.Minute || left > time.Hour+time.Minute {
		t.Errorf("%s: expires %s, in %s; the emulator issues hour-long tokens", handed[0].what, first.expires.Format(time.RFC3339), left.Round(time.Second))
	}
	for _, h := range handed[1:] {
		if h.tok.fp != first.fp || !h.tok.expires.Equal(first.expires) || h.tok.cache != "HIT" {
			t.Errorf("%s: fp=%s expires=%s cache=%s; want the first call's token, fp=%s expires=%s, as a HIT",
				h.what, h.tok.fp, h.tok.expires.Format(time.RFC3339), h.tok.cache, first.fp, first.expires.Format(time.RFC3339))
		}
	}
}

// watchRenewal starts every client twice at once, with the bearer key and
// with the certificate, each watching two tokens of renewTenant. All of
// them must see the same first token and the same renewal, made by one
// exchange each however many watch.
func watchRenewal(t *testing.T, b *broker) []handout {
	var cs []client
	for _, c := range clients() {
		if c.missing == "" {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		t.Skip("no client can run here")
	}
	ask := []string{"--tenant", renewTenant, "--groups", group, "--min-ttl", renewMinTTL, "--watch", "2", "--timeout", "60s"}
	type watcher struct {
		c      client
		caller string
		args   []string
		r      result
	}
	var ws []*watcher
	for _, c := range cs {
		ws = append(ws,
			&watcher{c: c, caller: keyCaller, args: slices.Concat([]string{"--addr", b.tlsAddr, "--ca", b.ca, "--key", b.key}, ask)},
			&watcher{c: c, caller: certCaller, args: slices.Concat([]string{"--addr", b.tlsAddr, "--ca", b.ca, "--cert", b.cert, "--client-key", b.certKey}, ask)})
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.r = w.c.run(t, w.args...) })
	}
	wg.Wait()

	var handed []handout
	var gens [2][]handout
	for _, w := range ws {
		what := fmt.Sprintf("%s watching with %s", w.c.name, w.caller)
		if w.r.code != 0 || len(w.r.tokens) != 2 {
			t.Errorf("%s: exit %d, %d tokens; want 2\nstderr: %s", what, w.r.code, len(w.r.tokens), w.r.stderr)
			continue
		}
		for i, tok := range w.r.tokens {
			h := handout{fmt.Sprintf("%s, token %d", what, i+1), w.caller, renewTenant, tok}
			handed = append(handed, h)
			gens[i] = append(gens[i], h)
		}
	}
	if t.Failed() {
		return handed
	}
	for i, gen := range gens {
		misses := 0
		for _, h := range gen {
			if h.tok.fp != gen[0].tok.fp || !h.tok.expires.Equal(gen[0].tok.expires) {
				t.Errorf("%s: fp=%s expires=%s; %s got fp=%s expires=%s: every watcher must see the same token",
					h.what, h.tok.fp, h.tok.expires.Format(time.RFC3339), gen[0].what, gen[0].tok.fp, gen[0].tok.expires.Format(time.RFC3339))
			}
			if h.tok.cache == "MISS" {
				misses++
			}
		}
		if misses > 1 {
			t.Errorf("token %d: %d watchers report a MISS; one exchange serves them all", i+1, misses)
		}
	}
	first, renewed := gens[0][0].tok, gens[1][0].tok
	if renewed.fp == first.fp || !renewed.expires.After(first.expires) {
		t.Errorf("the renewal (fp=%s expires=%s) is not a newer token than the first (fp=%s expires=%s)",
			renewed.fp, renewed.expires.Format(time.RFC3339), first.fp, first.expires.Format(time.RFC3339))
	}
	return handed
}

// clients are the example clients, each with why it cannot run here, if it
// cannot.
var clients = sync.OnceValue(func() []client { return []client{pythonClient(), nodeClient()} })

// client is one example client: an interpreter and a script.
type client struct {
	name    string
	argv    []string
	missing string // why it cannot run here; "" when it can
}

// pythonClient is examples/python/client.py under Debian's /usr/bin/python3
// (or $TOKENBROKER_PYTHON), which must import grpc and grpc_tools.
func pythonClient() client {
	py := os.Getenv("TOKENBROKER_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	c := client{name: "python", argv: []string{py, abs("../../examples/python/client.py")}}
	const install = "apt-get install python3-grpcio python3-grpc-tools, or set TOKENBROKER_PYTHON to a python3 that has grpcio and grpcio-tools"
	if _, err := exec.LookPath(py); err != nil {
		c.missing = fmt.Sprintf("%s not found (%s)", py, install)
	} else if out, err := exec.Command(py, "-c", "import grpc, grpc_tools.protoc").CombinedOutput(); err != nil {
		c.missing = fmt.Sprintf("%s cannot import grpc and grpc_tools: %s (%s)", py, lastLine(out), install)
	}
	return c
}

// nodeClient is examples/node/client.js under the node on PATH, with the
// packages `npm ci` installs.
func nodeClient() client {
	c := client{name: "node", argv: []string{"node", abs("../../examples/node/client.js")}}
	node, err := exec.LookPath("node")
	if err != nil {
		c.missing = "node is not on PATH"
		return c
	}
	c.argv[0] = node
	for _, pkg := range []string{"@grpc/grpc-js", "@grpc/proto-loader"} {
		if _, err := os.Stat(filepath.Join("../../examples/node/node_modules", pkg, "package.json")); err != nil {
			c.missing = "examples/node/node_modules has no " + pkg + " (run npm ci in examples/node)"
			return c
		}
	}
	return c
}

// need skips t when c cannot run here, saying why, and fails it instead
// under TOKENBROKER_REQUIRE_INTEROP=1.
func (c client) need(t *testing.T) {
	t.Helper()
	if c.missing == "" {
		return
	}
	if os.Getenv("TOKENBROKER_REQUIRE_INTEROP") == "1" {
		t.Fatalf("the %s client cannot run: %s; TOKENBROKER_REQUIRE_INTEROP=1 makes that a failure", c.name, c.missing)
	}
	t.Skipf("the %s client cannot run, skipped: %s", c.name, c.missing)
}

// result is what one run of a client did.
type result struct {
	code   int
	tokens []token
	stderr string
}

// token is one line a client printed.
type token struct {
	fp      string
	expires time.Time
	cache   string // HIT, MISS or SHARED
}

var tokenLine = regexp.MustCompile(`^token fp=([0-9a-f]{12}) expires=(\S+) cache=(HIT|MISS|SHARED)$`)

// run runs the client with args and parses what it printed; every stdout
// line must be a token line. The log shows the command with the key
// replaced. It reports problems with t.Errorf and a code of -1, never
// t.Fatal: watchRenewal calls it from other goroutines.
func (c client) run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], append(c.argv[1:], args...)...)
	cmd.Env = append(os.Environ(), "TOKENBROKER_KEY=") // only the flags count
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	r := result{stderr: strings.TrimSpace(stderr.String())}
	switch {
	case err == nil && r.stderr != "":
		t.Errorf("%s client succeeded but wrote to stderr: %s", c.name, r.stderr)
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		r.code = exit.ExitCode()
	default:
		t.Errorf("%s client: %v\nstderr: %s", c.name, err, r.stderr)
		r.code = -1
	}
	shown := slices.Clone(args)
	for i := range shown[:max(len(shown)-1, 0)] {
		if shown[i] == "--key" {
			shown[i+1] = "<key>"
		}
	}
	t.Logf("%s %s %s\n  exit %d\n%s", c.name, filepath.Base(c.argv[1]), strings.Join(shown, " "), r.code,
		indent(strings.TrimSpace(stdout.String()+"\n"+r.stderr)))
	for l := range strings.Lines(stdout.String()) {
		m := tokenLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			t.Errorf("%s client printed %q: not a token line", c.name, l)
			r.code = -1
			continue
		}
		exp, err := time.Parse(time.RFC3339, m[2])
		if err != nil {
			t.Errorf("%s client printed expires=%q: %v", c.name, m[2], err)
			r.code = -1
			continue
		}
		if !exp.After(time.Now()) {
			t.Errorf("%s client printed a token that expired at %s", c.name, m[2])
		}
		r.tokens = append(r.tokens, token{fp: m[1], expires: exp, cache: m[3]})
	}
	return r
}

// broker is the broker under test, with what a caller needs.
type broker struct {
	bin, dir   string
	addr, http string
	// tlsAddr is addr by the name the server certificate carries:
	// localhost. With an IP address, grpc-js sends it as the TLS server
	// name, which Node warns about (DEP0123, grpc/grpc-node#1919).
	tlsAddr string
	key     string // the bearer caller's key
	ca      string // the CA of the server and client certificates
	cert    string // the certificate caller's certificate and key
	certKey string
	audit   string
	srv     *proc
}

// brokerBinary is the binary make test-interop built.
func brokerBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("TOKENBROKER_BINARY")
	if bin == "" {
		t.Skip("TOKENBROKER_BINARY is not set: `make test-interop` builds bin/tokenbroker and runs this test with it")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("TOKENBROKER_BINARY: %v", err)
	}
	return bin
}

// startBroker does what an operator does: keygen for each tenant, the
// emulator for each, a caller key from hash-key, certificates, a config,
// check-config and serve.
func startBroker(t *testing.T, bin string) *broker {
	t.Helper()
	b := &broker{bin: bin, dir: t.TempDir()}
	urls := map[string]string{}
	for _, tn := range []struct {
		id       string
		lifetime time.Duration
	}{{tenant, time.Hour}, {renewTenant, renewLifetime}} {
		keyFile := filepath.Join(b.dir, tn.id+".pem")
		b.must(t, "keygen", "--out", keyFile)
		emu := start(t, b.dir, bin, "emulate", "--listen", "127.0.0.1:0", "--tenant", tn.id, "--issuer", tn.id+"-iss",
			"--subject", tn.id+"-sub", "--audience", tn.id+"-aud", "--public-key", keyFile+".pub", "--token-lifetime", tn.lifetime.String())
		urls[tn.id] = regexp.MustCompile(`http://\S+`).FindString(emu.waitLine(t, regexp.MustCompile(`^emulating`)))
	}
	m := regexp.MustCompile(`(?m)^key:\s+(\S+)\napi_key_sha256: ([0-9a-f]{64})$`).FindStringSubmatch(b.must(t, "hash-key"))
	if m == nil {
		t.Fatal("hash-key printed no key and hash")
	}
	b.key = m[1]
	b.ca, b.cert, b.certKey = writePKI(t, b.dir)
	b.audit = filepath.Join(b.dir, "audit.jsonl")

	var tenants strings.Builder
	for _, id := range []string{tenant, renewTenant} {
		fmt.Fprintf(&tenants, `  - id: %[1]s
    upstream: {kind: pismo_oidc, token_url: %[2]q}
    issuer: %[1]s-iss
    subject: %[1]s-sub
    audience: %[1]s-aud
    key_file: %[1]s.pem
`, id, urls[id])
	}
	allow := fmt.Sprintf(`    allow:
      - {tenant: %s, groups: ["pismo-v1:*"]}
      - {tenant: %s, groups: ["pismo-v1:*"]}
`, tenant, renewTenant)
	cfg := fmt.Sprintf(`listen:
  grpc: 127.0.0.1:0
  http: 127.0.0.1:0
tls:
  cert_file: server.crt
  key_file: server.key
  client_ca_file: ca.crt
audit:
  file: audit.jsonl
cache:
  skew: 1s
tenants:
%scallers:
  - name: %s
    api_key_sha256: %s
%s  - name: %s
    tls_identity: %s
%s`, tenants.String(), keyCaller, m[2], allow, certCaller, certIdentity, allow)
	cfgPath := filepath.Join(b.dir, "broker.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b.must(t, "check-config", "--config", cfgPath)

	b.srv = start(t, b.dir, bin, "serve", "--config", cfgPath)
	serving := regexp.MustCompile(`"msg":"serving","grpc":"([^"]+)","http":"([^"]+)"`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := serving.FindStringSubmatch(b.srv.stderr.String()); m != nil {
			b.addr, b.http = m[1], m[2]
			_, port, _ := net.SplitHostPort(b.addr)
			b.tlsAddr = net.JoinHostPort("localhost", port)
			break
		}
		if b.srv.exited() || time.Now().After(deadline) {
			t.Fatalf("the broker is not serving; its log:\n%s", b.srv.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("broker serving gRPC (TLS, client certificates optional) on %s (%s); callers %q (bearer key) and %q (%s)", b.tlsAddr, b.addr, keyCaller, certCaller, certIdentity)
	return b
}

// must runs a broker command to completion and returns its stdout.
func (b *broker) must(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(b.bin, args...)
	cmd.Dir = b.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tokenbroker %s: %v\n%s%s", args[0], err, out, stderr.Bytes())
	}
	return string(out)
}

// checkExchanges compares the broker's count of upstream exchanges per
// tenant with want.
func (b *broker) checkExchanges(t *testing.T, want map[string]int) {
	t.Helper()
	resp, err := http.Get("http://" + b.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for tn, n := range want {
		re := regexp.MustCompile(`(?m)^tokenbroker_exchanges_total\{tenant="` + regexp.QuoteMeta(tn) + `"\} (\d+)$`)
		got := "0"
		if m := re.FindSubmatch(body); m != nil {
			got = string(m[1])
		}
		if got != fmt.Sprint(n) {
			t.Errorf("tokenbroker_exchanges_total{tenant=%q} = %s; want %d", tn, got, n)
		}
	}
}

// stop shuts the broker down, which flushes its audit trail.
func (b *broker) stop(t *testing.T) {
	t.Helper()
	if err := b.srv.stop(); err != nil {
		t.Errorf("the broker did not stop cleanly: %v\n%s", err, b.srv.stderr)
	}
}

// checkAudit checks the stopped broker's audit trail: its hash chain holds,
// the tokens it records as handed out are exactly those the clients
// printed, each under the caller the client authenticated as, and it
// records each refusal.
func (b *broker) checkAudit(t *testing.T, handed []handout, refusals int) {
	t.Helper()
	b.must(t, "audit", "verify", b.audit)
	data, err := os.ReadFile(b.audit)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	denied := 0
	for l := range strings.Lines(string(data)) {
		var rec struct{ Caller, Tenant, Decision, Cache, TokenFP string }
		if err := json.Unmarshal([]byte(l), &struct {
			Caller   *string `json:"caller"`
			Tenant   *string `json:"tenant"`
			Decision *string `json:"decision"`
			Cache    *string `json:"cache"`
			TokenFP  *string `json:"token_fp"`
		}{&rec.Caller, &rec.Tenant, &rec.Decision, &rec.Cache, &rec.TokenFP}); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if rec.Decision != "allowed" {
			denied++
			continue
		}
		got = append(got, fmt.Sprintf("caller=%s tenant=%s fp=%s cache=%s", rec.Caller, rec.Tenant, rec.TokenFP, rec.Cache))
	}
	for _, h := range handed {
		want = append(want, fmt.Sprintf("caller=%s tenant=%s fp=%s cache=%s", h.caller, h.tenant, h.tok.fp, strings.ToLower(h.tok.cache)))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the audit trail's handed-out tokens:\n  %s\nwhat the clients printed:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if denied != refusals {
		t.Errorf("the audit trail has %d refusals; the clients were refused %d times", denied, refusals)
	}
	t.Logf("audit trail: %d tokens handed out, each matching a client's line; %d refusals; hash chain verified", len(got), denied)
}

// writePKI writes a CA, a server certificate for 127.0.0.1 and localhost,
// and a client certificate naming certIdentity, as PEM files in dir; it
// returns the paths of the CA certificate, the client certificate and its
// key.
func writePKI(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interop test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, tmpl *x509.Certificate) {
		k := newKey(t)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
		p8, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, name+".key"), "PRIVATE KEY", p8)
	}
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
	issue("server", 2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "tokenbroker"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	id, err := url.Parse(certIdentity)
	if err != nil {
		t.Fatal(err)
	}
	issue("client", 3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "interop client"}, URIs: []*url.URL{id},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writePEM writes one PEM block, mode 0600 as the broker wants its keys.
func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// proc is a long-running broker command: its stdout line by line, its
// stderr in a buffer. The test's cleanup stops it.
type proc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *testkit.Buffer
	done   chan struct{}
	err    error // once done is closed
	once   sync.Once
	stopEr error
}

func start(t *testing.T, dir, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), lines: make(chan string, 100), stderr: &testkit.Buffer{}, done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody is reading any more
			}
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("tokenbroker %s did not stop cleanly: %v\n%s", args[0], err, p.stderr)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for the process to exit, killing it after
// 30 s.
func (p *proc) stop() error {
	p.once.Do(func() {
		if !p.exited() {
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-p.done:
			p.stopEr = p.err
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
			p.stopEr = errors.New("still running 30 s after SIGTERM: killed")
		}
	})
	return p.stopEr
}

// waitLine returns the first stdout line matching re.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.done
				t.Fatalf("exited (%v) before printing a line matching %s; stderr:\n%s", p.err, re, p.stderr)
			}
			if re.MatchString(line) {
				return strings.TrimSpace(line)
			}
		case <-timeout:
			t.Fatalf("no line matching %s within 30 s; stderr:\n%s", re, p.stderr)
		}
	}
}

func abs(rel string) string {
	p, err := filepath.Abs(rel)
	if err != nil {
		panic(err)
	}
	return p
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
