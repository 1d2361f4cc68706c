package keystore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// maxKeyFileBytes caps what LoadFile reads: a 4096-bit PEM key is about 3 KiB.
const maxKeyFileBytes = 1 << 20

// LoadFile reads and parses a private key file (see [Parse]), with the
// checks of [ReadPrivateFile]. It is [LoadFileWithOptions] with no options.
// Its errors name the path and never contain key bytes.
func LoadFile(path string) (*Key, error) {
	return LoadFileWithOptions(path, Options{})
}

// LoadFileWithOptions reads and parses a private key file in any format
// [Parse] accepts, with opts (see [ParseWithOptions]), and the checks of
// [ReadPrivateFile]; with [Options.AllowGroupReadable] it accepts a file
// that group or others may read, but not one they may write. Its errors name
// the path and never contain key bytes.
func LoadFileWithOptions(path string, opts Options) (*Key, error) {
	data, err := readPrivateFile(path, opts.AllowGroupReadable)
	if err != nil {
		return nil, err
	}
	defer clear(data) // best effort: the parsed key lives on regardless
	k, err := parse(data, opts)
	if err != nil {
		return nil, fmt.Errorf("keystore: key file %s: %w", path, err)
	}
	return k, nil
}

// ReadSecretLine reads a file holding one secret line, such as a
// passphrase, a PIN, a client secret or an encryption key: checked like
// [ReadPrivateFile], without one trailing "\n" or "\r\n" (as editors and
// `echo` leave it). An empty secret is an error naming the file, never its
// content. The caller clears the result; that clears the file's bytes up to
// the newline.
func ReadSecretLine(path string) ([]byte, error) {
	data, err := ReadPrivateFile(path)
	if err != nil {
		return nil, err
	}
	secret := bytes.TrimSuffix(data, []byte("\n"))
	if len(secret) < len(data) {
		secret = bytes.TrimSuffix(secret, []byte("\r"))
	}
	if len(secret) == 0 {
		clear(data)
		return nil, fmt.Errorf("keystore: %s is empty", path)
	}
	return secret, nil
}

// ReadPrivateFile reads a file holding secret material, such as a private key
// or a TLS server key. It refuses a file that group or others may access
// (mode&0o077 != 0) before reading it, saying how to fix that, anything but
// a regular file, and a file larger than 1 MiB.
func ReadPrivateFile(path string) ([]byte, error) {
	return readPrivateFile(path, false)
}

// readPrivateFile is ReadPrivateFile, which with groupReadable accepts a
// file that group or others may read but not write.
func readPrivateFile(path string, groupReadable bool) ([]byte, error) {
	fi, err := os.Stat(path) // follows symlinks, as Kubernetes secret volumes need
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if err := checkKeyFile(path, fi, groupReadable); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	defer f.Close()
	// Check again what was opened, in case the file changed since Stat.
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if err := checkKeyFile(path, fi, groupReadable); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", path, err)
	}
	if len(data) > maxKeyFileBytes {
		clear(data)
		return nil, fmt.Errorf("keystore: %s is larger than 1 MiB: no key or secret is", path)
	}
	return data, nil
}

// checkKeyFile refuses anything but a regular file that only its owner may
// access or, with groupReadable, that only its owner may write.
func checkKeyFile(path string, fi fs.FileInfo, groupReadable bool) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("keystore: %s is not a regular file (mode %s)", path, fi.Mode())
	}
	perm := fi.Mode().Perm()
	if runtime.GOOS == "windows" { // Windows has no such mode bits
		return nil
	}
	if groupReadable {
		if perm&0o022 == 0 {
			return nil
		}
		return fmt.Errorf("keystore: %s is writable by group or others (mode %04o), which the group-readable override does not allow; run: chmod go-w %s",
			path, perm, shellQuote(path))
	}
	if perm&0o077 == 0 {
		return nil
	}
	how := "readable"
	if perm&0o044 == 0 {
		how = "accessible"
	}
	return fmt.Errorf("keystore: %s is %s by group or others (mode %04o); run: chmod 600 %s",
		path, how, perm, shellQuote(path))
}

// shellQuote quotes path for a shell command line, if it needs it.
func shellQuote(path string) string {
	if path != "" && strings.Trim(path, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-+=:@,") == "" {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}

// WriteFileExclusive creates path with data and exactly the permissions perm
// (whatever the umask). It never overwrites: if path exists, even as a
// dangling symlink, it returns an error that wraps [fs.ErrExist] and says so.
// On failure it removes the file it created.
func WriteFileExclusive(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm.Perm())
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("keystore: refusing to overwrite %s: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("keystore: %w", err)
	}
	err = f.Chmod(perm.Perm()) // the umask may have taken bits away
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("keystore: write %s: %w", path, err)
	}
	return nil
}
