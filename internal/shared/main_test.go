package shared

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: Close
// must end each Store's subscription reader and its connections.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
