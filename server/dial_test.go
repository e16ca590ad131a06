package server

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"
)

// An IP address takes the resolver-free path and a host name the
// resolver's; both reach the listener, and a refused port is an error.
func TestDialTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		c, err := dialTarget(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if c.RemoteAddr().String() != s.LocalAddr().String() {
			t.Errorf("dial %s: connected to %v, accepted at %v", addr, c.RemoteAddr(), s.LocalAddr())
		}
		c.Close()
		s.Close()
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	if c, err := dialTarget(ctx, "tcp", addr); err == nil || c != nil {
		t.Errorf("dial closed port %s: %v, %v; want a nil conn and an error", addr, c, err)
	}
}
