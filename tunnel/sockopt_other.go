//go:build !linux

package tunnel

import "net"

func tuneTunnelSocket(c net.Conn, sc SessionConfig) {
	if tc, ok := c.(*net.TCPConn); ok {
		every, timeout := sc.keepAlive()
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: every, Interval: timeout / 3, Count: 3})
	}
}

// tcpClosed is Linux-only (TCP_INFO): elsewhere an end of data is taken
// as the peer's close.
func tcpClosed(net.Conn) bool { return false }

// sizeRecvBuffer leaves the receive buffer to the system elsewhere.
func sizeRecvBuffer(net.Conn, int64) (int64, *talkWindow) { return 0, nil }

// talkWindow is Linux-only (TCP_WINDOW_CLAMP).
type talkWindow struct {
	size    int
	talking func() bool
}

func (*talkWindow) follow() {}
func (*talkWindow) close()  {}
