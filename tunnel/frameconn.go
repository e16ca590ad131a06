package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
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
// It also writes stream resets (RST frames), which yamux v0.1.2 has no API
// for, and a GoAway that does not refuse streams already in flight: sendRST slips one in between two of yamux's frames, never between a
// header and its body.
type frameConn struct {
	net.Conn
	mu      sync.Mutex // yamux's send loop and sendRST
	pending [yamuxHeaderSize]byte
	waiting bool   // pending holds a data header whose body comes next
	queued  []byte // injected frames to send once the frame in flight is complete
	buf     []byte
	flush   func() error  // after each complete frame; nil: nothing to flush
	reads   atomic.Uint64 // reads that returned data: the watchdog's proof of life
}

// Read counts reads that bring data, so the watchdog knows the peer is
// alive without a clock read per call.
func (c *frameConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

func newFrameConn(c net.Conn) *frameConn { return &frameConn{Conn: c} }

// complete is called when a whole frame has been written.
func (c *frameConn) complete(err error) error {
	if err == nil && c.flush != nil {
		err = c.flush()
	}
	return err
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting {
		c.waiting = false
		n, err := c.writeWithHeader(p)
		if err == nil && len(c.queued) > 0 {
			err = c.flushInjected()
		}
		return n, c.complete(err)
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.pending[:], p)
		c.waiting = true
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	return n, c.complete(err)
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

// yamux frame types and flags of the frames frameConn injects (yamux
// spec.md).
const (
	yamuxTypeWindowUpdate = 1
	yamuxTypeGoAway       = 3
	yamuxFlagRST          = 0x8
	yamuxGoAwayNormal     = 0
)

// sendRST sends a reset for stream id: the peer's stream ends at once with
// ErrConnectionReset instead of a clean EOF.
func (c *frameConn) sendRST(id uint32) error {
	var h [yamuxHeaderSize]byte
	h[1] = yamuxTypeWindowUpdate
	binary.BigEndian.PutUint16(h[2:4], yamuxFlagRST)
	binary.BigEndian.PutUint32(h[4:8], id)
	return c.inject(h)
}

// sendGoAway tells the peer to open no more streams, without yamux's own
// GoAway, which also makes our side reset every stream the peer opened
// before the GoAway reached it: those streams were in flight, and each
// would be a failed connection for an app. With this one they are served.
func (c *frameConn) sendGoAway() error {
	var h [yamuxHeaderSize]byte
	h[1] = yamuxTypeGoAway
	binary.BigEndian.PutUint32(h[8:12], yamuxGoAwayNormal)
	return c.inject(h)
}

// inject sends a header-only frame between two of yamux's frames.
func (c *frameConn) inject(h [yamuxHeaderSize]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queued = append(c.queued, h[:]...)
	if c.waiting {
		return nil // sent right after the body in flight
	}
	return c.flushInjected()
}

func (c *frameConn) flushInjected() error {
	_, err := c.Conn.Write(c.queued)
	c.queued = c.queued[:0]
	return c.complete(err)
}
