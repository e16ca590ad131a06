package tunnel

import (
	"math"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpNotSentLowat is TCP_NOTSENT_LOWAT from linux/tcp.h (the syscall
// package does not name it).
const tcpNotSentLowat = 25

// tcpUserTimeout is TCP_USER_TIMEOUT from linux/tcp.h.
const tcpUserTimeout = 18

// notSentLowat is how many not-yet-sent bytes the tunnel socket may hold.
// Without a bound, Linux autotunes the send buffer to megabytes and a
// small frame (an interactive stream's ping) queues behind all of a bulk
// stream's data already in the kernel: tens of milliseconds measured here.
// The bound only limits unsent data, not the bytes in flight, so it does
// not cap throughput on long paths the way a small SO_SNDBUF would.
const notSentLowat = 128 << 10

// tuneTunnelSocket applies the socket options of a tunnel connection.
// Errors are ignored: the options tune latency and back up the session
// watchdog, which finds a dead peer on its own.
//
// TCP keepalive probes an idle connection and TCP_USER_TIMEOUT (RFC 5482)
// drops one whose sent data stays unacknowledged, both within the
// watchdog's bound (KeepAlive+KeepAliveTimeout), so the kernel also ends a
// connection to a peer that vanished while data was in flight.
func tuneTunnelSocket(c net.Conn, sc SessionConfig) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	every, timeout := sc.keepAlive()
	tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: every, Interval: timeout / 3, Count: 3})
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotSentLowat, notSentLowat)
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int((every + timeout).Milliseconds()))
	})
}

// tcpStateClose is TCP_CLOSE from include/net/tcp_states.h.
const tcpStateClose = 7

// tcpClosed reports whether the kernel has closed c's connection (an
// abort, or a FIN and then a reset), as opposed to it being open or only
// half-closed by the peer (CLOSE_WAIT). See batchConn.abortErr.
func tcpClosed(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	raw.Control(func(fd uintptr) { // not run once we closed c ourselves
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		closed = err == nil && info.State == tcpStateClose
	})
	return closed
}

// sizeRecvBuffer applies SessionConfig.RecvBuffer to the tunnel socket,
// once the handshake has given the kernel an RTT estimate. A size sets
// SO_RCVBUF and returns what the kernel took. Auto (0) leaves the buffer
// to Linux's autotuning and returns the talkWindow that bounds the
// receive window while streams talk (nil on a path too long to bound).
// RecvBufferKernel does nothing.
func sizeRecvBuffer(c net.Conn, want int64) (set int64, tw *talkWindow) {
	tc, ok := c.(*net.TCPConn)
	if !ok || want == RecvBufferKernel {
		return 0, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, nil
	}
	raw.Control(func(fd uintptr) {
		if want == 0 {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return
			}
			if size := autoRecvWindow(time.Duration(info.Rtt) * time.Microsecond); size > 0 {
				tw = &talkWindow{raw: raw, size: int(size)}
			}
			return
		}
		if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, int(min(want, math.MaxInt32))) != nil {
			return
		}
		// What the kernel took: it caps the request at rmem_max and
		// reports twice the size (the other half is for its bookkeeping).
		set = want
		if got, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil {
			set = int64(got / 2)
		}
	})
	return set, tw
}

// Auto receive window (SessionConfig.RecvBuffer 0).
const (
	autoRecvFloor = 256 << 10
	autoRecvMax   = 8 << 20
	autoRecvRate  = 1.25e9 // bytes/s: 10 Gbit/s
)

// autoRecvWindow is the receive window for a path with this RTT while
// streams talk: room for twice its bandwidth-delay product at
// autoRecvRate, at least autoRecvFloor. It is 0 (no bound) when that is
// more than autoRecvMax, so that a long path is never throttled.
func autoRecvWindow(rtt time.Duration) int64 {
	need := int64(2 * rtt.Seconds() * autoRecvRate)
	if need > autoRecvMax {
		return 0
	}
	return max(autoRecvFloor, need)
}

// talkWindow bounds the tunnel socket's receive window (TCP_WINDOW_CLAMP)
// while some stream of its session talks beside another that moves bulk
// data (Session.activity, noted by the copiers, priority.go), and leaves
// it to Linux's autotuning otherwise. Only the session's own streams
// count: a small frame waits behind the bulk data in its own socket, not
// in another session's.
//
// Autotuning grows the buffer to megabytes once the agent reads fast, and
// when the agent is short of CPU (TLS at full speed) all a bulk stream
// sent waits there in front of every other stream's frames: a small
// message on a session with bulk data took 2-4x longer with autotuning
// than with 256 KiB. But a fixed 256 KiB buffer (SO_RCVBUF, which also
// ends autotuning for good) cost 8 parallel bulk streams 8-12% of their
// throughput when nothing else ran (README, Performance). The clamp can be
// set and lifted at any time, so each case gets its own.
//
// follow is called by the session's receive loop every readYield bytes
// (frameConn.Read): it acts while data comes in, which is when the window
// matters, for a clock read per 64 KiB.
type talkWindow struct {
	raw     syscall.RawConn
	size    int         // the bound while streams talk
	talking func() bool // whether the session's streams talk beside bulk data (newSession)
	on      bool        // the bound is set
	n       int         // follows since it was set or renewed
	counted heldCount   // in heldWindows (metric)
}

// renewWindowEvery is how many follows (of readYield bytes each) pass
// before a set bound is set again: autotuning moves the clamp up with
// each growth of the buffer.
const renewWindowEvery = 4

func (w *talkWindow) follow() {
	talk := w.talking()
	if talk == w.on {
		if !talk {
			return
		}
		if w.n++; w.n < renewWindowEvery {
			return
		}
	}
	w.on, w.n = talk, 0
	held := false
	w.raw.Control(func(fd uintptr) {
		v := w.size
		if !talk {
			// No tighter than the buffer (the window never exceeds
			// what the buffer holds), and autotuning takes the clamp
			// along when it grows the buffer.
			var err error
			if v, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err != nil {
				return
			}
		}
		held = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, v) == nil && talk
	})
	w.counted.set(held)
}

// close takes the window out of the count when its session ends.
func (w *talkWindow) close() {
	if w != nil {
		w.counted.close()
	}
}
