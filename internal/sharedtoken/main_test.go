package sharedtoken

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: each
// won lease's renewal must end with its release, and each Store with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
