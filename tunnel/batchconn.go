package tunnel

import (
	"net"
	"sync"
)

// batchConn sits under the TLS connection and gathers the records of one
// yamux frame into one socket write. crypto/tls writes every record (16 KiB
// of plaintext at most) with its own Write, so a 32 KiB frame cost two or
// three syscalls; frameConn flushes once per frame instead.
//
// It passes writes straight through until enable is called after the
// handshake, so handshake messages are never held back. Close flushes, so
// the TLS close_notify alert is not lost.
type batchConn struct {
	net.Conn
	mu      sync.Mutex // tls.Conn may write from Read (key updates) too
	on      bool
	buf     []byte
	flushAt int
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
		return b.Conn.Write(p)
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
	if cap(b.buf) > 2*b.flushAt {
		b.buf = nil // do not keep a burst's peak
	} else {
		b.buf = b.buf[:0]
	}
	return err
}

func (b *batchConn) Close() error {
	b.Flush()
	return b.Conn.Close()
}
