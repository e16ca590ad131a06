// Package certstest gives tests an in-memory certificate authority and
// identities issued from it, so that no test depends on files checked into
// the repository or on certificates that expire.
//
// Every helper takes a testing.TB and fails the test (t.Fatal) on error, so
// call sites stay one line. Each New call creates a fresh CA: tests never
// share keys through package state, and a certificate from one test's CA is
// untrusted by another's, which is exactly what negative tests need.
//
// The package is for tests only: it imports testing.
package certstest
