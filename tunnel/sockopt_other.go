//go:build !linux

package tunnel

import "net"

func tuneTunnelSocket(c net.Conn, sc SessionConfig) {
	if tc, ok := c.(*net.TCPConn); ok {
		every, timeout := sc.keepAlive()
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: every, Interval: timeout / 3, Count: 3})
	}
}
