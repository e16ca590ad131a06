package tunnel

import (
	"encoding/binary"
	"net"
)

// yamux frame header layout (yamux spec.md): version(1) type(1) flags(2)
// stream id(4) length(4).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// coalesceMax is how much of a data frame's body joins its header in
	// one write: one full TLS record's plaintext (16 KiB).
	coalesceMax = 16 << 10
)

// frameConn sits between yamux and the TLS connection and sends a data
// frame's 12-byte header together with its body. yamux's send loop writes
// the header and the body with two Write calls; on a tls.Conn that is two
// TLS records and two syscalls (and, with TCP_NODELAY, two packets) per
// frame (FIELD-NOTES). Here the header waits for the body's first Write and
// goes out in the same record.
//
// Only yamux's send loop writes to a session's connection, one frame at a
// time, so frameConn needs no lock; it relies on that single writer.
type frameConn struct {
	net.Conn
	pending [yamuxHeaderSize]byte
	waiting bool // pending holds a data header whose body comes next
	buf     []byte
}

func newFrameConn(c net.Conn) *frameConn { return &frameConn{Conn: c} }

func (c *frameConn) Write(p []byte) (int, error) {
	if c.waiting {
		c.waiting = false
		return c.writeWithHeader(p)
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.pending[:], p)
		c.waiting = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// writeWithHeader writes the pending header and body as one write (for a
// body up to coalesceMax) or as a first full record and the rest.
func (c *frameConn) writeWithHeader(body []byte) (int, error) {
	first := min(len(body), coalesceMax-yamuxHeaderSize)
	if c.buf == nil {
		c.buf = make([]byte, 0, coalesceMax)
	}
	c.buf = append(append(c.buf[:0], c.pending[:]...), body[:first]...)
	if _, err := c.Conn.Write(c.buf); err != nil {
		return 0, err
	}
	if first == len(body) {
		return len(body), nil
	}
	n, err := c.Conn.Write(body[first:])
	return first + n, err
}
