package tunnel

import (
	"net"
	"syscall"
)

// tcpNotSentLowat is TCP_NOTSENT_LOWAT from linux/tcp.h (the syscall
// package does not name it).
const tcpNotSentLowat = 25

// notSentLowat is how many not-yet-sent bytes the tunnel socket may hold.
// Without a bound, Linux autotunes the send buffer to megabytes and a
// small frame (an interactive stream's ping) queues behind all of a bulk
// stream's data already in the kernel: tens of milliseconds measured here.
// The bound only limits unsent data, not the bytes in flight, so it does
// not cap throughput on long paths the way a small SO_SNDBUF would.
const notSentLowat = 128 << 10

// tuneTunnelSocket applies the socket options of a tunnel connection.
// Errors are ignored: the options only tune latency.
func tuneTunnelSocket(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotSentLowat, notSentLowat)
	})
}
