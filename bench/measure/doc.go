// Package measure holds the broker's measurements that need more than one
// package: its core with the real Pismo exchanger against the emulator
// (cache miss, cold storm), 10,000 cold keys against the signing they cost,
// the memory a cached token takes, and a token served from the Redis tier
// replicas share against one from the replica's own cache (with a real
// redis-server, skipped without one). It has no code of its own: its
// benchmarks run with `make bench` (the shared-tier pair alone with `make
// bench-shared`), and the 10,000-key measurement, a test that is skipped
// unless -cold is given, with `make bench-cold`.
package measure
