package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// batchConn sits under the TLS connection and gathers the records of one
// yamux frame into one socket write. crypto/tls writes every record (16 KiB
// of plaintext at most) with its own Write, so a 32 KiB frame cost two or
// three syscalls; frameConn flushes once per frame instead.
//
// It passes writes straight through until enable is called after the
// handshake, so handshake messages are never held back. Close flushes, so
// the TLS close_notify alert is not lost.
//
// Being the layer on the socket, it also tells an abort of the connection
// from the peer's close (Read).
type batchConn struct {
	net.Conn
	mu      sync.Mutex // tls.Conn may write from Read (key updates) too
	on      bool
	buf     []byte
	flushAt int
	werr    error // the first failed socket write (noteLocked)
}

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c, flushAt: 256 << 10} }

func (b *batchConn) enable() {
	b.mu.Lock()
	b.on = true
	b.mu.Unlock()
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		n, err := b.Conn.Write(p)
		b.noteLocked(err)
		return n, err
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= b.flushAt {
		return len(p), b.flushLocked()
	}
	return len(p), nil
}

// Flush writes what is buffered.
func (b *batchConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.noteLocked(err)
	if cap(b.buf) > 2*b.flushAt {
		b.buf = nil // do not keep a burst's peak
	} else {
		b.buf = b.buf[:0]
	}
	return err
}

// noteLocked keeps the first error of a socket write for abortErr; a
// deadline is not the connection's fault, and the socket stays usable.
func (b *batchConn) noteLocked(err error) {
	if err != nil && b.werr == nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		b.werr = err
	}
}

// Read passes reads through, except an end of data that an abort of the
// connection caused (abortErr).
func (b *batchConn) Read(p []byte) (int, error) {
	n, err := b.Conn.Read(p)
	if err == io.EOF {
		if aerr := b.abortErr(); aerr != nil {
			err = aerr
		}
	}
	return n, err
}

// abortErr tells, after a read returned EOF, an abort of the connection
// from the peer's close. Linux reports an abort (a reset; TCP_USER_TIMEOUT
// or keepalive giving up) once, to the first call that looks: when yamux's
// send loop takes it, the receive loop's read finds the socket shut and
// returns 0 bytes, and the session would end as "peer closed the
// connection" over a link that was cut (seen in integration's
// TestNetnsLinkCutBinary). So an EOF on a socket the kernel has closed
// (tcpClosed), after a write failed with anything but EPIPE, is that
// write's abort. A FIN alone leaves the socket open (CLOSE_WAIT); a FIN and
// then the peer's reset in answer to our next write leave it closed, but
// such a write fails with EPIPE, if at all.
func (b *batchConn) abortErr() error {
	if !tcpClosed(b.Conn) {
		return nil
	}
	// The socket is closed, so a write still in flight returns at once;
	// the lock waits for it to note its error.
	b.mu.Lock()
	werr := b.werr
	b.mu.Unlock()
	if werr == nil || errors.Is(werr, syscall.EPIPE) || errors.Is(werr, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConnAborted, werr)
}

func (b *batchConn) Close() error {
	b.Flush()
	return b.Conn.Close()
}
