package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/go-jose/go-jose/v4"
)

// maxKeyIDLen caps a "kid" or private_key_id taken as a key id: it goes into
// every signed header and the JWKS.
const maxKeyIDLen = 256

// parseJSON parses a JSON object: a JWK Set (it has "keys"), a Google
// service account key (it has "type" or "private_key") or a single JWK (it
// has "kty").
func parseJSON(data []byte, opts Options) (*Key, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(data, &members); err != nil {
		return nil, jsonError("JSON key file", err)
	}
	switch {
	case members["keys"] != nil:
		return parseJWKSet(data, opts)
	case members["type"] != nil || members["private_key"] != nil:
		return parseServiceAccount(data, opts)
	case members["kty"] != nil:
		k, err := parseJWK(data, opts)
		if err != nil {
			return nil, fmt.Errorf("JWK: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("%w: a JSON object without \"kty\", \"keys\" or \"type\"; %s", errFormat, acceptedFormats)
	}
}

// jsonError describes a JSON error without quoting the input: a syntax
// error's message holds a character of it.
func jsonError(what string, err error) error {
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return fmt.Errorf("%w: %s is not valid JSON (error at byte %d)", errFormat, what, syntax.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("%w: %s: member %q is a JSON %s, want a %s", errFormat, what, typ.Field, typ.Value, typ.Type)
	}
	return fmt.Errorf("%w: %s: %w", errFormat, what, err)
}

// jwkHeader is what parseJWKSet reads of each key before parsing it: a key
// of a type go-jose does not know must not spoil the whole set.
type jwkHeader struct {
	KeyID string `json:"kid"`
	Use   string `json:"use"`
	D     string `json:"d"` // present in private keys (and symmetric ones have "k")
}

// parseJWKSet takes one private signing key from a JWK Set: the one with
// opts.KeyID, or the only one.
func parseJWKSet(data []byte, opts Options) (*Key, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, jsonError("JWK Set", err)
	}
	var (
		candidates []int    // private keys not for encryption
		kids       []string // of the candidates, for the error
	)
	for i, raw := range set.Keys {
		var h jwkHeader
		if err := json.Unmarshal(raw, &h); err != nil {
			return nil, jsonError(fmt.Sprintf("JWK Set key %d", i), err)
		}
		if opts.KeyID != "" && h.KeyID == opts.KeyID {
			k, err := parseJWK(raw, opts)
			if err != nil {
				return nil, fmt.Errorf("JWK Set key %.64q: %w", h.KeyID, err)
			}
			return k, nil
		}
		if h.D != "" && h.Use != "enc" {
			candidates = append(candidates, i)
			kids = append(kids, fmt.Sprintf("%.64q", h.KeyID))
		}
	}
	switch {
	case opts.KeyID != "":
		return nil, fmt.Errorf("%w: the JWK Set has no key with kid %.64q; its private signing keys have kid %s; set the key id to one of them",
			errKeyID, opts.KeyID, listOrNone(kids))
	case len(candidates) == 0:
		return nil, fmt.Errorf("JWK Set with %d keys and no private signing key: %w; use the private JWK Set (such as jwks_private.json)", len(set.Keys), errPublicOnly)
	case len(candidates) > 1:
		return nil, fmt.Errorf("%w: the JWK Set holds %d private signing keys (kid %s); set the key id to the one to sign with",
			errKeyID, len(candidates), strings.Join(kids, ", "))
	}
	k, err := parseJWK(set.Keys[candidates[0]], opts)
	if err != nil {
		return nil, fmt.Errorf("JWK Set key %s: %w", kids[0], err)
	}
	return k, nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

// parseJWK parses one private RSA or EC P-256 JWK. Its "kid" becomes the
// key id; its "alg", if any, the default algorithm.
func parseJWK(data []byte, opts Options) (*Key, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return nil, jsonError("JWK", err)
		}
		// go-jose's errors name members and key types, never values.
		return nil, fmt.Errorf("%w: the JWK is invalid (%w); export it again", errFormat, err)
	}
	if opts.KeyID != "" && jwk.KeyID != "" && jwk.KeyID != opts.KeyID {
		return nil, fmt.Errorf("%w: the JWK has kid %.64q, not %.64q; set the key id to the JWK's, or leave it empty", errKeyID, jwk.KeyID, opts.KeyID)
	}
	if err := checkKeyID("kid", jwk.KeyID); err != nil {
		return nil, err
	}
	if jwk.Use == "enc" {
		return nil, fmt.Errorf("%w: this JWK is an encryption key (\"use\": \"enc\"); use the signing key", errUnsupported)
	}
	if jwk.IsPublic() {
		return nil, fmt.Errorf("%w (it has no \"d\"); use the private JWK (such as from jwks_private.json)", errPublicOnly)
	}
	alg := opts.Algorithm
	switch a := jose.SignatureAlgorithm(jwk.Algorithm); {
	case a == "":
	case alg == "":
		alg = a
	case a != alg:
		return nil, fmt.Errorf("%w: the JWK says \"alg\": %.32q but %s was asked for; make them agree", errAlgorithmFit, a, alg)
	}
	signer, err := jwkSigner(jwk.Key)
	if err != nil {
		return nil, err
	}
	return buildKey(signer, keyParams{id: jwk.KeyID, alg: alg})
}

// jwkSigner checks a private key go-jose parsed from a JWK and rebuilds it
// from its private parts, since go-jose takes the JWK's members as they come
// (a JWK whose "dp" does not fit its "d" would sign garbage).
func jwkSigner(key any) (crypto.Signer, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return k, nil // buildKey says why not
		}
		fresh := &rsa.PrivateKey{PublicKey: k.PublicKey, D: k.D, Primes: k.Primes}
		if err := fresh.Validate(); err != nil {
			return nil, fmt.Errorf("%w: the RSA JWK's private and public parts do not fit together", errFormat)
		}
		fresh.Precompute()
		return fresh, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return k, nil // buildKey says why not
		}
		d, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%w: the EC JWK's \"d\" is invalid", errFormat)
		}
		defer clear(d)
		fresh, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil || !fresh.PublicKey.Equal(&k.PublicKey) {
			return nil, fmt.Errorf("%w: the EC JWK's \"d\" does not fit its \"x\" and \"y\"", errFormat)
		}
		return fresh, nil
	case []byte:
		return nil, fmt.Errorf("%w: a symmetric (\"oct\") JWK; %s", errUnsupported, supportedKeys)
	case crypto.Signer:
		return k, nil // buildKey says why not
	default:
		return nil, fmt.Errorf("%w %T; %s", errUnsupported, key, supportedKeys)
	}
}

// checkKeyID refuses an id that cannot go into a header and a JWKS as it
// is.
func checkKeyID(member, id string) error {
	if len(id) > maxKeyIDLen {
		return fmt.Errorf("%w: the %s is %d bytes long, at most %d are supported", errKeyID, member, len(id), maxKeyIDLen)
	}
	if strings.ContainsFunc(id, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return fmt.Errorf("%w: the %s holds control or unprintable characters", errKeyID, member)
	}
	return nil
}

// serviceAccount is a Google service account key file, as the Cloud
// console writes it.
type serviceAccount struct {
	Type         string `json:"type"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
	ClientEmail  string `json:"client_email"`
}

// parseServiceAccount parses a Google service account key: the PEM key in
// private_key, with private_key_id as its key id and client_email kept for
// [Key.ClientEmail].
func parseServiceAccount(data []byte, opts Options) (*Key, error) {
	var sa serviceAccount
	if err := json.Unmarshal(data, &sa); err != nil {
		return nil, jsonError("service account key", err)
	}
	if sa.Type != "service_account" {
		return nil, fmt.Errorf("%w: a JSON credential of type %.40q; the broker needs a service account key (\"type\": \"service_account\"): create one in the Google Cloud console under IAM > Service accounts > Keys",
			errServiceAccount, sa.Type)
	}
	switch {
	case sa.PrivateKey == "":
		return nil, fmt.Errorf("%w: it has no private_key; download the key again from the Google Cloud console", errServiceAccount)
	case sa.PrivateKeyID == "":
		return nil, fmt.Errorf("%w: it has no private_key_id (Google names the key by it); download the key again from the Google Cloud console", errServiceAccount)
	case opts.KeyID != "" && opts.KeyID != sa.PrivateKeyID:
		return nil, fmt.Errorf("%w: the service account key has private_key_id %.64q, not %.64q; set the key id to it, or leave it empty", errKeyID, sa.PrivateKeyID, opts.KeyID)
	}
	if err := checkKeyID("private_key_id", sa.PrivateKeyID); err != nil {
		return nil, err
	}
	pemData := []byte(sa.PrivateKey)
	defer clear(pemData)
	var priv any
	for rest := pemData; ; {
		block, r := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: its private_key holds no PEM private key; download the key again from the Google Cloud console", errServiceAccount)
		}
		rest = r
		if block.Type != "PRIVATE KEY" && block.Type != "RSA PRIVATE KEY" && block.Type != "EC PRIVATE KEY" {
			continue
		}
		p, err := parsePrivateDER(block.Bytes, formatPKCS8)
		if err != nil {
			return nil, fmt.Errorf("service account private_key: %w", err)
		}
		priv = p
		break
	}
	k, err := toKey(priv, keyParams{id: sa.PrivateKeyID, alg: opts.Algorithm, email: sa.ClientEmail})
	if err != nil {
		return nil, fmt.Errorf("service account private_key: %w", err)
	}
	return k, nil
}
