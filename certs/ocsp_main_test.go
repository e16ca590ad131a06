package certs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind, in particular
// OCSP requests and the HTTP connections they use.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
