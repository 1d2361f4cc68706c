package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Record is one access decision. It never holds a token: only its
// fingerprint.
type Record struct {
	// Time is when the call arrived; a zero Time is stamped by
	// [Config.Clock] when the record is taken.
	Time time.Time
	// Caller is the caller's configured name, "" if unauthenticated.
	Caller string
	// Peer is the peer address.
	Peer string
	// Tenant is the tenant asked for.
	Tenant string
	// UID is the account id asked for, if any.
	UID string
	// ExternalAccountID is the account id in the customer's own system
	// asked for, if any.
	ExternalAccountID string
	// Groups are the groups asked for, as asked.
	Groups []string
	// Decision is what became of the call.
	Decision Decision
	// Reason says, for Denied and WouldDeny, what was refused; for Error,
	// the gRPC code name (such as "Unavailable").
	Reason string
	// Cache is "hit", "miss", "shared", "remote" (from the cache replicas
	// share) or "".
	Cache string
	// TokenFP is the first 12 hex digits of the token's SHA-256, or "".
	TokenFP string
	// Latency is how long the call took.
	Latency time.Duration
}

// Decision is the outcome of a call, as the trail records it.
type Decision string

// The decisions.
const (
	// Allowed: the caller was served.
	Allowed Decision = "allowed"
	// Denied: the caller was refused; Reason says what was refused.
	Denied Decision = "denied"
	// WouldDeny: a caller in audit mode was served what enforce mode
	// would deny; Reason says what.
	WouldDeny Decision = "would_deny"
	// Error: the call failed; Reason is the gRPC code name.
	Error Decision = "error"
)

// DefaultQueueSize is the queue length for a zero [Config.QueueSize].
const DefaultQueueSize = 4096

const (
	// batchBytes is how much the writer gathers before it writes.
	batchBytes = 64 << 10
	// maxDelay bounds how long a gathered line waits under load.
	maxDelay = 100 * time.Millisecond
	// The writer retries a failed write after minRetry, doubling up to
	// maxRetry while the failure lasts.
	minRetry = 100 * time.Millisecond
	maxRetry = time.Second
)

var (
	// ErrUnavailable is returned by [Sink.Record] in fail-closed mode when
	// the record cannot be taken: the caller must be refused.
	ErrUnavailable = errors.New("audit: sink unavailable")
	// ErrClosed is returned by [Sink.Record] and [Sink.Run] once the sink
	// has stopped.
	ErrClosed = errors.New("audit: sink closed")
)

// Config is what [Open] needs. Zero fields take defaults.
type Config struct {
	// Path is the trail's file, opened for append and created with mode
	// 0600, or "-" for Stdout. Required.
	Path string
	// Stdout is written for Path "-"; nil means os.Stdout.
	Stdout io.Writer
	// QueueSize is how many records may wait for the writer. Default
	// [DefaultQueueSize].
	QueueSize int
	// FailClosed makes [Sink.Record] return [ErrUnavailable], so the
	// caller is refused, while the sink is failing or its queue stays full.
	FailClosed bool
	// OnError is told of every failed write and of every record that could
	// not be queued. It is called from the writer goroutine and from
	// [Sink.Record], possibly at once, and must be quick; nil discards.
	OnError func(error)
	// Clock stamps records whose Time is zero. Default time.Now.
	Clock func() time.Time
}

// Stats are a sink's counters since Open.
type Stats struct {
	// Written counts records written to the file or stdout.
	Written uint64
	// Lost counts records that were neither written nor refused: queued
	// too late in fail-open mode, or still unwritten when the sink closed.
	// Each was reported to OnError.
	Lost uint64
	// WriteErrors counts failed writes, retries included.
	WriteErrors uint64
	// Refused counts records refused with ErrUnavailable.
	Refused uint64
	// Failing is true from a failed write until a write succeeds.
	Failing bool
}

// Sink is an open audit trail. Record is safe for concurrent use; Run is
// called once.
type Sink struct {
	cfg   Config
	name  string   // the path, or "stdout"
	file  *os.File // nil for stdout
	w     io.Writer
	queue chan Record

	// mu is held shared by Record while it queues, and exclusively by the
	// writer when it closes the queue, so that nothing is queued after the
	// last drain.
	mu     sync.RWMutex
	closed bool

	runMu   sync.Mutex
	running bool          // Run has started
	stopped bool          // the shutdown has begun
	stop    chan struct{} // closed by Close to stop Run
	done    chan struct{} // closed when the shutdown has finished
	err     error         // the shutdown's result, set before done is closed

	failing                             atomic.Bool
	written, lost, writeErrors, refused atomic.Uint64

	// The writer's own state: only the goroutine in Run, or Close when Run
	// never started, touches it.
	buf      []byte // lines taken off the queue and not yet written
	bufLines int
	prev     [64]byte // the hash of the last line put in buf, in hex
	enc      *encoder
	retry    *time.Timer
	backoff  time.Duration
}

// Open opens the trail. A file that already has lines continues the chain
// from its last line, which must be intact: Open refuses a file whose last
// line is not a valid audit line, naming the file.
func Open(cfg Config) (*Sink, error) {
	if cfg.Path == "" {
		return nil, errors.New(`audit: no path: give a file, or "-" for stdout`)
	}
	if cfg.QueueSize < 0 {
		return nil, fmt.Errorf("audit: queue size %d is negative", cfg.QueueSize)
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.OnError == nil {
		cfg.OnError = func(error) {}
	}
	s := &Sink{
		cfg:   cfg,
		queue: make(chan Record, cfg.QueueSize),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		enc:   newEncoder(),
		buf:   make([]byte, 0, batchBytes+4<<10),
	}
	copy(s.prev[:], zeroHash)
	if cfg.Path == "-" {
		s.name, s.w = "stdout", cfg.Stdout
		if s.w == nil {
			s.w = os.Stdout
		}
		return s, nil
	}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s: %w", cfg.Path, err)
	}
	prev, err := lastHash(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s: %w", cfg.Path, err)
	}
	if prev != "" {
		copy(s.prev[:], prev)
	}
	s.name, s.file, s.w = cfg.Path, f, f
	return s, nil
}

// Record queues r for the writer; it never writes on the caller's
// goroutine, and it does not keep r.Groups. If the queue is full it waits
// for room until ctx is done; then, in fail-closed mode, it returns
// [ErrUnavailable], and otherwise it counts the record as lost, reports it
// to OnError, and returns nil. In fail-closed mode it returns ErrUnavailable
// at once while the sink is failing. After the sink has stopped it returns
// [ErrClosed].
func (s *Sink) Record(ctx context.Context, r Record) error {
	if r.Time.IsZero() {
		r.Time = s.cfg.Clock()
	}
	r.Groups = slices.Clone(r.Groups)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.cfg.FailClosed && s.failing.Load() {
		s.refused.Add(1)
		return ErrUnavailable
	}
	select {
	case s.queue <- r:
		return nil
	default:
	}
	select {
	case s.queue <- r:
		return nil
	case <-ctx.Done():
	}
	why := fmt.Sprintf("the queue of %d stayed full until the caller gave up (%v", cap(s.queue), context.Cause(ctx))
	if s.failing.Load() {
		why += "; the sink is failing"
	}
	why += ")"
	if s.cfg.FailClosed {
		s.refused.Add(1)
		s.cfg.OnError(fmt.Errorf("audit: record refused, failing closed: %s", why))
		return ErrUnavailable
	}
	s.lost.Add(1)
	s.cfg.OnError(fmt.Errorf("audit: RECORD LOST: %s; the record: %s", why, describe(r)))
	return nil
}

// describe renders a record for an error message: the line it would have
// been, without the chain.
func describe(r Record) string {
	b, err := newEncoder().appendRecord(nil, r)
	if err != nil {
		return fmt.Sprintf("%+v", r) // cannot happen: a Record holds strings only
	}
	return string(b) + "}"
}

// Run writes queued records until ctx is done or [Sink.Close] is called;
// then it writes everything already queued, flushes, syncs and closes the
// file (never stdout), and returns. A line reaches the file within
// milliseconds when the queue runs dry, and at most 100 ms after it was
// taken under load. A failed write is reported to OnError and retried with
// the same bytes; meanwhile no more records are taken, so the queue fills.
//
// Run returns nil, or the error of the final write, sync or close.
func (s *Sink) Run(ctx context.Context) error {
	s.runMu.Lock()
	switch {
	case s.stopped:
		s.runMu.Unlock()
		return ErrClosed
	case s.running:
		s.runMu.Unlock()
		return errors.New("audit: Run called twice")
	}
	s.running = true
	s.runMu.Unlock()

	s.loop(ctx)

	s.runMu.Lock()
	s.stopped = true
	s.runMu.Unlock()
	s.shutdown()
	return s.err
}

// Close stops the sink: it refuses new records, writes those queued,
// flushes, syncs and closes the file. If Run is running, Close makes it
// stop and waits for it. Close is idempotent: later calls return the first
// call's result.
func (s *Sink) Close() error {
	s.runMu.Lock()
	if s.stopped {
		s.runMu.Unlock()
		<-s.done
		return s.err
	}
	s.stopped = true
	running := s.running
	s.runMu.Unlock()
	if running {
		close(s.stop)
		<-s.done
		return s.err
	}
	s.shutdown()
	return s.err
}

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats {
	return Stats{
		Written:     s.written.Load(),
		Lost:        s.lost.Load(),
		WriteErrors: s.writeErrors.Load(),
		Refused:     s.refused.Load(),
		Failing:     s.failing.Load(),
	}
}

// loop is Run until it is told to stop.
func (s *Sink) loop(ctx context.Context) {
	for {
		if s.bufLines > 0 || len(s.buf) > 0 {
			// A write failed: take nothing more until it succeeds.
			select {
			case <-ctx.Done():
				return
			case <-s.stop:
				return
			case <-s.retry.C:
			}
			s.flush()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case r := <-s.queue:
			s.add(r)
			s.gather()
			s.flush()
		}
	}
}

// gather takes more records while the queue has some, up to a batch, for at
// most maxDelay.
func (s *Sink) gather() {
	deadline := time.Now().Add(maxDelay)
	for n := 1; len(s.buf) < batchBytes; n++ {
		select {
		case r := <-s.queue:
			s.add(r)
		default:
			return
		}
		if n%32 == 0 && time.Now().After(deadline) {
			return
		}
	}
}

// shutdown closes the queue, writes what is left, and closes the file. It
// sets s.err and closes s.done.
func (s *Sink) shutdown() {
	defer close(s.done)
	locked := make(chan struct{})
	go func() {
		s.mu.Lock() // waits for Records in flight, which the loop below lets in
		s.closed = true
		s.mu.Unlock()
		close(locked)
	}()
	for open := true; open; {
		select {
		case r := <-s.queue:
			s.add(r)
			if len(s.buf) >= batchBytes && !s.failing.Load() {
				s.flush()
			}
		case <-locked:
			open = false
		}
	}
	for more := true; more; {
		select {
		case r := <-s.queue:
			s.add(r)
		default:
			more = false
		}
	}
	var errs []error
	if err := s.flush(); err != nil {
		s.lost.Add(uint64(s.bufLines))
		err = fmt.Errorf("audit: RECORDS LOST: %d records could not be written to %s before it closed: %w", s.bufLines, s.name, err)
		s.cfg.OnError(err)
		errs = append(errs, err)
		s.buf, s.bufLines = s.buf[:0], 0
	}
	if s.retry != nil {
		s.retry.Stop()
	}
	if s.file != nil {
		if err := s.file.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("audit: %w", err))
		}
		if err := s.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("audit: %w", err))
		}
	}
	s.err = errors.Join(errs...)
}

// add formats r as the next line of the chain and appends it to buf.
func (s *Sink) add(r Record) {
	start := len(s.buf)
	b, err := s.enc.appendRecord(s.buf, r)
	if err != nil {
		// Cannot happen: a Record holds strings only.
		s.buf = b[:start]
		s.lost.Add(1)
		s.cfg.OnError(fmt.Errorf("audit: RECORD LOST: encode: %w; the record: %+v", err, r))
		return
	}
	b = append(b, prevOpen...)
	b = append(b, s.prev[:]...)
	b = append(b, prevClose...)
	sum := sha256.Sum256(b[start:])
	b = append(b, hashOpen...)
	b = hex.AppendEncode(b, sum[:])
	hex.Encode(s.prev[:], sum[:])
	s.buf = append(b, hashClose...)
	s.bufLines++
}

// flush writes buf. On failure it keeps what was not written, reports the
// error, marks the sink failing, arms the retry timer, and returns the
// write's own error.
func (s *Sink) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	n, err := s.w.Write(s.buf)
	n = min(max(n, 0), len(s.buf))
	if err == nil && n < len(s.buf) {
		err = io.ErrShortWrite
	}
	lines := bytes.Count(s.buf[:n], []byte{'\n'})
	s.written.Add(uint64(lines))
	s.bufLines -= lines
	s.buf = s.buf[:copy(s.buf, s.buf[n:])]
	if err == nil {
		if s.failing.Load() {
			s.failing.Store(false)
		}
		s.backoff = 0
		return nil
	}
	s.writeErrors.Add(1)
	s.failing.Store(true)
	s.backoff = min(max(2*s.backoff, minRetry), maxRetry)
	if s.retry == nil {
		s.retry = time.NewTimer(s.backoff)
	} else {
		s.retry.Reset(s.backoff)
	}
	if s.file == nil {
		err = fmt.Errorf("write %s: %w", s.name, err)
	}
	s.cfg.OnError(fmt.Errorf("audit: %w (%d records wait to be written; retrying in %v)", err, s.bufLines, s.backoff))
	return err
}
