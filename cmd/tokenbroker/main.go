package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	silenceRedis()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `tokenbroker: signs upstream assertions and hands out access tokens over gRPC

Usage:
  tokenbroker serve --config FILE         run the broker
  tokenbroker dev                         run the broker on a built-in emulator with a throwaway key (make run)
  tokenbroker emulate [flags]             run the Pismo token endpoint emulator alone
  tokenbroker keygen --out FILE           make a key (--type rsa|ec): FILE (private, 0600), FILE.pub (public PEM),
                                          FILE.crt (self-signed certificate) and FILE.jwks.json (public JWK Set)
  tokenbroker hash-key [--stdin]          make a caller key and print it with the hash for the config
  tokenbroker token [flags]               ask a broker for a token (the client)
  tokenbroker check-config --config FILE  check a config file and the keys it names
  tokenbroker audit verify FILE           check an audit trail's hash chain

Run "tokenbroker COMMAND -h" for a command's flags.
`

// commands maps each subcommand to its function. Each gets its own flag set
// and returns the process exit code.
var commands = map[string]func(ctx context.Context, args []string, env *env) int{
	"serve":        cmdServe,
	"dev":          cmdDev,
	"emulate":      cmdEmulate,
	"keygen":       cmdKeygen,
	"hash-key":     cmdHashKey,
	"token":        cmdToken,
	"check-config": cmdCheckConfig,
	"audit":        cmdAudit,
}

// env is the process's standard streams, injected so tests run commands
// in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

func (e *env) errorf(format string, args ...any) int {
	fmt.Fprintf(e.stderr, "tokenbroker: "+format+"\n", args...)
	return 1
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tokenbroker: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return cmd(ctx, args[1:], e)
}
