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

// keyring is every tenant's loaded keys or client secret, and what must be
// closed when they are no longer used (the sessions of keys in PKCS#11
// tokens).
type keyring struct {
	tenants map[string]tenantKeys
	secrets map[string][]byte // by tenant, for the kinds that sign nothing
	closers []io.Closer
}

// Close releases what the keyring's keys hold open and wipes its client
// secrets (the exchangers hold their own copies). A nil keyring holds
// nothing.
func (r *keyring) Close() error {
	if r == nil {
		return nil
	}
	for _, s := range r.secrets {
		clear(s)
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
	ring := &keyring{tenants: make(map[string]tenantKeys, len(cfg.Tenants)), secrets: map[string][]byte{}}
	var problems []string
	for i, t := range cfg.Tenants {
		if !t.Upstream.SignsAssertions() {
			field := fmt.Sprintf("tenants[%d].upstream.client_secret_", i)
			secret, err := readSecret(t.Upstream.ClientSecretFile, t.Upstream.ClientSecretEnv, field)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			ring.secrets[t.ID] = secret
			ring.tenants[t.ID] = tenantKeys{}
			continue
		}
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
			if t.Upstream.Kind == config.KindPismoOIDC && k.Algorithm() != jose.RS256 {
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
		if t.Upstream.Kind == config.KindJWTBearer && t.Upstream.ClientID == "" && tk.active != nil && tk.active.ClientEmail() == "" {
			problems = append(problems, fmt.Sprintf("tenants[%d].upstream.client_id: required: the active key is not a Google service-account key, whose client_email would be the default", i))
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

// readPassphrase returns the passphrase of a key file, or nil when it has
// none (see [readSecret]).
func readPassphrase(k config.Key) ([]byte, error) {
	return readSecret(k.PassphraseFile, k.PassphraseEnv, k.Field+"passphrase_")
}

// readSecret returns a secret from its file (keystore.ReadSecretLine) or
// its environment variable, or nil
// when neither is set. The caller clears it. Errors name the field (field
// + "file" or "env"), never the secret.
func readSecret(file, env, field string) ([]byte, error) {
	switch {
	case file != "":
		secret, err := keystore.ReadSecretLine(file)
		if err != nil {
			return nil, fmt.Errorf("%sfile: %w", field, err)
		}
		return secret, nil
	case env != "":
		v := os.Getenv(env)
		if v == "" {
			return nil, fmt.Errorf("%senv: %s is not set", field, env)
		}
		return []byte(v), nil // the string itself cannot be cleared
	}
	return nil, nil
}
