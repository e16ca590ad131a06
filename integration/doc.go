// Package integration holds mtunnel's end-to-end tests: both agents on
// loopback with real sockets and real backends, the built binary driven as a
// user would, and fault injection. It has no non-test code but this file.
package integration
