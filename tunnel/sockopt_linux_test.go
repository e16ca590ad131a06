package tunnel

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

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

func TestAutoRecvBuffer(t *testing.T) {
	for _, c := range []struct {
		rtt     time.Duration
		rmemMax int64
		want    int64
	}{
		{20 * time.Microsecond, 4 << 20, 256 << 10},  // loopback: the floor
		{500 * time.Microsecond, 4 << 20, 1_250_000}, // a LAN: 2 x BDP at 10 Gbit/s
		{2 * time.Millisecond, 4 << 20, 0},           // 5 MB needed, more than rmem_max: autotuning
		{2 * time.Millisecond, 64 << 20, 5_000_000},  // allowed by a raised rmem_max
		{10 * time.Millisecond, 64 << 20, 0},         // beyond autoRecvMax: autotuning
		{20 * time.Microsecond, 212992, 212992},      // Debian's default rmem_max caps the floor
		{100 * time.Microsecond, 212992, 0},          // 250 KB needed > rmem_max: autotuning
		{20 * time.Microsecond, 0, 0},                // rmem_max unknown
	} {
		if got := autoRecvBuffer(c.rtt, c.rmemMax); got != c.want {
			t.Errorf("autoRecvBuffer(%v, %d) = %d, want %d", c.rtt, c.rmemMax, got, c.want)
		}
	}
}

// rcvbuf reads the socket's SO_RCVBUF, which Linux reports doubled.
func rcvbuf(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var gerr error
	raw.Control(func(fd uintptr) { n, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return n
}

// The sizes reach both ends' real sockets after the handshake.
func TestSessionRecvBuffer(t *testing.T) {
	for _, c := range []struct {
		name string
		set  int64
		want func(*Session) bool
	}{
		// Loopback's RTT is microseconds: at least the floor (or all that
		// rmem_max allows), never autotuning.
		{"auto", 0, func(s *Session) bool { return s.RecvBuffer >= min(autoRecvFloor, rmemMax()) && s.RecvBuffer > 0 }},
		// Under Debian's default rmem_max (208 KiB), so never capped.
		{"fixed", 64 << 10, func(s *Session) bool { return s.RecvBuffer == 64<<10 }},
		{"kernel", RecvBufferKernel, func(s *Session) bool { return s.RecvBuffer == 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, server := tlsSessionsWith(t, SessionConfig{RecvBuffer: c.set})
			for _, s := range []*Session{client, server} {
				if !c.want(s) {
					t.Fatalf("RecvBuffer = %d", s.RecvBuffer)
				}
				got := rcvbuf(t, s.conn.Conn.(*tls.Conn).NetConn().(*batchConn).Conn)
				if c.set > 0 && got != 2*int(c.set) {
					t.Errorf("SO_RCVBUF = %d, want 2 x %d (Linux reports it doubled)", got, c.set)
				}
			}
		})
	}
}
