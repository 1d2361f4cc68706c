package keystore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestLoadFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no group and other mode bits")
	}
	dir := t.TempDir()
	keyPEM := pkcs8PEM(testRSA())
	want := testKey().ID()
	write := func(t *testing.T, name string, data []byte, mode os.FileMode) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		return path
	}

	t.Run("accepted", func(t *testing.T) {
		for _, mode := range []os.FileMode{0o600, 0o400, 0o700} {
			path := write(t, "ok-"+mode.String()+".pem", keyPEM, mode)
			k, err := LoadFile(path)
			if err != nil {
				t.Errorf("LoadFile(mode %04o): %v", mode, err)
				continue
			}
			if got := k.ID(); got != want {
				t.Errorf("LoadFile(mode %04o).ID() = %q, want %q", mode, got, want)
			}
		}
	})

	t.Run("symlink to a 0400 file", func(t *testing.T) {
		// Kubernetes mounts secrets as symlinks into a ..data directory.
		target := write(t, "target.pem", keyPEM, 0o400)
		link := filepath.Join(dir, "link.pem")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadFile(link); err != nil {
			t.Errorf("LoadFile(symlink): %v", err)
		}
	})

	tests := []struct {
		name string
		path func(t *testing.T) string
		want []string // in the message
		is   error
	}{
		{
			name: "mode 0644",
			path: func(t *testing.T) string { return write(t, "x.pem", keyPEM, 0o644) },
			want: []string{"x.pem is readable by group or others (mode 0644)", "run: chmod 600 " + filepath.Join(dir, "x.pem")},
		},
		{
			name: "mode 0640",
			path: func(t *testing.T) string { return write(t, "g.pem", keyPEM, 0o640) },
			want: []string{"readable by group or others (mode 0640)", "chmod 600"},
		},
		{
			name: "mode 0604",
			path: func(t *testing.T) string { return write(t, "o.pem", keyPEM, 0o604) },
			want: []string{"(mode 0604)", "chmod 600"},
		},
		{
			name: "mode 0620 (group may write)",
			path: func(t *testing.T) string { return write(t, "w.pem", keyPEM, 0o620) },
			want: []string{"accessible by group or others (mode 0620)", "chmod 600"},
		},
		{
			name: "path with a space is quoted for the shell",
			path: func(t *testing.T) string { return write(t, "my key.pem", keyPEM, 0o644) },
			want: []string{"chmod 600 '" + filepath.Join(dir, "my key.pem") + "'"},
		},
		{
			name: "missing",
			path: func(t *testing.T) string { return filepath.Join(dir, "missing.pem") },
			want: []string{"keystore: ", "missing.pem"},
			is:   fs.ErrNotExist,
		},
		{
			name: "directory",
			path: func(t *testing.T) string { return dir },
			want: []string{"is not a regular file"},
		},
		{
			name: "larger than 1 MiB",
			path: func(t *testing.T) string {
				return write(t, "big.pem", append(bytes.Repeat([]byte("#"), maxKeyFileBytes), keyPEM...), 0o600)
			},
			want: []string{"big.pem is larger than 1 MiB"},
		},
		{
			name: "not a key",
			path: func(t *testing.T) string { return write(t, "garbage.pem", []byte("hello"), 0o600) },
			want: []string{"keystore: key file " + filepath.Join(dir, "garbage.pem") + ": no PEM block found"},
			is:   errNoPEM,
		},
		{
			name: "public key",
			path: func(t *testing.T) string { return write(t, "pub.pem", testKey().PublicPEM(), 0o600) },
			want: []string{"pub.pem: PUBLIC KEY block: this is a public key; the broker needs the private key"},
			is:   errPublicOnly,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := LoadFile(tt.path(t))
			if err == nil {
				t.Fatalf("LoadFile = %v, want an error", k)
			}
			t.Log(err)
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %q", err, tt.is)
			}
			assertNoKeyMaterial(t, "error", err.Error(), keyPEM)
		})
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"keys/x.pem", "keys/x.pem"},
		{"/run/secrets/tn-example.pem", "/run/secrets/tn-example.pem"},
		{"my key.pem", "'my key.pem'"},
		{"it's.pem", `'it'\''s.pem'`},
		{"$(reboot).pem", "'$(reboot).pem'"},
		{"", "''"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestWriteFileExclusive(t *testing.T) {
	dir := t.TempDir()
	data := []byte("content\n")

	for _, perm := range []os.FileMode{0o600, 0o644, 0o400} {
		path := filepath.Join(dir, "new-"+perm.String())
		if err := WriteFileExclusive(path, data, perm); err != nil {
			t.Fatalf("WriteFileExclusive(%04o): %v", perm, err)
		}
		if got := must(os.ReadFile(path)); !bytes.Equal(got, data) {
			t.Errorf("file holds %q, want %q", got, data)
		}
		if runtime.GOOS == "windows" {
			continue
		}
		if got := must(os.Stat(path)).Mode().Perm(); got != perm {
			t.Errorf("file mode = %04o, want %04o", got, perm)
		}
	}

	t.Run("refuses an existing file", func(t *testing.T) {
		path := filepath.Join(dir, "existing.pem")
		if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := WriteFileExclusive(path, data, 0o600)
		if err == nil {
			t.Fatal("WriteFileExclusive over an existing file succeeded, want an error")
		}
		t.Log(err)
		if !errors.Is(err, fs.ErrExist) {
			t.Errorf("error %q is not fs.ErrExist", err)
		}
		if got, want := err.Error(), "refusing to overwrite "+path; !strings.Contains(got, want) {
			t.Errorf("error %q does not contain %q", got, want)
		}
		if got, want := string(must(os.ReadFile(path))), "old"; got != want {
			t.Errorf("file now holds %q, want %q (untouched)", got, want)
		}
	})

	t.Run("refuses a dangling symlink", func(t *testing.T) {
		if runtime.GOOS == "windows" {
			t.Skip("symlinks need privileges on Windows")
		}
		target := filepath.Join(dir, "target")
		link := filepath.Join(dir, "link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := WriteFileExclusive(link, data, 0o600); !errors.Is(err, fs.ErrExist) {
			t.Errorf("WriteFileExclusive(dangling symlink) error = %v, want fs.ErrExist", err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the symlink's target was created")
		}
	})

	t.Run("missing directory", func(t *testing.T) {
		err := WriteFileExclusive(filepath.Join(dir, "no", "such", "dir.pem"), data, 0o600)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error = %v, want fs.ErrNotExist", err)
		}
	})
}

func TestReadSecretLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
		mode                os.FileMode
		err                 string
	}{
		{"bare", "s3cret", "s3cret", 0o600, ""},
		{"newline", "s3cret\n", "s3cret", 0o600, ""},
		{"CRLF", "s3cret\r\n", "s3cret", 0o600, ""},
		{"only one newline taken", "s3cret\n\n", "s3cret\n", 0o600, ""},
		{"a lone CR kept", "s3cret\r", "s3cret\r", 0o600, ""},
		{"empty", "", "", 0o600, "is empty"},
		{"only a newline", "\n", "", 0o600, "is empty"},
		{"readable by others", "s3cret\n", "", 0o644, "chmod 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tc.mode) // past the umask
			got, err := ReadSecretLine(path)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.err)
				}
				if tc.content != "" && strings.Contains(err.Error(), "s3cret") {
					t.Errorf("the error holds the secret: %v", err)
				}
			case err != nil:
				t.Fatal(err)
			case string(got) != tc.want:
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
