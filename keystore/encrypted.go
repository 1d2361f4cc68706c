package keystore

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"

	"github.com/youmark/pkcs8"
)

// reencrypt is the command the errors about encryption schemes suggest.
const reencrypt = "re-encrypt it with: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY.pem -out NEW.pem"

// Limits on the key derivation an encrypted key file may ask for, so that a
// damaged or hostile file cannot keep the broker busy for minutes or take
// gigabytes. OpenSSL 3 writes 2048 PBKDF2 iterations, and scrypt with
// N=16384, r=8, p=1.
const (
	maxPBKDF2Iterations = 10_000_000
	maxScryptWork       = 1 << 21 // N*r*p; 128*N*r bytes is then at most 256 MiB
)

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
)

// cbcBlockSizes are the block sizes of the PBES2 ciphers accepted, by OID.
var cbcBlockSizes = map[string]int{
	"2.16.840.1.101.3.4.1.2":  16, // AES-128-CBC
	"2.16.840.1.101.3.4.1.22": 16, // AES-192-CBC
	"2.16.840.1.101.3.4.1.42": 16, // AES-256-CBC
	"1.2.840.113549.3.7":      8,  // DES-EDE3-CBC
}

// parseEncrypted decrypts an encrypted PKCS#8 key (RFC 5958 §3,
// EncryptedPrivateKeyInfo with PBES2) with github.com/youmark/pkcs8.
func parseEncrypted(der, passphrase []byte) (any, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("%w; give the broker the key's passphrase, or decrypt the key with: openssl pkey -in KEY.pem -out PLAIN.pem (it asks for the passphrase)", errNoPassphrase)
	}
	if err := checkPBES2(der); err != nil {
		return nil, err
	}
	priv, err := decryptPKCS8(der, passphrase)
	if err != nil {
		if strings.Contains(err.Error(), "incorrect password") {
			return nil, fmt.Errorf("%w; check the passphrase (openssl pkey -in KEY.pem -noout asks for it and says whether it is right)", errBadPassphrase)
		}
		// The library's errors name the structure, never the bytes.
		return nil, fmt.Errorf("decrypt encrypted PKCS#8 private key: %w", err)
	}
	return priv, nil
}

// decryptPKCS8 is pkcs8.ParsePrivateKey, which checkPBES2 has checked the
// input for; the recover is a second line against the library panicking on
// a structure checkPBES2 let through.
func decryptPKCS8(der, passphrase []byte) (priv any, err error) {
	defer func() {
		if r := recover(); r != nil {
			priv, err = nil, errors.New("the encrypted key's structure is damaged")
		}
	}()
	priv, _, err = pkcs8.ParsePrivateKey(der, passphrase)
	return priv, err
}

// checkPBES2 checks that der is an EncryptedPrivateKeyInfo with PBES2 the
// library can decrypt without panicking (an IV of the cipher's block size, a
// whole number of blocks) and with a key derivation that is not absurdly
// expensive, and otherwise says what to do.
func checkPBES2(der []byte) error {
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		Data      []byte
	}
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		return errors.New("parse encrypted PKCS#8 private key: the ENCRYPTED PRIVATE KEY block is damaged")
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return fmt.Errorf("%w: the key is encrypted with an old scheme (OID %s), only PBES2 is supported; %s",
			errUnsupported, info.Algorithm.Algorithm, reencrypt)
	}
	var params struct {
		KDF    pkix.AlgorithmIdentifier
		Cipher pkix.AlgorithmIdentifier
	}
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil {
		return errors.New("parse encrypted PKCS#8 private key: its PBES2 parameters are damaged")
	}
	block, ok := cbcBlockSizes[params.Cipher.Algorithm.String()]
	if !ok {
		return fmt.Errorf("%w: the key is encrypted with cipher OID %s, which is not supported (AES-CBC and DES-EDE3-CBC are); %s",
			errUnsupported, params.Cipher.Algorithm, reencrypt)
	}
	var iv []byte
	if _, err := asn1.Unmarshal(params.Cipher.Parameters.FullBytes, &iv); err != nil || len(iv) != block {
		return errors.New("parse encrypted PKCS#8 private key: its cipher's IV is damaged")
	}
	if len(info.Data) == 0 || len(info.Data)%block != 0 {
		return errors.New("parse encrypted PKCS#8 private key: its encrypted data is truncated or damaged")
	}
	switch {
	case params.KDF.Algorithm.Equal(oidPBKDF2):
		var kdf struct {
			Salt       []byte
			Iterations int
			PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
		}
		if _, err := asn1.Unmarshal(params.KDF.Parameters.FullBytes, &kdf); err != nil {
			return fmt.Errorf("parse encrypted PKCS#8 private key: its PBKDF2 parameters are damaged or unsupported; %s", reencrypt)
		}
		if kdf.Iterations < 1 || kdf.Iterations > maxPBKDF2Iterations {
			return fmt.Errorf("%w: the key asks for %d PBKDF2 iterations, at most %d are supported; %s",
				errUnsupported, kdf.Iterations, maxPBKDF2Iterations, reencrypt)
		}
		if prf := kdf.PRF.Algorithm; len(prf) != 0 && !prf.Equal(oidHMACSHA1) && !prf.Equal(oidHMACSHA256) {
			return fmt.Errorf("%w: the key's PBKDF2 uses PRF OID %s, only hmacWithSHA256 and hmacWithSHA1 are supported; %s -v2prf hmacWithSHA256",
				errUnsupported, prf, reencrypt)
		}
	case params.KDF.Algorithm.Equal(oidScrypt):
		var kdf struct {
			Salt    []byte
			N, R, P int
		}
		if _, err := asn1.Unmarshal(params.KDF.Parameters.FullBytes, &kdf); err != nil {
			return fmt.Errorf("parse encrypted PKCS#8 private key: its scrypt parameters are damaged or unsupported; %s", reencrypt)
		}
		if kdf.N < 2 || kdf.N&(kdf.N-1) != 0 || kdf.R < 1 || kdf.P < 1 ||
			kdf.N > maxScryptWork || kdf.R > maxScryptWork || kdf.P > maxScryptWork ||
			kdf.N*kdf.R > maxScryptWork || kdf.N*kdf.R*kdf.P > maxScryptWork {
			return fmt.Errorf("%w: the key's scrypt parameters (N=%d, r=%d, p=%d) are invalid or too expensive (N*r*p at most %d); %s",
				errUnsupported, kdf.N, kdf.R, kdf.P, maxScryptWork, reencrypt)
		}
	default:
		return fmt.Errorf("%w: the key's PBES2 key derivation (OID %s) is not supported (PBKDF2 and scrypt are); %s",
			errUnsupported, params.KDF.Algorithm, reencrypt)
	}
	return nil
}
