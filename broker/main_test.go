package broker_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: the
// broker's refreshes and flights must all end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
