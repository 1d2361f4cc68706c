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

// parse is Parse without the package prefix on its errors, so that LoadFile
// can name the file without saying "keystore:" twice.
func parse(data []byte) (*Key, error) {
	// A byte order mark (Windows editors) would hide the first BEGIN line
	// from pem.Decode.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var public string // the first public-only block, for the error
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			return parseBlock(block)
		case publicBlocks[block.Type] && public == "":
			public = block.Type
		}
	}
	if public != "" {
		return nil, fmt.Errorf("%s block: %w", public, errPublicOnly)
	}
	return nil, noPEMError(data)
}

// noPEMError says what data looks like, when it holds no PEM block.
func noPEMError(data []byte) error {
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return fmt.Errorf("%w: the input is empty", errNoPEM)
	case bytes.Contains(data, []byte("-----BEGIN")):
		return fmt.Errorf("%w: found -----BEGIN but no complete PEM block; is the file truncated or damaged?", errNoPEM)
	case trimmed[0] == '{':
		return fmt.Errorf("%w: this looks like JSON; only PEM keys are supported for now", errNoPEM)
	case data[0] == 0x30: // an ASN.1 SEQUENCE
		return fmt.Errorf("%w: this looks like binary DER; convert it to PEM with: openssl pkey -inform DER -in KEY.der -out KEY.pem", errNoPEM)
	default:
		return fmt.Errorf("%w; expected a PEM private key (-----BEGIN PRIVATE KEY-----)", errNoPEM)
	}
}

// parseBlock turns a private-key PEM block into a Key, or says why not.
func parseBlock(b *pem.Block) (*Key, error) {
	if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["DEK-Info"] != "" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("%w; decrypt it first (openssl pkey -in KEY.pem -out PLAIN.pem asks for the passphrase)", errEncrypted)
	}
	var (
		priv any
		err  error
	)
	switch b.Type {
	case "PRIVATE KEY":
		priv, err = parsePrivateDER(b.Bytes, false)
	case "RSA PRIVATE KEY":
		priv, err = parsePrivateDER(b.Bytes, true)
	case "EC PRIVATE KEY":
		return nil, fmt.Errorf("%w EC (an \"EC PRIVATE KEY\" block); only RSA keys are supported for now", errUnsupported)
	case "OPENSSH PRIVATE KEY":
		return nil, fmt.Errorf("%w: OpenSSH key format; convert it to PKCS#8 with: ssh-keygen -p -m PKCS8 -f KEY (this rewrites KEY)", errUnsupported)
	default:
		return nil, fmt.Errorf("%w: a %.40q block; only RSA keys are supported for now", errUnsupported, b.Type)
	}
	if err != nil {
		return nil, err
	}
	switch p := priv.(type) {
	case crypto.Signer:
		return newKey(p) // refuses any signer but RSA
	case interface{ Public() crypto.PublicKey }:
		return nil, fmt.Errorf("%w %s; only RSA keys are supported for now", errUnsupported, keyTypeName(p.Public()))
	default:
		return nil, fmt.Errorf("%w %T; only RSA keys are supported for now", errUnsupported, priv)
	}
}

// parsePrivateDER parses PKCS#8 or PKCS#1 DER, trying the format the PEM
// block names first and then the other, since some tools mislabel them.
func parsePrivateDER(der []byte, pkcs1First bool) (any, error) {
	pkcs8 := x509.ParsePKCS8PrivateKey
	pkcs1 := func(der []byte) (any, error) {
		k, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, err
		}
		return k, nil
	}
	first, second, name := pkcs8, pkcs1, "PKCS#8"
	if pkcs1First {
		first, second, name = pkcs1, pkcs8, "PKCS#1"
	}
	k, err := first(der)
	if err == nil {
		return k, nil
	}
	if k, err2 := second(der); err2 == nil {
		return k, nil
	}
	if why := diagnose(der); why != nil {
		return nil, why
	}
	// x509's errors describe the structure (tags, offsets), never the bytes.
	return nil, fmt.Errorf("parse %s private key: %w", name, err)
}

var oidRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}

// oidNames names the PKCS#8 key algorithms crypto/x509 does not parse.
var oidNames = map[string]string{
	"1.2.840.113549.1.1.10": "RSA-PSS",
	"1.2.840.10040.4.1":     "DSA",
	"1.3.101.111":           "X448",
	"1.3.101.113":           "Ed448",
}

// diagnose explains why crypto/x509 refused der, when the reason is one an
// operator can act on: an RSA key smaller than minRSABits (which crypto/x509
// refuses below 1024 bits) or a PKCS#8 key of another algorithm. It returns
// nil when it cannot tell.
func diagnose(der []byte) error {
	var p8 struct {
		Version    int
		Algorithm  pkix.AlgorithmIdentifier
		PrivateKey []byte
	}
	if _, err := asn1.Unmarshal(der, &p8); err == nil {
		if alg := p8.Algorithm.Algorithm; !alg.Equal(oidRSA) {
			name, ok := oidNames[alg.String()]
			if !ok {
				name = "with algorithm OID " + alg.String()
			}
			return fmt.Errorf("%w %s; only RSA keys are supported for now (generate one with openssl genpkey -algorithm RSA)", errUnsupported, name)
		}
		der = p8.PrivateKey
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
