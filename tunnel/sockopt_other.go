//go:build !linux

package tunnel

import "net"

func tuneTunnelSocket(net.Conn) {}
