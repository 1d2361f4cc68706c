// Package measure holds the broker's measurements that need more than one
// package: its core with the real Pismo exchanger against the emulator
// (cache miss, cold storm), 10,000 cold keys against the signing they cost,
// and the memory a cached token takes. It has no code of its own: its
// benchmarks run with `make bench`, and the 10,000-key measurement, a test
// that is skipped unless -cold is given, with `make bench-cold`.
package measure
