package tunnel

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAbortedConnReadIsNotEOF: Linux reports a connection's abort (a
// reset, or TCP_USER_TIMEOUT with nothing acknowledged) once, to whichever
// call comes first. When a write takes it, the read finds the socket shut
// and returns 0 bytes: an EOF, which the session would report as "peer
// closed the connection" (seen in integration's TestNetnsLinkCutBinary, a
// link cut with data in flight both ways). The tunnel's read side must
// report the abort instead. The peer's close still reads as io.EOF, also
// when the peer's kernel answered a write after it with a reset.
func TestAbortedConnReadIsNotEOF(t *testing.T) {
	a, b := tcpPair(t)
	ab := newBatchConn(a)
	b.SetLinger(0)
	b.Close() // a reset, not a FIN
	waitPoll(t, a, unix.POLLIN)
	if _, err := ab.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write after the reset: %v, want ECONNRESET (the write takes the error)", err)
	}
	_, err := ab.Read(make([]byte, 1))
	if !errors.Is(err, ErrConnAborted) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a write took the reset: %v, want ErrConnAborted with ECONNRESET", err)
	}

	c, d := tcpPair(t)
	cb := newBatchConn(c)
	d.Close() // a FIN
	waitPoll(t, c, unix.POLLIN)
	if _, err := cb.Write([]byte("x")); err != nil {
		t.Fatalf("write after the FIN: %v", err)
	}
	waitPoll(t, c, 0) // the peer's reset in answer (POLLHUP, POLLERR)
	if _, err := cb.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after the FIN and the reset: %v, want EPIPE", err)
	}
	if _, err := cb.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the peer's FIN: %v, want io.EOF", err)
	}
}

// waitPoll waits (10 s at most) until c reports events, or an error or a
// hang-up (always reported), without taking any of it.
func waitPoll(t *testing.T, c *net.TCPConn, events int16) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		for {
			n, err = unix.Poll(fds, 10_000)
			if err != unix.EINTR {
				return
			}
		}
	})
	if err != nil || n == 0 {
		t.Fatalf("poll: %d ready, %v", n, err)
	}
}
