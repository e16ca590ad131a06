package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// batchConn sits under the TLS connection and gathers TLS records into
// few socket writes. crypto/tls writes every record (16 KiB of plaintext at
// most) with its own Write, so a 32 KiB frame cost two or three syscalls,
// and yamux writes each frame (a stream's open, its header, its data, its
// close) on its own.
//
// Records wait in a buffer. When a frame is complete (frameDone), a flusher
// goroutine is woken; it writes everything buffered by the time it runs. Go
// runs a goroutine woken that way next on the same processor once the
// waker blocks, and yamux's send loop blocks only when it has no frame
// left to send: frames that are ready together, from any streams, go out
// in one write, and a lone frame waits for no timer. A full buffer
// (flushAt) is written by the writer itself, behind any write in flight,
// which is what holds a writer back from a slow peer.
//
// It passes writes straight through until enable is called after the
// handshake, so handshake messages are never held back. Close flushes, so
// the TLS close_notify alert is not lost.
//
// Being the layer on the socket, it also tells an abort of the connection
// from the peer's close (Read).
type batchConn struct {
	net.Conn
	wmu     sync.Mutex // held across each socket write: keeps them in order
	mu      sync.Mutex // buf, spare, on, werr, ferr; tls.Conn may write from Read (key updates) too
	on      bool
	buf     []byte
	spare   []byte // the buffer of the previous flush, kept for the next
	flushAt int
	werr    error // the first failed socket write (noteLocked)
	ferr    error // the first failed flush, returned to later writers
	kick    chan struct{}
	stop    chan struct{}
	stopped sync.WaitGroup
	closing sync.Once
	prio    loopPriority // the flusher's (priority.go)
}

func newBatchConn(c net.Conn) *batchConn {
	return &batchConn{Conn: c, flushAt: 256 << 10, kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// enable starts buffering and the flusher; call it once.
func (b *batchConn) enable() {
	b.mu.Lock()
	b.on = true
	b.mu.Unlock()
	b.stopped.Add(1)
	go b.flusher()
}

func (b *batchConn) flusher() {
	defer b.stopped.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
			b.prio.follow()
			b.Flush()
		}
	}
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if !b.on {
		b.mu.Unlock()
		b.wmu.Lock()
		defer b.wmu.Unlock()
		n, err := b.Conn.Write(p)
		b.mu.Lock()
		b.noteLocked(err)
		b.mu.Unlock()
		return n, err
	}
	if b.ferr != nil {
		err := b.ferr
		b.mu.Unlock()
		return 0, err
	}
	b.buf = append(b.buf, p...)
	full := len(b.buf) >= b.flushAt
	b.mu.Unlock()
	if full {
		return len(p), b.Flush()
	}
	return len(p), nil
}

// frameDone says a whole frame is buffered: the flusher writes it soon. It
// returns the error of an earlier flush, if one failed.
func (b *batchConn) frameDone() error {
	b.mu.Lock()
	err := b.ferr
	b.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case b.kick <- struct{}{}:
	default: // a kick is pending; its flush takes this frame too
	}
	return nil
}

// Flush writes what is buffered, after any write in flight.
func (b *batchConn) Flush() error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	return b.flushLocked()
}

// flushLocked writes what is buffered; wmu is held.
func (b *batchConn) flushLocked() error {
	b.mu.Lock()
	out := b.buf
	if len(out) == 0 {
		err := b.ferr
		b.mu.Unlock()
		return err
	}
	b.buf, b.spare = b.spare[:0], nil
	b.mu.Unlock()
	_, err := b.Conn.Write(out)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.noteLocked(err)
	if err != nil && b.ferr == nil {
		// Part of a record may have gone: the TLS stream is broken.
		b.ferr = err
	}
	if cap(out) <= 2*b.flushAt { // do not keep a burst's peak
		b.spare = out[:0]
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
	// wmu waits for it to note its error.
	b.wmu.Lock()
	b.mu.Lock()
	werr := b.werr
	b.mu.Unlock()
	b.wmu.Unlock()
	if werr == nil || errors.Is(werr, syscall.EPIPE) || errors.Is(werr, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConnAborted, werr)
}

// Close stops the flusher, writes what is left and closes the socket.
func (b *batchConn) Close() error {
	b.closing.Do(func() {
		close(b.stop)
		b.stopped.Wait()
	})
	b.Flush()
	return b.Conn.Close()
}

// SetWriteDeadline first writes what is buffered when t has passed, since
// such a deadline means "write nothing more" and what came before it must
// not be lost: tls.Conn.Close sends close_notify under a 5-second deadline
// and then sets one of now. If a write is in flight, the deadline is there
// to stop it, and nothing waits for it.
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.flushBefore(t)
	return b.Conn.SetWriteDeadline(t)
}

// SetDeadline: as SetWriteDeadline.
func (b *batchConn) SetDeadline(t time.Time) error {
	b.flushBefore(t)
	return b.Conn.SetDeadline(t)
}

func (b *batchConn) flushBefore(t time.Time) {
	if t.IsZero() || t.After(time.Now()) || !b.wmu.TryLock() {
		return
	}
	defer b.wmu.Unlock()
	b.flushLocked()
}
