package seal_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/tokenbroker/tokenbroker/internal/seal"
)

// A replica seals a token for a cache key and stores it under the cache
// key's name; another replica, with the same key file, finds and opens it.
func Example() {
	// A key file as `umask 077; openssl rand -base64 32 > seal.key` makes
	// it (this one is a fixed example key: never use it).
	dir, err := os.MkdirTemp("", "seal-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "seal.key")
	if err := os.WriteFile(path, []byte("c2VhbCBleGFtcGxlIGtleSwgbmV2ZXIgdXNlIGl0ISE=\n"), 0o600); err != nil {
		log.Fatal(err)
	}

	key, err := seal.LoadKeyFile(path)
	if err != nil {
		log.Fatal(err)
	}
	sealer, err := seal.NewSealer(key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sealer:", sealer)

	cacheKey := []byte("tenant-a\x00svc@project\x00group-1")
	sealed, err := sealer.Seal(cacheKey, []byte("ya29.a-token"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("store under:", sealer.Name(cacheKey))

	token, err := sealer.Open(cacheKey, sealed)
	fmt.Printf("open: %s %v\n", token, err)

	// Under another cache key (as if moved to another Redis key), it does
	// not open.
	_, err = sealer.Open([]byte("tenant-b\x00svc@project\x00group-1"), sealed)
	fmt.Println("moved:", errors.Is(err, seal.ErrInvalid))
	// Output:
	// sealer: seal.Sealer{current: 50f814111884b5aa, older: []}
	// store under: Zw5yaSlVxZf0cGDVu359I0Z0N4e_DWu-Yrea26qnuds
	// open: ya29.a-token <nil>
	// moved: true
}

// Rotating keys: every replica is configured with the new key as current
// and the old one as older, then, once values sealed under the old key
// have expired, with the new key alone.
func ExampleSealer_Names() {
	oldKey, _ := seal.NewKey([]byte("old example key, 32 bytes long!!"))
	newKey, _ := seal.NewKey([]byte("new example key, 32 bytes long!!"))
	before, _ := seal.NewSealer(oldKey)
	during, _ := seal.NewSealer(newKey, oldKey)

	cacheKey := []byte("tenant-a\x00svc@project\x00group-1")
	sealed, _ := before.Seal(cacheKey, []byte("ya29.a-token"))
	storedUnder := before.Name(cacheKey)

	// A reader in the middle of the rotation tries each name in turn.
	for _, name := range during.Names(cacheKey) {
		if name != storedUnder { // stands for a Redis GET that misses
			fmt.Println("miss", name)
			continue
		}
		token, err := during.Open(cacheKey, sealed)
		fmt.Printf("hit %s: %s %v\n", name, token, err)
		break
	}
	// Output:
	// miss DZdKFcxRp7dkSQZ2UzNvVhNxZD-skoQoqiXKHrY3ulw
	// hit E3zOe5PtBub0s5_eRvwoDZAAWXKId9ueo1ohMupRas4: ya29.a-token <nil>
}
