package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/testkit"
)

// writeKeyFile writes data to a new file in a test directory with perm.
func writeKeyFile(t *testing.T, data []byte, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

// opensslLine is raw as `openssl rand -base64 32` prints it.
func opensslLine(raw []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(raw) + "\n")
}

func TestLoadKeyFile(t *testing.T) {
	raw := rawKey("file")
	b64 := base64.StdEncoding.EncodeToString(raw)
	want := testKey(t, "file")
	for _, tc := range []struct {
		name string
		data string
	}{
		{"openssl", b64 + "\n"},
		{"crlf", b64 + "\r\n"},
		{"no newline", b64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := LoadKeyFile(writeKeyFile(t, []byte(tc.data), 0o600))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := k.ID(), want.ID(); got != want {
				t.Errorf("ID() = %s, want %s", got, want)
			}
			// The loaded key opens what the same key sealed, and vice versa.
			s1, err := NewSealer(k)
			if err != nil {
				t.Fatal(err)
			}
			s2 := testSealer(t, "file")
			sealed, _ := s1.Seal([]byte("ck"), []byte("token"))
			if pt, err := s2.Open([]byte("ck"), sealed); err != nil || string(pt) != "token" {
				t.Errorf("Open = %q, %v; want token", pt, err)
			}
			if got, want := s1.Name([]byte("ck")), s2.Name([]byte("ck")); got != want {
				t.Errorf("Name = %s, want %s", got, want)
			}
		})
	}
}

// TestLoadKeyFileOpenSSL loads a key made by the openssl binary itself.
func TestLoadKeyFileOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		testkit.Missing(t, "TOKENBROKER_REQUIRE_OPENSSL", "openssl is not installed, so no key made by `openssl rand -base64 32` is tried; the format is covered by TestLoadKeyFile")
	}
	out, err := exec.Command(openssl, "rand", "-base64", "32").Output()
	if err != nil {
		t.Fatalf("openssl rand -base64 32: %v", err)
	}
	path := writeKeyFile(t, out, 0o600)
	k, err := LoadKeyFile(path)
	if err != nil {
		t.Fatalf("LoadKeyFile of `openssl rand -base64 32` output: %v", err)
	}
	s, err := NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := s.Seal([]byte("ck"), []byte("token"))
	if pt, err := s.Open([]byte("ck"), sealed); err != nil || string(pt) != "token" {
		t.Errorf("Open = %q, %v; want token", pt, err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	checkNoSecret(t, "String()", fmt.Sprintf("%v %+v %#v %s %x", k, k, k, s, s), secrets(t, raw)...)
}

func TestLoadKeyFileRefuses(t *testing.T) {
	raw := rawKey("refused")
	b64 := base64.StdEncoding.EncodeToString(raw)
	long := append(bytes.Clone(raw), raw[:16]...)
	for _, tc := range []struct {
		name string
		data []byte
		perm os.FileMode
		want string // a regexp the error must match
	}{
		{"empty", nil, 0o600, `is empty`},
		{"only a newline", []byte("\n"), 0o600, `is empty`},
		{"two newlines", []byte(b64 + "\n\n"), 0o600, `more than one line`},
		{"inner newline", []byte(b64[:20] + "\n" + b64[20:] + "\n"), 0o600, `more than one line`},
		{"16 bytes", opensslLine(raw[:16]), 0o600, `holds 16 bytes, want 32`},
		{"31 bytes", opensslLine(raw[:31]), 0o600, `holds 31 bytes, want 32`},
		{"48 bytes", opensslLine(long), 0o600, `holds 48 bytes, want 32`},
		{"not base64", []byte("this is not a base64 key, is it?!\n"), 0o600, `not standard base64`},
		{"hex", []byte(hex.EncodeToString(raw) + "\n"), 0o600, `holds 48 bytes, want 32`},
		{"no padding", []byte(strings.TrimRight(b64, "=") + "\n"), 0o600, `not standard base64`},
		{"url alphabet", []byte(base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16)) + "\n"), 0o600, `not standard base64`},
		{"trailing space", []byte(b64 + " \n"), 0o600, `not standard base64`},
		{"leading space", []byte(" " + b64 + "\n"), 0o600, `not standard base64`},
		{"group readable", opensslLine(raw), 0o640, `readable by group or others.*chmod 600`},
		{"others readable", opensslLine(raw), 0o604, `readable by group or others.*chmod 600`},
		{"group writable", opensslLine(raw), 0o620, `accessible by group or others.*chmod 600`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if runtime.GOOS == "windows" && tc.perm != 0o600 {
				t.Skip("no mode bits on Windows")
			}
			path := writeKeyFile(t, tc.data, tc.perm)
			k, err := LoadKeyFile(path)
			if err == nil {
				t.Fatalf("LoadKeyFile = %v, want an error", k)
			}
			if k != (Key{}) {
				t.Errorf("LoadKeyFile returned a Key (%v) with an error", k)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "seal: ") {
				t.Errorf("error %q does not start with seal: ", msg)
			}
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file", msg)
			}
			if !regexp.MustCompile(tc.want).MatchString(msg) {
				t.Errorf("error %q does not match %q", msg, tc.want)
			}
			checkNoSecret(t, "error", msg, raw, long)
			if len(tc.data) > 8 && strings.Contains(msg, strings.TrimSpace(string(tc.data))) {
				t.Errorf("error %q contains the file's content", msg)
			}
		})
	}
}

func TestLoadKeyFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.key")
	_, err := LoadKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestNewKey(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if k, err := NewKey(make([]byte, n)); err == nil {
			t.Errorf("NewKey(%d bytes) = %v, want an error", n, k)
		}
	}
	raw := rawKey("a")
	k, err := NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	clear(raw) // the Key keeps nothing of raw
	s, err := NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	want := testSealer(t, "a")
	if got, want := s.Name([]byte("x")), want.Name([]byte("x")); got != want {
		t.Errorf("after clearing raw, Name = %s, want %s", got, want)
	}
}

func TestKeyID(t *testing.T) {
	a, a2, b := testKey(t, "a"), testKey(t, "a"), testKey(t, "b")
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(a.ID()) {
		t.Errorf("ID() = %q, want 16 lowercase hex digits", a.ID())
	}
	if a.ID() != a2.ID() {
		t.Errorf("IDs of the same key differ: %s, %s", a.ID(), a2.ID())
	}
	if a.ID() == b.ID() {
		t.Errorf("IDs of different keys are both %s", a.ID())
	}
	if (Key{}).ID() != "" {
		t.Errorf("zero Key's ID() = %q, want empty", Key{}.ID())
	}
	// The id is under its own label: not a hash of the bare key, nor a
	// piece of a subkey.
	raw := rawKey("a")
	bare := sha256.Sum256(raw)
	if strings.Contains(hex.EncodeToString(bare[:]), a.ID()) {
		t.Error("the id is a bare SHA-256 of the key")
	}
	checkNoSecret(t, "ID()", a.ID(), secrets(t, raw)...)
}

// TestSubkeysSeparate checks that neither the file's bytes nor one subkey
// is used where the other belongs.
func TestSubkeysSeparate(t *testing.T) {
	raw := rawKey("a")
	sec := secrets(t, raw)
	sealKey, nameKey := sec[1], sec[2]
	if bytes.Equal(sealKey, raw) || bytes.Equal(nameKey, raw) || bytes.Equal(sealKey, nameKey) {
		t.Fatal("subkeys are not distinct from each other and from the key")
	}
	k := testKey(t, "a")
	if !bytes.Equal(k.k.nameKey, nameKey) {
		t.Error("the naming key is not HKDF-SHA256(key, nameInfo)")
	}
}

// TestNoKeyMaterialPrinted formats Keys and a Sealer every way there is
// and checks that only ids come out.
func TestNoKeyMaterialPrinted(t *testing.T) {
	rawA, rawB := rawKey("a"), rawKey("b")
	a, b := testKey(t, "a"), testKey(t, "b")
	s, err := NewSealer(a, b)
	if err != nil {
		t.Fatal(err)
	}
	sec := append(secrets(t, rawA), secrets(t, rawB)...)
	values := []struct {
		name string
		v    any
		ids  []string
	}{
		{"Key", a, []string{a.ID()}},
		{"*Key", &a, []string{a.ID()}},
		{"*Sealer", s, []string{a.ID(), b.ID()}},
		{"Sealer", *s, nil}, // no methods: fmt prints only pointers
		{"[]Key", []Key{a, b}, []string{a.ID(), b.ID()}},
		{"struct", struct{ K Key }{a}, []string{a.ID()}},
	}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d", "%20.10v"} {
			out := fmt.Sprintf(verb, v.v)
			checkNoSecret(t, v.name+" "+verb, out, sec...)
			if verb == "%v" || verb == "%+v" || verb == "%#v" || verb == "%s" {
				for _, id := range v.ids {
					if !strings.Contains(out, id) {
						t.Errorf("%s %s = %q, want it to show id %s", v.name, verb, out, id)
					}
				}
			}
		}
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "v", v.v)
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "v", v.v, slog.Any("any", v.v), slog.Group("g", "v", v.v))
		checkNoSecret(t, v.name+" slog", buf.String(), sec...)
		if v.name != "Sealer" && v.name != "[]Key" && v.name != "struct" {
			for _, id := range v.ids {
				if !strings.Contains(buf.String(), id) {
					t.Errorf("%s slog = %q, want it to show id %s", v.name, buf.String(), id)
				}
			}
		}
	}
	if got, want := a.String(), a.ID(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := s.String(), "seal.Sealer{current: "+a.ID()+", older: ["+b.ID()+"]}"; got != want {
		t.Errorf("Sealer.String() = %q, want %q", got, want)
	}
	if got := fmt.Sprint(Key{}); got != "<nil>" {
		t.Errorf("zero Key prints %q, want <nil>", got)
	}
	if got := fmt.Sprint((*Sealer)(nil)); got != "<nil>" {
		t.Errorf("nil *Sealer prints %q, want <nil>", got)
	}
}
