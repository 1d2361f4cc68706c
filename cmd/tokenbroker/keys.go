package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

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

func cmdKeygen(_ context.Context, args []string, e *env) int {
	fs := newFlags("keygen", e)
	out := fs.String("out", "", "where to write the private key (PKCS#8 PEM, mode 0600); the public key goes to OUT.pub (required)")
	bits := fs.Int("bits", 2048, "RSA key size: 2048, 3072 or 4096")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" {
		return e.errorf("keygen: --out is required")
	}
	pub := *out + ".pub"
	// Check both first, so a refusal leaves nothing half-written behind.
	for _, p := range []string{*out, pub} {
		if _, err := os.Lstat(p); err == nil {
			return e.errorf("keygen: refusing to overwrite %s: file already exists", p)
		}
	}
	key, err := keystore.Generate(*bits)
	if err != nil {
		return e.errorf("keygen: %v", err)
	}
	if err := keystore.WriteFileExclusive(*out, key.PrivatePEM(), 0o600); err != nil {
		return e.errorf("keygen: %v", err)
	}
	if err := keystore.WriteFileExclusive(pub, key.PublicPEM(), 0o644); err != nil {
		return e.errorf("keygen: %v", err)
	}
	fmt.Fprintf(e.stdout, "private key: %s (keep it secret; tokenbroker reads it)\npublic key:  %s (upload it to the upstream, e.g. Pismo's Control Center)\nkid:         %s\n", *out, pub, key.ID())
	return 0
}
