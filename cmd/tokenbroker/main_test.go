package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// runCmd runs a command to completion in-process.
func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// started is a long-running command in a goroutine, its stdout read line by
// line.
type started struct {
	lines  chan string
	stderr *testkit.Buffer
	done   chan int
	cancel context.CancelFunc
}

func start(t *testing.T, args ...string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &started{lines: make(chan string, 100), stderr: &testkit.Buffer{}, done: make(chan int, 1), cancel: cancel}
	go func() {
		code := run(ctx, args, strings.NewReader(""), pw, s.stderr)
		pw.Close()
		s.done <- code
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case s.lines <- sc.Text():
			default: // nobody is reading any more
			}
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-s.done:
			if code != 0 {
				t.Errorf("%s exited %d on cancel; stderr:\n%s", args[0], code, s.stderr)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop on cancel", args[0])
		}
	})
	return s
}

// waitLine returns the first stdout line matching re.
func (s *started) waitLine(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("output ended before a line matching %s; stderr:\n%s", re, s.stderr)
			}
			if re.MatchString(line) {
				return strings.TrimSpace(line)
			}
		case code := <-s.done:
			s.done <- code
			t.Fatalf("exited %d before a line matching %s; stderr:\n%s", code, re, s.stderr)
		case <-time.After(60 * time.Second):
			t.Fatalf("no line matching %s; stderr:\n%s", re, s.stderr)
		}
	}
}

// waitStderr waits for the command's stderr to hold a line matching re.
func (s *started) waitStderr(t *testing.T, re *regexp.Regexp) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !re.MatchString(s.stderr.String()); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %s in stderr:\n%s", re, s.stderr)
		}
	}
}

func checkJWT(t *testing.T, tok string) {
	t.Helper()
	if _, err := jwt.ParseSigned(strings.TrimSpace(tok), []jose.SignatureAlgorithm{jose.RS256}); err != nil {
		t.Errorf("printed token is not a JWT: %v", err)
	}
}

// TestDevPrintsCommandsThatWork drives `tokenbroker dev` as a person does:
// read the printed command, run it as printed, get a token.
func TestDevPrintsCommandsThatWork(t *testing.T) {
	dev := start(t, "dev", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0")
	line := dev.waitLine(t, regexp.MustCompile(` token --addr `))
	args := strings.Fields(line)
	if !strings.HasSuffix(args[0], os.Args[0]) || args[1] != "token" {
		t.Fatalf("printed command %q: want this binary's token subcommand", line)
	}
	code, stdout, stderr := runCmd(t, "", args[1:]...)
	if code != 0 {
		t.Fatalf("the printed command failed (%d): %s", code, stderr)
	}
	checkJWT(t, stdout)
	if !strings.Contains(stderr, "cache MISS") {
		t.Errorf("stderr %q: want the expiry and cache status", stderr)
	}
	code, stdout, _ = runCmd(t, "", append(args[1:], "--json")...)
	var resp struct{ AccessToken, CacheStatus string }
	if code != 0 || json.Unmarshal([]byte(stdout), &struct {
		AccessToken *string `json:"access_token"`
		CacheStatus *string `json:"cache_status"`
	}{&resp.AccessToken, &resp.CacheStatus}) != nil || resp.CacheStatus != "HIT" {
		t.Errorf("--json: exit %d, output %q; want a JSON HIT", code, stdout)
	}
	checkJWT(t, resp.AccessToken)
	// dev logs every call, the successful ones too.
	dev.waitStderr(t, regexp.MustCompile(`msg="finished call".* grpc.code=OK .*cache=hit`))

	// The grpcurl line works as printed too, where grpcurl is installed.
	gline := dev.waitLine(t, regexp.MustCompile(`grpcurl -plaintext`))
	grpcurl, err := exec.LookPath("grpcurl")
	if err != nil {
		if grpcurl, err = filepath.Abs("../../bin/tools/grpcurl"); err == nil {
			_, err = os.Stat(grpcurl)
		}
	}
	if err != nil {
		testkit.Missing(t, "TOKENBROKER_REQUIRE_INTEROP", "grpcurl not installed (make tools installs it): the printed grpcurl line was not run")
	}
	out, err := exec.Command("sh", "-c", strings.Replace(gline, strings.Fields(gline)[0], grpcurl, 1)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"accessToken"`) {
		t.Errorf("printed grpcurl command: %v\n%s", err, out)
	}
}

func TestHashKey(t *testing.T) {
	code, stdout, _ := runCmd(t, "", "hash-key")
	m := regexp.MustCompile(`(?m)^key:\s+(tbk_\S+)\napi_key_sha256: ([0-9a-f]{64})$`).FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("hash-key printed %q (exit %d)", stdout, code)
	}
	sum := sha256.Sum256([]byte(m[1]))
	if hex.EncodeToString(sum[:]) != m[2] {
		t.Error("the printed hash is not the SHA-256 of the printed key")
	}
	code, stdout, _ = runCmd(t, m[1]+"\n", "hash-key", "--stdin")
	if code != 0 || strings.TrimSpace(stdout) != "api_key_sha256: "+m[2] {
		t.Errorf("hash-key --stdin printed %q (exit %d)", stdout, code)
	}
	if code, _, _ := runCmd(t, "", "hash-key", "--stdin"); code == 0 {
		t.Error("hash-key --stdin with no input succeeded")
	}
}

func TestUnknownCommandAndHelp(t *testing.T) {
	if code, _, stderr := runCmd(t, "", "frobnicate"); code != 2 || !strings.Contains(stderr, "unknown command") {
		t.Errorf("unknown command: exit %d, %q", code, stderr)
	}
	if code, stdout, _ := runCmd(t, "", "help"); code != 0 || !strings.Contains(stdout, "check-config") {
		t.Errorf("help: exit %d, %q", code, stdout)
	}
}

// writeConfig writes a config for one tenant whose upstream is tokenURL and
// one caller with callerKey.
func writeConfig(t *testing.T, dir, tokenURL, keyFile, callerKey string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(callerKey))
	cfg := fmt.Sprintf(`listen:
  grpc: 127.0.0.1:0
  http: 127.0.0.1:0
tenants:
  - id: tn-cli
    upstream:
      kind: pismo_oidc
      token_url: %s
    issuer: cli-iss
    subject: cli-sub
    audience: cli-aud
    key_file: %s
callers:
  - name: cli
    api_key_sha256: %s
    allow:
      - tenant: tn-cli
        groups: ["pismo-v1:*"]
`, tokenURL, keyFile, hex.EncodeToString(sum[:]))
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliBroker is the operator's setup, through the commands themselves: keygen,
// the emulator alone, a config file (plus extra YAML), and serve.
type cliBroker struct {
	dir, cfgPath, callerKey, addr string
	srv                           *started
}

func startCLIBroker(t *testing.T, extraYAML func(dir string) string, serveFlags ...string) *cliBroker {
	t.Helper()
	b := &cliBroker{dir: t.TempDir()}
	keyFile := filepath.Join(b.dir, "tn-cli.pem")
	if code, _, stderr := runCmd(t, "", "keygen", "--out", keyFile); code != 0 {
		t.Fatal(stderr)
	}
	emu := start(t, "emulate", "--listen", "127.0.0.1:0", "--tenant", "tn-cli", "--issuer", "cli-iss", "--subject", "cli-sub",
		"--audience", "cli-aud", "--public-key", keyFile+".pub")
	tokenURL := regexp.MustCompile(`http://\S+`).FindString(emu.waitLine(t, regexp.MustCompile(`^emulating`)))
	b.callerKey, _ = newCallerKey()
	b.cfgPath = writeConfig(t, b.dir, tokenURL, keyFile, b.callerKey)
	if extraYAML != nil {
		f, err := os.OpenFile(b.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(extraYAML(b.dir))
		f.Close()
	}
	if code, stdout, stderr := runCmd(t, "", "check-config", "--config", b.cfgPath); code != 0 || !strings.Contains(stdout, "OK") {
		t.Fatalf("check-config: exit %d\n%s%s", code, stdout, stderr)
	}
	b.srv = start(t, append([]string{"serve", "--config", b.cfgPath}, serveFlags...)...)
	testkit.WaitFor(t, func() bool {
		m := regexp.MustCompile(`"msg":"serving","grpc":"([^"]+)"`).FindStringSubmatch(b.srv.stderr.String())
		if m != nil {
			b.addr = m[1]
		}
		return m != nil
	})
	return b
}

// token runs the token client against the broker.
func (b *cliBroker) token(t *testing.T, tenant, group string) (int, string, string) {
	return runCmd(t, "", "token", "--addr", b.addr, "--key", b.callerKey, "--tenant", tenant, "--groups", group)
}

// TestCommandLineEndToEnd is the operator's path: keygen, the emulator
// alone, check-config, serve, and the token client.
func TestCommandLineEndToEnd(t *testing.T) {
	b := startCLIBroker(t, nil)
	code, stdout, stderr := b.token(t, "tn-cli", "pismo-v1:accounts:rw")
	if code != 0 {
		t.Fatalf("token: exit %d: %s\nserver log:\n%s", code, stderr, b.srv.stderr)
	}
	checkJWT(t, stdout)

	// The token client reports a refusal with its code, and exits 1.
	code, _, stderr = b.token(t, "tn-other", "pismo-v1:accounts:rw")
	if code != 1 || !strings.Contains(stderr, "PermissionDenied") {
		t.Errorf("token for a forbidden tenant: exit %d, %q", code, stderr)
	}
	if strings.Contains(b.srv.stderr.String(), strings.TrimSpace(stdout)) || strings.Contains(b.srv.stderr.String(), b.callerKey) {
		t.Error("the server's log contains the token or the caller key")
	}
}

// TestServeCallLines: by default serve logs the calls that failed, and says
// at start that nothing else records the others; --log-calls all logs
// every call.
func TestServeCallLines(t *testing.T) {
	okLine := regexp.MustCompile(`"msg":"finished call".*"grpc.code":"OK"`)
	deniedLine := regexp.MustCompile(`"msg":"finished call".*"grpc.code":"PermissionDenied"`)
	notice := "successful calls leave no line and no audit record"
	for _, tc := range []struct {
		name   string
		flags  []string
		wantOK bool
	}{
		{"default", nil, false},
		{"all", []string{"--log-calls", "all"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startCLIBroker(t, nil, tc.flags...)
			if code, _, stderr := b.token(t, "tn-cli", "pismo-v1:accounts:rw"); code != 0 {
				t.Fatalf("token: exit %d: %s", code, stderr)
			}
			if code, _, _ := b.token(t, "tn-other", "pismo-v1:accounts:rw"); code != 1 {
				t.Fatalf("token for a forbidden tenant: exit %d, want 1", code)
			}
			// A warn line flushes the batch it follows, so the OK line,
			// if any, is written by the time the refusal's is.
			b.srv.waitStderr(t, deniedLine)
			log := b.srv.stderr.String()
			if got := okLine.MatchString(log); got != tc.wantOK {
				t.Errorf("a line for the successful call: %v, want %v; log:\n%s", got, tc.wantOK, log)
			}
			if got := strings.Contains(log, notice); got == tc.wantOK {
				t.Errorf("the start-up notice %q logged: %v, want %v", notice, got, !tc.wantOK)
			}
		})
	}
	// With an audit trail, every token is recorded there: no notice.
	b := startCLIBroker(t, func(dir string) string { return fmt.Sprintf("audit:\n  file: %s\n", filepath.Join(dir, "audit.jsonl")) })
	if strings.Contains(b.srv.stderr.String(), notice) {
		t.Errorf("the notice %q was logged with an audit trail", notice)
	}
}

func TestCheckConfigReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "open.pem")
	if code, _, stderr := runCmd(t, "", "keygen", "--out", keyFile); code != 0 {
		t.Fatal(stderr)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	// A readable key file: refused at key loading, naming the field and the fix.
	cfgPath := writeConfig(t, dir, "https://upstream.example/token", keyFile, "k")
	code, _, stderr := runCmd(t, "", "check-config", "--config", cfgPath)
	if code != 1 || !strings.Contains(stderr, "tenants[0].key_file") || !strings.Contains(stderr, "chmod 600") {
		t.Errorf("world-readable key: exit %d, %q; want tenants[0].key_file and chmod 600", code, stderr)
	}
	// Several config problems at once: each on its own line naming its field.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen:\n  grpc: 127.0.0.1:7443\n  htp: x\ncache:\n  skew: ten seconds\ntenants: []\n"), 0o644)
	code, _, stderr = runCmd(t, "", "check-config", "--config", bad)
	for _, want := range []string{"listen.htp", "cache.skew", "tenants", "callers"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, stderr)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
}

// TestServeWritesAVerifiableAuditTrail: serve with audit.file, make calls,
// stop, and the trail verifies; change one byte and verify names the line.
func TestServeWritesAVerifiableAuditTrail(t *testing.T) {
	var trail string
	b := startCLIBroker(t, func(dir string) string {
		trail = filepath.Join(dir, "audit.jsonl")
		return fmt.Sprintf("audit:\n  file: %s\n", trail)
	})
	var tokens []string
	for _, group := range []string{"pismo-v1:accounts:rw", "pismo-v1:accounts:rw", "other:group"} {
		_, stdout, _ := b.token(t, "tn-cli", group)
		tokens = append(tokens, strings.TrimSpace(stdout))
	}
	b.srv.cancel()
	if code := <-b.srv.done; code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	b.srv.done <- 0 // for start's cleanup

	data, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != 3 {
		t.Errorf("the trail has %d lines for 3 calls:\n%s", n, data)
	}
	for _, tok := range tokens {
		if tok != "" && strings.Contains(string(data), tok) {
			t.Error("the audit trail contains a token")
		}
	}
	if code, stdout, stderr := runCmd(t, "", "audit", "verify", trail); code != 0 || !strings.Contains(stdout, "OK, 3 lines") {
		t.Fatalf("audit verify: exit %d %q %q", code, stdout, stderr)
	}
	tampered := strings.Replace(string(data), `"decision":"denied"`, `"decision":"allowed"`, 1)
	if tampered == string(data) {
		t.Fatalf("no denied record to tamper with:\n%s", data)
	}
	os.WriteFile(trail, []byte(tampered), 0o600)
	if code, stdout, _ := runCmd(t, "", "audit", "verify", trail); code != 1 || !strings.Contains(stdout, "line 3") {
		t.Errorf("audit verify of a tampered trail: exit %d %q, want 1 naming line 3", code, stdout)
	}
}
