// Package pkcs11 owns the broker's keys held in PKCS#11 tokens (hardware
// security modules, cloud HSMs, SoftHSM): naming such a key with an RFC 7512
// "pkcs11:" URI, a module path and a PIN file ([Ref], checked by [ParseRef]
// without touching the token), and opening it as a [keystore.Key] ([Open])
// that signs inside the token, so the broker never holds the key's bytes.
//
// Open loads the module, picks the one initialised token the URI's token,
// slot and library attributes match, logs in with the PIN from the PIN file
// and finds the one private key the URI's object (CKA_LABEL) and id (CKA_ID)
// match, together with its public key. Before returning it signs a test
// message and verifies the signature with that public key, so a key that
// cannot sign, or whose public half is not its own, fails when it is opened
// and not on the first request. The key signs through
// [github.com/ThalesGroup/crypto11], which keeps a pool of sessions, so it
// is safe for concurrent use; the [io.Closer] Open returns releases them.
//
// A module may be open several times in one process (several keys in one
// token, or a reload opening a key again before the old one is closed):
// crypto11 initialises each module once and counts its users, finalising it
// when the last one closes, and Open gives it the module's path with symbolic
// links resolved, so that two spellings of one path share that count. Open
// and Close serialise on a package lock; nothing else in the process should
// load the same module. A token answers a second login with "already logged
// in" whatever the PIN, so Open remembers (as a keyed hash) the PIN each
// token it is logged in to took, and refuses another.
//
// PKCS#11 needs cgo. In a build without cgo, ParseRef works and Open returns
// [ErrNoCGO].
//
// The package never logs. Its errors say what to do, name the URI's
// attributes, the module and the PIN file, and never contain the PIN.
package pkcs11
