package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/keystore"
)

// callerKeyPrefix marks tokenbroker caller keys, so secret scanners can
// find them in places they should not be.
const callerKeyPrefix = "tbk_"

// newCallerKey returns a random caller key (256 bits) and its SHA-256 in hex.
func newCallerKey() (key, hash string) {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics rather than return an error)
	key = callerKeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, hashKey(key)
}

func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func cmdHashKey(_ context.Context, args []string, e *env) int {
	fs := newFlags("hash-key", e)
	stdin := fs.Bool("stdin", false, "hash the key read from standard input instead of making a new one")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *stdin {
		line, err := bufio.NewReader(io.LimitReader(e.stdin, 4096)).ReadString('\n')
		key := strings.TrimRight(line, "\r\n")
		if key == "" {
			if err != nil && err != io.EOF {
				return e.errorf("hash-key: read standard input: %v", err)
			}
			return e.errorf("hash-key: no key on standard input")
		}
		fmt.Fprintf(e.stdout, "api_key_sha256: %s\n", hashKey(key))
		return 0
	}
	key, hash := newCallerKey()
	fmt.Fprintf(e.stdout, "key:            %s\napi_key_sha256: %s\n", key, hash)
	fmt.Fprintln(e.stderr, "Give the key to the caller (it sends \"authorization: Bearer <key>\"); put only api_key_sha256 in the config.")
	return 0
}

// The certificate validity keygen accepts, in days: up to about ten years.
const (
	defaultCertDays = 365
	maxCertDays     = 3650
)

// keygenFile is one file keygen writes.
type keygenFile struct {
	path string
	data []byte
	mode os.FileMode
	what string // what the file is and what to do with it, for the operator
}

func cmdKeygen(_ context.Context, args []string, e *env) int {
	fs := newFlags("keygen", e)
	out := fs.String("out", "", "where to write the private key (PKCS#8 PEM, mode 0600); OUT.pub, OUT.crt and OUT.jwks.json go beside it (required)")
	typ := fs.String("type", "rsa", "key type: rsa (RS256) or ec (P-256, ES256)")
	bits := fs.Int("bits", 2048, "RSA key size: 2048, 3072 or 4096 (--type rsa only)")
	subject := fs.String("subject", "tokenbroker", "common name (CN) of the self-signed certificate OUT.crt")
	days := fs.Int("days", defaultCertDays, fmt.Sprintf("validity of the certificate OUT.crt, in days (1 to %d)", maxCertDays))
	if code, ok := parse(fs, args); !ok {
		return code
	}
	bitsSet := false
	fs.Visit(func(f *flag.Flag) { bitsSet = bitsSet || f.Name == "bits" })
	if *out == "" {
		return e.errorf("keygen: --out is required")
	}
	switch *typ {
	case "rsa":
		switch *bits {
		case 2048, 3072, 4096:
		default:
			return e.errorf("keygen: --bits %d: want 2048, 3072 or 4096", *bits)
		}
	case "ec":
		if bitsSet {
			return e.errorf("keygen: --bits is for RSA keys only; an EC key is always P-256 (leave out --bits, or use --type rsa)")
		}
	default:
		return e.errorf("keygen: --type %q: want rsa or ec", *typ)
	}
	if *days < 1 || *days > maxCertDays {
		return e.errorf("keygen: --days %d: want 1 to %d", *days, maxCertDays)
	}

	files := []keygenFile{
		{path: *out, mode: 0o600},
		{path: *out + ".pub", mode: 0o644},
		{path: *out + ".crt", mode: 0o644},
		{path: *out + ".jwks.json", mode: 0o644},
	}
	// Check every path first, so a refusal leaves nothing behind.
	for _, f := range files {
		_, err := os.Lstat(f.path)
		if err == nil {
			return e.errorf("keygen: refusing to overwrite %s: file already exists (keygen writes %s); choose another --out or move the old files away",
				f.path, strings.Join(keygenPaths(files), ", "))
		}
		if !errors.Is(err, os.ErrNotExist) {
			return e.errorf("keygen: %v", err)
		}
	}

	var key *keystore.Key
	var err error
	if *typ == "ec" {
		key, err = keystore.GenerateEC()
	} else {
		key, err = keystore.Generate(*bits)
	}
	if err != nil {
		return e.errorf("keygen: %v", err)
	}
	notBefore := time.Now().UTC().Truncate(time.Second)
	notAfter := notBefore.AddDate(0, 0, *days)
	cert, err := key.SelfSignedCertificate(*subject, notBefore, notAfter)
	if err != nil {
		return e.errorf("keygen: %v", err)
	}
	jwks, err := keystore.NewSet(key).JWKS()
	if err != nil {
		return e.errorf("keygen: %v", err)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, jwks, "", "  "); err != nil {
		return e.errorf("keygen: JWK Set: %v", err)
	}
	pretty.WriteByte('\n')

	files[0].data, files[0].what = key.PrivatePEM(), "private key (PKCS#8 PEM): keep it secret; tokenbroker reads it (key_file)"
	files[1].data, files[1].what = key.PublicPEM(), "public key (PEM): upload it to the upstream, e.g. Pismo's Control Center"
	files[2].data, files[2].what = cert, fmt.Sprintf("self-signed certificate (CN=%s, valid until %s): upload it instead where the upstream wants a certificate",
		*subject, notAfter.Format(time.DateOnly))
	files[3].data, files[3].what = pretty.Bytes(), "public JWK Set: for providers that take one inline; the broker also serves it at /.well-known/jwks.json"
	if err := writeAll(files); err != nil {
		return e.errorf("keygen: %v", err)
	}

	width := 0
	for _, f := range files {
		width = max(width, len(f.path))
	}
	fmt.Fprintln(e.stdout, "wrote:")
	for _, f := range files {
		fmt.Fprintf(e.stdout, "  %-*s  %s\n", width, f.path, f.what)
	}
	fmt.Fprintf(e.stdout, "kid: %s\nalg: %s\n", key.ID(), key.Algorithm())
	return 0
}

// keygenPaths lists the paths of files.
func keygenPaths(files []keygenFile) []string {
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.path
	}
	return paths
}

// writeAll writes each file, never overwriting one; if a write fails, it
// removes the files it already wrote, so that no half set is left behind.
func writeAll(files []keygenFile) error {
	for i, f := range files {
		if err := keystore.WriteFileExclusive(f.path, f.data, f.mode); err != nil {
			for _, done := range files[:i] {
				if rerr := os.Remove(done.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
					err = errors.Join(err, fmt.Errorf("remove what this run wrote: %w", rerr))
				}
			}
			return err
		}
	}
	return nil
}
