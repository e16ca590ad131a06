package tunnel

import (
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
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

// sizeRecvBuffer sets the tunnel socket's SO_RCVBUF as SessionConfig.
// RecvBuffer says, once the handshake has given the kernel an RTT
// estimate, and returns the size the kernel took (0: autotuning stays).
func sizeRecvBuffer(c net.Conn, want int64) int64 {
	tc, ok := c.(*net.TCPConn)
	if !ok || want == RecvBufferKernel {
		return 0
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var set int64
	raw.Control(func(fd uintptr) {
		size := want
		if size == 0 {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return
			}
			size = autoRecvBuffer(time.Duration(info.Rtt)*time.Microsecond, rmemMax())
		}
		if size <= 0 || syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, int(min(size, math.MaxInt32))) != nil {
			return
		}
		// What the kernel took: it caps the request at rmem_max and
		// reports twice the size (the other half is for its bookkeeping).
		set = size
		if got, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil {
			set = int64(got / 2)
		}
	})
	return set
}

// Auto receive buffer sizing (SessionConfig.RecvBuffer 0).
const (
	autoRecvFloor = 256 << 10
	autoRecvMax   = 8 << 20
	autoRecvRate  = 1.25e9 // bytes/s: 10 Gbit/s
)

// autoRecvBuffer is the SO_RCVBUF for a path with this RTT: room for twice
// its bandwidth-delay product at autoRecvRate, at least autoRecvFloor, at
// most rmemMax (the kernel would cap it silently). It is 0 (leave
// autotuning) when twice the bandwidth-delay product is more than
// autoRecvMax or rmemMax allow, so that a long path is never throttled.
func autoRecvBuffer(rtt time.Duration, rmemMax int64) int64 {
	need := int64(2 * rtt.Seconds() * autoRecvRate)
	if need > min(autoRecvMax, rmemMax) {
		return 0
	}
	return min(max(autoRecvFloor, need), rmemMax)
}

// rmemMax is net.core.rmem_max, the most SO_RCVBUF an unprivileged
// process gets; 0 if it cannot be read.
var rmemMax = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
})
