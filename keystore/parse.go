package keystore

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
)

// publicBlocks are PEM block types that hold only public material.
var publicBlocks = map[string]bool{
	"PUBLIC KEY":              true,
	"RSA PUBLIC KEY":          true,
	"CERTIFICATE":             true,
	"TRUSTED CERTIFICATE":     true,
	"X509 CERTIFICATE":        true,
	"CERTIFICATE REQUEST":     true,
	"NEW CERTIFICATE REQUEST": true,
}

// parse is ParseWithOptions without the package prefix on its errors, so
// that LoadFile can name the file without saying "keystore:" twice.
func parse(data []byte, opts Options) (*Key, error) {
	// A byte order mark (Windows editors) would hide the first BEGIN line
	// from pem.Decode.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		return parseJSON(trimmed, opts)
	}
	var public string // the first public-only block, for the error
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			return parseBlock(block, opts)
		case publicBlocks[block.Type] && public == "":
			public = block.Type
		}
	}
	if public != "" {
		return nil, fmt.Errorf("%s block: %w", public, errPublicOnly)
	}
	return nil, noPEMError(data)
}

// acceptedFormats is what the error for unrecognised input lists.
const acceptedFormats = "expected a PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY, EC PRIVATE KEY or ENCRYPTED PRIVATE KEY), " +
	"a private JWK or JWK Set, or a Google service account key (JSON)"

// noPEMError says what data looks like, when it holds no PEM block.
func noPEMError(data []byte) error {
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return fmt.Errorf("%w: the input is empty", errNoPEM)
	case bytes.Contains(data, []byte("-----BEGIN")):
		return fmt.Errorf("%w: found -----BEGIN but no complete PEM block; is the file truncated or damaged?", errNoPEM)
	case data[0] == 0x30: // an ASN.1 SEQUENCE
		return fmt.Errorf("%w: this looks like binary DER; convert it to PEM with: openssl pkey -inform DER -in KEY.der -out KEY.pem", errNoPEM)
	default:
		return fmt.Errorf("%w; %s", errNoPEM, acceptedFormats)
	}
}

// parseBlock turns a private-key PEM block into a Key, or says why not.
func parseBlock(b *pem.Block, opts Options) (*Key, error) {
	if b.Headers["DEK-Info"] != "" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("%w (Proc-Type: 4,ENCRYPTED) is not supported; convert it with: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY.pem -out KEY.p8.pem (it asks for the passphrase)", errEncrypted)
	}
	var (
		priv any
		err  error
	)
	switch b.Type {
	case "PRIVATE KEY":
		priv, err = parsePrivateDER(b.Bytes, formatPKCS8)
	case "RSA PRIVATE KEY":
		priv, err = parsePrivateDER(b.Bytes, formatPKCS1)
	case "EC PRIVATE KEY":
		priv, err = parsePrivateDER(b.Bytes, formatSEC1)
	case "ENCRYPTED PRIVATE KEY":
		priv, err = parseEncrypted(b.Bytes, opts.Passphrase)
	case "OPENSSH PRIVATE KEY":
		return nil, fmt.Errorf("%w: OpenSSH key format; convert it to PKCS#8 with: ssh-keygen -p -m PKCS8 -f KEY (this rewrites KEY)", errUnsupported)
	default:
		return nil, fmt.Errorf("%w: a %.40q block; %s", errUnsupported, b.Type, supportedKeys)
	}
	if err != nil {
		return nil, err
	}
	return toKey(priv, keyParams{alg: opts.Algorithm})
}

// toKey turns what a parser returned into a Key, or says why not.
func toKey(priv any, p keyParams) (*Key, error) {
	switch k := priv.(type) {
	case crypto.Signer:
		return buildKey(k, p) // refuses any signer but RSA and P-256
	case interface{ Public() crypto.PublicKey }:
		return nil, fmt.Errorf("%w %s; %s", errUnsupported, keyTypeName(k.Public()), supportedKeys)
	default:
		return nil, fmt.Errorf("%w %T; %s", errUnsupported, priv, supportedKeys)
	}
}

// The DER formats of unencrypted private keys.
const (
	formatPKCS8 = "PKCS#8"
	formatPKCS1 = "PKCS#1"
	formatSEC1  = "SEC 1 EC"
)

// derParsers parse each DER format.
var derParsers = map[string]func([]byte) (any, error){
	formatPKCS8: x509.ParsePKCS8PrivateKey,
	formatPKCS1: func(der []byte) (any, error) {
		k, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, err
		}
		return k, nil
	},
	formatSEC1: func(der []byte) (any, error) {
		k, err := x509.ParseECPrivateKey(der)
		if err != nil {
			return nil, err
		}
		return k, nil
	},
}

// parsePrivateDER parses PKCS#8, PKCS#1 or SEC 1 DER, trying the format the
// PEM block names first and then the others, since some tools mislabel them.
func parsePrivateDER(der []byte, first string) (any, error) {
	k, err := derParsers[first](der)
	if err == nil {
		return k, nil
	}
	for _, other := range []string{formatPKCS8, formatPKCS1, formatSEC1} {
		if other == first {
			continue
		}
		if k, err2 := derParsers[other](der); err2 == nil {
			return k, nil
		}
	}
	if why := diagnose(der); why != nil {
		return nil, why
	}
	// x509's errors describe the structure (tags, offsets), never the bytes.
	return nil, fmt.Errorf("parse %s private key: %w", first, err)
}

var (
	oidRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEC  = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
)

// curveNames names the EC curves crypto/x509 does not parse.
var curveNames = map[string]string{
	"1.3.132.0.10":          "secp256k1",
	"1.3.36.3.3.2.8.1.1.7":  "brainpoolP256r1",
	"1.3.36.3.3.2.8.1.1.11": "brainpoolP384r1",
	"1.3.36.3.3.2.8.1.1.13": "brainpoolP512r1",
}

// oidNames names the PKCS#8 key algorithms crypto/x509 does not parse.
var oidNames = map[string]string{
	"1.2.840.113549.1.1.10": "RSA-PSS",
	"1.2.840.10040.4.1":     "DSA",
	"1.3.101.111":           "X448",
	"1.3.101.113":           "Ed448",
}

// diagnose explains why crypto/x509 refused der, when the reason is one an
// operator can act on: an RSA key smaller than minRSABits (which crypto/x509
// refuses below 1024 bits), an EC key on a curve it does not know, or a
// PKCS#8 key of another algorithm. It returns nil when it cannot tell.
func diagnose(der []byte) error {
	var p8 struct {
		Version    int
		Algorithm  pkix.AlgorithmIdentifier
		PrivateKey []byte
	}
	if _, err := asn1.Unmarshal(der, &p8); err == nil {
		switch alg := p8.Algorithm.Algorithm; {
		case alg.Equal(oidEC):
			var curve asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(p8.Algorithm.Parameters.FullBytes, &curve); err == nil {
				return curveError(curve)
			}
			return nil
		case !alg.Equal(oidRSA):
			name, ok := oidNames[alg.String()]
			if !ok {
				name = "with algorithm OID " + alg.String()
			}
			return fmt.Errorf("%w %s; %s (generate one with openssl genpkey -algorithm RSA)", errUnsupported, name, supportedKeys)
		}
		der = p8.PrivateKey
	}
	var sec1 struct {
		Version    int
		PrivateKey []byte
		Curve      asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	}
	if _, err := asn1.Unmarshal(der, &sec1); err == nil && len(sec1.Curve) > 0 {
		return curveError(sec1.Curve)
	}
	var p1 struct {
		Version int
		N       *big.Int
	}
	if _, err := asn1.Unmarshal(der, &p1); err == nil && p1.N != nil {
		if bits := p1.N.BitLen(); bits < minRSABits {
			return weakKeyError(bits)
		}
	}
	return nil
}

// curveError refuses an EC key on a curve crypto/x509 did not parse.
func curveError(curve asn1.ObjectIdentifier) error {
	name, ok := curveNames[curve.String()]
	if !ok {
		name = "OID " + curve.String()
	}
	return fmt.Errorf("%w EC on curve %s: only the P-256 curve is supported for EC keys (ES256); generate one with: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256",
		errUnsupported, name)
}
