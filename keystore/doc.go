// Package keystore owns the broker's private keys: loading them from files
// (PEM PKCS#8, PKCS#1, SEC 1 and encrypted PKCS#8; a JWK or JWK Set; a Google
// service account key), their key ids, signing with them (RS256, PS256,
// ES256), exporting their public halves as a JWK Set, and generating new
// ones.
//
// A [Key] is a [crypto.Signer] (RSA or EC P-256) with an id (the RFC 7638
// SHA-256 thumbprint of its public key, or the id its file gives it) and an
// algorithm. It signs only through a go-jose signer
// built on [crypto.Signer], so a hardware key can later stand in for a file
// key without callers changing. A Key never prints, formats or logs any key
// material: String, GoString, Format and LogValue show only its type, size
// and id.
//
// A [Set] is the set of public keys the broker publishes at its JWKS
// endpoint.
//
// The package knows no tenants and no upstream endpoints; it never logs, it
// returns errors. Its errors name the file and say what to do, and never
// contain key bytes.
package keystore
