// Package tunnel is the transport both mtunnel agents share: the TLS policy
// and peer verification, yamux sessions tuned for a tunnel, the stream
// header, the session pool and the one copy loop (Join). It reads no files
// and no flags and keeps no global state.
//
// # Wire protocol, version 1
//
// Connection. The client agent opens TCP to the server agent and runs TLS
// 1.3 (1.2 only when configured; nothing lower). Both sides must negotiate
// ALPN "mtunnel/1"; a peer that offers or negotiates anything else is
// refused during the handshake. Both sides present certificates and verify
// the other's (see verify.go): the server requires a client certificate
// with the clientAuth usage chaining to its trusted CAs, the client requires
// a server certificate with serverAuth chaining to its CAs and carrying the
// expected server name as a DNS or IP SAN. A connection that has not
// completed the handshake within the handshake timeout is closed.
//
// Session. One yamux session (github.com/hashicorp/yamux v0.1.2 framing)
// runs over each TLS connection; the client agent is the yamux client and
// the only side that opens streams. The client confirms a new session with
// one yamux ping before using it: under TLS 1.3 the client's handshake
// completes before the server has judged the client certificate, so only a
// round trip proves the server accepted it. Tuning is in SessionConfig.
//
// Stream. Each app connection is one stream. The client agent writes a
// request header and then, without waiting, the app's bytes:
//
//	request:  version=1 (1 byte) | kind (1 byte) | n (1 byte) | route (n bytes) [| origin]
//	origin:   family (1 byte) | source address | destination address | source port (2 bytes) | destination port (2 bytes)
//
// The route is 1 to 64 bytes of [A-Za-z0-9._-]. Kind 1 "open" ends after
// the route. Kind 2 "open from" adds the origin: the app connection's
// addresses as the client agent's socket saw them, the app's as source and
// the one it connected to as destination, in the order of PROXY protocol
// v2's address block; family 1 is IPv4 (4-byte addresses), family 2 IPv6
// (16 bytes, no zone), ports big endian. Both addresses have the same
// family; an IPv4 app on a dual-stack listener is sent as IPv4. The client
// sends kind 2 for a TCP app and kind 1 for an app on a unix socket, whose
// address is unknown. Servers before kind 2 existed answer it with status 4
// (bad request): upgrade server agents before client agents. The server
// agent reads the
// header within a timeout, looks up the route, checks the route's identity
// rules against the verified client certificate, dials the route's target
// (as soon as the header is read, so server-first protocols work) and
// answers:
//
//	response: version=1 (1 byte) | status (1 byte) | n (1 byte) | reason (n bytes, UTF-8)
//
// with status 0 ok, 1 unknown route, 2 forbidden, 3 target unreachable,
// 4 bad request, 5 unavailable. After "ok" the stream carries raw bytes both
// ways. After any other status the server closes the stream and the client
// agent resets the app's connection; app bytes sent before the answer are
// discarded by the server, never forwarded.
//
// PROXY protocol. For a route with proxy_protocol v2 the server agent
// writes a PROXY protocol v2 header (HAProxy's proxy-protocol.txt) to the
// target right after connecting, in one write, before any byte of the
// stream: the PROXY command with the origin of a kind 2 request (TCP over
// IPv4, or IPv6), or the LOCAL command without addresses for a kind 1
// request, then TLVs that describe the verified client certificate:
// PP2_TYPE_SSL (0x20; client = SSL | CERT_CONN | CERT_SESS, verify = 0)
// with PP2_SUBTYPE_SSL_VERSION ("TLSv1.3") and PP2_SUBTYPE_SSL_CN,
// PP2TypeClientURI (0xE0) once per URI SAN, and PP2TypeClientIdentity
// (0xE1, the identity as logged). See proxyproto.go. The addresses are what
// the client agent reported; only the identity is the server's own
// finding.
//
// Ends. A FIN on a stream is a half-close: when the app shuts down writing,
// the target sees a FIN and the other direction keeps flowing, and the same
// the other way. Once one direction has ended, the other is cut if it stays
// idle for the half-close timeout. If the session dies, every app and target
// connection on it is reset (RST), never closed cleanly: yamux reports a
// dead session as EOF, so Join checks the session before passing an EOF on.
//
// Drain. A server agent that shuts down sends a GoAway (yamux type 3, code
// 0) on each session and goes on serving the streams that still reach it:
// one the client opened just before the GoAway arrived crossed it on the
// wire and must not fail. (yamux's own GoAway makes it reset such a
// stream, so mtunnel writes the frame itself; frameconn.go.) The client
// opens no more streams on the session and, once its last stream there has
// ended, answers with a GoAway of its own. The server closes the session
// when it has that answer and its own last stream on the session has
// ended, or at its drain timeout. Neither side alone knows that the other
// is done: closing on the server's stream count could cut a stream the
// client is opening, and a close by the client could reach the server
// before it has finished a stream whose FIN it has just read.
//
// Resets. yamux v0.1.2 has no API to reset one stream, so mtunnel writes
// the RST frame itself (frameconn.go), between two of yamux's frames. When
// either agent's copy loop fails (the app or the target reset its
// connection, a write failed, a half-closed stream idled out), it resets its
// local connection and the stream; the peer agent, seeing the stream reset,
// resets its own connection and answers with a reset of its own. The
// resetting side does not wait for that answer to free the stream: it
// feeds its own yamux a reset for it too (frameConn.dropLocally), so a peer
// that never answers cannot make it keep streams and their buffered data.
// So a failure at one end reaches the other as a reset, never as a clean
// end of truncated data.
package tunnel
