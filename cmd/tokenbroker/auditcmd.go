package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// cmdAudit is "audit verify FILE": check a trail's hash chain and report
// the first line where it breaks.
func cmdAudit(_ context.Context, args []string, e *env) int {
	if len(args) != 2 || args[0] != "verify" {
		fmt.Fprintln(e.stderr, "usage: tokenbroker audit verify FILE")
		return 2
	}
	f, err := os.Open(args[1])
	if err != nil {
		return e.errorf("audit verify: %v", err)
	}
	defer f.Close()
	n, err := audit.Verify(f)
	if err != nil {
		var ce *audit.ChainError
		if errors.As(err, &ce) {
			fmt.Fprintf(e.stdout, "%s: chain broken at line %d: %s (%d lines before it verify)\n", args[1], ce.Line, ce.Reason, n)
			return 1
		}
		return e.errorf("audit verify: %s: %v", args[1], err)
	}
	fmt.Fprintf(e.stdout, "%s: OK, %d lines, chain intact\n", args[1], n)
	return 0
}
