package integration

import (
	"bytes"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// targetWorld is a server agent whose route "default" goes to target,
// with a short dial timeout, and a client agent for it.
func targetWorld(t *testing.T, target string) (*world, string) {
	t.Helper()
	return echoWorld(t, func(c *server.Config) {
		c.Routes["default"] = server.Route{Target: target, ACL: tunnel.ACL{AllowAll: true}}
		c.DialTimeout = 500 * time.Millisecond
	}, nil)
}

// silentListener is a TCP listener whose accept queue is full and never
// drained: the kernel drops further SYNs, so a connect to it hangs, as to
// a host that is down or behind a firewall that drops.
func silentListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the queue (a backlog of 0 holds one connection) until a connect
	// no longer completes at once.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("could not fill the accept queue of the silent listener")
	return ""
}

// TestTargetSilent: a target that never answers the connect (SYNs
// dropped) costs the app a reset after the dial timeout, with a reason in
// both agents' logs, and the session carries on for other streams.
func TestTargetSilent(t *testing.T) {
	w, local := targetWorld(t, silentListener(t))
	start := time.Now()
	expectReset(t, local)
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("reset after %v, before the 500ms dial timeout", d)
	}
	w.logs.waitFor(t, "dial timeout refusal", func(r record) bool {
		return r.msg == "stream refused by server" && r.attrs["agent"] == "client" &&
			r.attrs["result"] == "target_unreachable" && strings.Contains(r.attrs["reason"], "timed out")
	})
	w.logs.waitFor(t, "server's log", msgAttr("stream rejected", "agent", "server", "result", "target_unreachable"))
	if n := w.logs.count(msgAttr("session ended")); n != 0 {
		t.Errorf("a silent target ended the session:\n%s", w.logs.dump())
	}
}

// TestTargetSlowToAccept: a target that accepts its connections late (the
// kernel has completed the handshake, the program is busy) still gets
// every byte, and the reply comes back intact once it gets round to it.
func TestTargetSlowToAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		<-release
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		echo(c.(*net.TCPConn))
		served <- nil
	}()
	_, local := targetWorld(t, ln.Addr().String())
	payload := random(t, 64<<10) // fits the socket buffers while nobody reads
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	close(release) // only now does the target accept
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("through a slow target: %d of %d bytes back, err %v", len(got), len(payload), err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
