// Package audit writes the broker's audit trail: one JSON line per access
// decision, to a file of its own or to stdout, chained by SHA-256 so that a
// changed, removed, reordered or inserted line is evident.
//
// A [Sink] takes [Record] values on the callers' goroutines and puts them on
// a bounded queue; [Sink.Run] writes them in batches on its own goroutine, so
// the hot path never waits for the disk. A record is never dropped silently:
// when the queue stays full until the caller's context is done, the record is
// either refused ([ErrUnavailable], with [Config.FailClosed]) or counted as
// lost and reported to [Config.OnError]. A failed write is retried with the
// same bytes until it succeeds; meanwhile the queue fills and callers wait or
// are refused as above. A record carries the fingerprint of a token, never the
// token.
//
// # Line format
//
// Each line is a compact JSON object followed by "\n", with these members in
// this order:
//
//	time                 RFC 3339, UTC, always nine fractional digits
//	caller               the caller's configured name, "" if unauthenticated
//	peer                 the peer address
//	tenant
//	uid                  omitted if empty
//	external_account_id  omitted if empty
//	groups               an array, [] if none
//	decision             allowed, denied, would_deny or error
//	reason               omitted if empty
//	cache                hit, miss, shared or remote; omitted if empty
//	token_fp             first 12 hex digits of the token's SHA-256; omitted if empty
//	latency_ms           milliseconds, three decimals (microseconds)
//	prev                 the previous line's hash: 64 lowercase hex digits
//	hash                 this line's hash: 64 lowercase hex digits
//
// For example (one line, wrapped here):
//
//	{"time":"2026-01-02T03:04:05.000000006Z","caller":"payments-api","peer":"10.0.0.7:51234",
//	"tenant":"tn-example","groups":["pismo-v1:accounts:rw"],"decision":"allowed","cache":"hit",
//	"token_fp":"9f86d081884c","latency_ms":0.213,"prev":"<64 hex>","hash":"<64 hex>"}
//
// # The chain
//
// The hash of a line is the SHA-256 of the line's bytes up to, and not
// including, the comma that precedes "hash": that is, everything from the
// opening "{" through the closing quote of the prev value. The line is that
// text followed by `,"hash":"<hex>"}` and "\n", so the last 76 bytes of every
// line, newline included, are the hash member, the closing brace and the
// newline. The prev of the first line of a file is 64 zeros; the prev of
// every later line is the hash of the line before it. Every byte of every
// line is therefore covered by its own hash, and every hash by the next line.
//
// An auditor can check line N of FILE without this package:
//
//	sed -n Np FILE | head -c -76 | sha256sum          # the hash line N must carry
//	sed -n Np FILE | tail -c 67 | cut -c 1-64         # the hash line N carries
//	sed -n Np FILE | head -c -77 | tail -c 64; echo   # its prev: line N-1's hash
//
// [Verify] does exactly this for every line and reports the first line where
// the chain breaks. When a file that already has lines is opened again,
// [Open] continues the chain from its last line, and refuses a file whose
// last line does not carry a valid hash. A trail written to stdout starts a
// new chain, prev 64 zeros, each time the sink is opened.
//
// The chain has no secret: it proves that a trail is intact, not who wrote
// it, and it cannot show that lines were cut off its end. Ship the trail off
// the host, or record the latest hash elsewhere, to cover those.
package audit
