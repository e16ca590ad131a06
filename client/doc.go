// Package client is the client agent: it listens on local ports (or unix
// sockets, unix.go), and turns
// each accepted connection into a stream on a pooled mTLS+yamux session to
// one of the server agents (all serving the same routes), naming the route
// in the stream header.
//
// Invariants:
//   - App bytes start flowing into the stream right after the header, with
//     no round trip; the server's answer is read before any byte goes back
//     to the app.
//   - A refused stream, a failed dial or a lost session reaches the app as
//     a connection reset, never as a clean end of data (an app on a unix
//     socket, which has no reset, sees its connection closed).
//   - A unix socket file is never open wider than its ListenMode, and is
//     removed on Close; a socket another process listens on is never
//     removed.
//   - An app connection waits at most ConnectWait for a session.
//   - Run returns only after every goroutine it started has ended.
package client
