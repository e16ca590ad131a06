package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// streamOrEcho is a backend whose first byte picks a mode: 'S' streams
// data until the connection breaks, 'U' takes an upload until it breaks,
// 'E' echoes the rest.
func streamOrEcho(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(60 * time.Second)) // a bound, should the tunnel never break it
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case 'S':
		chunk := bytes.Repeat([]byte("mtunnel "), 4<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	case 'U':
		io.Copy(io.Discard, c)
	case 'E':
		echo(c)
	}
}

// TestServerKilledMidTransferResetsApp kills the server agent's process
// while a download runs through it: the app must see a connection reset,
// never a clean end of data (it would take a truncated download for a
// complete one). A server restarted on the same address then serves new
// connections through the same client agent, which redials it.
func TestServerKilledMidTransferResetsApp(t *testing.T) {
	k := newBinPKI(t, t.TempDir())
	target := backend(t, streamOrEcho)
	server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", target)...)
	serverAddr := server.listening(t)
	client := startAgent(t, "client", nil, k.clientArgs(serverAddr)...)
	local := client.listening(t)

	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// The app writes one byte and then only reads: a concurrent write
	// could consume the socket's pending ECONNRESET and leave the read an
	// EOF (Linux reports a reset once).
	if _, err := c.Write([]byte{'S'}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, c, 1<<20); err != nil {
		t.Fatalf("download before the kill: %v", err)
	}
	sessions := client.count("session established", "server", serverAddr)
	server.kill(t)
	n, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the server was killed the app read %d more bytes, then err = %v; want ECONNRESET", n, err)
	}
	client.waitLog(t, "stream ended", "route", "default", "result", "reset")
	client.waitLog(t, "session ended", "server", serverAddr)

	server2 := restartServer(t, k.serverArgs(serverAddr, target))
	payload := append([]byte{'E'}, random(t, 1<<20)...)
	sum, got, err := transferSum(local, payload)
	if err != nil {
		t.Fatalf("new connection after the restart: %v\nclient output:\n%s", err, client.out.dump())
	}
	if want := sha256.Sum256(payload[1:]); got != int64(len(payload)-1) || sum != want {
		t.Fatalf("echo after the restart: %d bytes, SHA-256 equal %v; want %d bytes", got, sum == want, len(payload)-1)
	}
	client.waitLogN(t, sessions+1, "session established", "server", serverAddr, "peer", "CN="+readmeServerName)
	server2.waitLog(t, "session established", "peer", "CN=app")
}

// restartServer starts a server agent with args, which listen on the
// address of a server that was just killed. That address is known, not
// guessed, and Go listens with SO_REUSEADDR, so connections of the dead
// process in TIME_WAIT do not block it; should some other socket hold the
// port for a moment, it retries a few times.
func restartServer(t *testing.T, args []string) *childProc {
	t.Helper()
	addr := args[slices.Index(args, "--listen")+1]
	for attempt := 1; ; attempt++ {
		p := startAgent(t, fmt.Sprintf("server (restart %d)", attempt), nil, args...)
		r, err := p.await(1, msgAttr("listening"))
		if err == nil {
			if r.attrs["addr"] != addr {
				t.Fatalf("restarted server listens on %s, want %s", r.attrs["addr"], addr)
			}
			return p
		}
		p.handled = true
		if attempt == 5 || !strings.Contains(p.out.dump(), "address already in use") {
			t.Fatalf("restart server on %s: %v\noutput:\n%s", addr, err, p.out.dump())
		}
		// Give the other holder of the port a moment; this waits on the
		// kernel, not on any code of ours.
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
}
