// Package keystore owns the broker's private keys: loading them from files,
// their key ids, signing with them, exporting their public halves as a JWK
// Set, and generating new ones.
//
// A [Key] is a [crypto.Signer] with an id (the RFC 7638 SHA-256 thumbprint of
// its public key) and an algorithm. It signs only through a go-jose signer
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
