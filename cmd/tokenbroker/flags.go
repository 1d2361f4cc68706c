package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/tokenbroker/tokenbroker/server"
)

// newFlags returns a flag set that reports to the command's stderr.
func newFlags(name string, e *env) *flag.FlagSet {
	fs := flag.NewFlagSet("tokenbroker "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parse parses args and maps -h and bad flags to an exit code.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// logging is how a running broker logs: the logger, which calls get a
// line, and the logger of those lines.
type logging struct {
	*slog.Logger
	calls     server.CallLog
	callLines *slog.Logger // nil: Logger
	close     func()       // writes what the call log holds back; nil: nothing
}

// logDefaults are a command's defaults for its logging flags.
type logDefaults struct {
	format string // --log-format
	calls  string // --log-calls
	batch  bool   // write the lines of calls that went well in batches (batchWriter)
}

// logFlags adds --log-level, --log-format and --log-calls and returns a
// constructor for the logging they describe; Close the logging when done.
func logFlags(fs *flag.FlagSet, e *env, d logDefaults) func() (logging, error) {
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", d.format, "json or text")
	calls := fs.String("log-calls", d.calls, "all: a line per call; failures: only calls that failed or that audit mode let through")
	return func() (logging, error) {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(*level)); err != nil {
			return logging{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
		}
		cl, err := server.ParseCallLog(*calls)
		if err != nil {
			return logging{}, fmt.Errorf("--log-calls: %w", err)
		}
		opts := &slog.HandlerOptions{Level: lv}
		newHandler := func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) }
		switch *format {
		case "json":
		case "text":
			newHandler = func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }
		default:
			return logging{}, fmt.Errorf("--log-format %q: want json or text", *format)
		}
		lg := logging{Logger: slog.New(newHandler(e.stderr)), calls: cl}
		if d.batch {
			bw := newBatchWriter(e.stderr, batchEvery)
			lg.callLines = slog.New(flushAtWarn{newHandler(bw), bw})
			lg.close = func() { bw.Close() }
		}
		return lg, nil
	}
}

// Close writes what the call log holds back.
func (l logging) Close() {
	if l.close != nil {
		l.close()
	}
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// mapFlag is a repeatable key=value flag.
type mapFlag map[string]string

func (m mapFlag) String() string { return fmt.Sprint(map[string]string(m)) }

func (m mapFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	m[k] = val
	return nil
}
