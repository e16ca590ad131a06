package tunnel

import (
	"encoding/binary"
	"net"
	"runtime"
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
// It also writes control frames that yamux v0.1.2 has no API for: stream
// resets (RST) and a GoAway that does not make yamux refuse incoming
// streams (see Session.GoAway). They slip in between two of yamux's frames,
// never between a header and its body.
//
// On the read side it follows the frame boundaries of what yamux reads and
// reports the peer's GoAway at once (yamux only records it), so the pool
// stops using a draining session before it tries to open a stream there.
type frameConn struct {
	net.Conn
	mu      sync.Mutex // yamux's send loop and the control frames
	pending [yamuxHeaderSize]byte
	waiting bool   // pending holds a data header whose body comes next
	control []byte // control frames to send once the frame in flight is complete
	buf     []byte
	flush   func() error // after each complete frame; nil: nothing to flush

	// Read side, used only by yamux's receive loop.
	rhdr  [yamuxHeaderSize]byte
	rn    int    // bytes of rhdr filled
	rbody uint32 // bytes of a data frame's body still to pass
	// unyielded counts bytes read since the last yield (Read).
	unyielded int
	yield     func() // runtime.Gosched; a test counts
	// everyYield, if set, runs before each yield, on the receive loop
	// (talkWindow.follow).
	everyYield func()
	// Frames for yamux's reader from dropLocally, fed at a frame boundary.
	imu          sync.Mutex
	inject       []byte
	pendingDrops atomic.Bool
	goAway       chan struct{}
	gone         sync.Once     // closes goAway
	reads        atomic.Uint64 // reads that returned data: the watchdog's proof of life
	// The receive and send loops' priorities (priority.go): Read runs on
	// yamux's receive loop only, Write on its send loop only.
	rprio, wprio loopPriority
}

func newFrameConn(c net.Conn) *frameConn {
	return &frameConn{Conn: c, goAway: make(chan struct{}), yield: runtime.Gosched}
}

// complete is called when a whole frame has been written.
func (c *frameConn) complete(err error) error {
	if err == nil && c.flush != nil {
		err = c.flush()
	}
	return err
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.wprio.follow()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting {
		c.waiting = false
		n, err := c.writeWithHeader(p)
		if err == nil && len(c.control) > 0 {
			err = c.flushControl()
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

// yamux frame types, flags and GoAway codes used here (yamux spec.md).
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
	return c.sendControl(h)
}

// dropLocally makes yamux drop stream id at once, as if the peer had reset
// it: a reset frame for id is fed to yamux's reader at the next frame
// boundary of what it reads (injected). yamux v0.1.2 keeps a stream we
// reset, with what it has buffered, until the peer answers (stock yamux
// never does), and has no call to drop it; a peer could so make the
// session hold a window of data for each such stream. Frames the peer
// sends for the stream afterwards find it gone, and yamux discards them.
func (c *frameConn) dropLocally(id uint32) {
	var h [yamuxHeaderSize]byte
	h[1] = yamuxTypeWindowUpdate
	binary.BigEndian.PutUint16(h[2:4], yamuxFlagRST)
	binary.BigEndian.PutUint32(h[4:8], id)
	c.imu.Lock()
	c.inject = append(c.inject, h[:]...)
	c.pendingDrops.Store(true)
	c.imu.Unlock()
}

// injected copies whole frames queued by dropLocally into p when what
// yamux has read so far ends at a frame boundary, and returns how many
// bytes; 0 if none are due (or p is too small for one).
func (c *frameConn) injected(p []byte) int {
	if !c.pendingDrops.Load() || c.rn != 0 || c.rbody != 0 || len(p) < yamuxHeaderSize {
		return 0
	}
	c.imu.Lock()
	defer c.imu.Unlock()
	n := copy(p[:len(p)/yamuxHeaderSize*yamuxHeaderSize], c.inject)
	c.inject = c.inject[n:]
	if len(c.inject) == 0 {
		c.inject = nil
		c.pendingDrops.Store(false)
	}
	return n
}

// sendGoAway sends a normal GoAway: the peer opens no more streams.
func (c *frameConn) sendGoAway() error {
	var h [yamuxHeaderSize]byte
	h[1] = yamuxTypeGoAway
	binary.BigEndian.PutUint32(h[8:12], yamuxGoAwayNormal)
	return c.sendControl(h)
}

func (c *frameConn) sendControl(h [yamuxHeaderSize]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.control = append(c.control, h[:]...)
	if c.waiting {
		return nil // sent right after the body in flight
	}
	return c.flushControl()
}

func (c *frameConn) flushControl() error {
	_, err := c.Conn.Write(c.control)
	c.control = c.control[:0]
	return c.complete(err)
}

// stopStreams closes goAway: the session takes no new streams, because the
// peer said so or because it retired itself.
func (c *frameConn) stopStreams() { c.gone.Do(func() { close(c.goAway) }) }

// readYield is how many bytes yamux's receive loop reads between two
// yields of the processor (frameConn.Read).
const readYield = 64 << 10

// Read passes yamux's reads through, watches the frames go by for the
// peer's GoAway, and counts reads that bring data, so the watchdog knows
// the peer is alive without a clock read per call.
//
// It also yields the processor every readYield bytes. The receive loop
// wakes each stream's reader as its data arrives, and Go runs a goroutine
// woken that way only once the waker stops; a receive loop fed bulk data
// never blocks, so an interactive stream's reader waited for its time
// slice to end (up to 10 ms). In 6 interleaved pairs of head-of-line runs
// the yield lowered the ping's median and p99 in 5 and did not lower
// bulk throughput.
func (c *frameConn) Read(p []byte) (int, error) {
	if n := c.injected(p); n > 0 {
		return n, nil
	}
	c.rprio.follow()
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
		c.scan(p[:n])
		if c.unyielded += n; c.unyielded >= readYield {
			c.unyielded %= readYield
			if c.everyYield != nil {
				c.everyYield()
			}
			c.yield()
		}
	}
	return n, err
}

// scan follows frame boundaries: a 12-byte header, then a body for data
// frames only (for the other types the length field is a value).
func (c *frameConn) scan(b []byte) {
	for len(b) > 0 {
		if c.rbody > 0 {
			if uint64(len(b)) <= uint64(c.rbody) {
				c.rbody -= uint32(len(b))
				return
			}
			b, c.rbody = b[c.rbody:], 0
		}
		k := copy(c.rhdr[c.rn:], b)
		b, c.rn = b[k:], c.rn+k
		if c.rn < yamuxHeaderSize {
			return
		}
		c.rn = 0
		length := binary.BigEndian.Uint32(c.rhdr[8:12])
		switch c.rhdr[1] {
		case yamuxTypeData:
			c.rbody = length
		case yamuxTypeGoAway:
			if length == yamuxGoAwayNormal {
				c.stopStreams()
			}
		}
	}
}
