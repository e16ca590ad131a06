package tunnel

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
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

func TestAutoRecvWindow(t *testing.T) {
	for _, c := range []struct {
		rtt  time.Duration
		want int64
	}{
		{20 * time.Microsecond, 256 << 10},   // loopback: the floor
		{500 * time.Microsecond, 1_250_000},  // a LAN: 2 x BDP at 10 Gbit/s
		{2 * time.Millisecond, 5_000_000},    // no longer capped by rmem_max (a clamp is not a buffer)
		{3200 * time.Microsecond, 8_000_000}, // the most it holds
		{10 * time.Millisecond, 0},           // beyond autoRecvMax: never held
		{0, 256 << 10},                       // no estimate: the floor
	} {
		if got := autoRecvWindow(c.rtt); got != c.want {
			t.Errorf("autoRecvWindow(%v) = %d, want %d", c.rtt, got, c.want)
		}
	}
}

// windowClamp reads the socket's TCP_WINDOW_CLAMP.
func windowClamp(t *testing.T, c net.Conn) int {
	t.Helper()
	return sockoptInt(t, c, syscall.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP)
}

func sockoptInt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var gerr error
	raw.Control(func(fd uintptr) { n, gerr = syscall.GetsockoptInt(int(fd), level, opt) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return n
}

// The bound reaches the real socket while streams talk, is set again after
// autotuning raised it, and is lifted to the buffer's size when the talk
// ends. No data flows on this pair, so the kernel moves nothing itself.
func TestTalkWindowFollows(t *testing.T) {
	a, _ := tcpPair(t)
	raw, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var talk bool
	w := &talkWindow{raw: raw, size: 300 << 10, talking: func() bool { return talk }}
	untouched := windowClamp(t, a)
	w.follow()
	if got := windowClamp(t, a); got != untouched {
		t.Fatalf("no talk: TCP_WINDOW_CLAMP %d, want the kernel's %d untouched", got, untouched)
	}
	base := heldWindows.Load()
	held := func(want int32) {
		t.Helper()
		if got := heldWindows.Load() - base; got != want {
			t.Fatalf("mtunnel_tunnel_windows_held moved by %d, want %d", got, want)
		}
	}
	talk = true
	w.follow()
	if got := windowClamp(t, a); got != 300<<10 {
		t.Fatalf("talk: TCP_WINDOW_CLAMP %d, want %d", got, 300<<10)
	}
	held(1)
	// Autotuning takes the clamp along when it grows the buffer.
	bumped := 2 << 20
	raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, bumped) })
	for range renewWindowEvery - 1 {
		w.follow()
	}
	if got := windowClamp(t, a); got != bumped {
		t.Fatalf("TCP_WINDOW_CLAMP %d before the renewal, want %d (set on every follow?)", got, bumped)
	}
	w.follow()
	if got := windowClamp(t, a); got != 300<<10 {
		t.Fatalf("renewed: TCP_WINDOW_CLAMP %d, want %d", got, 300<<10)
	}
	held(1)
	talk = false
	w.follow()
	if got, buf := windowClamp(t, a), rcvbuf(t, a); got != buf {
		t.Fatalf("talk over: TCP_WINDOW_CLAMP %d, want the buffer's %d", got, buf)
	}
	held(0)
	// A session that ends with its window held leaves the count.
	talk = true
	w.follow()
	held(1)
	w.close()
	held(0)
	w.follow()
	held(0)
}

// rcvbuf reads the socket's SO_RCVBUF, which Linux reports doubled.
func rcvbuf(t *testing.T, c net.Conn) int {
	t.Helper()
	return sockoptInt(t, c, syscall.SOL_SOCKET, syscall.SO_RCVBUF)
}

// The sizes reach both ends' real sockets after the handshake.
func TestSessionRecvBuffer(t *testing.T) {
	for _, c := range []struct {
		name string
		set  int64
		want func(*Session) bool
	}{
		// Loopback's RTT is microseconds: autotuning, held to the floor
		// while streams talk.
		{"auto", 0, func(s *Session) bool { return s.RecvBuffer == 0 && s.TalkWindow == autoRecvFloor }},
		// Under Debian's default rmem_max (208 KiB), so never capped.
		{"fixed", 64 << 10, func(s *Session) bool { return s.RecvBuffer == 64<<10 && s.TalkWindow == 0 }},
		{"kernel", RecvBufferKernel, func(s *Session) bool { return s.RecvBuffer == 0 && s.TalkWindow == 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, server := tlsSessionsWith(t, SessionConfig{RecvBuffer: c.set})
			for _, s := range []*Session{client, server} {
				if !c.want(s) {
					t.Fatalf("RecvBuffer = %d, TalkWindow = %d", s.RecvBuffer, s.TalkWindow)
				}
				got := rcvbuf(t, s.conn.Conn.(*tls.Conn).NetConn().(*batchConn).Conn)
				if c.set > 0 && got != 2*int(c.set) {
					t.Errorf("SO_RCVBUF = %d, want 2 x %d (Linux reports it doubled)", got, c.set)
				}
			}
		})
	}
}

// A session's receive loop follows the talk: the window is held while
// streams talk and let go when they stop, each noticed within the bytes
// of a few yields.
func TestSessionTalkWindow(t *testing.T) {
	var talk atomic.Bool
	windowTalking = talk.Load
	t.Cleanup(func() { windowTalking = nil })
	client, server := tlsSessionsWith(t, SessionConfig{})
	c, s := streamPair(t, client, server)
	data := make([]byte, 4*readYield)
	pump := func() {
		t.Helper()
		go c.Write(data)
		if _, err := io.ReadFull(s, make([]byte, len(data))); err != nil {
			t.Fatal(err)
		}
	}
	// The receive loop writes the window's state before it hands the
	// data that followed to the stream, which the test then reads.
	talk.Store(true)
	pump()
	if !server.talkWindow.on {
		t.Fatal("streams talk, but the receive loop did not hold the window")
	}
	talk.Store(false)
	pump()
	if server.talkWindow.on {
		t.Fatal("talk over, but the window is still held")
	}
}
