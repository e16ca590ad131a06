package client

import (
	"net"
	"syscall"
	"testing"
)

// TestLoopbackListenerNoKeepAlive: app connections accepted on a loopback
// listener get no TCP keepalive (tunnel.KeepAlive), which Go would
// otherwise set on every accepted socket.
func TestLoopbackListenerNoKeepAlive(t *testing.T) {
	ln, err := listen(Route{Route: "r", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var gerr error
	raw.Control(func(fd uintptr) { on, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
	if gerr != nil || on != 0 {
		t.Fatalf("SO_KEEPALIVE on an accepted loopback connection = %d (%v), want 0", on, gerr)
	}
}
