// Package server is the server agent: it accepts mutually authenticated TLS
// connections, runs one yamux session on each, and for every stream reads
// the stream header, checks the route's identity rules against the client's
// verified certificate, dials the route's target (TCP or a unix socket),
// writes a PROXY protocol v2 header first if the route asks for one, and
// joins the two.
//
// Invariants:
//   - It never dials anything but a configured route's target.
//   - A connection that does not complete an mTLS handshake within
//     HandshakeTimeout is closed; its reason is logged.
//   - The accept loops never block on a dial or a header: each stream and
//     each connection gets its own goroutine at once.
//   - Run returns only after every goroutine it started has ended.
package server
