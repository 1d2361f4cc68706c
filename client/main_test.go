package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests, and its examples, if any goroutine
// outlives them: every watch, shared call and connection must end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
