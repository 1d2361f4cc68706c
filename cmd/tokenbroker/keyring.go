package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/keystore"
)

// tenantKeys are one tenant's loaded keys.
type tenantKeys struct {
	// active signs the tenant's assertions.
	active *keystore.Key
	// published are the keys the JWKS publishes for the tenant: the active
	// key and those in state next, in config order.
	published []*keystore.Key
}

// keyring is every tenant's loaded keys, and what must be closed when they
// are no longer used (the sessions of keys in PKCS#11 tokens).
type keyring struct {
	tenants map[string]tenantKeys
	closers []io.Closer
}

// Close releases what the keyring's keys hold open. A nil keyring holds
// nothing.
func (r *keyring) Close() error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, c := range r.closers {
		errs = append(errs, c.Close())
	}
	r.closers = nil
	return errors.Join(errs...)
}

// directory is what the JWKS endpoints publish: each tenant's published keys.
func (r *keyring) directory() *keystore.Directory {
	byTenant := make(map[string][]*keystore.Key, len(r.tenants))
	for id, tk := range r.tenants {
		byTenant[id] = tk.published
	}
	return keystore.NewDirectory(byTenant)
}

// loadKeys loads every tenant's keys but the retired ones, each with its
// options (passphrase, key id, the tenant's algorithm, the group-readable
// override), reporting each failure on its own line naming the field. A
// tenant's keys must have distinct key ids; a pismo_oidc tenant's must sign
// RS256.
func loadKeys(cfg *config.Config) (*keyring, error) {
	ring := &keyring{tenants: make(map[string]tenantKeys, len(cfg.Tenants))}
	var problems []string
	for _, t := range cfg.Tenants {
		var tk tenantKeys
		kids := map[string]string{} // kid → field of the key that has it
		for _, ck := range t.Keys {
			if ck.State == config.KeyRetired {
				continue
			}
			k, closer, err := openKey(ck, jose.SignatureAlgorithm(t.Alg))
			if closer != nil {
				ring.closers = append(ring.closers, closer)
			}
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			field := keyField(ck)
			if t.Upstream.Kind == "pismo_oidc" && k.Algorithm() != jose.RS256 {
				problems = append(problems, fmt.Sprintf("%s: %v signs %s, but a pismo_oidc upstream verifies RS256 only; use an RSA key",
					field, k, k.Algorithm()))
				continue
			}
			if first, dup := kids[k.ID()]; dup {
				problems = append(problems, fmt.Sprintf("%s: key id %q is also %s's: a tenant's keys need distinct key ids", field, k.ID(), first))
				continue
			}
			kids[k.ID()] = field
			tk.published = append(tk.published, k)
			if ck.State == config.KeyActive {
				tk.active = k
			}
		}
		ring.tenants[t.ID] = tk
	}
	if len(problems) > 0 {
		ring.Close()
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return ring, nil
}

// keyField names a key's file or token in messages.
func keyField(k config.Key) string {
	if k.PKCS11 != nil {
		return k.Field + "pkcs11"
	}
	return k.Field + "file"
}

// openKey loads one key: from its file, or from its PKCS#11 token, in which
// case the closer releases the token's session. Errors name the field.
func openKey(k config.Key, alg jose.SignatureAlgorithm) (*keystore.Key, io.Closer, error) {
	if k.PKCS11 != nil {
		return openPKCS11(k, alg)
	}
	passphrase, err := readPassphrase(k)
	if err != nil {
		return nil, nil, err
	}
	key, err := keystore.LoadFileWithOptions(k.File, keystore.Options{
		Passphrase:         passphrase,
		KeyID:              k.KeyID,
		Algorithm:          alg,
		AllowGroupReadable: k.AllowGroupReadable,
	})
	clear(passphrase)
	if err != nil {
		return nil, nil, fmt.Errorf("%sfile: %w", k.Field, err)
	}
	return key, nil, nil
}

// readPassphrase returns the passphrase of a key file from its file (checked
// like a private key file, its trailing newline trimmed) or its environment
// variable, or nil when it has neither. The caller clears it. Errors name
// the field, never the passphrase.
func readPassphrase(k config.Key) ([]byte, error) {
	switch {
	case k.PassphraseFile != "":
		data, err := keystore.ReadPrivateFile(k.PassphraseFile)
		if err != nil {
			return nil, fmt.Errorf("%spassphrase_file: %w", k.Field, err)
		}
		passphrase := data
		if n := len(passphrase); n > 0 && passphrase[n-1] == '\n' {
			passphrase = passphrase[:n-1]
			if n := len(passphrase); n > 0 && passphrase[n-1] == '\r' {
				passphrase = passphrase[:n-1]
			}
		}
		if len(passphrase) == 0 {
			clear(data)
			return nil, fmt.Errorf("%spassphrase_file: %s is empty", k.Field, k.PassphraseFile)
		}
		return passphrase, nil // clearing it clears data up to the newline
	case k.PassphraseEnv != "":
		v := os.Getenv(k.PassphraseEnv)
		if v == "" {
			return nil, fmt.Errorf("%spassphrase_env: %s is not set", k.Field, k.PassphraseEnv)
		}
		return []byte(v), nil // the string itself cannot be cleared
	}
	return nil, nil
}
