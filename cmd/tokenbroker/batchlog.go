package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// The call log's batching: lines wait at most batchEvery, or until
// batchBytes of them are waiting, before one write.
const (
	batchEvery = 100 * time.Millisecond
	batchBytes = 32 << 10
)

// batchWriter gathers whole log lines and writes them in batches: on a busy
// broker a line per call is otherwise a write(2) per call, which under load
// costs more than the call. Each Write is one whole line (slog writes a
// record in one call), and a batch goes out in one Write, so lines are never
// split; other writers of the same *os.File are serialised by it.
type batchWriter struct {
	w    io.Writer
	mu   sync.Mutex
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

// newBatchWriter starts the goroutine that writes a waiting batch every
// interval (batchEvery in the broker); Close stops it and writes what is
// left.
func newBatchWriter(w io.Writer, every time.Duration) *batchWriter {
	b := &batchWriter{w: w, stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop(every)
	return b
}

func (b *batchWriter) loop(every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.Flush()
		}
	}
}

// Write queues p, and writes the batch once batchBytes wait.
func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) >= batchBytes {
		return len(p), b.flushLocked()
	}
	return len(p), nil
}

// Flush writes the waiting lines.
func (b *batchWriter) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *batchWriter) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Close stops the ticker and writes what is left.
func (b *batchWriter) Close() error {
	close(b.stop)
	<-b.done
	return b.Flush()
}

// flushAtWarn is a handler writing through a batchWriter that flushes after
// every record at warn or above: failures are seen at once, and only the
// lines of calls that went well wait for their batch.
type flushAtWarn struct {
	slog.Handler
	b *batchWriter
}

func (h flushAtWarn) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		if ferr := h.b.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (h flushAtWarn) WithAttrs(as []slog.Attr) slog.Handler {
	return flushAtWarn{h.Handler.WithAttrs(as), h.b}
}

func (h flushAtWarn) WithGroup(name string) slog.Handler {
	return flushAtWarn{h.Handler.WithGroup(name), h.b}
}
