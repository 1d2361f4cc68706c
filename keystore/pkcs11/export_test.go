//go:build cgo

package pkcs11

// OpenContexts is the number of crypto11 contexts Open made that are not
// closed yet.
func OpenContexts() int {
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, l := range logins {
		n += l.users
	}
	return n
}
